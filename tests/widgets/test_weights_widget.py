"""Weights panel: shipped list, user files, device choice, remembered settings."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


from napari_glkm.backend.weights import load_generator, save_state_dict  # noqa: E402
from napari_glkm._widgets._deblur import DeblurWidget  # noqa: E402
from napari_glkm._widgets._state import available_devices, settings_path, state_for  # noqa: E402
from napari_glkm._widgets._weights import WeightsWidget  # noqa: E402

pytestmark = pytest.mark.gui




def test_lists_shipped_weights_and_present_devices(make_napari_viewer):
    viewer = make_napari_viewer()
    w = WeightsWidget(viewer)
    texts = [w.shipped.item(i).text() for i in range(w.shipped.count())]
    assert any("generator_31" in t and "31 px" in t and "camera-shake" in t for t in texts)
    devices = [w.device.itemText(i) for i in range(w.device.count())]
    assert devices == available_devices() and devices[:2] == ["auto", "cpu"]
    assert "generator_31 (shipped)" in w.loaded.text()


def test_user_file_is_used_and_remembered(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    path = tmp_path / "my_generator.safetensors"
    save_state_dict(load_generator(31).state_dict(), path)
    w = WeightsWidget(viewer)
    deblur = DeblurWidget(viewer)
    deblur.kernel_size.setValue(21)
    w.device.setCurrentText("cpu")
    assert deblur.kernel_size.value() == 21  # a device change keeps the chosen kernel size
    assert w.load_file(path)
    state = state_for(viewer)
    assert state.weights == str(path) and state.weights_kernel_size == 31
    assert "my_generator.safetensors" in w.loaded.text()
    assert "my_generator.safetensors" in deblur.weights_label.text()
    opts = deblur.options()
    assert opts["weights"] == str(path) and opts["device"] == "cpu"
    saved = json.loads(settings_path().read_text())
    assert saved == {"device": "cpu", "weights": str(path)}
    # a new viewer starts from the remembered choices
    other = make_napari_viewer()
    w2 = WeightsWidget(other)
    assert w2.device.currentText() == "cpu" and state_for(other).weights == str(path)
    # and going back to the shipped weights is remembered too
    w2.use_shipped("generator_31")
    assert state_for(other).weights is None
    assert json.loads(settings_path().read_text())["weights"] is None


def test_bad_file_is_refused_with_a_notification(make_napari_viewer, tmp_path, notifications):
    viewer = make_napari_viewer()
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    w = WeightsWidget(viewer)
    assert not w.load_file(bad)
    assert state_for(viewer).weights is None
    assert any("Could not load weights" in str(n.message) for n in notifications)



def test_hostile_pickle_is_refused_without_running(make_napari_viewer, hostile_pth,
                                                   notifications):
    viewer = make_napari_viewer()
    evil, marker = hostile_pth
    w = WeightsWidget(viewer)
    assert not w.load_file(evil)
    assert not marker.exists() and state_for(viewer).weights is None
    assert any("refused" in str(n.message) for n in notifications)
