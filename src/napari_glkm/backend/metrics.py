"""Image-quality metrics with shift alignment (the Levin / SelfDeblur evaluation protocol).

Blind deblurring recovers the image only up to a translation (the kernel's centre is not
identifiable), so estimates are aligned to the ground truth before scoring: an integer shift
search within ``±max_shift`` pixels, refined on a ``step``-pixel sub-pixel grid with bilinear
interpolation; then ``border`` pixels are cropped and PSNR (peak 1 on [0, 1]) and SSIM
(Gaussian window 11, sigma 1.5) are computed, as in SelfDeblur's statistic scripts.

Example
-------
>>> import numpy as np
>>> gt = np.random.default_rng(0).random((64, 64))
>>> aligned_psnr_ssim(np.roll(gt, 2, axis=1), gt, border=12)["shift"][1]
-2.0
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

__all__ = ["psnr", "ssim", "aligned_psnr_ssim"]


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB between two arrays of the same shape."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """SSIM with an 11x11 Gaussian window (sigma 1.5); last axis of size 3 is colour."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    channel_axis = -1 if a.ndim == 3 else None
    return float(structural_similarity(
        a, b, data_range=peak, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, channel_axis=channel_axis,
    ))


def _crop(x: np.ndarray, border: int) -> np.ndarray:
    return x[border:-border, border:-border] if border > 0 else x


def aligned_psnr_ssim(
    estimate: np.ndarray,
    truth: np.ndarray,
    *,
    max_shift: int = 10,
    step: float = 0.25,
    border: int = 15,
) -> dict:
    """PSNR/SSIM after the best shift of ``estimate`` onto ``truth`` (both ``(H, W)`` in [0, 1]).

    Returns ``{"psnr", "ssim", "shift": (dy, dx)}``; the shift is applied to the estimate.
    """
    est = np.asarray(estimate, np.float64)
    gt = np.asarray(truth, np.float64)
    if est.shape != gt.shape or est.ndim != 2:
        raise ValueError(f"expected two (H, W) arrays of one shape, got {est.shape}, {gt.shape}")
    if border <= max_shift:
        raise ValueError("border must be larger than max_shift")
    g = _crop(gt, border)
    h, w = g.shape
    best, best_err = (0, 0), np.inf
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            e = est[border - dy : border - dy + h, border - dx : border - dx + w]
            err = np.mean((e - g) ** 2)
            if err < best_err:
                best, best_err = (dy, dx), err
    best_shift = (float(best[0]), float(best[1]))
    offsets = np.arange(-1.0, 1.0 + 1e-9, step)
    for sy in offsets:
        for sx in offsets:
            shift = (best[0] + sy, best[1] + sx)
            if abs(shift[0]) > max_shift or abs(shift[1]) > max_shift:
                continue
            e = _crop(ndimage.shift(est, shift, order=1, mode="nearest"), border)
            err = np.mean((e - g) ** 2)
            if err < best_err - 1e-15:
                best_shift, best_err = (float(shift[0]), float(shift[1])), err
    aligned = _crop(ndimage.shift(est, best_shift, order=1, mode="nearest"), border)
    return {"psnr": psnr(aligned, g), "ssim": ssim(aligned, g), "shift": best_shift}
