"""Non-blind deconvolution with a known kernel.

* :func:`wiener_deconv` — one FFT, for live previews.
* :func:`l0_deconv` — L0-gradient deconvolution by half-quadratic splitting (Xu, Zheng & Jia,
  "Unnatural L0 sparse representation for natural image deblurring", CVPR 2013; as used by
  Pan et al. 2014). Its piecewise-constant, sharp-edged output is what kernel estimation needs.
* :func:`sparse_deconv` — hyper-Laplacian deconvolution (Levin et al. 2007, |∇x|^α with
  α = 0.8) by iteratively re-weighted least squares and conjugate gradients on the exact
  *valid* blur model, so image borders need no periodic assumption. This is the final,
  full-resolution restoration step.

The FFT-based solvers work on a periodic domain; :func:`periodic_pad` first extends the
blurry image so that it wraps around smoothly (no seam), in the spirit of Liu & Jia (ICIP
2008).

All functions take ``y`` ``(B, C, H, W)`` and a kernel ``(1, 1, k, k)`` (odd ``k``) and return
tensors of the same dtype.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .blur import FFTCorrelation, fft_shape

__all__ = [
    "periodic_pad", "psf2otf", "wiener_deconv", "l0_deconv", "sparse_deconv", "sparse_deconv_op",
    "sparse_deconv_tiled", "iter_sparse_deconv_tiled", "conjugate_gradient",
]


# Conjugate-gradient iterations per IRLS re-weighting of the final step. 15 restores as well as
# 30 or slightly better (the truncated solve regularises a little), for half the time: replayed
# with the estimated kernels, Levin 32 (``fast``) 33.10 -> 33.18 dB, 25 BSDS val blurs at 1 %
# noise 23.68 -> 23.69 dB; 10 iterations fall back to 33.09 / 23.68 (docs/benchmarks.md).
CG_ITERS = 15


def periodic_pad(y: torch.Tensor, pad: int, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Extend ``y`` by ``pad`` pixels before each side so that the result is smooth when wrapped.

    The band between the right and left edges (and between bottom and top) is filled by a
    cosine blend from one edge's values to the other's. It is ``2 pad`` long, or as long as
    needed to reach ``shape`` (``(H', W')``, each at least ``y``'s side plus ``2 pad``; used to
    land on a fast FFT size, :func:`~napari_glkm.backend.blur.fft_shape`); ``pad`` of it
    comes before the image, the rest after, so the image starts at ``pad`` either way.
    """
    if pad <= 0 and shape is None:
        return y
    out = y
    for i, dim in enumerate((-1, -2)):
        n = out.shape[dim]
        band_len = 2 * pad if shape is None else shape[1 - i] - n
        if band_len < 2 * pad:
            raise ValueError(f"shape {shape} leaves less than 2 * pad = {2 * pad} pixels of band")
        if band_len == 0:
            continue
        first = out.narrow(dim, 0, 1)
        last = out.narrow(dim, n - 1, 1)
        # band_len samples strictly between last (t=0) and first (t=1).
        t = (torch.arange(1, band_len + 1, dtype=y.dtype, device=y.device) / (band_len + 1))
        w = 0.5 - 0.5 * torch.cos(torch.pi * t)
        view = [1] * out.ndim
        view[dim] = band_len
        w = w.reshape(view)
        band = last * (1 - w) + first * w
        out = torch.cat([band.narrow(dim, band_len - pad, pad), out,
                         band.narrow(dim, 0, band_len - pad)], dim=dim)
    return out


def psf2otf(k: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Real FFT of kernel ``(…, k, k)`` centred at the origin of a periodic grid ``shape``."""
    kh, kw = k.shape[-2:]
    padded = F.pad(k, (0, shape[1] - kw, 0, shape[0] - kh))
    padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.rfft2(padded)


def _diff_otfs(shape: tuple[int, int], dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    dx = torch.zeros(1, 1, 1, 3, dtype=dtype, device=device)
    dx[..., 1], dx[..., 2] = -1, 1
    dy = dx.transpose(-1, -2)
    return psf2otf(dx, shape), psf2otf(dy, shape)


def _crop_valid_domain(x: torch.Tensor, pad: int, h: int, w: int, k: int) -> torch.Tensor:
    c = k // 2
    return x[..., pad - c : pad - c + h + k - 1, pad - c : pad - c + w + k - 1]


def wiener_deconv(y: torch.Tensor, k: torch.Tensor, nsr: float = 1e-3) -> torch.Tensor:
    """Wiener-like deconvolution with a gradient regulariser; output has ``y``'s size.

    ``nsr`` weighs ``|∇x|²`` against the data term (larger = smoother).
    """
    kk = k.shape[-1]
    h, w = y.shape[-2:]
    pad = kk
    yp = periodic_pad(y, pad, fft_shape(h + 2 * pad, w + 2 * pad))
    shape = yp.shape[-2:]
    kf = psf2otf(k, shape)
    gx, gy = _diff_otfs(shape, y.dtype, y.device)
    num = torch.fft.rfft2(yp) * kf  # blur is a correlation: Y = X conj(K)
    den = kf.abs() ** 2 + nsr * (gx.abs() ** 2 + gy.abs() ** 2)
    x = torch.fft.irfft2(num / den, s=shape)
    return x[..., pad : pad + h, pad : pad + w]


def l0_deconv(
    y: torch.Tensor,
    k: torch.Tensor,
    lam: float,
    *,
    beta_max: float = 1e5,
    kappa: float = 2.0,
) -> torch.Tensor:
    """L0-gradient deconvolution; returns the estimate on the valid-model domain.

    Solves ``min_x ||x ⋆ k - y||² + lam ||∇x||_0`` by half-quadratic splitting with
    ``beta`` growing from ``2 lam`` by ``kappa`` up to ``beta_max``.

    Returns
    -------
    torch.Tensor
        ``(B, C, H + k - 1, W + k - 1)``: the sharp image that :func:`conv_valid` maps to ``y``.
    """
    kk = k.shape[-1]
    h, w = y.shape[-2:]
    pad = kk
    yp = periodic_pad(y, pad, fft_shape(h + 2 * pad, w + 2 * pad))
    shape = yp.shape[-2:]
    kf = psf2otf(k, shape)
    gx, gy = _diff_otfs(shape, y.dtype, y.device)
    ktk = kf.abs() ** 2
    dtd = gx.abs() ** 2 + gy.abs() ** 2
    kty = torch.fft.rfft2(yp) * kf  # K^H applied to y for the correlation model
    x = yp
    beta = 2 * lam
    while beta < beta_max:
        xf = torch.fft.rfft2(x)
        hx = torch.fft.irfft2(xf * gx, s=shape)
        vy = torch.fft.irfft2(xf * gy, s=shape)
        keep = (hx**2 + vy**2) >= lam / beta
        hx, vy = hx * keep, vy * keep
        num = kty + beta * (torch.fft.rfft2(hx) * gx.conj() + torch.fft.rfft2(vy) * gy.conj())
        x = torch.fft.irfft2(num / (ktk + beta * dtd), s=shape)
        beta *= kappa
    return _crop_valid_domain(x, pad, h, w, kk)


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def _grad_adjoint(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(*gx.shape[:-1], gx.shape[-1] + 1, dtype=gx.dtype, device=gx.device)
    out[..., :, 1:] += gx
    out[..., :, :-1] -= gx
    out[..., 1:, :] += gy
    out[..., :-1, :] -= gy
    return out


def sparse_deconv(
    y: torch.Tensor,
    k: torch.Tensor,
    *,
    lam: float = 2e-3,
    alpha: float = 0.8,
    outer: int = 4,
    cg_iters: int = CG_ITERS,
    eps: float = 1e-3,
    x0: torch.Tensor | None = None,
    return_valid_domain: bool = False,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hyper-Laplacian (``|∇x|^alpha``) deconvolution on the exact valid model.

    Minimises ``||x ⋆ k - y||² + lam Σ |∇x|^alpha`` over ``x`` of size ``(H+k-1, W+k-1)`` by
    IRLS (``outer`` re-weightings) with conjugate gradients (``cg_iters`` per re-weighting,
    warm-started from the previous estimate; see :data:`CG_ITERS`).

    ``weight`` (broadcastable to ``y``, values in [0, 1]) weighs the data term per pixel,
    ``||w^½ (x ⋆ k - y)||²``: 0 drops a pixel that does not follow the blur model (a saturated
    highlight), and the prior fills it in from its neighbours (Whyte et al., IJCV 2014, treat
    saturation the same way).

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)``, the estimate aligned with ``y`` (centre crop of the valid domain), or
        the whole valid domain with ``return_valid_domain=True``.
    """
    kk = k.shape[-1]
    c = kk // 2
    op = FFTCorrelation(k, (y.shape[-2] + kk - 1, y.shape[-1] + kk - 1))
    x = sparse_deconv_op(
        y, op.valid, op.adjoint, c,
        lam=lam, alpha=alpha, outer=outer, cg_iters=cg_iters, eps=eps, x0=x0, weight=weight,
    )
    if return_valid_domain:
        return x
    return x[..., c : c + y.shape[-2], c : c + y.shape[-1]]


def _tile_spans(n: int, tile: int, blend: int) -> list[tuple[int, int, int, int]]:
    """Cut ``[0, n)`` into spans of at most ``tile`` that overlap by exactly ``blend``; returns
    ``(start, stop, ramp_in, ramp_out)`` per span (no ramp at the image borders)."""
    if n <= tile:
        return [(0, n, 0, 0)]
    count = -(-(n - blend) // (tile - blend))
    step = (n - blend) / count
    starts = [int(round(i * step)) for i in range(count)] + [n - blend]
    return [(starts[i], starts[i + 1] + blend, 0 if i == 0 else blend,
             0 if i == count - 1 else blend) for i in range(count)]


def _ramp(length: int, ramp_in: int, ramp_out: int) -> torch.Tensor:
    w = torch.ones(length, dtype=torch.float64)
    if ramp_in:
        w[:ramp_in] = (torch.arange(ramp_in, dtype=torch.float64) + 0.5) / ramp_in
    if ramp_out:
        w[length - ramp_out:] = (ramp_out - 0.5 - torch.arange(ramp_out, dtype=torch.float64)) / ramp_out
    return w


def iter_sparse_deconv_tiled(
    y: torch.Tensor,
    k: torch.Tensor,
    *,
    tile: int = 1024,
    margin: int | None = None,
    blend: int = 32,
    **kwargs,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """:func:`sparse_deconv` of a large ``(1, C, H, W)`` image in overlapping tiles, yielding
    ``(tiles_done, n_tiles, out)`` after every tile (``out`` is complete after the last).

    Each ``tile``-sized core is deconvolved with ``margin`` extra pixels of context on every
    side (default three kernel widths, discarded afterwards); neighbouring cores overlap by
    ``blend`` pixels and are cross-faded with linear ramps that sum to one. The working memory is
    that of one ``tile + 2 * margin`` square, whatever the image size; the output itself is
    allocated once. Yielding per tile lets a caller report progress and stop between tiles.
    """
    h, w = y.shape[-2:]
    m = 3 * k.shape[-1] if margin is None else int(margin)
    rows, cols = _tile_spans(h, tile, blend), _tile_spans(w, tile, blend)
    weight = kwargs.pop("weight", None)  # per-pixel data weight: cut with its tile
    if weight is not None:
        weight = weight.expand(-1, -1, h, w) if weight.shape[-2:] != (h, w) else weight
    out = torch.zeros_like(y)
    done = 0
    for r0, r1, ri, ro in rows:
        wr = _ramp(r1 - r0, ri, ro).to(y.dtype)
        for c0, c1, ci, co in cols:
            wc = _ramp(c1 - c0, ci, co).to(y.dtype)
            a0, a1 = max(r0 - m, 0), min(r1 + m, h)
            b0, b1 = max(c0 - m, 0), min(c1 + m, w)
            wt = None if weight is None else weight[..., a0:a1, b0:b1]
            x = sparse_deconv(y[..., a0:a1, b0:b1], k, weight=wt, **kwargs)
            core = x[..., r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]
            out[..., r0:r1, c0:c1] += core * (wr[:, None] * wc[None, :]).to(y.device)
            done += 1
            yield done, len(rows) * len(cols), out


def sparse_deconv_tiled(y: torch.Tensor, k: torch.Tensor, **kwargs) -> torch.Tensor:
    """:func:`sparse_deconv` in overlapping tiles (see :func:`iter_sparse_deconv_tiled`, which
    takes the same keywords); bounded working memory for images of any size."""
    out = y
    for _done, _n, out in iter_sparse_deconv_tiled(y, k, **kwargs):
        pass
    return out


def sparse_deconv_op(
    y: torch.Tensor,
    A,
    A_adjoint,
    margin: int,
    *,
    lam: float = 2e-3,
    alpha: float = 0.8,
    outer: int = 4,
    cg_iters: int = CG_ITERS,
    eps: float = 1e-3,
    x0: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`sparse_deconv` for any valid blur operator ``A`` (uniform or SVOLA).

    ``A`` maps ``(B, C, H + 2 margin, W + 2 margin)`` to ``y``'s ``(B, C, H, W)`` and
    ``A_adjoint`` back. Returns the whole estimate on the sharp domain (crop ``margin`` pixels
    per side to align it with ``y``). ``weight`` weighs the data term per pixel of ``y``.
    """
    c = margin
    if x0 is None:
        x = F.pad(y, (c, c, c, c), mode="replicate")
    else:
        x = x0.clone()
    rhs = A_adjoint(y if weight is None else weight * y)
    wx = torch.ones_like(x[..., :, 1:])
    wy = torch.ones_like(x[..., 1:, :])

    def normal_op(v: torch.Tensor) -> torch.Tensor:
        gx, gy = _grad(v)
        r = A(v)
        return A_adjoint(r if weight is None else weight * r) + lam * _grad_adjoint(wx * gx, wy * gy)

    for it in range(outer):
        if it > 0:  # the first solve is quadratic (weights 1), then IRLS re-weighting
            gx, gy = _grad(x)
            wx = alpha / 2 * gx.abs().clamp_min(eps) ** (alpha - 2)
            wy = alpha / 2 * gy.abs().clamp_min(eps) ** (alpha - 2)
        x = conjugate_gradient(normal_op, rhs, x, cg_iters)
    return x


def conjugate_gradient(op, b: torch.Tensor, x: torch.Tensor, iters: int) -> torch.Tensor:
    """Batched CG for the SPD system ``op(x) = b`` (one system per (B, C) slice); ``x`` is the
    start (not modified) and the updates are in place on the working copies."""
    dims = (-2, -1)
    r = b - op(x)
    x = x.clone()
    p = r.clone()
    rs = (r * r).sum(dims, keepdim=True)
    for _ in range(iters):
        ap = op(p)
        alpha = rs / (p * ap).sum(dims, keepdim=True).clamp_min(1e-30)
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1.0)
        rs_new = (r * r).sum(dims, keepdim=True)
        p.mul_(rs_new / rs.clamp_min(1e-30)).add_(r)
        rs = rs_new
    return x
