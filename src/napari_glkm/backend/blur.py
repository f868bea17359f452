"""Forward models of blur: uniform cross-correlation (valid / same), computed directly or by FFT.

Conventions (as in GLKM/SelfDeblur): blur is a *cross-correlation* with the kernel, no flip
anywhere. ``valid`` maps a sharp image of ``(H + k - 1, W + k - 1)`` to a blurry ``(H, W)``;
its adjoint is the full convolution back to ``(H + k - 1, W + k - 1)``.

Shapes: images ``(B, C, H, W)``; kernels ``(1, 1, k, k)`` (shared by all images and channels)
or ``(B, 1, k, k)`` (one kernel per image, shared by its channels).

Non-uniform blur uses SVOLA (space-variant overlap-add; the "efficient filter flow" model of
Hirsch et al., CVPR 2010): ``y = Σ_p (w_p ⊙ x) ⋆ k_p`` with smooth windows ``w_p`` that sum to
one, so a constant kernel field gives exactly the uniform blur. The windows are applied to the
*sharp* image before the convolution (each sharp pixel is spread by a convex combination of the
patch kernels, which conserves mass), see :func:`svola_blur`.

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
from scipy.fft import next_fast_len
from torch import nn

__all__ = [
    "conv_valid",
    "conv_valid_adjoint",
    "conv_same",
    "fft_conv_valid",
    "fft_shape",
    "FFTCorrelation",
    "UniformBlur",
    "FFT_THRESHOLD",
    "svola_windows_1d",
    "svola_windows",
    "svola_blur",
    "svola_adjoint",
    "SVOLABlur",
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


def fft_shape(h: int, w: int) -> tuple[int, int]:
    """The FFT grid for an ``(h, w)`` signal: each side rounded up to the next length whose
    only prime factors are 2, 3 and 5 (:func:`scipy.fft.next_fast_len`).

    Zero-padding a valid correlation or a full convolution to a larger grid leaves its wanted
    outputs exact (the circular wrap only reaches discarded ones), and sizes with a large
    prime factor are slow: a 2048² image with a 31 px kernel gives a 2078 = 2 · 1039 grid,
    whose FFT takes 1.8 times as long as a 2160 one; Levin's 255 + 30 = 285 = 3 · 5 · 19 takes
    2.4 times as long as 288 (1 thread, ``torch.fft``).

    >>> fft_shape(2078, 285)
    (2160, 288)
    """
    return next_fast_len(int(h), real=True), next_fast_len(int(w), real=True)


def _direct_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    if k.shape[0] == 1:
        out = F.conv2d(x.reshape(b * c, 1, h, w), k)
        return out.reshape(b, c, *out.shape[-2:])
    weight = k.repeat_interleave(c, dim=0)  # (B*C, 1, k, k)
    out = F.conv2d(x.reshape(1, b * c, h, w), weight, groups=b * c)
    return out.reshape(b, c, *out.shape[-2:])


class FFTCorrelation:
    """Valid cross-correlation with a fixed kernel ``k`` ``(B or 1, 1, kh, kw)`` on a fixed
    sharp domain ``(H, W)``, and its adjoint (the full convolution back), by FFT on the grid
    :func:`fft_shape` with the kernel's spectrum computed once (iterative solvers apply both
    many times).

    >>> x = torch.rand(1, 3, 40, 40); k = torch.rand(1, 1, 7, 7)
    >>> op = FFTCorrelation(k, (40, 40))
    >>> bool(torch.allclose(op.valid(x), conv_valid(x, k, method="direct"), atol=1e-4))
    True
    """

    def __init__(self, k: torch.Tensor, sharp_shape: tuple[int, int]) -> None:
        kh, kw = k.shape[-2:]
        self.sharp = (int(sharp_shape[0]), int(sharp_shape[1]))
        self.blurry = (self.sharp[0] - kh + 1, self.sharp[1] - kw + 1)
        self.grid = fft_shape(*self.sharp)
        self.kf = torch.fft.rfft2(k, s=self.grid)  # broadcasts over channels
        self.kf_conj = self.kf.conj()

    def valid(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H - kh + 1, W - kw + 1)`` (exact: the circular wrap
        never reaches the valid outputs)."""
        out = torch.fft.irfft2(torch.fft.rfft2(x, s=self.grid) * self.kf_conj, s=self.grid)
        return out[..., : self.blurry[0], : self.blurry[1]]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, C, H - kh + 1, W - kw + 1)`` -> ``(B, C, H, W)``."""
        out = torch.fft.irfft2(torch.fft.rfft2(y, s=self.grid) * self.kf, s=self.grid)
        return out[..., : self.sharp[0], : self.sharp[1]]


def fft_conv_valid(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation by FFT (exact: the circular wrap never reaches valid outputs)."""
    _check(x, k)
    return FFTCorrelation(k, x.shape[-2:]).valid(x)


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
    return FFTCorrelation(k, (y.shape[-2] + kh - 1, y.shape[-1] + kw - 1)).adjoint(y)


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


# ---------------------------------------------------------------------------------------------
# SVOLA: space-variant overlap-add
# ---------------------------------------------------------------------------------------------


def svola_windows_1d(
    length: int, n: int, overlap: float, *, dtype=torch.float64, device=None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``n`` raised-cosine windows over ``length`` pixels that sum to exactly one.

    Patches of width ``s = length / (1 + (n - 1) (1 - overlap))`` are spaced by ``s (1 - overlap)``
    so that the first starts at pixel 0 and the last ends at pixel ``length - 1``. Each patch
    carries a Hann bump over its width (half a pixel wider on each side, so it is positive on
    every pixel of the patch); the bumps are divided by their sum (a partition of unity).

    Returns
    -------
    windows:
        ``(n, length)``.
    centres:
        ``(n,)`` patch centres in pixels (index coordinates).
    width:
        Patch width ``s`` in pixels (float).
    """
    if n < 1:
        raise ValueError(f"need at least one patch per side, got {n}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if n == 1:
        ones = torch.ones(1, length, dtype=dtype, device=device)
        return ones, torch.tensor([(length - 1) / 2], dtype=dtype), float(length)
    width = length / (1.0 + (n - 1) * (1.0 - overlap))
    step = (length - width) / (n - 1)
    centres = (width - 1) / 2 + step * torch.arange(n, dtype=dtype)
    t = torch.arange(length, dtype=dtype)
    d = (t[None, :] - centres[:, None]) / (width / 2 + 0.5)  # in (-1, 1) on the patch
    bumps = torch.where(d.abs() < 1, 0.5 + 0.5 * torch.cos(torch.pi * d), torch.zeros_like(d))
    if overlap == 0.0:  # abutting patches: bumps may vanish between pixels; keep every pixel covered
        bumps = bumps + 1e-6 * (d.abs() < 1)
    windows = bumps / bumps.sum(0, keepdim=True)
    return windows.to(device), centres, float(width)


def svola_windows(
    shape: tuple[int, int], grid: tuple[int, int], overlap: float = 0.5, *, pad: int = 0,
    dtype=torch.float32, device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable SVOLA windows for a ``gy x gx`` patch grid over an ``(H, W)`` image.

    ``pad`` extends every window by that many pixels per side with its edge values (for the
    sharp image of a *valid* blur, ``pad = k // 2`` maps the blurry image's grid onto the
    ``(H + k - 1, W + k - 1)`` sharp domain); the windows still sum to one everywhere.

    Returns
    -------
    windows:
        ``(gy * gx, 1, H + 2 pad, W + 2 pad)``, patch ``p = i * gx + j`` (row-major).
    centres:
        ``(gy, gx, 2)`` float64 (row, col) patch centres in the unpadded image's pixels.

    Example
    -------
    >>> w, c = svola_windows((64, 48), (2, 3))
    >>> tuple(w.shape), bool(torch.allclose(w.sum(0), torch.ones(1, 64, 48)))
    ((6, 1, 64, 48), True)
    """
    (h, w), (gy, gx) = shape, grid
    wy, cy, _ = svola_windows_1d(h, gy, overlap)
    wx, cx, _ = svola_windows_1d(w, gx, overlap)
    if pad > 0:
        wy = F.pad(wy[None], (pad, pad), mode="replicate")[0]
        wx = F.pad(wx[None], (pad, pad), mode="replicate")[0]
    windows = (wy[:, None, :, None] * wx[None, :, None, :]).reshape(gy * gx, 1, *wy.shape[-1:],
                                                                    *wx.shape[-1:])
    centres = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), dim=-1)
    return windows.to(dtype=dtype, device=device), centres


def _check_svola(x: torch.Tensor, kernels: torch.Tensor, windows: torch.Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"expected image of shape (B, C, H, W), got {tuple(x.shape)}")
    if kernels.ndim != 4 or kernels.shape[1] != 1:
        raise ValueError(f"expected kernels of shape (P, 1, k, k), got {tuple(kernels.shape)}")
    if windows.ndim != 4 or windows.shape[1] != 1 or windows.shape[0] != kernels.shape[0]:
        raise ValueError(f"expected windows of shape (P={kernels.shape[0]}, 1, H, W), got "
                         f"{tuple(windows.shape)}")
    if windows.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"windows {tuple(windows.shape[-2:])} do not match the image "
                         f"{tuple(x.shape[-2:])}")
    if x.shape[-2] < kernels.shape[-2] or x.shape[-1] < kernels.shape[-1]:
        raise ValueError(f"image {tuple(x.shape[-2:])} is smaller than kernel "
                         f"{tuple(kernels.shape[-2:])}")


def svola_blur(x: torch.Tensor, kernels: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Space-variant blur ``y = Σ_p (w_p ⊙ x) ⋆ k_p`` (valid cross-correlation).

    Parameters
    ----------
    x:
        ``(B, C, H, W)`` sharp image.
    kernels:
        ``(P, 1, k, k)`` one kernel per patch (shared by the channels), each summing to 1.
    windows:
        ``(P, 1, H, W)`` on the sharp domain, summing to one over ``P`` (:func:`svola_windows`).

    Returns
    -------
    torch.Tensor
        ``(B, C, H - k + 1, W - k + 1)``. With ``P`` equal kernels this is :func:`conv_valid`.

    All ``P`` windowed copies are transformed in one batched FFT; the products with the kernel
    spectra are summed *before* the inverse FFT (linearity), so the cost is ``P`` forward FFTs
    and one inverse instead of ``P`` full convolution passes.

    Example
    -------
    >>> x = torch.rand(1, 1, 40, 40); w, _ = svola_windows((40, 40), (2, 2))
    >>> k = torch.full((4, 1, 5, 5), 1 / 25)
    >>> bool(torch.allclose(svola_blur(x, k, w), conv_valid(x, k[:1]), atol=1e-5))
    True
    """
    _check_svola(x, kernels, windows)
    h, w = x.shape[-2:]
    kh, kw = kernels.shape[-2:]
    xw = x[:, None] * windows[None]  # (B, P, C, H, W)
    s = fft_shape(h, w)
    xf = torch.fft.rfft2(xw, s=s)
    kf = torch.fft.rfft2(kernels, s=s)  # (P, 1, ., .), broadcasts over B and C
    out = torch.fft.irfft2((xf * kf.conj()).sum(1), s=s)
    return out[..., : h - kh + 1, : w - kw + 1]


def svola_adjoint(y: torch.Tensor, kernels: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`svola_blur`: ``Σ_p w_p ⊙ (full convolution of y with k_p)``;
    ``(B, C, H, W)`` -> ``(B, C, H + k - 1, W + k - 1)`` (the windows' size)."""
    kh, kw = kernels.shape[-2:]
    h, w = y.shape[-2] + kh - 1, y.shape[-1] + kw - 1
    if windows.shape[-2:] != (h, w):
        raise ValueError(f"windows {tuple(windows.shape[-2:])} do not match the sharp domain "
                         f"{(h, w)} of a blurry image {tuple(y.shape[-2:])}")
    s = fft_shape(h, w)
    yf = torch.fft.rfft2(y, s=s)[:, None]  # (B, 1, C, ., .)
    kf = torch.fft.rfft2(kernels, s=s)  # (P, 1, ., .)
    back = torch.fft.irfft2(yf * kf, s=s)[..., :h, :w]  # (B, P, C, h, w)
    return (back * windows[None]).sum(1)


class SVOLABlur(nn.Module):
    """Space-variant (SVOLA) blur with per-patch kernels and fixed windows (buffers).

    Parameters
    ----------
    kernels:
        ``(P, 1, k, k)`` patch kernels.
    windows:
        ``(P, 1, H, W)`` windows on the sharp domain (sum to one over ``P``).
    """

    def __init__(self, kernels: torch.Tensor, windows: torch.Tensor) -> None:
        super().__init__()
        _check_svola(torch.empty(1, 1, *windows.shape[-2:]), kernels, windows)
        self.register_buffer("kernels", kernels)
        self.register_buffer("windows", windows)

    def A(self, x: torch.Tensor, kernels: torch.Tensor | None = None) -> torch.Tensor:
        return svola_blur(x, self.kernels if kernels is None else kernels, self.windows)

    def A_adjoint(self, y: torch.Tensor, kernels: torch.Tensor | None = None) -> torch.Tensor:
        return svola_adjoint(y, self.kernels if kernels is None else kernels, self.windows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)
