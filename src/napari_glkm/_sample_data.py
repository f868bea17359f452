"""Blurred sample images made from redistributable sharp images and shipped motion kernels.

Sharp images come from scikit-image's bundled data (no download): ``camera`` (gray photo),
``astronaut`` (colour photo) and ``cell`` (a microscopy image). Each is blurred by one of the
kernels in ``data/sample_kernels.npy`` (made by our trajectory model, seed 2026) with
reflective borders, and 1% Gaussian noise is added with a fixed seed, so samples are identical
everywhere. Kernels follow the cross-correlation convention of the solver.

Three *photo* samples imitate what real cameras add (see docs/photos.md):

* ``lights`` — ``astronaut`` as a dusk shot: darkened, with a dozen bright point lights whose
  blur streaks are clipped at the sensor's maximum (blur, then clip, then 8-bit rounding);
* ``lowlight`` — ``camera`` underexposed (35 % of the range) with 4 % Gaussian noise;
* ``coffee`` — the colour ``coffee`` photo with 1 % noise.

The functions returning napari layer-data tuples import nothing from napari.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
from skimage import data as skdata

from .backend.blur import conv_same

__all__ = ["SAMPLES", "PHOTO_SAMPLES", "BlurredSample", "blurred_sample", "sample_kernels"]

# name -> (loader of the sharp image, index of its kernel in sample_kernels.npy)
SAMPLES = {
    "camera": (skdata.camera, 0),
    "astronaut": (skdata.astronaut, 1),
    "cell": (skdata.cell, 2),
}
NOISE_SIGMA = 0.01
# name -> (loader, kernel index, exposure gain, noise sigma, number of point lights)
PHOTO_SAMPLES = {
    "lights": (skdata.astronaut, 3, 0.55, 0.01, 12),
    "lowlight": (skdata.camera, 0, 0.35, 0.04, 0),
    "coffee": (skdata.coffee, 1, 1.0, 0.01, 0),
}


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


def _blur(sharp: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(sharp, dtype=np.float32))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    with torch.no_grad():
        y = conv_same(x, torch.from_numpy(kernel)[None, None], padding_mode="reflect")
    y = y[0].permute(1, 2, 0).numpy()
    return y[..., 0] if sharp.ndim == 2 else y


def blurred_sample(name: str = "camera") -> BlurredSample:
    """Make the blurred sample ``name`` (one of :data:`SAMPLES` or :data:`PHOTO_SAMPLES`).

    For ``lights`` the returned ``sharp`` image is the scene clipped to [0, 1] (the lights
    themselves are brighter than the sensor can record).
    """
    if name in PHOTO_SAMPLES:
        return _photo_sample(name)
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; expected one of "
                         f"{sorted(SAMPLES) + sorted(PHOTO_SAMPLES)}")
    loader, k_index = SAMPLES[name]
    sharp = loader()
    sharp = sharp.astype(np.float32) / (255.0 if sharp.dtype == np.uint8 else float(sharp.max()))
    kernel = sample_kernels()[k_index]
    y = _blur(sharp, kernel)
    rng = np.random.default_rng(7)
    y = np.clip(y + rng.normal(0.0, NOISE_SIGMA, size=y.shape), 0.0, 1.0).astype(np.float32)
    return BlurredSample(name, y, sharp, kernel)


def _photo_sample(name: str) -> BlurredSample:
    loader, k_index, gain, sigma, n_lights = PHOTO_SAMPLES[name]
    scene = loader().astype(np.float32) / 255.0 * gain
    rng = np.random.default_rng(11)
    if n_lights:  # 5x5 px lights, 6-30 times brighter than the sensor's maximum
        h, w = scene.shape[:2]
        for _ in range(n_lights):
            r, c = int(rng.integers(40, h - 40)), int(rng.integers(40, w - 40))
            tint = np.array([1.0, 0.85, 0.6], np.float32) if scene.ndim == 3 else 1.0
            scene[r - 2 : r + 3, c - 2 : c + 3] = float(rng.uniform(6, 30)) * tint
    kernel = sample_kernels()[k_index]
    y = _blur(scene, kernel)
    y = y + rng.normal(0.0, sigma, size=y.shape).astype(np.float32)
    y = np.round(np.clip(y, 0.0, 1.0) * 255) / 255  # the sensor clips, the file is 8-bit
    return BlurredSample(name, y.astype(np.float32), np.clip(scene, 0, 1), kernel)


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


def lights_sample() -> list[tuple]:
    """napari sample: blurred dusk photo with clipped point lights, and its true kernel."""
    return _layers("lights")


def lowlight_sample() -> list[tuple]:
    """napari sample: blurred, underexposed, noisy (4 %) photo and its true kernel."""
    return _layers("lowlight")


def coffee_sample() -> list[tuple]:
    """napari sample: blurred colour photo (coffee) and its true kernel."""
    return _layers("coffee")
