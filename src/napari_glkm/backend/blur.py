"""Forward models of blur: uniform cross-correlation (valid / same), computed directly or by FFT.

Conventions (as in GLKM/SelfDeblur): blur is a *cross-correlation* with the kernel, no flip
anywhere. ``valid`` maps a sharp image of ``(H + k - 1, W + k - 1)`` to a blurry ``(H, W)``;
its adjoint is the full convolution back to ``(H + k - 1, W + k - 1)``.

Shapes: images ``(B, C, H, W)``; kernels ``(1, 1, k, k)`` (shared by all images and channels)
or ``(B, 1, k, k)`` (one kernel per image, shared by its channels).

Example
-------
>>> import torch
>>> x = torch.rand(1, 1, 40, 40); k = torch.full((1, 1, 5, 5), 1 / 25)
>>> tuple(conv_valid(x, k).shape), tuple(conv_same(x, k).shape)
((1, 1, 36, 36), (1, 1, 40, 40))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "conv_valid",
    "conv_valid_adjoint",
    "conv_same",
    "fft_conv_valid",
    "UniformBlur",
    "FFT_THRESHOLD",
]

# Kernels at least this wide go through the FFT path by default (direct conv2d of a single-channel
# image with a k x k kernel costs H*W*k^2 and, on the CPU, an im2col buffer of that size).
FFT_THRESHOLD = 12


def _check(x: torch.Tensor, k: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected image of shape (B, C, H, W), got {tuple(x.shape)}")
    if k.ndim != 4 or k.shape[1] != 1:
        raise ValueError(f"expected kernel of shape (B, 1, k, k), got {tuple(k.shape)}")
    if k.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"kernel batch {k.shape[0]} does not match image batch {x.shape[0]}")
    if x.shape[-2] < k.shape[-2] or x.shape[-1] < k.shape[-1]:
        raise ValueError(
            f"image {tuple(x.shape[-2:])} is smaller than kernel {tuple(k.shape[-2:])}"
        )


def _direct_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    if k.shape[0] == 1:
        out = F.conv2d(x.reshape(b * c, 1, h, w), k)
        return out.reshape(b, c, *out.shape[-2:])
    weight = k.repeat_interleave(c, dim=0)  # (B*C, 1, k, k)
    out = F.conv2d(x.reshape(1, b * c, h, w), weight, groups=b * c)
    return out.reshape(b, c, *out.shape[-2:])


def fft_conv_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation by FFT (exact: the circular wrap never reaches valid outputs)."""
    _check(x, k)
    h, w = x.shape[-2:]
    kh, kw = k.shape[-2:]
    xf = torch.fft.rfft2(x, s=(h, w))
    kf = torch.fft.rfft2(k, s=(h, w))  # (B or 1, 1, h, w//2+1), broadcasts over channels
    out = torch.fft.irfft2(xf * kf.conj(), s=(h, w))
    return out[..., : h - kh + 1, : w - kw + 1]


def conv_valid(x: torch.Tensor, k: torch.Tensor, *, method: str = "auto") -> torch.Tensor:
    """Valid cross-correlation of ``x`` ``(B, C, H, W)`` with ``k`` -> ``(B, C, H-k+1, W-k+1)``.

    ``method`` is ``"direct"`` (``conv2d``), ``"fft"`` or ``"auto"`` (FFT for kernels of at
    least :data:`FFT_THRESHOLD` pixels).
    """
    _check(x, k)
    if method == "auto":
        method = "fft" if max(k.shape[-2:]) >= FFT_THRESHOLD else "direct"
    if method == "fft":
        return fft_conv_valid(x, k)
    if method == "direct":
        return _direct_valid(x, k)
    raise ValueError(f"unknown method {method!r}; expected 'auto', 'direct' or 'fft'")


def conv_valid_adjoint(y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`conv_valid`: full convolution ``(B, C, H, W)`` -> ``(B, C, H+k-1, W+k-1)``."""
    kh, kw = k.shape[-2:]
    h, w = y.shape[-2] + kh - 1, y.shape[-1] + kw - 1
    yf = torch.fft.rfft2(y, s=(h, w))
    kf = torch.fft.rfft2(k, s=(h, w))
    return torch.fft.irfft2(yf * kf, s=(h, w))


def conv_same(
    x: torch.Tensor, k: torch.Tensor, *, padding_mode: str = "reflect", method: str = "auto"
) -> torch.Tensor:
    """Cross-correlation with output of the input's size; borders padded with ``padding_mode``
    (``"reflect"``, ``"replicate"``, ``"circular"`` or ``"constant"`` for zeros)."""
    kh, kw = k.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"'same' blur needs an odd kernel size, got {kh}x{kw}")
    ph, pw = kh // 2, kw // 2
    if padding_mode == "reflect" and (ph >= x.shape[-2] or pw >= x.shape[-1]):
        padding_mode = "replicate"
    xp = F.pad(x, (pw, pw, ph, ph), mode=padding_mode)
    return conv_valid(xp, k, method=method)


class UniformBlur(nn.Module):
    """Spatially uniform blur ``y = x ⋆ k`` (valid), with its adjoint.

    Parameters
    ----------
    kernel:
        ``(1, 1, k, k)`` or ``(B, 1, k, k)`` kernel, stored as a buffer.
    """

    def __init__(self, kernel: torch.Tensor) -> None:
        super().__init__()
        if kernel.ndim == 2:
            kernel = kernel[None, None]
        self.register_buffer("kernel", kernel)

    def A(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        return conv_valid(x, self.kernel if kernel is None else kernel)

    def A_adjoint(self, y: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        return conv_valid_adjoint(y, self.kernel if kernel is None else kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)
