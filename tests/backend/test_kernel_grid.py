"""Kernel-grid pictures: the mosaic tiles land on the patch centres; outlines match the boxes."""

import numpy as np
import pytest

from napari_glkm.backend.kernel_grid import kernel_grid_mosaic, kernel_tiles, patch_outlines
from napari_glkm.backend.svola import make_patch_grid


def test_mosaic_tiles_sit_on_patch_centres():
    pg = make_patch_grid((150, 200), 15, grid=(2, 3), overlap=0.5)
    ks = np.zeros((2, 3, 15, 15), np.float32)
    ks[..., 7, 7] = 1.0  # a delta at each kernel centre
    mosaic, scale, translate = kernel_grid_mosaic(ks, pg.centres, (150, 200))
    assert mosaic.dtype == np.float32 and mosaic.max() == 1.0
    peaks = np.argwhere(mosaic == 1.0)
    world = np.asarray(translate) + np.asarray(scale) * peaks
    np.testing.assert_allclose(world, pg.centres.reshape(-1, 2), atol=1e-9)
    # a drawn kernel spans ~60 % of the patch spacing
    pitch = pg.centres[1, 0, 0] - pg.centres[0, 0, 0]
    assert 0.5 < 15 * scale[0] / pitch <= 0.6


def test_single_patch_and_bad_input():
    ks = np.random.default_rng(0).random((1, 1, 7, 7))
    mosaic, scale, translate = kernel_grid_mosaic(ks, np.array([[[49.5, 29.5]]]), (100, 60))
    t = mosaic.shape[0]
    np.testing.assert_allclose(np.asarray(translate) + np.asarray(scale) * (t - 1) / 2, [49.5, 29.5])
    with pytest.raises(ValueError, match="centres"):
        kernel_grid_mosaic(ks, np.zeros((2, 2, 2)), (100, 60))
    with pytest.raises(ValueError, match="regular"):
        kernel_grid_mosaic(np.zeros((3, 1, 5, 5)), np.array([[[0, 0]], [[5, 0]], [[20, 0]]]), (30, 30))


def test_tiles_and_outlines():
    ks = np.ones((2, 2, 5, 5), np.float32) / 25
    tiles = kernel_tiles(ks, gap=2)
    assert tiles.shape == (14, 14) and tiles.max() == 1.0 and tiles[0, 0] == 0
    pg = make_patch_grid((100, 100), 15, grid=2, overlap=0.5)
    rects = patch_outlines(pg.centres, pg.patch_shape, (100, 100))
    assert len(rects) == 4 and all(r.shape == (4, 2) for r in rects)
    r0 = rects[0]
    assert r0[:, 0].min() == -0.5 and r0[:, 0].max() == pytest.approx(pg.centres[0, 0, 0] + pg.patch_shape[0] / 2)
