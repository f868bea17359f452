"""Stacks out of core: Zarr output frame by frame, resume after an interruption, lazy dask
inputs read chunk by chunk, OME-Zarr / OME-TIFF metadata kept, clear errors."""

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")
pytest.importorskip("ome_zarr")

import napari_glkm.backend.outofcore as outofcore  # noqa: E402
from napari_glkm import deblur_stack, open_stack  # noqa: E402
from napari_glkm.backend.stack import deblur_stack as in_memory_stack  # noqa: E402
from napari_glkm.backend.stack_io import ZarrStackOutput, write_ome_tiff  # noqa: E402

FAST = dict(preset="fast", iterations=1, kernel_size=15, kernel_prior="free")


def _stack(n=4, side=64, seed=0):
    """n frames of smoothed noise (texture the kernel stage can lock onto)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.random((side + 4 * n, side + 4 * n)), 1.5)
    frames = np.stack([base[2 * i: 2 * i + side, i: i + side] for i in range(n)])
    frames = (frames - frames.min()) / (frames.max() - frames.min())
    return frames.astype(np.float32)


def _spy_frames(monkeypatch) -> list:
    """Replace the solver in outofcore by one that records each frame it finishes."""
    finished = []
    real = outofcore.iter_deblur

    def spy(image, **kw):
        run = real(image, **kw)

        def steps():
            for step in run:
                if step.final:
                    finished.append(float(image.mean()))
                yield step
        return steps()

    monkeypatch.setattr(outofcore, "iter_deblur", spy)
    return finished


def test_numpy_in_memory_matches_the_stack_module():
    frames = _stack(3)
    before = frames.copy()
    res = deblur_stack(frames, **FAST)
    ref = in_memory_stack(frames, **FAST)
    np.testing.assert_array_equal(frames, before)
    np.testing.assert_array_equal(res.images, ref.images)
    np.testing.assert_array_equal(res.kernels, ref.kernels)
    assert res.warm_start == [False, True, True] and res.frames == [0, 1, 2]
    assert res.output is None and res.skipped == []
    # a given starting kernel seeds the first frame, as in the in-memory stack module
    seeded = deblur_stack(frames[:2], init_kernel=ref.kernels[2], **FAST)
    assert seeded.warm_start == [True, True]
    np.testing.assert_array_equal(
        seeded.images, in_memory_stack(frames[:2], init_kernel=ref.kernels[2], **FAST).images)


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch):
    frames = _stack(4)
    full = deblur_stack(frames, out=tmp_path / "full.zarr", **FAST)
    assert full.frames == [0, 1, 2, 3] and full.warm_start == [False, True, True, True]

    # "interrupt" a second run after k = 2 finished frames (the third is in flight)
    k, finals = 2, 0
    run = outofcore.iter_deblur_frames(frames, out=tmp_path / "cut.zarr", **FAST)
    for s in run:
        if s.step.final:
            finals += 1
        elif finals == k:
            break  # stop inside frame k
    run.close()
    cut = ZarrStackOutput.open(tmp_path / "cut.zarr", mode="r")
    assert cut.done().tolist() == [True, True, False, False]
    assert not np.any(np.asarray(cut.images[2]))  # the frame in flight left nothing

    finished = _spy_frames(monkeypatch)
    res = deblur_stack(frames, out=tmp_path / "cut.zarr", **FAST)
    assert res.skipped == [0, 1] and res.frames == [2, 3]
    assert len(finished) == 2  # frames 0 and 1 were not recomputed
    assert res.warm_start == [True, True]  # frame 2 warm-started from frame 1's stored kernel
    np.testing.assert_array_equal(np.asarray(res.images), np.asarray(full.images))
    np.testing.assert_array_equal(np.asarray(res.kernels), np.asarray(full.kernels))
    np.testing.assert_allclose(np.asarray(full.images), in_memory_stack(frames, **FAST).images)


def test_lazy_dask_stack_is_read_chunk_by_chunk(tmp_path, monkeypatch):
    """10^7 frames of 64 x 64 (164 GB) generated on demand; only the chunk holding the two
    selected frames may ever be computed, and never the whole array."""
    n, per_chunk, side = 10**7, 100, 64
    calls = []

    def make(block_info=None):
        loc = block_info[None]["array-location"][0]
        calls.append(loc)
        rng = np.random.default_rng(loc[0])
        return rng.random((loc[1] - loc[0], side, side)).astype(np.float32)

    huge = da.map_blocks(make, chunks=((per_chunk,) * (n // per_chunk), (side,), (side,)),
                         dtype=np.float32, meta=np.empty((0, 0, 0), np.float32))
    real_array = da.Array.__array__

    def guarded(self, *args, **kwargs):
        if self.shape[0] == n:
            raise AssertionError("np.asarray was called on the whole stack")
        return real_array(self, *args, **kwargs)

    monkeypatch.setattr(da.Array, "__array__", guarded)
    res = deblur_stack(huge, frames=[205, 206], out=tmp_path / "huge.zarr", **FAST)
    assert res.frames == [205, 206] and res.images.shape == (n, side, side)
    assert calls and all(loc == (200, 300) for loc in calls)
    assert len(calls) <= 2
    out = ZarrStackOutput.open(tmp_path / "huge.zarr", mode="r")
    assert out.done([204, 205, 206, 207]).tolist() == [False, True, True, False]
    frame205 = np.random.default_rng(200).random((100, side, side)).astype(np.float32)[5]
    np.testing.assert_array_equal(out.frame(205), deblur_stack(frame205[None], **FAST).images[0])


def test_ome_zarr_input_keeps_axes_and_pixel_sizes(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr.writer import write_image

    frames = _stack(2)
    src = tmp_path / "in.ome.zarr"
    write_image(frames[:, None], zarr.open_group(str(src), mode="w"), axes="tcyx",
                scale_factors=(), scale={"t": 2.0, "c": 1.0, "y": 0.5, "x": 0.25},
                axes_units={"y": "micrometer", "x": "micrometer"})
    data, meta = open_stack(src)
    assert meta.axes == "tcyx" and meta.scale == (2.0, 1.0, 0.5, 0.25)
    res = deblur_stack(src, axis="t", out=tmp_path / "out.ome.zarr", **FAST)
    assert res.images.shape == (2, 1, 64, 64)
    np.testing.assert_array_equal(np.asarray(res.images)[:, 0], deblur_stack(frames, **FAST).images)
    node = list(Reader(parse_url(str(tmp_path / "out.ome.zarr")))())[0]
    assert [a["name"] for a in node.metadata["axes"]] == ["t", "c", "y", "x"]
    assert node.metadata["axes"][-1]["unit"] == "micrometer"
    assert node.metadata["coordinateTransformations"][0][0]["scale"] == [2.0, 1.0, 0.5, 0.25]
    np.testing.assert_array_equal(np.asarray(open_stack(src)[0])[:, 0], frames)  # untouched


def test_ome_tiff_in_and_out_keeps_axes_and_physical_sizes(tmp_path):
    import tifffile

    frames = (_stack(3) * 60000).astype(np.uint16)
    src = tmp_path / "in.ome.tif"
    tifffile.imwrite(src, frames, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "PhysicalSizeZ": 1.5,
        "PhysicalSizeXUnit": "µm"})
    data, meta = open_stack(src)
    assert meta.axes == "zyx" and meta.scale == (1.5, 0.25, 0.25)
    res = deblur_stack(src, axis="z", out=tmp_path / "out.zarr", **FAST)
    out = ZarrStackOutput.open(tmp_path / "out.zarr", mode="r")
    path = write_ome_tiff(tmp_path / "out.ome.tif", out, meta)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].shape == (3, 64, 64)
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        back = tif.asarray()
    assert pixels["PhysicalSizeX"] == 0.25 and pixels["PhysicalSizeZ"] == 1.5
    assert back.dtype == np.float32 and back.max() > 1000  # the input's value range
    np.testing.assert_array_equal(back, np.asarray(res.images))
    with pytest.raises(ValueError, match="exists"):
        write_ome_tiff(path, out, meta)


def test_existing_outputs_are_protected(tmp_path):
    frames = _stack(2)
    deblur_stack(frames, out=tmp_path / "o.zarr", **FAST)
    with pytest.raises(ValueError, match="other settings"):
        deblur_stack(frames, out=tmp_path / "o.zarr", **dict(FAST, seed=3))
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a napari-glkm stack output"):
        deblur_stack(frames, out=folder, **FAST)
    with pytest.raises(ValueError, match="not a Zarr store"):
        deblur_stack(frames, out=folder, overwrite=True, **FAST)
    assert (folder / "keep.txt").read_text() == "mine"
    res = deblur_stack(frames, out=tmp_path / "o.zarr", overwrite=True, **dict(FAST, seed=3))
    assert res.frames == [0, 1] and res.skipped == []


@pytest.mark.parametrize("data, kwargs, match", [
    (np.zeros((2, 3, 64, 64), np.float32), {}, "axes"),
    (np.zeros((2, 64, 64), np.float32), {"axis": 3}, "axis must be"),
    (np.zeros((2, 64, 64), np.float32), {"axis": "t"}, "not one of the input's axes"),
    (np.zeros((2, 64, 64), np.float32), {"frames": [0, 5]}, "outside the stack"),
    (np.zeros((2, 64, 64), np.float32), {"frames": ["a"]}, "frames must be"),
    (np.zeros((2, 64, 64), np.float32), {"chunk_frames": 0}, "chunk_frames"),
    (np.zeros((2, 64, 64), np.float32), {"preset": "turbo"}, "preset"),
    (np.full((2, 64, 64), np.nan, np.float32), {}, "NaN"),
    ("no such file.zarr", {}, "not found"),
])
def test_bad_input_raises_clear_errors(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        deblur_stack(data, **dict(FAST, **kwargs))


def test_missing_optional_dependency_names_the_extra(tmp_path, monkeypatch):
    import importlib

    real = importlib.import_module

    def no_zarr(name, *args):
        if name.split(".")[0] == "zarr":
            raise ImportError("No module named 'zarr'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_zarr)
    with pytest.raises(ImportError, match=r"napari-glkm\[stacks\]"):
        deblur_stack(_stack(2), out=tmp_path / "o.zarr", **FAST)


def test_colour_stack_and_output_over_the_input_refused(tmp_path):
    frames = _stack(2)
    rgb = np.stack([frames, frames * 0.8, frames * 0.6], axis=-1)
    res = deblur_stack(da.from_array(rgb, chunks=(1, 64, 64, 3)), out=tmp_path / "rgb.zarr",
                       **FAST)
    assert res.images.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(np.asarray(res.images), deblur_stack(rgb, **FAST).images,
                               atol=1e-6)
    src = tmp_path / "in.zarr"
    zarr.create_array(str(src), data=frames, chunks=(1, 64, 64))
    for out in (src, src / "inside.zarr"):
        with pytest.raises(ValueError, match="refusing to write over the input"):
            deblur_stack(str(src), out=out, **FAST)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(str(src), mode="r")), frames)


def test_auto_kernel_size_is_decided_once_for_a_zarr_output(tmp_path):
    """With the default kernel_size="auto" every frame, and the output's kernel array, gets the
    size the solver picks for the first frame (a per-frame choice would not fit the array)."""
    from napari_glkm._sample_data import blurred_sample

    blurry = blurred_sample("camera").blurry
    frames = np.stack([blurry[100 + 3 * i: 196 + 3 * i, 120: 216] for i in range(3)])
    opts = {k: v for k, v in FAST.items() if k != "kernel_size"}
    res = deblur_stack(frames, out=tmp_path / "auto.zarr", **opts)
    size = outofcore._auto_kernel_size(frames[0], dict(opts))
    assert res.kernels.shape == (3, size, size)
    assert size in (15, 23, 31)
