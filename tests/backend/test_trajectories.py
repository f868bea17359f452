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


# ----------------------------------------------------------------------------- camera shake

def _correlate(sharp, k):
    import torch
    from napari_glkm.backend.blur import conv_valid
    return conv_valid(torch.from_numpy(sharp)[None, None], torch.from_numpy(k)[None, None])[0, 0].numpy()


def test_camera_shake_without_roll_is_a_uniform_blur_by_its_kernel():
    from napari_glkm.backend.trajectories import camera_shake, camera_shake_blur, camera_shake_kernels
    sharp = np.random.default_rng(0).random((100, 90))
    shake = camera_shake(1, 18.0, 0.0, 60.0)
    assert np.ptp(shake.roll) == 0
    y = camera_shake_blur(sharp, shake, 15)
    assert y.shape == (70, 60)
    k = camera_shake_kernels(shake, [[3.0, 50.0]], y.shape)[0]
    np.testing.assert_allclose(k.sum(), 1.0)
    np.testing.assert_allclose(y, _correlate(sharp, k), atol=1e-12)


def test_camera_shake_roll_varies_the_kernel_and_the_render_matches_it_locally():
    from napari_glkm.backend.trajectories import camera_shake, camera_shake_blur, camera_shake_kernels
    sharp = np.random.default_rng(1).random((100, 90))
    shake = camera_shake(2, 14.0, 10.0, 46.0)
    y = camera_shake_blur(sharp, shake, 15)
    pts = np.array([[5.0, 7.0], [34.5, 29.5], [64.0, 52.0]])  # corner, centre, other corner
    ks = camera_shake_kernels(shake, pts, y.shape)
    assert np.abs(ks[0] - ks[2]).sum() > 0.3  # opposite corners: clearly different kernels
    for (r, c), k in zip(pts.astype(int), ks):
        if (r, c) == (34, 29):
            continue  # not on a pixel
        assert abs(y[r, c] - _correlate(sharp, k)[r, c]) < 1e-12
    # the roll arc at the corners is bounded as asked (shrunk only to fit the canvas)
    arc = np.ptp(shake.roll) * 46.0
    assert 0 < arc <= 10.0 + 1e-9
    # mean-zero paths: every local kernel is centred (global-shift alignment stays valid)
    idx = np.arange(31)
    for k in ks:
        assert abs((k.sum(1) * idx).sum() - 15) < 0.6 and abs((k.sum(0) * idx).sum() - 15) < 0.6


def test_camera_shake_rejects_bad_arguments():
    from napari_glkm.backend.trajectories import camera_shake, camera_shake_blur
    with pytest.raises(ValueError, match="corner_radius"):
        camera_shake(0, 10.0, 5.0, 0.0)
    with pytest.raises(ValueError, match="shift_px"):
        camera_shake(0, float("nan"), 5.0, 10.0)
    with pytest.raises(ValueError, match="larger than"):
        camera_shake_blur(np.zeros((20, 20)), camera_shake(0, 5.0, 0.0, 10.0), 15)
