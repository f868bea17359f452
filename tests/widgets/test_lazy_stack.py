"""A dask-backed stack layer is deblurred frame by frame into a Zarr store and shown through
lazy layers; the input is never loaded whole; a second run resumes from the store."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
da = pytest.importorskip("dask.array")
pytest.importorskip("zarr")

from napari_glkm import deblur_stack  # noqa: E402
from napari_glkm._sample_data import blurred_sample  # noqa: E402
from widget_helpers import deblur_widget, wait_done  # noqa: E402

pytestmark = pytest.mark.gui
OPTS = dict(preset="fast", iterations=1, kernel_size=15, kernel_prior="free", seed=0)


def test_dask_layer_gives_a_lazy_zarr_backed_result(make_napari_viewer, qtbot, tmp_path,
                                                    monkeypatch):
    monkeypatch.setenv("NAPARI_GLKM_CACHE_DIR", str(tmp_path / "cache"))
    blurry = blurred_sample("camera").blurry
    stack = np.stack([blurry[200 + 8 * i: 280 + 8 * i, 180:260] for i in range(3)])
    lazy = da.from_array(stack, chunks=(1, 80, 80))
    real_array = da.Array.__array__

    def guarded(self, *args, **kwargs):
        if self.name == lazy.name:
            raise AssertionError("the whole input stack was loaded")
        return real_array(self, *args, **kwargs)

    monkeypatch.setattr(da.Array, "__array__", guarded)
    viewer = make_napari_viewer()
    layer = viewer.add_image(lazy, name="big movie", scale=(2.0, 0.5, 0.5))
    w = deblur_widget(viewer, preview_every=None)
    worker = w.start()
    assert worker is not None
    assert "big movie deblurred (running)" in viewer.layers  # shown before any frame is done
    wait_done(qtbot, w, worker)

    out, kern = viewer.layers["big movie deblurred"], viewer.layers["big movie kernel"]
    assert isinstance(out.data, da.Array) and isinstance(kern.data, da.Array)
    assert out.data.shape == (3, 80, 80) and kern.data.shape == (3, 15, 15)
    np.testing.assert_allclose(out.scale, layer.scale)
    meta = out.metadata["napari_glkm"]
    assert meta["frames_done"] == 3 and not meta["partial"] and meta["warm_start"] == [False, True, True]
    zarr_path = meta["zarr"]
    assert zarr_path.startswith(str(tmp_path / "cache" / "stacks"))
    ref = deblur_stack(stack, **OPTS)
    np.testing.assert_allclose(np.asarray(out.data), ref.images, atol=1e-6)
    np.testing.assert_allclose(np.asarray(kern.data), ref.kernels, atol=1e-7)
    assert layer.data is lazy

    # the same run again finds every frame in the store: nothing is recomputed
    viewer.layers.remove(out)
    viewer.layers.remove(kern)
    worker = w.start()
    wait_done(qtbot, w, worker)
    again = viewer.layers["big movie deblurred"]
    assert again.metadata["napari_glkm"]["zarr"] == zarr_path
    assert again.metadata["napari_glkm"]["frame_seconds"] == [None, None, None]
    np.testing.assert_allclose(np.asarray(again.data), ref.images, atol=1e-6)
