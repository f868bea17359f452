import numpy as np
import pytest
import torch
from skimage import data

from napari_glkm.backend.blur import conv_valid
from napari_glkm.backend.nonblind import l0_deconv, periodic_pad, sparse_deconv, wiener_deconv


@pytest.fixture
def problem():
    """A sharp photo crop, an asymmetric (L-shaped) kernel, its valid blur + 0.5% noise."""
    x = torch.from_numpy(data.camera()[100:260, 150:310].astype(np.float64) / 255)[None, None]
    k = torch.zeros(1, 1, 15, 15, dtype=torch.float64)
    k[0, 0, 7, 7:14] = 1
    k[0, 0, 3:7, 13] = 1
    k /= k.sum()
    y = conv_valid(x, k)
    y = y + 0.005 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0), dtype=y.dtype)
    return x, k, y


def _err(a, b):
    return float((a - b)[..., 20:-20, 20:-20].abs().mean())


def test_sparse_deconv_restores_and_respects_orientation(problem):
    x, k, y = problem
    c = 7
    truth = x[..., c:-c, c:-c]
    blurry_err = _err(y, truth)
    good = _err(sparse_deconv(y, k), truth)
    flipped = _err(sparse_deconv(y, torch.flip(k, (-2, -1))), truth)
    assert good < 0.5 * blurry_err
    assert good < 0.5 * flipped


def test_fft_solvers_use_the_correlation_convention(problem):
    x, k, y = problem
    c = 7
    truth = x[..., c:-c, c:-c]
    for solve in (lambda kk: wiener_deconv(y, kk, 1e-3),
                  lambda kk: l0_deconv(y, kk, 1e-4)[..., c:-c, c:-c]):
        good = _err(solve(k), truth)
        flipped = _err(solve(torch.flip(k, (-2, -1))), truth)
        assert good < 0.6 * _err(y, truth)
        assert good < 0.6 * flipped


def test_l0_output_is_on_the_valid_domain(problem):
    _, k, y = problem
    x = l0_deconv(y, k, 1e-3)
    assert x.shape[-2:] == (y.shape[-2] + 14, y.shape[-1] + 14)


def test_periodic_pad_is_seamless(rng):
    y = torch.from_numpy(rng.random((1, 1, 30, 20)))
    p = periodic_pad(y, 6)
    assert p.shape[-2:] == (42, 32)
    torch.testing.assert_close(p[..., 6:-6, 6:-6], y)
    # wrapping around: the jump between the last and the first column is small
    jump = (p[..., :, -1] - p[..., :, 0]).abs().max()
    assert jump < 0.2


def test_periodic_pad_to_a_fast_shape(rng):
    y = torch.from_numpy(rng.random((1, 1, 31, 23)))
    p = periodic_pad(y, 6, (45, 40))
    assert p.shape[-2:] == (45, 40)
    torch.testing.assert_close(p[..., 6 : 6 + 31, 6 : 6 + 23], y)  # image starts at pad
    assert (p[..., :, -1] - p[..., :, 0]).abs().max() < 0.2
    assert (p[..., -1, :] - p[..., 0, :]).abs().max() < 0.2
    with pytest.raises(ValueError, match="band"):
        periodic_pad(y, 6, (40, 40))
