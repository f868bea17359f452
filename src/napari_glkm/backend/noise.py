"""Noise level estimation and the light denoising applied before kernel estimation.

Kernel estimation works on image gradients, which noise swamps long before it is visible: with
1% Gaussian noise the least-squares kernel turns into a noise field. The blurry image is
therefore denoised (total variation, Chambolle's algorithm from scikit-image) before the kernel
stage when its noise level is above ``threshold``; the final non-blind deconvolution still uses
the original image.
"""

from __future__ import annotations

import numpy as np
from skimage.restoration import denoise_tv_chambolle

__all__ = ["estimate_noise", "denoise_for_kernel_estimation", "check_noise", "noise_lambda",
           "NOISE_REFERENCE", "NOISE_FLOOR"]

# Noise level (in [0, 1] units) at which the presets' final regularisation weight was tuned.
NOISE_REFERENCE = 0.01
# Below this estimated noise level the final weight no longer decreases (see noise_lambda).
NOISE_FLOOR = 0.002


def estimate_noise(y: np.ndarray) -> float:
    """Standard deviation of white noise in a ``(H, W)`` image in [0, 1].

    Robust median estimator on the finest diagonal Haar detail band (Donoho & Johnstone 1994):
    ``sigma = median(|HH|) / 0.6745``. Image edges barely affect the median.

    Quantised data (8-bit images: the band takes multiples of 1/510) would put the median on
    that lattice, i.e. in steps of 0.0029 — 30 % of a 1 % noise level. There the median is
    interpolated within its lattice cell (the grouped-data median), which restores a continuous
    estimate.
    """
    h, w = (y.shape[0] // 2) * 2, (y.shape[1] // 2) * 2
    a = np.asarray(y[:h, :w], dtype=np.float64)
    hh = np.abs(a[0::2, 0::2] - a[0::2, 1::2] - a[1::2, 0::2] + a[1::2, 1::2]).ravel() / 2.0
    return float(_grouped_median(hh) / 0.6745)


def _grouped_median(v: np.ndarray) -> float:
    """Median of ``v`` >= 0; interpolated within the cell when ``v`` is quantised."""
    med = float(np.median(v))
    values = np.unique(np.round(v, 6))  # float32 rounding splits lattice points: merge them
    if v.size < 16 or len(values) > v.size // 4:
        return med  # continuous data
    gaps = np.diff(values)
    gaps = gaps[gaps > 2e-6]
    if gaps.size == 0:
        return med
    step = float(gaps.min())
    # the median's lattice point stands for the cell [med - step/2, med + step/2] (at 0 only
    # its upper half) with its samples spread uniformly over it
    lo, hi = max(med - step / 2, 0.0), med + step / 2
    below = int(np.count_nonzero(v < lo))
    inside = int(np.count_nonzero((v >= lo) & (v < hi)))
    return float(lo + (v.size / 2 - below) / max(inside, 1) * (hi - lo))


def denoise_for_kernel_estimation(
    y: np.ndarray, sigma: float, *, threshold: float = 0.003, strength: float | None = None
) -> np.ndarray:
    """TV-denoise ``y`` with weight ``strength * sigma`` if ``sigma > threshold``, else return it.

    ``strength=None`` adapts it to the noise: 1 up to 0.35 % noise, rising linearly to 2 at
    1 % and above. Measured with estimated kernels (``fast``): on Levin's blurs (0.23–0.32 %
    noise) 2 cost up to 2.3 dB per image; on BSDS val crops 1 beat 2 by +0.44 and +0.48 dB at
    0.3 and 0.6 % noise; at 1 % it was +0.23 dB on 10 crops but lost 3 dB on one of the
    non-uniform benchmark's photos (102061: 15.9 vs 18.9 dB); at 3 % noise on Levin 2 beat 1 by
    2 dB (27.51 vs 25.49, ``benchmarks/noise.py --subset 4``)."""
    if sigma <= threshold:
        return y
    if strength is None:
        strength = float(np.clip(1.0 + (sigma - 0.0035) / 0.0065, 1.0, 2.0))
    return denoise_tv_chambolle(y.astype(np.float64), weight=strength * sigma).astype(y.dtype)


def check_noise(noise: object) -> float | str:
    """Validate the ``noise`` option: ``"auto"`` (estimate it), ``"off"`` (no adaptation), or
    the noise standard deviation in [0, 1] units of the image's value range (e.g. 0.02)."""
    if isinstance(noise, str) and noise in ("auto", "off"):
        return noise
    if not isinstance(noise, (bool, str)) and isinstance(noise, (int, float, np.floating)):
        if np.isfinite(noise) and 0 <= noise < 0.5:
            return float(noise)
    raise ValueError(f"noise must be 'auto', 'off' or a standard deviation in [0, 0.5) "
                     f"(image range = 1), got {noise!r}")


def noise_lambda(base: float, sigma: float, *, reference: float = NOISE_REFERENCE,
                 power: float = 1.5, floor: float = NOISE_FLOOR) -> float:
    """Regularisation weight of the final deconvolution for noise level ``sigma``.

    ``base`` is the preset's weight at ``reference`` noise; the weight follows
    ``(max(sigma, floor) / reference) ** power`` on both sides of it. The exponent was fitted
    to the PSNR-optimal weight of the hyper-Laplacian step on BSDS500 val crops: with the true
    kernel 2e-3 at 1 %, 1e-2 at 3 %, 2e-2 at 5 % noise; with *estimated* kernels (``fast``, 10
    crops per level, 8-bit) about 2.5e-4 at an estimated 0.2 %, 1e-3 at 0.7 %, 2–4e-3 at 1.1 %,
    8e-3 at 2 %. Below 0.2 % (8-bit quantisation alone reads about 0.2 %) the weight stays at
    the floor's, since kernel errors, not noise, then set what the prior must suppress.
    """
    return float(base * (max(sigma, floor) / reference) ** power)
