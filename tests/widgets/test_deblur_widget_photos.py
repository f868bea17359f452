"""The deblur widget's photo options: automatic kernel size (default), noise, saturation; the
chosen size and the noise level are shown when a run ends."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_glkm._sample_data import blurred_sample  # noqa: E402
from napari_glkm._widgets._deblur import DeblurWidget, RunState  # noqa: E402
from napari_glkm._widgets._layers import kernel_kwargs  # noqa: E402

pytestmark = pytest.mark.gui


def test_auto_size_is_default_and_reported(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(blurred_sample("camera").blurry[200:296, 180:276].copy(), name="cam")
    w = DeblurWidget(viewer)
    viewer.window.add_dock_widget(w, name="deblur")
    w.reset_choices()
    assert w.kernel_size.text() == "auto"
    opts = w.options()
    assert opts["kernel_size"] == "auto" and opts["noise"] == "auto"
    assert opts["saturation"] == "auto"
    w.noise.setCurrentText("off")
    w.saturation.setChecked(False)
    assert w.options()["noise"] == "off" and w.options()["saturation"] == "off"
    w.noise.setCurrentText("auto")
    w.preset.setCurrentText("fast")
    w.iterations.setValue(1)
    w.kernel_prior.setCurrentText("free")
    worker = w.start()
    assert worker is not None
    # wait for the widget's own end of run: `not worker.is_running` is already true before
    # the thread has started, so it did not wait for the run (which takes ~20 s here)
    qtbot.waitUntil(lambda: w.run_state is RunState.IDLE, timeout=240_000)
    kern = viewer.layers["cam kernel"].data
    assert f"Kernel {kern.shape[0]} px (auto), noise" in w.status.text()
    # auto estimated 23 and 31 px kernels in turn: the live kernel layer followed the size
    # and is placed for the final one
    placed = kernel_kwargs(viewer.layers["cam"], kern.shape)
    np.testing.assert_allclose(viewer.layers["cam kernel"].scale, placed["scale"])
    np.testing.assert_allclose(viewer.layers["cam kernel"].translate, placed["translate"])
    w.kernel_size.setValue(15)  # a fixed size still works as before
    assert w.options()["kernel_size"] == 15


def test_status_note_carries_the_fit_warning():
    """A run whose kernel does not explain the image says so in the widget's end-of-run note,
    next to the size warning."""
    from napari_glkm._widgets._deblur import _photo_note

    info = {"kernel_size": 31, "kernel_size_mode": "auto", "noise_sigma": 0.003,
            "fit_note": "the kernel estimate does not explain the image"}
    text = _photo_note(info)
    assert text.startswith("Kernel 31 px (auto), noise 0.3%.")
    assert "Warning: the kernel estimate does not explain the image." in text
    info["kernel_size_note"] = "the blur may be larger than 31 px"
    assert _photo_note(info).count("Warning:") == 2
    del info["fit_note"], info["kernel_size_note"]
    assert "Warning" not in _photo_note(info)
