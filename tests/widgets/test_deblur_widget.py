"""The napari plugin: manifest, widgets in a viewer, runs through the widget, cancel, stacks,
refused layers. Runs under pytest-xvfb; images are small and runs short (fast preset, one
alternation per scale, 15 px kernels) so the whole file takes well under a minute on a CPU."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


from napari_glkm._sample_data import blurred_sample  # noqa: E402
from napari_glkm._widgets._deblur import DeblurWidget, RunState  # noqa: E402
from napari_glkm._widgets._state import state_for  # noqa: E402
from widget_helpers import TIMEOUT_MS, deblur_widget, wait_done  # noqa: E402

pytestmark = pytest.mark.gui


@pytest.fixture
def image96() -> np.ndarray:
    """96 x 96 crop of the blurred `camera` sample (float32 in [0, 1])."""
    return blurred_sample("camera").blurry[200:296, 180:276].copy()




def _messages(notes) -> str:
    return " | ".join(str(n.message) for n in notes)


def test_widgets_open_from_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-glkm", "Blind deblur")
    assert isinstance(widget, DeblurWidget)
    _, weights = viewer.window.add_plugin_dock_widget("napari-glkm", "Weights and device")
    # both widgets share the viewer's state: choosing a device shows up in the deblur widget
    weights.device.setCurrentText("cpu")
    assert state_for(viewer).device == "cpu"
    assert "device: cpu" in widget.weights_label.text()
    assert widget.options()["device"] == "cpu"


def test_run_creates_result_and_kernel_layers(make_napari_viewer, qtbot, image96):
    viewer = make_napari_viewer()
    layer = viewer.add_image(image96, name="cam", scale=(0.5, 0.25), translate=(10.0, -3.0),
                             units=("um", "um"))
    before = np.array(layer.data, copy=True)
    w = deblur_widget(viewer, kernel_prior="glkm")
    assert w.image_combo.currentText() == "cam"
    assert w.worker is None and w.run_btn.isEnabled()
    worker = w.start()
    assert worker is not None and not w.run_btn.isEnabled()
    wait_done(qtbot, w, worker)
    out, kern = viewer.layers["cam deblurred"], viewer.layers["cam kernel"]
    assert out.data.shape == (96, 96) and out.data.dtype == np.float32
    np.testing.assert_allclose(out.scale, layer.scale)
    np.testing.assert_allclose(out.translate, layer.translate)
    assert tuple(map(str, out.units)) == tuple(map(str, layer.units))
    assert kern.data.shape == (15, 15) and abs(float(kern.data.sum()) - 1.0) < 1e-4
    assert kern.colormap.name == "inferno"
    # the kernel sits to the right of the image, top-aligned, in world coordinates
    img_top_left = np.array(layer.data_to_world((-0.5, -0.5)))  # outer pixel edges
    img_bottom_right = np.array(layer.data_to_world((95.5, 95.5)))
    k_top_left = np.array(kern.data_to_world((-0.5, -0.5)))
    assert k_top_left[1] > img_bottom_right[1]
    assert abs(k_top_left[0] - img_top_left[0]) < 1e-6
    assert not out.metadata["napari_glkm"]["partial"]
    assert "cam kernel grid" not in viewer.layers  # the overlay is for non-uniform runs only
    np.testing.assert_array_equal(layer.data, before)
    assert w.run_btn.isEnabled() and w.run_state is RunState.IDLE


def test_diffusion_prior_runs_from_the_combobox(make_napari_viewer, qtbot, image96,
                                                monkeypatch):
    from napari_glkm.backend import solver

    monkeypatch.setitem(solver.DIFFUSION_ITERS, "fast", 2)  # the wiring, not the quality
    viewer = make_napari_viewer()
    viewer.add_image(image96, name="cam")
    w = deblur_widget(viewer)
    w.image_prior.setCurrentText("diffusion")
    assert w.options()["prior"] == "diffusion"
    worker = w.start()
    wait_done(qtbot, w, worker)
    out = viewer.layers["cam deblurred"]
    assert out.data.shape == (96, 96) and np.all(np.isfinite(out.data))


def test_cancel_stops_and_keeps_partial_preview(make_napari_viewer, qtbot, image96):
    viewer = make_napari_viewer()
    layer = viewer.add_image(image96, name="cam")
    before = np.array(layer.data, copy=True)
    # glkm with many iterations: far longer than the test waits before cancelling
    w = deblur_widget(viewer, iterations=20, kernel_prior="glkm")
    worker = w.start()
    with qtbot.waitSignal(worker.yielded, timeout=TIMEOUT_MS):
        pass
    w.cancel()
    wait_done(qtbot, w, worker)
    assert w.run_btn.isEnabled() and not w.cancel_btn.isEnabled()
    np.testing.assert_array_equal(layer.data, before)
    assert "cam deblurred" not in viewer.layers
    partial = viewer.layers["cam deblurred (partial)"]
    assert partial.metadata["napari_glkm"]["partial"]
    assert partial.data.shape == (96, 96)
    assert "Cancelled" in w.status.text()


def test_stack_of_three_frames_reports_warm_start(make_napari_viewer, qtbot, image96):
    viewer = make_napari_viewer()
    stack = np.stack([image96, np.roll(image96, 3, axis=0), np.roll(image96, 6, axis=1)])
    layer = viewer.add_image(stack, name="movie", scale=(2.0, 0.5, 0.5))
    w = deblur_widget(viewer)
    assert w.shared_kernel.isEnabled() and w.warm_start.isChecked()
    worker = w.start()
    wait_done(qtbot, w, worker)
    out, kern = viewer.layers["movie deblurred"], viewer.layers["movie kernel"]
    assert out.data.shape == (3, 96, 96) and out.data.dtype == np.float32
    assert np.all(np.abs(out.data).reshape(3, -1).max(axis=1) > 0)  # every frame restored
    np.testing.assert_allclose(out.scale, layer.scale)
    assert kern.data.shape == (3, 15, 15)
    assert kern.scale[0] == 2.0  # follows the time slider
    meta = out.metadata["napari_glkm"]
    assert meta["warm_start"] == [False, True, True] and meta["frames_done"] == 3
    assert "Warm start" in meta["note"] and "faster" in meta["note"]
    assert "Warm start" in w.status.text()


def test_roi_from_shapes_layer_is_used(make_napari_viewer, qtbot, image96):
    viewer = make_napari_viewer()
    viewer.add_image(image96, name="cam", scale=(2.0, 2.0))
    # rectangle in world units: rows 20..160, cols 40..180 -> pixels 10..80, 20..90
    viewer.add_shapes([np.array([[20, 40], [20, 180], [160, 180], [160, 40]])],
                      shape_type="rectangle", name="roi")
    w = deblur_widget(viewer)
    w.roi_combo.setCurrentText("roi")
    worker = w.start()
    assert worker is not None
    assert w._job["opts"]["roi"] == (10, 20, 80, 90)
    wait_done(qtbot, w, worker)
    assert viewer.layers["cam deblurred"].metadata["napari_glkm"]["options"]["roi"] == (10, 20, 80, 90)


@pytest.mark.parametrize("case", ["labels", "tiny", "nan", "constant", "bool", "points",
                                  "too big for memory", "tiny stack"])
def test_bad_layers_notify_without_crashing(make_napari_viewer, notifications, case,
                                            monkeypatch):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    if case == "labels":
        layer = viewer.add_labels(np.zeros((64, 64), np.int32), name="seg")
        expected = "Labels layer"
    elif case == "tiny":
        layer = viewer.add_image(np.ones((1, 1), np.float32), name="dot")
        expected = "too small"
    elif case == "nan":
        img = rng.random((64, 64)).astype(np.float32)
        img[3, 4] = np.nan
        layer = viewer.add_image(img, name="holes")
        expected = "NaN"
    elif case == "constant":
        layer = viewer.add_image(np.full((64, 64), 0.25, np.float32), name="flat")
        expected = "constant"
    elif case == "bool":
        layer = viewer.add_image(rng.random((64, 64)) > 0.5, name="mask")
        expected = "boolean"
    elif case == "points":
        layer = viewer.add_points(rng.random((5, 2)) * 60, name="spots")
        expected = "Points layer"
    elif case == "too big for memory":
        monkeypatch.setenv("NAPARI_GLKM_MEMORY_LIMIT_GB", "0.2")
        layer = viewer.add_image(rng.random((1500, 1500)).astype(np.float32), name="big")
        expected = "needs about"
    else:
        layer = viewer.add_image(rng.random((3, 20, 20)).astype(np.float32), name="small movie")
        expected = "too small"
    before = np.array(layer.data, copy=True)
    w = deblur_widget(viewer)
    assert w.start(layer) is None
    assert expected in _messages(notifications)
    assert w.run_btn.isEnabled() and w.worker is None and len(viewer.layers) == 1
    np.testing.assert_array_equal(layer.data, before)


def test_error_inside_the_run_is_notified(make_napari_viewer, qtbot, notifications, image96):
    viewer = make_napari_viewer()
    stack = np.stack([image96, np.full_like(image96, 0.5)])  # frame 2 is constant
    layer = viewer.add_image(stack, name="movie")
    w = deblur_widget(viewer)
    worker = w.start()
    assert worker is not None  # the first frame is fine: the error comes from the worker
    wait_done(qtbot, w, worker)
    assert "constant" in _messages(notifications)
    assert w.run_btn.isEnabled() and w.worker is None
    assert "movie deblurred (partial)" in viewer.layers
    assert viewer.layers["movie deblurred (partial)"].metadata["napari_glkm"]["frames_done"] == 1
    np.testing.assert_array_equal(layer.data, stack)


def test_rgb_layer_gives_rgb_result(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rgb = (blurred_sample("astronaut").blurry[100:196, 150:246] * 255).astype(np.uint8)
    layer = viewer.add_image(rgb, name="astro")
    assert layer.rgb
    w = deblur_widget(viewer)
    assert not w.shared_kernel.isEnabled()  # one colour image is not a stack
    worker = w.start()
    wait_done(qtbot, w, worker)
    out = viewer.layers["astro deblurred"]
    assert out.rgb and out.data.shape == (96, 96, 3) and out.data.dtype == np.float32
    assert 100 < float(out.data.mean()) < 200  # the input's 0..255 range is kept
    assert viewer.layers["astro kernel"].data.shape == (15, 15)
