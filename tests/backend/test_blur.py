import numpy as np
import pytest
import torch
from scipy import signal

from napari_glkm.backend.blur import UniformBlur, conv_same, conv_valid, conv_valid_adjoint


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("ksize", [5, 13])
def test_valid_matches_scipy_correlation(rng, method, ksize):
    x = rng.random((37, 31))
    k = rng.random((ksize, ksize))
    k /= k.sum()
    ref = signal.correlate2d(x, k, mode="valid")
    out = conv_valid(torch.from_numpy(x)[None, None], torch.from_numpy(k)[None, None], method=method)
    np.testing.assert_allclose(out[0, 0].numpy(), ref, atol=1e-10)


def test_direct_equals_fft_with_per_image_kernels(odd_image, rng):
    k = torch.from_numpy(rng.random((2, 1, 7, 7)))
    a = conv_valid(odd_image, k, method="direct")
    b = conv_valid(odd_image, k, method="fft")
    assert a.shape == (2, 3, 31, 25)
    torch.testing.assert_close(a, b)
    # each image uses its own kernel
    single = conv_valid(odd_image[1:], k[1:], method="direct")
    torch.testing.assert_close(a[1:], single)


def test_adjoint(odd_image, rng):
    k = torch.from_numpy(rng.random((1, 1, 9, 9)))
    y = torch.from_numpy(rng.random((2, 3, 29, 23)))
    lhs = (conv_valid(odd_image, k) * y).sum()
    rhs = (odd_image * conv_valid_adjoint(y, k)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_gradcheck(rng):
    x = torch.from_numpy(rng.random((1, 1, 12, 11))).requires_grad_()
    k = torch.from_numpy(rng.random((1, 1, 5, 5))).requires_grad_()
    for method in ("direct", "fft"):
        assert torch.autograd.gradcheck(lambda a, b: conv_valid(a, b, method=method), (x, k))


def test_same_keeps_size_and_matches_scipy_interior(rng):
    x = rng.random((40, 33))
    k = rng.random((7, 7))
    out = conv_same(torch.from_numpy(x)[None, None], torch.from_numpy(k)[None, None])
    assert out.shape[-2:] == (40, 33)
    ref = signal.correlate2d(x, k, mode="same")
    np.testing.assert_allclose(out[0, 0, 3:-3, 3:-3].numpy(), ref[3:-3, 3:-3], atol=1e-10)


def test_module_matches_function(odd_image, rng):
    k = torch.from_numpy(rng.random((1, 1, 5, 5)))
    m = UniformBlur(k)
    torch.testing.assert_close(m.A(odd_image), conv_valid(odd_image, k))
    y = m.A(odd_image)
    torch.testing.assert_close(m.A_adjoint(y), conv_valid_adjoint(y, k))


def test_errors():
    with pytest.raises(ValueError, match="smaller than kernel"):
        conv_valid(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        conv_valid(torch.rand(4, 4), torch.rand(1, 1, 3, 3))
    with pytest.raises(ValueError, match="unknown method"):
        conv_valid(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 3, 3), method="magic")


# --- SVOLA (space-variant overlap-add) ---------------------------------------------------------

from napari_glkm.backend.blur import SVOLABlur, svola_adjoint, svola_blur, svola_windows  # noqa: E402


@pytest.mark.parametrize("grid, overlap, pad", [((3, 2), 0.5, 0), ((4, 5), 0.3, 4), ((1, 3), 0.0, 2),
                                                ((2, 2), 0.9, 0)])
def test_svola_windows_sum_to_one(grid, overlap, pad):
    w, centres = svola_windows((37, 31), grid, overlap, pad=pad, dtype=torch.float64)
    assert w.shape == (grid[0] * grid[1], 1, 37 + 2 * pad, 31 + 2 * pad)
    assert centres.shape == (*grid, 2)
    assert float(w.min()) >= 0
    torch.testing.assert_close(w.sum(0), torch.ones_like(w[0]), rtol=0, atol=1e-12)
    # centres are increasing and inside the image
    assert (centres[..., 0].diff(dim=0) > 0).all() and (centres[..., 1].diff(dim=1) > 0).all()
    assert 0 <= float(centres.min()) and float(centres[..., 0].max()) <= 36


def test_svola_constant_field_equals_uniform(odd_image, rng):
    k = torch.from_numpy(rng.random((1, 1, 7, 7)))
    k = k / k.sum()
    w, _ = svola_windows((31, 25), (3, 2), 0.5, pad=3, dtype=torch.float64)
    out = svola_blur(odd_image, k.expand(6, -1, -1, -1), w)
    torch.testing.assert_close(out, conv_valid(odd_image, k), rtol=0, atol=1e-12)


def test_svola_adjoint_and_local_kernels(odd_image, rng):
    ks = torch.from_numpy(rng.random((4, 1, 5, 5)))
    w, _ = svola_windows((33, 27), (2, 2), 0.5, pad=2, dtype=torch.float64)
    y = torch.from_numpy(rng.random((2, 3, 33, 27)))
    lhs = (svola_blur(odd_image, ks, w) * y).sum()
    rhs = (odd_image * svola_adjoint(y, ks, w)).sum()
    torch.testing.assert_close(lhs, rhs)
    # far from the patch borders, each region is blurred by its own kernel only
    single = conv_valid(odd_image, ks[:1])
    sv = svola_blur(odd_image, ks, svola_windows((33, 27), (2, 2), 0.0, pad=2,
                                                  dtype=torch.float64)[0])
    torch.testing.assert_close(sv[..., :4, :4], single[..., :4, :4], rtol=0, atol=1e-5)


def test_svola_gradcheck_and_module(rng):
    x = torch.from_numpy(rng.random((1, 2, 14, 13))).requires_grad_()
    ks = torch.from_numpy(rng.random((2, 1, 3, 3))).requires_grad_()
    w, _ = svola_windows((12, 11), (1, 2), 0.4, pad=1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: svola_blur(a, b, w), (x, ks))
    m = SVOLABlur(ks.detach(), w)
    torch.testing.assert_close(m.A(x.detach()), svola_blur(x.detach(), ks.detach(), w))
    y = m.A(x.detach())
    torch.testing.assert_close(m.A_adjoint(y), svola_adjoint(y, ks.detach(), w))


def test_svola_shape_errors():
    w, _ = svola_windows((20, 20), (2, 2))
    with pytest.raises(ValueError, match="windows"):
        svola_blur(torch.rand(1, 1, 20, 20), torch.rand(3, 1, 3, 3), w)
    with pytest.raises(ValueError, match="overlap"):
        svola_windows((20, 20), (2, 2), 1.0)


def test_fft_shape_is_fast_and_large_enough():
    from napari_glkm.backend.blur import fft_shape

    for n in range(1, 400):
        s, _ = fft_shape(n, 1)
        assert n <= s < 1.25 * n + 2
        for p in (2, 3, 5):
            while s % p == 0:
                s //= p
        assert s == 1, n


def test_fft_correlation_on_prime_sizes_is_exact_and_adjoint(rng):
    """The padded FFT grid (prime 67 x 61 -> 72 x 64) must not wrap into the wanted outputs."""
    from napari_glkm.backend.blur import FFTCorrelation

    x = torch.from_numpy(rng.random((1, 2, 67, 61)))
    k = torch.from_numpy(rng.random((1, 1, 11, 11)))
    op = FFTCorrelation(k, (67, 61))
    assert op.grid == (72, 64)
    torch.testing.assert_close(op.valid(x), conv_valid(x, k, method="direct"))
    y = torch.from_numpy(rng.random((1, 2, 57, 51)))
    torch.testing.assert_close((op.valid(x) * y).sum(), (x * op.adjoint(y)).sum())
