"""Pictures of a non-uniform kernel grid (Qt-free; the napari overlay and the CLI use them).

* :func:`kernel_tiles` — the ``(gy, gx, k, k)`` kernels side by side in one image (each scaled
  to its own maximum), e.g. for ``napari-glkm deblur --nonuniform --kernel-out grid.png``.
* :func:`kernel_grid_mosaic` — the same mosaic plus the napari ``scale`` and ``translate`` that
  put every kernel tile on its patch centre of the image (world = translate + scale * index,
  pixel centres, as napari maps data to world coordinates).
* :func:`patch_outlines` — patch rectangles as ``(4, 2)`` (row, col) corner arrays for a
  Shapes layer.

Example
-------
>>> import numpy as np
>>> ks = np.zeros((2, 3, 5, 5), np.float32); ks[..., 2, 2] = 1
>>> centres = np.stack(np.meshgrid([20.0, 60.0], [10.0, 50.0, 90.0], indexing="ij"), -1)
>>> mosaic, scale, translate = kernel_grid_mosaic(ks, centres, (80, 100))
>>> mosaic.shape, len(patch_outlines(centres, (40, 40), (80, 100)))
((18, 27), 6)
"""

from __future__ import annotations

import numpy as np

__all__ = ["kernel_tiles", "kernel_grid_mosaic", "patch_outlines"]


def _check_grid(kernels: np.ndarray, centres: np.ndarray | None = None) -> np.ndarray:
    k = np.asarray(kernels, dtype=np.float32)
    if k.ndim != 4 or k.shape[-1] != k.shape[-2]:
        raise ValueError(f"expected kernels of shape (gy, gx, k, k), got {k.shape}")
    if centres is not None and np.shape(centres) != (*k.shape[:2], 2):
        raise ValueError(f"expected centres of shape {(*k.shape[:2], 2)}, got {np.shape(centres)}")
    return k


def kernel_tiles(kernels: np.ndarray, gap: int = 2) -> np.ndarray:
    """``(gy * (k + gap), gx * (k + gap))`` float32 mosaic in [0, 1], every kernel scaled to
    its own maximum and centred in a ``k + gap`` tile (``gap`` even, zero-filled)."""
    k = _check_grid(kernels)
    if gap < 0 or gap % 2:
        raise ValueError(f"gap must be an even number >= 0, got {gap}")
    gy, gx, kk, _ = k.shape
    t, h = kk + gap, gap // 2
    peak = k.max(axis=(-2, -1), keepdims=True)
    k = np.where(peak > 0, k / np.where(peak > 0, peak, 1), 0)
    out = np.zeros((gy * t, gx * t), np.float32)
    for i in range(gy):
        for j in range(gx):
            out[i * t + h : i * t + h + kk, j * t + h : j * t + h + kk] = k[i, j]
    return out


def _pitch(centres: np.ndarray, axis: int, length: int) -> float:
    c = centres[:, 0, 0] if axis == 0 else centres[0, :, 1]
    if c.size == 1:
        return float(length)
    steps = np.diff(c)
    if steps.min() <= 0 or not np.allclose(steps, steps[0], rtol=1e-6, atol=1e-6):
        raise ValueError("patch centres must lie on a regular, increasing grid")
    return float(steps[0])


def kernel_grid_mosaic(
    kernels: np.ndarray, centres: np.ndarray, image_shape: tuple[int, ...], *,
    fill: float = 0.6,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Kernel mosaic aligned with the image, for a napari Image layer.

    Parameters
    ----------
    kernels:
        ``(gy, gx, k, k)`` patch kernels.
    centres:
        ``(gy, gx, 2)`` (row, col) patch centres in image pixels (a regular grid).
    image_shape:
        ``(H, W, ...)`` of the image the overlay goes on (used when a side has one patch).
    fill:
        Fraction of the patch spacing that a drawn kernel spans, in (0, 1].

    Returns
    -------
    mosaic:
        ``(gy * t, gx * t)`` float32 in [0, 1] (see :func:`kernel_tiles`; ``t`` the tile side).
    scale, translate:
        Per-axis ``(row, col)`` layer scale and translate: the centre of tile ``(i, j)`` lands
        exactly on ``centres[i, j]``; add the image layer's own scale/translate if it has any
        (multiply ``scale``, and map ``translate`` through the image's transform).
    """
    k = _check_grid(kernels, centres)
    c = np.asarray(centres, dtype=np.float64)
    if not 0 < fill <= 1:
        raise ValueError(f"fill must be in (0, 1], got {fill}")
    kk = k.shape[-1]
    gap = int(np.ceil(kk * (1 / fill - 1) / 2)) * 2
    t = kk + gap
    mosaic = kernel_tiles(k, gap)
    scale = (_pitch(c, 0, image_shape[0]) / t, _pitch(c, 1, image_shape[1]) / t)
    translate = (float(c[0, 0, 0] - scale[0] * (t - 1) / 2),
                 float(c[0, 0, 1] - scale[1] * (t - 1) / 2))
    return mosaic, scale, translate


def patch_outlines(
    centres: np.ndarray, patch_shape: tuple[int, int], image_shape: tuple[int, ...]
) -> list[np.ndarray]:
    """Patch rectangles (row-major) as ``(4, 2)`` float arrays of (row, col) corners, clipped
    to the image; in napari pixel coordinates (pixel centres at integers)."""
    c = np.asarray(centres, dtype=np.float64)
    if c.ndim != 3 or c.shape[-1] != 2:
        raise ValueError(f"expected centres of shape (gy, gx, 2), got {c.shape}")
    ph, pw = patch_shape
    h, w = image_shape[:2]
    out = []
    for r, col in c.reshape(-1, 2):
        r0, r1 = max(r - ph / 2, -0.5), min(r + ph / 2, h - 0.5)
        c0, c1 = max(col - pw / 2, -0.5), min(col + pw / 2, w - 0.5)
        out.append(np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], dtype=np.float64))
    return out
