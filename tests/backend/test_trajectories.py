import numpy as np
import pytest

from napari_glkm.backend.trajectories import motion_kernels


@pytest.mark.parametrize("size", [13, 31, 55, 75])
def test_kernels_are_normalised_nonnegative_and_centred(size):
    k = motion_kernels(64, size, rng=3)
    assert k.shape == (64, size, size)
    assert k.dtype == np.float32
    assert (k >= 0).all()
    np.testing.assert_allclose(k.sum(axis=(1, 2)), 1.0, atol=1e-5)
    grid = np.arange(size)
    cy = np.einsum("nij,i->n", k, grid)
    cx = np.einsum("nij,j->n", k, grid)
    half = (size - 1) / 2
    assert np.abs(cy - half).max() <= 0.5 + 1e-4
    assert np.abs(cx - half).max() <= 0.5 + 1e-4


def test_seed_reproducible_and_varied():
    a = motion_kernels(8, 31, rng=11)
    b = motion_kernels(8, 31, rng=11)
    c = motion_kernels(8, 31, rng=12)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # kernels of a batch differ from each other
    assert np.abs(a[0] - a[1]).sum() > 0.1


def test_supports_cover_small_and_large_motions():
    k = motion_kernels(400, 31, rng=5)
    spans = []
    for kk in k:
        ys, xs = np.nonzero(kk > kk.max() * 0.05)
        spans.append(max(np.ptp(ys), np.ptp(xs)))
    spans = np.array(spans)
    assert spans.min() <= 6 and spans.max() >= 24
    assert spans.max() <= 29  # one pixel inside the border


@pytest.mark.parametrize("bad", [0, 2, 30, -3, 4.0])
def test_bad_sizes_rejected(bad):
    with pytest.raises(ValueError, match="odd"):
        motion_kernels(2, bad)
