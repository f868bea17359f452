"""Plugin packaging: the npe2 manifest validates, samples carry their true kernel, and importing
the package or its backend loads no Qt."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

from napari_glkm import _sample_data


def test_manifest_validates():
    npe2 = pytest.importorskip("npe2")
    path = resources.files("napari_glkm") / "napari.yaml"
    res = subprocess.run([sys.executable, "-m", "npe2", "validate", str(path)],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "valid" in res.stdout, res.stdout + res.stderr
    manifest = npe2.PluginManifest.from_file(str(path))
    manifest.validate_imports()  # every python_name resolves
    ids = {c.id for c in manifest.contributions.commands}
    assert {w.command for w in manifest.contributions.widgets} <= ids
    assert {s.key for s in manifest.contributions.sample_data} == {
        "camera", "astronaut", "cell", "lights", "lowlight", "coffee"}
    assert [m.command for m in manifest.contributions.menus["napari/layers/filter"]] == [
        "napari-glkm.deblur_widget"]


def test_import_loads_no_qt():
    code = ("import sys, napari_glkm, napari_glkm.backend.stack, napari_glkm._sample_data; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'qtpy', 'napari', 'magicgui')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("fn, rgb", [(_sample_data.camera_sample, False),
                                     (_sample_data.astronaut_sample, True),
                                     (_sample_data.cell_sample, False),
                                     (_sample_data.lights_sample, True),
                                     (_sample_data.lowlight_sample, False),
                                     (_sample_data.coffee_sample, True)])
def test_samples_are_blurred_image_plus_true_kernel(fn, rgb):
    (img, img_kw, img_type), (k, k_kw, k_type) = fn()
    assert img_type == k_type == "image"
    assert img.dtype == np.float32 and (img.ndim == 3) == rgb and img_kw["rgb"] == rgb
    assert "blurred" in img_kw["name"] and "true kernel" in k_kw["name"]
    assert k.shape == (31, 31) and abs(float(k.sum()) - 1.0) < 1e-4
