"""Non-uniform (SVOLA) mode in the deblur widget and its kernel-grid overlay: the mosaic and the
patch outlines sit on the image in world coordinates, update live, and can be hidden. Small
image, `fast` preset, one alternation, 15 px kernels, free prior: a few seconds per run."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Image  # noqa: E402
from napari.utils.notifications import notification_manager  # noqa: E402

from napari_glkm._sample_data import blurred_sample  # noqa: E402
from napari_glkm._widgets._overlay import overlay_geometry  # noqa: E402
from widget_helpers import deblur_widget, wait_done  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def image128() -> np.ndarray:
    """128 x 128 crop of the blurred `camera` sample (float32 in [0, 1])."""
    return blurred_sample("camera").blurry[200:328, 180:308].copy()


def test_overlay_geometry_follows_rotated_sheared_layer():
    layer = Image(np.zeros((40, 50), np.float32), scale=(0.5, 2.0), translate=(10.0, -3.0),
                  rotate=30.0, shear=[0.2])
    m_scale, m_translate = (1.7, 2.3), (4.0, -1.5)
    overlay = Image(np.zeros((6, 6), np.float32), **overlay_geometry(layer, m_scale, m_translate))
    for m in [(0.0, 0.0), (2.5, 1.0), (5.0, 5.0)]:
        pixel = np.asarray(m_translate) + np.asarray(m_scale) * np.asarray(m)
        np.testing.assert_allclose(overlay.data_to_world(m), layer.data_to_world(pixel),
                                   atol=1e-9)


def test_nonuniform_run_adds_aligned_overlay(make_napari_viewer, qtbot, image128):
    viewer = make_napari_viewer()
    layer = viewer.add_image(image128, name="cam", scale=(0.5, 0.5), translate=(10.0, 20.0))
    w = deblur_widget(viewer, grid=2)
    assert w.grid.isEnabled() and w.options()["nonuniform"] and w.options()["grid"] == 2
    assert w.blur_model.isEnabled() and w.options()["blur_model"] == "camera"
    seen: list[tuple[bool, bool]] = []  # (overlay present, frame finished) at each update
    worker = w.start()
    assert worker is not None
    worker.yielded.connect(lambda u: seen.append(("cam kernel grid" in viewer.layers,
                                                  u.frame_done)))
    wait_done(qtbot, w, worker)
    assert any(present and not done for present, done in seen)  # shown live, before the end

    grid, patches = viewer.layers["cam kernel grid"], viewer.layers["cam patches"]
    assert "cam deblurred" in viewer.layers and "cam kernel" in viewer.layers
    meta = grid.metadata["napari_glkm"]
    assert tuple(meta["grid"]) == (2, 2) and not meta["partial"]
    centres = np.asarray(meta["centres"])
    assert centres.shape == (2, 2, 2)
    # the mosaic: 2 x 2 tiles of side t; each tile's centre lands on its patch centre (world)
    assert grid.data.shape[0] == grid.data.shape[1] and grid.data.shape[0] % 2 == 0
    t = grid.data.shape[0] // 2
    for i in range(2):
        for j in range(2):
            tile_centre = (i * t + (t - 1) / 2, j * t + (t - 1) / 2)
            np.testing.assert_allclose(grid.data_to_world(tile_centre),
                                       layer.data_to_world(centres[i, j]), atol=1e-6)
    # explicitly: scale = image scale x (patch pitch / tile side), translate composed likewise
    pitch = centres[1, 1] - centres[0, 0]
    np.testing.assert_allclose(grid.scale, 0.5 * pitch / t)
    np.testing.assert_allclose(grid.translate,
                               (10.0, 20.0) + 0.5 * (centres[0, 0] - pitch / t * (t - 1) / 2))
    assert grid.colormap.name == "inferno" and str(grid.blending) == "additive"
    # patch outlines: one rectangle per patch, with the image's own world transform
    assert len(patches.data) == 4 and list(patches.shape_type) == ["rectangle"] * 4
    np.testing.assert_allclose(patches.scale, layer.scale)
    np.testing.assert_allclose(patches.translate, layer.translate)
    ph, pw = meta["patch_shape"]
    box = np.asarray(patches.data[3])  # patch (1, 1): centred on centres[1, 1] unless clipped
    np.testing.assert_allclose(box.max(axis=0), np.minimum(centres[1, 1] + (ph / 2, pw / 2),
                                                           127.5))
    # toggle-able
    w.show_grid.setChecked(False)
    assert not grid.visible and not patches.visible
    w.show_grid.setChecked(True)
    assert grid.visible and patches.visible


def test_nonuniform_refuses_stacks_and_too_fine_grids(make_napari_viewer, image128):
    viewer = make_napari_viewer()
    single = viewer.add_image(image128, name="cam")
    stack = viewer.add_image(np.stack([image128, image128]), name="movie")
    w = deblur_widget(viewer, grid=2)
    w.image_combo.setCurrentText("movie")
    assert not w.nonuniform.isEnabled() and not w.grid.isEnabled()
    assert not w.blur_model.isEnabled()
    assert "stack" in w.nonuniform.toolTip()
    assert "nonuniform" not in w.options()
    w.image_combo.setCurrentText("cam")
    assert w.nonuniform.isEnabled() and w.options()["nonuniform"]
    w.blur_model.setCurrentIndex(w.blur_model.findData("free"))
    assert w.blur_model.isEnabled() and w.options()["blur_model"] == "free"
    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        assert w.start(stack) is None  # a stack passed directly is refused with a message
        w.grid.setValue(8)  # 8 x 8 patches of a 128 px image: smaller than 2 x 15 px
        assert w.start(single) is None
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    assert "stack" in str(seen[0].message)
    assert "grid" in str(seen[1].message) and "patches" in str(seen[1].message)
    assert w.run_btn.isEnabled() and len(viewer.layers) == 2 and single in viewer.layers
