"""Numerical safety and resources: non-finite steps undone, the OOM fallback, the memory model,
tiled deconvolution, determinism."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from napari_glkm import iter_deblur
from napari_glkm._sample_data import blurred_sample
from napari_glkm.backend import kernel_prior, solver, stages
from napari_glkm.backend.blur import conv_same
from napari_glkm.backend.metrics import psnr
from napari_glkm.backend.nonblind import sparse_deconv, sparse_deconv_tiled
from napari_glkm.backend.resources import (
    TILE_PIXELS, check_memory, estimate_peak_bytes, with_oom_fallback,
)
from napari_glkm.backend.safety import DivergenceError, DivergenceGuard

FAST = dict(kernel_size=15, preset="fast", iterations=2, init="random")


def _image() -> np.ndarray:
    return blurred_sample("camera").blurry[180:276, 160:256].copy()


# --- the guard -----------------------------------------------------------------------------

def test_guard_undoes_a_nan_step_and_lowers_the_learning_rate():
    p = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = torch.optim.Adam([p], lr=0.5)
    guard = DivergenceGuard()
    calls = {"n": 0}

    def loss():
        calls["n"] += 1
        value = (p**2).sum()
        return value * float("nan") if calls["n"] == 3 else value

    for it in range(40):
        before = p.detach().clone()
        out = guard.step("test", it, opt, loss)
        if it == 2:
            assert out is None
            torch.testing.assert_close(p.detach(), before)  # the bad step left no trace
    assert [e["stage"] for e in guard.events] == ["test"]
    assert guard.events[0]["iteration"] == 2 and opt.param_groups[0]["lr"] == pytest.approx(0.25)
    assert torch.isfinite(p).all() and float((p**2).sum()) < 1.0  # and it kept converging


def test_guard_gives_up_with_a_clear_error():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    guard = DivergenceGuard(max_retries=3)
    with pytest.raises(DivergenceError, match="NaN/Inf"):
        for it in range(10):
            guard.step("dip", it, opt, lambda: p.sum() * float("inf") - p.sum() * float("inf"))
    assert len(guard.events) == 4 and torch.equal(p.detach(), torch.ones(3))


def test_nan_in_the_glkm_projection_is_recovered(monkeypatch):
    real = kernel_prior.GeneratorKernelPrior.forward
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        k = real(self)
        return k * float("nan") if 5 <= calls["n"] <= 7 else k

    monkeypatch.setattr(kernel_prior.GeneratorKernelPrior, "forward", flaky)
    *_, last = iter_deblur(_image(), **FAST)
    assert np.all(np.isfinite(last.image)) and np.all(np.isfinite(last.kernel))
    stages_hit = {e["stage"] for e in last.info["recovered"]}
    assert stages_hit == {"glkm"} and len(last.info["recovered"]) == 3


def test_nan_kernel_update_is_rolled_back(monkeypatch):
    real = stages.least_squares_kernel
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        return out * float("nan") if calls["n"] == 4 else out

    monkeypatch.setattr(stages, "least_squares_kernel", flaky)
    *_, last = iter_deblur(_image(), kernel_prior="free", **FAST)
    assert np.all(np.isfinite(last.image))
    assert [e["stage"] for e in last.info["recovered"]] == ["kernel"]


def test_non_finite_restoration_falls_back_to_wiener(monkeypatch):
    monkeypatch.setattr(solver, "sparse_deconv",
                        lambda y, k, **kw: torch.full_like(y, float("nan")))
    *_, last = iter_deblur(_image(), kernel_prior="free", **FAST)
    assert np.all(np.isfinite(last.image))
    assert last.info["recovered"][-1]["stage"] == "final"
    assert np.abs(last.image - _image()).mean() > 1e-3  # a deconvolution, not the input


def test_healthy_run_reports_no_recovery_and_is_deterministic():
    img = _image()
    *_, a = iter_deblur(img, seed=3, **FAST)
    *_, b = iter_deblur(img, seed=3, **FAST)
    assert a.info["recovered"] == []
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.kernel, b.kernel)


# --- out of memory -------------------------------------------------------------------------

def test_gpu_out_of_memory_falls_back_to_the_cpu():
    seen = []

    def start(dev):
        seen.append(dev.type)
        if dev.type == "cuda":
            yield "first snapshot on the GPU"
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield "cpu result"

    with pytest.warns(RuntimeWarning, match="ran out of memory"):
        out = list(with_oom_fallback(start, torch.device("cuda")))
    assert seen == ["cuda", "cpu"] and out[-1] == "cpu result"


def test_other_errors_and_cpu_oom_are_not_swallowed():
    def boom(dev):
        raise RuntimeError("something else")
        yield

    with pytest.raises(RuntimeError, match="something else"):
        list(with_oom_fallback(boom, torch.device("cuda")))

    def cpu_oom(dev):
        raise torch.OutOfMemoryError("out of memory")
        yield

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(torch.OutOfMemoryError):
            list(with_oom_fallback(cpu_oom, torch.device("cpu")))


# --- memory model ----------------------------------------------------------------------------

def test_memory_model_grows_with_the_image_and_refuses_before_allocating(monkeypatch):
    small = estimate_peak_bytes(512, 512, 1)
    big = estimate_peak_bytes(2048, 2048, 3)
    assert small < big
    # Above TILE_PIXELS the deconvolution's working set stops growing: per-pixel cost drops.
    side = int(TILE_PIXELS**0.5)
    per_px_untiled = estimate_peak_bytes(side, side, 1) / side**2
    per_px_tiled = estimate_peak_bytes(4 * side, 4 * side, 1) / (16 * side**2)
    assert per_px_tiled < 0.5 * per_px_untiled
    with pytest.raises(ValueError, match="needs about .* GB .* only 1.0 GB"):
        check_memory(20000, 20000, 3, limit=2**30)
    assert check_memory(256, 256, 1, limit=2**34) > 0
    monkeypatch.setenv("NAPARI_GLKM_MEMORY_LIMIT_GB", "0.5")
    with pytest.raises(ValueError, match="only 0.5 GB"):
        iter_deblur(np.zeros((3000, 3000), np.float32), kernel_size=15)


def test_20000_square_image_is_refused_before_its_values_are_read(monkeypatch):
    # A constant array would be refused as "constant" if its values were read first.
    huge = np.broadcast_to(np.zeros((1, 1), np.uint8), (20000, 20000))
    monkeypatch.setenv("NAPARI_GLKM_MEMORY_LIMIT_GB", "8")
    with pytest.raises(ValueError, match="20000 x 20000 image .* needs about"):
        iter_deblur(huge, kernel_size=31)


# --- tiled deconvolution ---------------------------------------------------------------------

def test_tiled_deconvolution_matches_the_whole_image():
    sample = blurred_sample("camera")
    sharp = torch.from_numpy(sample.sharp[:300, :260].copy())[None, None]
    k = torch.from_numpy(sample.kernel)[None, None].to(sharp.dtype)
    k15 = torch.nn.functional.interpolate(k, size=(15, 15), mode="area")
    k15 = k15 / k15.sum()
    y = conv_same(sharp, k15)
    whole = sparse_deconv(y, k15)
    tiled = sparse_deconv_tiled(y, k15, tile=128, blend=16)
    assert tiled.shape == whole.shape
    inner = (..., slice(20, -20), slice(20, -20))
    assert psnr(tiled[inner], whole[inner]) > 40.0  # seams and tile borders are invisible
    assert psnr(tiled[inner], sharp[inner]) > psnr(y[inner], sharp[inner]) + 3.0


def test_large_image_final_step_reports_tiles_and_stops_between_them(monkeypatch):
    """Above TILE_PIXELS the final deconvolution runs tile by tile, yielding in between, so a
    cancel (closing the generator) takes effect within one tile, not after the whole image."""
    monkeypatch.setattr(solver, "TILE_PIXELS", 64 * 64)
    monkeypatch.setattr(solver, "TILE_SIDE", 64)
    img = blurred_sample("camera").blurry[100:250, 100:250].copy()
    steps = iter_deblur(img, kernel_prior="free", **FAST)
    tiles = []
    for step in steps:
        if "final_tiles" in step.info and not step.final:
            tiles.append(step.info["final_tiles"])
            if len(tiles) == 2:
                break
    steps.close()  # cancel between tiles
    assert tiles == [(1, 16), (2, 16)]  # 150 px = 4 spans of <= 64 px overlapping by 32
    with pytest.raises(StopIteration):
        next(steps)
    # and an uninterrupted tiled run gives a finite image close to the untiled one
    *_, tiled = iter_deblur(img, kernel_prior="free", **FAST)
    monkeypatch.undo()
    *_, whole = iter_deblur(img, kernel_prior="free", **FAST)
    np.testing.assert_array_equal(tiled.kernel, whole.kernel)
    inner = (slice(20, -20), slice(20, -20))
    assert psnr(torch.from_numpy(tiled.image[inner]), torch.from_numpy(whole.image[inner])) > 35
