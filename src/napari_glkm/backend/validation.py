"""Checks and normalisation of user images at the API entry (clear errors, input never modified).

Accepted: 2-D gray ``(H, W)``; colour ``(H, W, 3)``; ``(H, W, 4)`` with alpha (the alpha channel
is carried through untouched); integer (uint8, uint16, other ints by their value range) or
floating arrays. Everything is converted to a fresh float32 ``(H, W, C)`` array in [0, 1]; the
original value range is remembered so results can be mapped back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .resources import check_memory

__all__ = ["PreparedImage", "prepare_image", "check_kernel_size", "min_image_side"]


# Rec. 601 luma weights (R, G, B): the gray image kernels are estimated on.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass
class PreparedImage:
    """A validated copy of the user's image.

    Attributes
    ----------
    data:
        ``(H, W, C)`` float32 in [0, 1], C in {1, 3}; a copy, never the user's array.
    alpha:
        ``(H, W)`` alpha channel in the input's dtype, or ``None``.
    lo, hi:
        The input value range that maps to [0, 1].
    dtype:
        The input dtype.
    """

    data: np.ndarray
    alpha: np.ndarray | None
    lo: float
    hi: float
    dtype: np.dtype

    @property
    def is_color(self) -> bool:
        return self.data.shape[-1] == 3

    def luminance(self) -> np.ndarray:
        """``(H, W)`` float32 luminance (Rec. 601 weights for colour)."""
        if self.is_color:
            return (self.data @ LUMA_WEIGHTS).astype(np.float32)
        return self.data[..., 0]

    def to_user_range(self, x: np.ndarray) -> np.ndarray:
        """Map a ``(H, W, C)`` [0, 1] result back to the input layout and range, as float32."""
        # float64 arithmetic: a range as wide as float32's own would overflow in float32.
        out = (x.astype(np.float64) * (self.hi - self.lo) + self.lo).astype(np.float32)
        if not self.is_color:
            out = out[..., 0]
        if self.alpha is not None:
            out = np.concatenate([out, self.alpha[..., None].astype(np.float32)], axis=-1)
        return out


def check_kernel_size(kernel_size: object) -> int:
    """Validate a kernel size: an odd integer >= 3."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)):
        raise ValueError(f"kernel_size must be an odd integer, got {kernel_size!r}")
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size}")
    return int(kernel_size)


def min_image_side(kernel_size: int) -> int:
    """Smallest image side that the solver accepts for a kernel size (pixels)."""
    return max(2 * kernel_size, 32)


def prepare_image(image: object, kernel_size: int) -> PreparedImage:
    """Validate ``image`` and return a normalised float32 copy; raise ``ValueError`` on bad input."""
    if not isinstance(image, np.ndarray) and (
            hasattr(image, "__array__") or isinstance(image, (list, tuple))):
        try:
            image = np.asarray(image)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"cannot turn the {type(image).__name__} into an image array "
                             f"({exc})") from None
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array (H, W) or (H, W, 3), got {type(image).__name__}")
    arr = image
    if arr.size == 0:
        raise ValueError(f"the image is empty (shape {arr.shape})")
    if arr.dtype == bool:
        raise ValueError("boolean images cannot be deblurred; convert a mask to float first")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"unsupported image dtype {arr.dtype}; expected integer or float")
    if arr.ndim == 1:
        raise ValueError(f"expected a 2-D image (H, W) or (H, W, 3), got a 1-D array {arr.shape}")
    alpha = None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if arr.shape[-1] == 4:
            alpha = arr[..., 3].copy()
            arr = arr[..., :3]
    elif arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] > 4:
        raise ValueError(
            f"got shape {arr.shape}: this looks like a channel-first colour image; pass "
            f"np.moveaxis(image, 0, -1) (H, W, 3), or deblur each channel separately"
        )
    elif arr.ndim >= 3:
        raise ValueError(
            f"expected a 2-D image (H, W) or colour (H, W, 3), got shape {arr.shape}; for a "
            f"stack, pick one frame (e.g. image[0]) or deblur frame by frame"
        )
    h, w = arr.shape[:2]
    need = min_image_side(kernel_size)
    if min(h, w) < need:
        raise ValueError(
            f"image {h}x{w} is too small for kernel size {kernel_size}: each side needs at least "
            f"{need} pixels; choose a smaller kernel_size or a larger image"
        )
    # Before reading a single value (the copies below are the first allocations).
    check_memory(h, w, 3 if arr.ndim == 3 else 1, kernel_size)
    whole = image  # colour and alpha: the alpha channel is returned, so it must be sane too
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(whole)):
        raise ValueError("the image contains NaN or infinite values; replace them first "
                         "(e.g. np.nan_to_num)")
    big = float(np.finfo(np.float32).max)
    if np.issubdtype(arr.dtype, np.floating) and float(np.abs(whole).max()) > big:
        raise ValueError(f"the image has values beyond the float32 range (|x| > {big:.3g}); "
                         f"rescale it first")
    if arr.min() == arr.max():
        raise ValueError("the image is constant: there is no structure to estimate a blur from")
    if np.issubdtype(arr.dtype, np.floating):
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            lo, hi = 0.0, 1.0
    else:
        info = np.iinfo(arr.dtype)
        if arr.dtype in (np.uint8, np.uint16):
            lo, hi = 0.0, float(info.max)
        else:
            lo, hi = float(arr.min()), float(arr.max())
    data = (arr.astype(np.float64) - lo) / (hi - lo)
    if data.ndim == 2:
        data = data[..., None]
    return PreparedImage(np.ascontiguousarray(data, dtype=np.float32), alpha, lo, hi, arr.dtype)
