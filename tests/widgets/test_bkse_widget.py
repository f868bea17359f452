"""BKSE dock widgets: transfer from three chosen layers, synthesis, live code-space deblur,
refused layers become notifications and inputs stay unchanged."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from skimage import data as skdata  # noqa: E402

from napari_glkm._widgets._bkse import (BlurSynthesisWidget, BlurTransferWidget,  # noqa: E402
                                        CodeSpaceDeblurWidget)

pytestmark = pytest.mark.gui
TIMEOUT_MS = 120_000


def _run(qtbot, widget) -> None:
    worker = widget.start()
    assert worker is not None, widget.status.text()
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT_MS):
        pass


def _images(viewer):
    cam = (skdata.camera() / 255.0).astype(np.float32)
    viewer.add_image(cam[100:164, 100:164].copy(), name="src sharp")
    viewer.add_image(cam[100:164, 100:164] * 0.5 + 0.2, name="src blurry")
    viewer.add_image(cam[300:340, 200:251].copy(), name="target", scale=(2.0, 2.0))


def test_transfer_widget_adds_result_with_target_geometry(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _images(viewer)
    w = BlurTransferWidget(viewer)
    viewer.window.add_dock_widget(w, name="transfer")
    assert [w.layer_combos[n].count() for n in w.combos] == [3, 3, 3]
    w.layer_combos["Source sharp"].setCurrentText("src sharp")
    w.layer_combos["Source blurry"].setCurrentText("src blurry")
    w.layer_combos["Target sharp"].setCurrentText("target")
    before = viewer.layers["target"].data.copy()
    _run(qtbot, w)
    qtbot.waitUntil(lambda: "target blurred like src blurry" in viewer.layers, timeout=5000)
    out = viewer.layers["target blurred like src blurry"]
    assert out.data.shape == (40, 51) and tuple(out.scale) == (2.0, 2.0)
    assert np.array_equal(viewer.layers["target"].data, before)


def test_transfer_widget_refuses_mismatched_sources(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    _images(viewer)
    w = BlurTransferWidget(viewer)
    w.layer_combos["Source sharp"].setCurrentText("src sharp")
    w.layer_combos["Source blurry"].setCurrentText("target")
    assert w.start() is None
    assert "same height and width" in w.status.text()
    assert any("same height and width" in str(n.message) for n in notifications)


def test_synthesis_and_deblur_widgets(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _images(viewer)
    s = BlurSynthesisWidget(viewer)
    s.layer_combos["Sharp image"].setCurrentText("src sharp")
    s.n.setValue(2)
    _run(qtbot, s)
    qtbot.waitUntil(lambda: "src sharp synthetic blur" in viewer.layers, timeout=5000)
    assert viewer.layers["src sharp synthetic blur"].data.shape == (2, 64, 64)
    d = CodeSpaceDeblurWidget(viewer)
    d.layer_combos["Blurry image"].setCurrentText("target")
    d.iterations.setValue(20)
    _run(qtbot, d)
    qtbot.waitUntil(lambda: "finished" in d.status.text(), timeout=5000)
    assert viewer.layers["target deblurred (BKSE)"].data.shape == (40, 51)
