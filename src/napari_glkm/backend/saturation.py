"""Saturated pixels (clipped highlights: lamps, specular reflections, the sun).

A clipped pixel does not follow the blur model ``y = x ⋆ k``: the true blurred value was
above the sensor's maximum. Left in the data term, the flat, sharp-edged plateaus of clipped
light streaks pull the kernel towards a compact blob and make the final deconvolution ring.
Following the usual treatment (Cho, Wang & Lee, ICCV 2011; Whyte, Sivic & Zisserman, IJCV
2014, in a simpler binary form):

* **kernel estimation** ignores the saturated pixels *and their blur footprint* (the mask
  dilated by a kernel-sized square): near a light the latent image that the L0 step estimates
  is wrong too, so residuals there are unreliable;
* **final deconvolution** drops the saturated pixels (in every channel if one channel is
  clipped, so lights get no colour fringes) and a thin rim around small clipped regions
  (``kernel_size // 8`` pixels) from its data term; the image prior fills them in from the neighbours, which still
  follow the model. Measured on the ``lights`` sample with the true kernel (PSNR of the
  luminance): all pixels trusted 21.1 dB, clipped pixels dropped per channel 25.3, in all
  channels 25.6, plus a 3 px rim 27.6, plus a 7 px rim 25.5.

A pixel counts as saturated when its value (in [0, 1] after normalisation of the input range,
any colour channel) is at least ``threshold`` (0.98 by default: 250 of 255 for uint8).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_THRESHOLD", "check_saturation", "saturated_mask", "estimation_weight",
           "restoration_weight"]

DEFAULT_THRESHOLD = 0.98


def check_saturation(saturation: object) -> float | None:
    """Validate the ``saturation`` option: ``"auto"`` (threshold 0.98), a threshold in
    (0, 1], or ``"off"``; return the threshold or ``None`` for off."""
    if isinstance(saturation, str):
        if saturation == "auto":
            return DEFAULT_THRESHOLD
        if saturation == "off":
            return None
    elif not isinstance(saturation, bool) and isinstance(saturation, (int, float, np.floating)):
        if np.isfinite(saturation) and 0 < saturation <= 1:
            return float(saturation)
    raise ValueError(f"saturation must be 'auto', 'off' or a threshold in (0, 1], got "
                     f"{saturation!r}")


def saturated_mask(data: np.ndarray, threshold: float) -> np.ndarray:
    """``(H, W, C)`` bool: the channels of ``data`` ``(H, W, C)`` in [0, 1] at or above
    ``threshold``."""
    return data >= np.float32(threshold)


def estimation_weight(mask: np.ndarray, kernel_size: int) -> np.ndarray | None:
    """``(H, W)`` float32 data weight for kernel estimation: 0 on pixels within a
    ``kernel_size`` square of a pixel saturated in any channel, 1 elsewhere; ``None`` when
    nothing is saturated. ``mask`` is ``(H, W, C)`` or ``(H, W)`` bool."""
    any_sat = mask.any(axis=-1) if mask.ndim == 3 else mask
    if not any_sat.any():
        return None
    m = torch.from_numpy(any_sat.astype(np.float32))[None, None]
    r = kernel_size // 2
    dilated = F.max_pool2d(m, 2 * r + 1, stride=1, padding=r)
    return (1.0 - dilated)[0, 0].numpy()


def restoration_weight(mask: np.ndarray, kernel_size: int) -> np.ndarray | None:
    """``(H, W)`` float32 data weight for the final deconvolution: 0 on pixels saturated in any
    channel of ``mask`` ``(H, W, C)``, and on a ``kernel_size // 8`` pixel rim around *small*
    clipped regions (at most ``kernel_size²`` pixels: lights, reflections), 1 elsewhere;
    ``None`` when nothing is saturated.

    Large clipped areas (an overexposed sky) get no rim: their edges still carry most of the
    blur's information, and dropping them cost 0.8 dB on a BSDS photo with 28 % clipped
    pixels, where a rim around lights gains 2 dB.
    """
    from skimage.measure import label

    any_sat = mask.any(axis=-1) if mask.ndim == 3 else mask
    if not any_sat.any():
        return None
    lab = label(any_sat, connectivity=2)
    area = np.bincount(lab.ravel())
    small = (area <= kernel_size * kernel_size)[lab] & any_sat
    rim = estimation_weight(small, 2 * (kernel_size // 8) + 1)
    weight = (~any_sat).astype(np.float32)
    return weight if rim is None else weight * rim
