"""Training and test pairs for BKSE: synthetic (uniform and SVOLA) blurs and folders of real pairs.

Synthetic pairs: a random crop of a sharp luminance image (random flips and 90° rotations) is
blurred by a fresh trajectory kernel (:func:`~napari_glkm.backend.trajectories.motion_kernels`,
"same"-size cross-correlation with reflect padding) or, for a fraction of the batch, by a
``2 × 2`` SVOLA field of four independent kernels (:func:`~napari_glkm.backend.blur.svola_blur`,
non-uniform blur). No noise is added: ``F`` is a deterministic operator and should reproduce the
blur, not noise.

Real pairs are read from a folder in the GoPro layout: ``ROOT/sharp/NAME`` and ``ROOT/blur/NAME``
with matching file names, or any number of sub-folders of ``ROOT`` (sequences) each holding such a
``sharp``/``blur`` pair of folders. Images are read as float32 luminance in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..blur import conv_same, svola_blur, svola_windows
from ..trajectories import motion_kernels
from ..train.initializer import _read_luminance

__all__ = ["random_crops", "blur_uniform", "blur_svola", "synthetic_pairs", "load_pair_folder",
           "real_pair_crops", "heldout_pairs"]

_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    crop = np.rot90(crop, int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return crop


def random_crops(images: Sequence[np.ndarray], n: int, crop: int,
                 rng: np.random.Generator) -> torch.Tensor:
    """``n`` random ``crop × crop`` crops (flips, 90° rotations) -> ``(n, 1, crop, crop)``."""
    out = np.empty((n, 1, crop, crop), dtype=np.float32)
    for i in range(n):
        img = images[rng.integers(len(images))]
        r = rng.integers(img.shape[0] - crop + 1)
        q = rng.integers(img.shape[1] - crop + 1)
        out[i, 0] = _augment(img[r:r + crop, q:q + crop], rng)
    return torch.from_numpy(out)


def blur_uniform(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` blurred by ``(B, 1, k, k)`` kernels, same size, reflect borders."""
    return conv_same(x, kernels, padding_mode="reflect")


def blur_svola(x: torch.Tensor, kernels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """One image ``(1, C, H, W)`` blurred by a ``gy × gx`` SVOLA field ``(gy*gx, 1, k, k)``,
    same size (reflect-padded sharp image, windows over the blurry image's grid)."""
    k = kernels.shape[-1]
    p = k // 2
    mode = "reflect" if p < min(x.shape[-2:]) else "replicate"
    xp = F.pad(x, (p, p, p, p), mode=mode)
    windows, _ = svola_windows(tuple(x.shape[-2:]), grid, 0.5, pad=p, dtype=x.dtype)
    return svola_blur(xp, kernels.to(x.dtype), windows)


def synthetic_pairs(sharp: torch.Tensor, kernel_size: int, rng: np.random.Generator, *,
                    nonuniform_fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur each ``(1, H, W)`` image of ``sharp`` ``(B, 1, H, W)``: uniform or (with probability
    ``nonuniform_fraction``) a 2×2 SVOLA field. Returns ``(blurry, kernels (B, 4, k, k))``
    where a uniform blur repeats its kernel four times."""
    b = sharp.shape[0]
    kernels = torch.from_numpy(motion_kernels(4 * b, kernel_size, rng=rng)).reshape(
        b, 4, kernel_size, kernel_size)
    nonuni = rng.random(b) < nonuniform_fraction
    kernels[~torch.from_numpy(nonuni)] = kernels[~torch.from_numpy(nonuni), :1]
    with torch.no_grad():
        y = blur_uniform(sharp, kernels[:, :1])
        for i in np.nonzero(nonuni)[0]:
            y[i:i + 1] = blur_svola(sharp[i:i + 1], kernels[i][:, None], (2, 2))
    return y, kernels


def load_pair_folder(root: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read real ``(sharp, blurry)`` luminance pairs from a GoPro-style folder.

    Layout: ``ROOT/sharp/*`` and ``ROOT/blur/*`` with matching file names, or sub-folders of
    ``ROOT`` each with ``sharp/`` and ``blur/``. Raises ``ValueError`` when the folder has no such
    pairs, a name has no partner, or the two images of a pair differ in size.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"pair folder {str(root)!r} does not exist")
    dirs = [root] if (root / "sharp").is_dir() else sorted(
        d for d in root.iterdir() if (d / "sharp").is_dir())
    pairs = []
    for d in dirs:
        if not (d / "blur").is_dir():
            raise ValueError(f"{d / 'sharp'} has no sibling folder 'blur'")
        names = sorted(p.name for p in (d / "sharp").iterdir() if p.suffix.lower() in _SUFFIXES)
        for name in names:
            bpath = d / "blur" / name
            if not bpath.is_file():
                raise ValueError(f"{d / 'sharp' / name} has no blurry partner {bpath}")
            s, b = _read_luminance(d / "sharp" / name), _read_luminance(bpath)
            if s.shape != b.shape:
                raise ValueError(f"{name}: sharp {s.shape} and blurry {b.shape} differ in size")
            pairs.append((s, b))
    if not pairs:
        raise ValueError(f"no sharp/blur pairs found under {root} (expected ROOT/sharp/NAME and "
                         f"ROOT/blur/NAME, or sequence folders containing them)")
    return pairs


def real_pair_crops(pairs: Sequence[tuple[np.ndarray, np.ndarray]], n: int, crop: int,
                    rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` aligned random crops of real pairs (same flips/rotations for both)."""
    xs = np.empty((n, 1, crop, crop), np.float32)
    ys = np.empty_like(xs)
    for i in range(n):
        s, b = pairs[rng.integers(len(pairs))]
        r = rng.integers(s.shape[0] - crop + 1)
        q = rng.integers(s.shape[1] - crop + 1)
        rot, flip = int(rng.integers(4)), rng.random() < 0.5
        for arr, out in ((s, xs), (b, ys)):
            c = np.rot90(arr[r:r + crop, q:q + crop], rot)
            out[i, 0] = c[:, ::-1] if flip else c
    return torch.from_numpy(xs), torch.from_numpy(ys)


def heldout_pairs(images: Sequence[np.ndarray], n: int, crop: int, kernel_size: int,
                  seed: int = 12345) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of ``n`` synthetic pairs (half uniform, half SVOLA) for validation."""
    rng = np.random.default_rng(seed)
    x = random_crops(images, n, crop, rng)
    y, _ = synthetic_pairs(x, kernel_size, rng, nonuniform_fraction=0.5)
    return x, y
