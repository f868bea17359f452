"""Automatic kernel size (``kernel_size="auto"``): pick the kernel box from the image itself.

The kernel is estimated once, cheaply, at half resolution with the *largest* available size
(a few alternations of the same coarse-to-fine L0 / least-squares estimation as the kernel
stage, on a crop of at most 2 x ``max_side`` pixels). The support of that estimate — the
bounding box of its main connected parts above 20 % of its maximum (:func:`kernel_support`)
— is scaled back to full resolution, a margin is added, and the smallest candidate size that
covers it is chosen. When the estimate's faint tails (above 10 % of its maximum) fill its
whole box the blur may be larger than the largest available size: the choice says so
(``exceeds``) and the solver warns. A box much larger than the blur only adds unknowns (noise in the kernel,
slower estimation); a box smaller than the blur cannot represent it.

That quick choice is then checked (``compare=True``, the default): the kernel is estimated with
the chosen size *and* its neighbouring candidate (the next larger one, or the next smaller one
when the choice is the largest), each estimate restores the estimation crop with the final
non-blind step, and the size whose restoration is sharpest and cleanest — the lowest
normalised gradient sparsity ``‖∇x‖₁ / ‖∇x‖₂`` (Krishnan et al. 2011; :func:`restoration_scores`)
— wins. An estimate in a box too small for the blur is compact and under-deblurs (the
restoration stays blurry: higher score); one in a box too large carries estimation noise and
rings (many small gradients: higher score). The data residual was tried first and rejected:
it prefers narrow kernels (a delta leaves almost none) and on Levin chose 23 px for 21 px
blurs that need 31. Replayed on 57 blurs with the per-size results (BSDS val 25, Levin 32),
the sparsity picks sizes worth 0.15 dB less than the better of 23 and 31 per image on average,
and beats both fixed sizes on every set (docs/benchmarks.md), for about twice the
kernel-estimation time. When the quick choice is the largest size and its estimate fills its
box (the blur may exceed the largest size), every candidate would truncate the blur, and the
largest size is kept without comparing.

Candidates are the sizes the kernel prior can serve: 23 (a centre crop of a larger
generator) plus every shipped generator size up to the largest (31 today; 55 and 75 join
automatically when their weights are shipped), or the size of a user's generator file. 15 is
not offered: on our benchmarks a 15 px box lost more on blurs it could not hold (up to 7 dB
on Levin) than it gained on small ones (≤ 0.5 dB); it remains the fallback for images too
small for 23.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .blur import conv_same
from .nonblind import sparse_deconv
from .stages import PyramidConfig, coarse_to_fine_stage, informative_crop

__all__ = ["AutoSizeConfig", "SizeChoice", "candidate_sizes", "kernel_support", "choose_kernel_size",
           "compared_sizes", "restoration_scores", "restored_scores"]

SMALL_SIZES = (23,)


@dataclass(frozen=True)
class AutoSizeConfig:
    """Settings of the automatic kernel size.

    Attributes
    ----------
    scale:
        Resolution of the quick estimate relative to the image (0.5: half).
    max_side:
        Side (pixels, at that resolution) of the informative window the estimate runs on.
    outer_iters:
        Alternations per pyramid scale of the quick estimate.
    threshold:
        Entries below this fraction of the kernel's maximum do not count as support.
    exceed_threshold:
        The same, lower, for the warning that the blur may exceed the largest size (the
        faint tails of a long blur count there).
    margin:
        Relative margin added to the measured support before choosing a size.
    pad:
        Absolute margin in pixels (full resolution) added on top of ``margin`` (negative:
        the half-resolution estimate over-measures by 2–3 px). With the candidates 23 and 31
        this means "31 when the measured support exceeds 26 px". Chosen by replaying the
        size choice on 23 benchmark blurs with known per-size results (BSDS val and Levin,
        docs/benchmarks.md).
    compare:
        Check the quick choice by estimating the kernel with it and its neighbouring candidate
        and keeping the size whose restoration is sharpest (:func:`compared_sizes`,
        :func:`restoration_scores`); about twice the kernel-estimation time. ``False``: the quick
        choice alone.
    """

    scale: float = 0.5
    max_side: int = 192
    outer_iters: int = 3
    threshold: float = 0.2
    exceed_threshold: float = 0.1
    margin: float = 0.0
    pad: int = -3
    compare: bool = True


@dataclass(frozen=True)
class SizeChoice:
    """Outcome of :func:`choose_kernel_size` (all sizes in full-resolution pixels)."""

    size: int
    support: float
    candidates: tuple[int, ...]
    exceeds: bool
    seconds: float
    tail_support: float = float("nan")

    def as_info(self) -> dict:
        return {"support": round(self.support, 1), "tail_support": round(self.tail_support, 1),
                "candidates": list(self.candidates), "exceeds_largest": self.exceeds,
                "seconds": round(self.seconds, 3)}


def candidate_sizes(largest: int) -> tuple[int, ...]:
    """Kernel sizes offered to the automatic choice when the prior can serve up to ``largest``.

    >>> candidate_sizes(31)
    (23, 31)
    """
    from .weights import shipped_weights

    shipped = {e.kernel_size for e in shipped_weights() if e.role == "generator"}
    sizes = {s for s in set(SMALL_SIZES) | shipped if s <= largest} | {largest}
    return tuple(sorted(sizes))


def kernel_support(k: np.ndarray, threshold: float = 0.1, mass: float = 0.9) -> float:
    """Extent in pixels of kernel ``k`` ``(s, s)``: the side of the bounding box of its main
    connected parts.

    Entries above ``threshold`` times the maximum are grouped into 8-connected components
    (:func:`skimage.measure.label`); the heaviest components are kept until they hold ``mass``
    of the thresholded kernel's mass, so isolated specks of estimation noise do not count.
    Returns the larger side of their bounding box.

    >>> k = np.zeros((9, 9)); k[4, 2:7] = 0.2
    >>> kernel_support(k)
    5.0
    """
    from skimage.measure import label

    k = np.clip(np.asarray(k, dtype=np.float64), 0, None)
    if k.max() <= 0:
        return 1.0
    on = k >= threshold * k.max()
    lab = label(on, connectivity=2)
    masses = np.bincount(lab.ravel(), weights=k.ravel())
    masses[0] = 0.0
    keep = np.zeros_like(on)
    total = masses.sum()
    for idx in np.argsort(masses)[::-1]:
        if masses[idx] <= 0:
            break
        keep |= lab == idx
        if k[keep].sum() >= mass * total:
            break
    rows, cols = np.nonzero(keep)
    return float(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))


def choose_kernel_size(
    lum: torch.Tensor, candidates: tuple[int, ...], cfg: AutoSizeConfig = AutoSizeConfig(),
    pyramid: PyramidConfig = PyramidConfig(), weight: torch.Tensor | None = None,
) -> SizeChoice:
    """Choose the kernel size for gray ``lum`` ``(1, 1, H, W)`` in [0, 1] among ``candidates``.

    ``weight`` (``(1, 1, H, W)``, 1 = trusted) excludes pixels (e.g. saturated highlights) from
    the quick estimate's data term, as in the kernel stage.
    """
    import time

    t0 = time.perf_counter()
    candidates = tuple(sorted(candidates))
    largest = candidates[-1]
    if len(candidates) == 1:
        return SizeChoice(largest, float("nan"), candidates, False, 0.0)
    side = int(round(cfg.max_side / cfg.scale))
    r, c = informative_crop(lum if weight is None else lum * weight, side)
    y = lum[..., r : r + side, c : c + side]
    h, w = y.shape[-2:]
    hs, ws = max(int(round(h * cfg.scale)), 8), max(int(round(w * cfg.scale)), 8)
    ys = F.interpolate(y, size=(hs, ws), mode="bilinear", antialias=True, align_corners=False)
    ws_ = None
    if weight is not None:
        wcrop = weight[..., r : r + side, c : c + side]
        # a low-resolution pixel is trusted only if all the pixels it averages are
        ws_ = -F.adaptive_max_pool2d(-wcrop, (hs, ws))
    k_small = max(int(round(largest * cfg.scale)) | 1, 7)
    k_small = min(k_small, (min(hs, ws) // 2 - 1) | 1)
    cfg_p = replace(pyramid, outer_iters=cfg.outer_iters, refine_iters=0)
    k = None
    for _loss, k in coarse_to_fine_stage(ys, k_small, cfg_p, weight=ws_):
        pass
    k_np = k[0, 0].cpu().numpy()
    support = kernel_support(k_np, cfg.threshold) / cfg.scale
    need = support * (1 + cfg.margin) + cfg.pad
    fits = [s for s in candidates if s >= need]
    size = fits[0] if fits else largest
    # the quick estimate cannot measure beyond its box: filling it means "maybe larger"
    tails = kernel_support(k_np, cfg.exceed_threshold) / cfg.scale
    exceeds = tails >= largest - 2
    return SizeChoice(size, support, candidates, exceeds, time.perf_counter() - t0, tails)


def compared_sizes(size: int, candidates: tuple[int, ...]) -> tuple[int, ...]:
    """The sizes whose estimates are compared: the quick choice ``size`` and
    its neighbour among ``candidates`` (the next larger one; the next smaller one when
    ``size`` is the largest). The quick choice comes first.

    >>> compared_sizes(23, (23, 31)), compared_sizes(31, (23, 31, 55)), compared_sizes(15, (15,))
    ((23, 31), (31, 55), (15,))
    """
    candidates = tuple(sorted(candidates))
    if size not in candidates or len(candidates) == 1:
        return (size,)
    i = candidates.index(size)
    other = candidates[i + 1] if i + 1 < len(candidates) else candidates[i - 1]
    return (size, other)


def restoration_scores(y: torch.Tensor, k: torch.Tensor, *, lam: float, alpha: float,
                       iters: int, weight: torch.Tensor | None = None,
                       margin: int = 0) -> dict[str, float]:
    """Scores of the restoration of the blurry ``y`` ``(1, 1, H, W)`` in [0, 1] with kernel ``k``
    ``(1, 1, s, s)``: ``x`` = the image the final step would give (hyper-Laplacian
    restoration with ``lam``, ``alpha``, ``iters`` and its data ``weight``, e.g. saturated
    pixels left out), clipped to [0, 1]. ``margin`` pixels on every side are left out (use the
    same margin, wider than half of either kernel, when comparing two sizes).

    Returns ``{"sparsity": ..., "residual": ...}``:

    * ``sparsity`` — the normalised sparsity ``‖∇x‖₁ / ‖∇x‖₂`` of the restoration (Krishnan et
      al., CVPR 2011): blur lowers the L2 norm of the gradients more than their L1 norm and
      ringing adds many small gradients, so it is *lowest for the sharpest, cleanest*
      restoration. This is what :func:`compared_sizes`' candidates are ranked by.
    * ``residual`` — the mean squared ``|x ⋆ k - y|²`` (re-blurred with reflected borders, over
      the pixels ``weight`` trusts). It does not rank sizes well: a kernel narrower than the
      blur (a delta at the extreme) leaves *less* residual, and on Levin it chose a compact
      23 px estimate for 21 px blurs that need 31 (−1 dB over 32 images). It does flag a
      failed estimate, whose residual is many times the noise variance (the solver's fit
      check, ``info["fit_ratio"]``).
    """
    with torch.no_grad():
        k = k.to(y.dtype)
        x = sparse_deconv(y, k, lam=lam, alpha=alpha, outer=iters, weight=weight).clamp(0, 1)
        return restored_scores(y, x, k, weight=weight, margin=margin)


def restored_scores(y: torch.Tensor, x: torch.Tensor, k: torch.Tensor, *,
                    weight: torch.Tensor | None = None, margin: int = 0) -> dict[str, float]:
    """:func:`restoration_scores` of a given restoration ``x`` of ``y`` (both ``(1, 1, H, W)``,
    aligned, in [0, 1]) with kernel ``k``. The residual is averaged over the pixels that
    ``weight`` trusts (all when ``None``)."""
    with torch.no_grad():
        k = k.to(y.dtype)
        r = conv_same(x, k) - y
        w = torch.ones_like(r) if weight is None else weight.to(r.dtype).expand_as(r)
        gx = x[..., :, 1:] - x[..., :, :-1]
        gy = x[..., 1:, :] - x[..., :-1, :]
        if margin > 0 and min(r.shape[-2:]) > 2 * margin + 8:
            m = margin
            r, w = r[..., m:-m, m:-m], w[..., m:-m, m:-m]
            gx, gy = gx[..., m:-m, m:-m], gy[..., m:-m, m:-m]
        l1 = gx.abs().mean() + gy.abs().mean()
        l2 = (gx.pow(2).mean() + gy.pow(2).mean()).sqrt().clamp_min(1e-12)
        residual = (w * r * r).sum() / w.sum().clamp_min(1.0)
        return {"sparsity": float(l1 / l2), "residual": float(residual)}
