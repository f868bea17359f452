"""Memory planning before any allocation, and the GPU out-of-memory fallback.

A run's peak memory is dominated by a handful of full-size arrays (the float32 copy of the input,
the luminance, the noise-reduced luminance used to pick the kernel-estimation crop, the
restored image) plus the working set of the final non-blind deconvolution. The kernel itself is
estimated on a crop of at most ``PyramidConfig.max_side`` pixels, so it costs a constant.

The final deconvolution works on the whole image at once up to :data:`TILE_PIXELS` pixels and on
overlapping tiles above that (:func:`~napari_glkm.backend.nonblind.sparse_deconv_tiled`), so
its working set stops growing with the image. :func:`estimate_peak_bytes` models this with
constants measured by ``benchmarks/memory.py`` (peak resident memory of real runs, 2-core CPU,
torch 2.13); the model is deliberately on the high side. :func:`check_memory` compares it with
the memory the machine has free *before* the image is copied, and refuses with a message that
says how much is needed and what to do.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator

import torch

__all__ = [
    "TILE_PIXELS", "available_memory", "estimate_peak_bytes", "check_memory", "with_oom_fallback",
    "is_out_of_memory",
]

#: Images with more pixels than this are restored tile by tile (the result differs from the
#: untiled restoration by far less than a grey level; see tests/backend/test_nonblind.py).
TILE_PIXELS = 2048 * 2048

# Measured constants (benchmarks/memory.py; bytes). Fixed cost: torch, the networks, the crop.
BASE_BYTES = 600 * 2**20
# Per pixel and channel while the whole image is deconvolved at once (FFTs, CG vectors, IRLS
# weights, in float32 and complex64).
DECONV_BYTES_PER_SAMPLE = 150
# Per pixel and channel for the full-size arrays that exist whatever the tiling.
ARRAY_BYTES_PER_SAMPLE = 24
# Per pixel for the luminance, its noise estimate and the crop search (float64 temporaries).
LUMINANCE_BYTES_PER_PIXEL = 56
# Tile working set: tiles are 1024 px plus margins.
TILE_SIDE = 1024


def available_memory() -> int | None:
    """Bytes of memory available to this process now (Linux ``MemAvailable``, else the physical
    free pages), or ``None`` when the platform does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def estimate_peak_bytes(height: int, width: int, channels: int, kernel_size: int = 31) -> int:
    """Upper estimate of a run's peak memory (bytes) for an ``height x width`` image with
    ``channels`` colour channels (alpha excluded)."""
    pixels = int(height) * int(width)
    samples = pixels * int(channels)
    if pixels > TILE_PIXELS:
        margin = 3 * int(kernel_size)
        deconv = (TILE_SIDE + 2 * margin) ** 2 * channels * DECONV_BYTES_PER_SAMPLE
    else:
        deconv = samples * DECONV_BYTES_PER_SAMPLE
    return int(BASE_BYTES + deconv + samples * ARRAY_BYTES_PER_SAMPLE
               + pixels * LUMINANCE_BYTES_PER_PIXEL)


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB"


def check_memory(height: int, width: int, channels: int, kernel_size: int = 31,
                 limit: int | None = None) -> int:
    """Raise ``ValueError`` if a run would not fit in memory; return the estimate (bytes).

    ``limit`` defaults to 90 % of :func:`available_memory` (no check when that is unknown).
    The environment variable ``NAPARI_GLKM_MEMORY_LIMIT_GB`` overrides it (e.g. on a shared
    node where a job may only use part of the machine).
    """
    need = estimate_peak_bytes(height, width, channels, kernel_size)
    env = os.environ.get("NAPARI_GLKM_MEMORY_LIMIT_GB")
    if limit is None and env:
        try:
            limit = int(float(env) * 2**30)
        except ValueError:
            raise ValueError(f"NAPARI_GLKM_MEMORY_LIMIT_GB must be a number, got {env!r}") from None
    if limit is None:
        free = available_memory()
        limit = None if free is None else int(0.9 * free)
    if limit is not None and need > limit:
        raise ValueError(
            f"a {height} x {width} image with {channels} channel(s) needs about {_gb(need)} of "
            f"memory to deblur, but only {_gb(limit)} is available; crop it to the region you "
            f"need or downscale it (e.g. image[::2, ::2]) and try again"
        )
    return need


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the out-of-memory errors of CUDA/MPS (and torch's generic one)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def with_oom_fallback(start: Callable[[torch.device], Iterator], device: torch.device,
                      fallback: torch.device = torch.device("cpu")) -> Iterator:
    """Run the generator ``start(device)``; if the accelerator runs out of memory, warn, free its
    cache and run ``start(fallback)`` from the beginning (the snapshots already seen stay valid
    but are superseded). On the CPU itself an out-of-memory error is not caught."""
    try:
        yield from start(device)
        return
    except Exception as exc:
        if device.type == "cpu" or not is_out_of_memory(exc):
            raise
    if device.type == "cuda":
        torch.cuda.empty_cache()
    warnings.warn(f"{device.type} ran out of memory; running again on the {fallback.type}",
                  RuntimeWarning, stacklevel=2)
    yield from start(fallback)
