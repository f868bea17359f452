"""Blurred sample images made from redistributable sharp images and shipped motion kernels.

Sharp images come from scikit-image's bundled data (no download): ``camera`` (gray photo),
``astronaut`` (colour photo) and ``cell`` (a microscopy image). Each is blurred by one of the
kernels in ``data/sample_kernels.npy`` (made by our trajectory model, seed 2026) with
reflective borders, and 1% Gaussian noise is added with a fixed seed, so samples are identical
everywhere. Kernels follow the cross-correlation convention of the solver.

The functions returning napari layer-data tuples import nothing from napari.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
from skimage import data as skdata

from .backend.blur import conv_same

__all__ = ["SAMPLES", "BlurredSample", "blurred_sample", "sample_kernels"]

# name -> (loader of the sharp image, index of its kernel in sample_kernels.npy)
SAMPLES = {
    "camera": (skdata.camera, 0),
    "astronaut": (skdata.astronaut, 1),
    "cell": (skdata.cell, 2),
}
NOISE_SIGMA = 0.01


@dataclass
class BlurredSample:
    """A synthetic blurry image with its ground truth (float32 in [0, 1])."""

    name: str
    blurry: np.ndarray
    sharp: np.ndarray
    kernel: np.ndarray


def sample_kernels() -> np.ndarray:
    """The shipped ``(4, 31, 31)`` float32 sample kernels (each sums to 1)."""
    path = resources.files("napari_glkm") / "data" / "sample_kernels.npy"
    with path.open("rb") as fh:
        return np.load(fh, allow_pickle=False)


def blurred_sample(name: str = "camera") -> BlurredSample:
    """Make the blurred sample ``name`` (one of :data:`SAMPLES`)."""
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; expected one of {sorted(SAMPLES)}")
    loader, k_index = SAMPLES[name]
    sharp = loader()
    sharp = sharp.astype(np.float32) / (255.0 if sharp.dtype == np.uint8 else float(sharp.max()))
    kernel = sample_kernels()[k_index]
    x = torch.from_numpy(sharp)
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    with torch.no_grad():
        y = conv_same(x, torch.from_numpy(kernel)[None, None], padding_mode="reflect")
    y = y[0].permute(1, 2, 0).numpy()
    if sharp.ndim == 2:
        y = y[..., 0]
    rng = np.random.default_rng(7)
    y = np.clip(y + rng.normal(0.0, NOISE_SIGMA, size=y.shape), 0.0, 1.0).astype(np.float32)
    return BlurredSample(name, y, sharp, kernel)


def _layers(name: str) -> list[tuple]:
    s = blurred_sample(name)
    rgb = s.blurry.ndim == 3
    return [
        (s.blurry, {"name": f"{name} (blurred)", "rgb": rgb}, "image"),
        (s.kernel, {"name": f"{name} true kernel", "colormap": "magma", "visible": False}, "image"),
    ]


def camera_sample() -> list[tuple]:
    """napari sample: blurred gray photograph and its true kernel."""
    return _layers("camera")


def astronaut_sample() -> list[tuple]:
    """napari sample: blurred colour photograph and its true kernel."""
    return _layers("astronaut")


def cell_sample() -> list[tuple]:
    """napari sample: blurred microscopy image and its true kernel."""
    return _layers("cell")
