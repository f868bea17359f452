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
