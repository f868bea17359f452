"""GPU path (issue 7): ``device="auto"`` picks the GPU, and the GPU gives the CPU's results
within tolerance. Skipped on machines without CUDA or MPS (the project's CI has none); run
``pytest tests/backend/test_gpu.py`` on a GPU machine."""

import numpy as np
import pytest
import torch

from napari_glkm import deblur
from napari_glkm.backend.metrics import aligned_psnr_ssim
from napari_glkm.backend.nonblind import sparse_deconv
from napari_glkm.backend.solver import resolve_device

from test_solver import _kernel_l1, _synthetic  # pytest puts tests/backend on sys.path


def _gpu() -> str | None:
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else None


GPU = _gpu()
pytestmark = pytest.mark.skipif(GPU is None, reason="no CUDA or MPS device")


def test_auto_device_is_the_gpu():
    assert resolve_device("auto").type == GPU


def test_final_step_matches_the_cpu():
    """The non-blind step is a well-conditioned solve: the same numbers up to float32 rounding."""
    blurry, _, k = _synthetic()
    y = torch.from_numpy(blurry)[None, None]
    kt = torch.from_numpy(k.astype(np.float32))[None, None]
    cpu = sparse_deconv(y, kt, lam=2e-3)
    gpu = sparse_deconv(y.to(GPU), kt.to(GPU), lam=2e-3).cpu()
    assert float((cpu - gpu).abs().max()) < 2e-3


def test_blind_run_matches_the_cpu():
    """The blind estimate is iterative and sensitive to rounding, so the two devices need not
    agree bit for bit; they must agree on the kernel and on the quality."""
    blurry, truth, _ = _synthetic()
    cpu = deblur(blurry, preset="fast", kernel_size=31, seed=0, device="cpu")
    gpu = deblur(blurry, preset="fast", kernel_size=31, seed=0, device=GPU)
    assert gpu.image.shape == cpu.image.shape and np.isfinite(gpu.image).all()
    assert _kernel_l1(gpu.kernel, cpu.kernel) < 0.3
    p_cpu = aligned_psnr_ssim(np.clip(cpu.image, 0, 1), truth)["psnr"]
    p_gpu = aligned_psnr_ssim(np.clip(gpu.image, 0, 1), truth)["psnr"]
    assert abs(p_gpu - p_cpu) < 0.5, (p_cpu, p_gpu)
