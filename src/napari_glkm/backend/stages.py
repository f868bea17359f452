"""The optimisation stages that :func:`~napari_glkm.backend.solver.iter_deblur` chains.

Each stage is a generator that yields after every iteration, so the caller can report
progress, show previews and stop at any time.

* :func:`coarse_to_fine_stage` — fast kernel estimation: on an image pyramid (kernel sizes
  e.g. 7 -> 11 -> 15 -> 21 -> 31), alternate an L0-gradient image estimate (closed form by FFT)
  with a least-squares kernel update on the gradient-domain data term ``||∇x ⋆ k - ∇y||²``.
* :func:`projection_stage` — GAN inversion: the kernel prior's parameters (GLKM: the
  generator's first-layer feature map) are fitted to a pixel kernel.
* :func:`dip_stage` — GLKM's joint optimisation of a Deep Image Prior network and the kernel
  prior on ``||x ⋆ k - y||²`` (MSE first, then 1 - SSIM), as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from kornia.metrics import ssim as kornia_ssim
from scipy import ndimage
from torch import nn

from .blur import conv_valid
from .kernel_prior import resize_kernel
from .nonblind import conjugate_gradient, l0_deconv, sparse_deconv
from .priors.diffusion import DiffusionImagePrior, load_diffusion_model
from .priors.dip import DIPImagePrior
from .priors.vdip import VDIPImagePrior, vdip_elbo, vdip_noise_level
from .safety import DivergenceGuard, all_finite

__all__ = [
    "PyramidConfig", "ProjectionConfig", "DIPConfig", "pyramid_sizes", "coarse_to_fine_stage",
    "projection_stage", "dip_stage", "least_squares_kernel", "informative_crop",
    "drop_kernel_islands", "center_kernel", "kernel_centroid",
]


@dataclass(frozen=True)
class PyramidConfig:
    """Settings of the coarse-to-fine kernel estimation (per scale unless stated).

    The L0 weight starts at ``l0_lambda`` on every scale and decays by ``l0_lambda_decay`` per
    alternation (not below ``l0_lambda_min``); with 5–10 alternations it stays at 4–6e-4, so the
    latent image of the last scale keeps only strong edges and the kernel comes out thick.
    ``refine_iters`` more alternations at the finest scale with the small weight
    ``refine_lambda`` (finer edges) and the kernel thresholded after every update (noise out of
    the support) thin it: +0.7 to +1.3 dB on Levin (docs/benchmarks.md). Finally, isolated
    specks of the estimate carrying less than ``island_mass`` of it are dropped
    (:func:`drop_kernel_islands`). With ``center`` every scale's estimate is re-centred on
    its centre of mass (:func:`center_kernel`; off in SVOLA mode, whose patch kernels are
    estimated around the global one and blended across patches).
    """

    outer_iters: int = 10
    l0_lambda: float = 1e-3
    l0_lambda_min: float = 1e-4
    l0_lambda_decay: float = 1.1
    kernel_gamma: float = 20.0
    cg_iters: int = 20
    threshold: float = 0.05
    min_kernel: int = 7
    ratio: float = 2**-0.5
    max_side: int = 512
    refine_iters: int = 3
    refine_lambda: float = 1e-4
    island_mass: float = 0.05
    center: bool = True


@dataclass(frozen=True)
class ProjectionConfig:
    """GAN inversion of the pixel kernel into the kernel prior (GLKM's feature map)."""

    steps: int = 600
    lr: float = 2e-2
    chunk: int = 50


@dataclass(frozen=True)
class DIPConfig:
    """Settings of the image-prior + GLKM joint stage (learning rates and loss switch of the
    paper). ``kind`` picks the image prior: ``"dip"`` (Deep Image Prior, MSE then 1 - SSIM) or
    ``"vdip"`` (variational DIP: MSE warm-up, then the ELBO of
    :mod:`~napari_glkm.backend.priors.vdip` until ``elbo_fraction`` of the run, then 1 - SSIM).
    The paper switches to 1 - SSIM at 40 %; keeping the ELBO to the end (``elbo_fraction=1``)
    measured +1.7 dB better here (96² camera crop, known 15-px kernel, 400 iterations: ELBO to
    the end 30.47 dB, switch at 40 % 28.76, at 70 % 29.75; DIP 29.42), so that is our default."""

    kind: str = "dip"
    iters: int = 0
    channels: int = 128
    scales: int = 5
    skip: int = 16
    nonlocal_blocks: bool = False
    image_lr: float = 0.01
    kernel_lr: float = 5e-4
    mse_iters: int = 500
    kernel_warmup: int = 0
    elbo_fraction: float = 1.0
    vdip_lambda: float = 0.2
    # kind="diffusion" (:mod:`~napari_glkm.backend.priors.diffusion`): MSE throughout, Adam on
    # the DDIM latent (``image_lr``); the model is a loaded module, a path or None (shipped).
    diffusion_model: object = None
    diffusion_t: int = 50
    ddim_steps: int = 2


def pyramid_sizes(kernel_size: int, min_kernel: int = 7, ratio: float = 2**-0.5) -> list[int]:
    """Odd kernel sizes from coarse to fine, ending at ``kernel_size``."""
    sizes = [kernel_size]
    s = float(kernel_size)
    while True:
        s *= ratio
        k = int(round(s)) | 1
        if k < min_kernel or k >= sizes[-1]:
            break
        sizes.append(k)
    return sizes[::-1]


def _grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def _downscale(y: torch.Tensor, factor: float, min_side: int) -> torch.Tensor:
    if factor >= 1.0:
        return y
    h = max(int(round(y.shape[-2] * factor)), min_side)
    w = max(int(round(y.shape[-1] * factor)), min_side)
    return F.interpolate(y, size=(h, w), mode="bilinear", antialias=True, align_corners=False)


def informative_crop(y: torch.Tensor, side: int) -> tuple[int, int]:
    """Top-left corner of the ``side``-pixel window of ``y`` (1, 1, H, W) with the most edges."""
    h, w = y.shape[-2:]
    if h <= side and w <= side:
        return 0, 0
    gx, gy = _grads(y)
    energy = gx[..., :-1, :].abs() + gy[..., :, :-1].abs()
    ch, cw = min(side, h - 1), min(side, w - 1)
    box = F.avg_pool2d(energy, (ch, cw), stride=8)
    idx = int(torch.argmax(box))
    r, c = divmod(idx, box.shape[-1])
    return min(r * 8, h - min(side, h)), min(c * 8, w - min(side, w))


def least_squares_kernel(
    xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], k0: torch.Tensor, gamma: float,
    iters: int, *, ref: torch.Tensor | None = None, prox: float = 0.0,
    support: torch.Tensor | None = None, weights: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``argmin_k Σ ||x_i ⋆ k - y_i||² + gamma ||k||² + γ_p ||k - ref||²`` by CG (warm start
    ``k0``), then clipped to non-negative (and to ``support``, a 0/1 mask, if given) and
    normalised to sum 1.

    ``prox`` is relative: ``γ_p = prox · Σ_i ||x_i||²`` per batch element (the diagonal of the
    data term's normal operator), so ``prox = 1`` weighs the pull towards ``ref`` like the data.

    ``weights`` (one per ``y_i``, its shape, values in [0, 1]) weigh the data term per pixel:
    ``Σ ||w_i^½ (x_i ⋆ k - y_i)||²`` (0 excludes a pixel, e.g. a saturated highlight).

    Batched: ``x_i``/``y_i`` ``(B, 1, ., .)`` with ``k0`` ``(B, 1, k, k)`` solve ``B`` independent
    problems (one kernel per image, e.g. per SVOLA patch)."""
    gp = None
    if ref is not None and prox > 0:
        gp = prox * sum((x * x).sum(dim=(-3, -2, -1), keepdim=True) for x in xs)

    ws = [None] * len(xs) if weights is None else list(weights)

    def normal_op(k: torch.Tensor) -> torch.Tensor:
        out = gamma * k
        if gp is not None:
            out = out + gp * k
        for x, w in zip(xs, ws):
            r = conv_valid(x, k, method="fft")
            out = out + conv_valid(x, r if w is None else w * r, method="fft")
        return out

    rhs = sum(conv_valid(x, y if w is None else w * y, method="fft") for x, y, w in zip(xs, ys, ws))
    if gp is not None:
        rhs = rhs + gp * ref
    k = conjugate_gradient(normal_op, rhs, k0.clone(), iters).clamp_min(0)
    if support is not None:
        k = k * support
    return k / k.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def dilated_support(k: torch.Tensor, fraction: float, radius: int) -> torch.Tensor:
    """0/1 mask of the entries of ``k`` ``(B, 1, s, s)`` above ``fraction`` of its maximum,
    dilated by a ``(2 radius + 1)²`` square."""
    m = (k >= k.amax(dim=(-2, -1), keepdim=True) * fraction).to(k.dtype)
    if radius > 0:
        m = F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)
    return m


def threshold_kernel(k: torch.Tensor, fraction: float) -> torch.Tensor:
    """Zero the entries below ``fraction`` of the maximum (noise in the support), renormalise."""
    k = torch.where(k < k.amax(dim=(-2, -1), keepdim=True) * fraction, torch.zeros_like(k), k)
    return k / k.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def kernel_centroid(k: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` (row, col) centres of mass of kernels ``(B, 1, s, s)`` (an empty kernel gives 0)."""
    s = k.shape[-1]
    idx = torch.arange(s, dtype=k.dtype, device=k.device)
    m = k.sum(dim=(-2, -1)).clamp_min(1e-12)[:, 0]
    return torch.stack([(k.sum(-1)[:, 0] * idx).sum(-1) / m, (k.sum(-2)[:, 0] * idx).sum(-1) / m],
                       dim=-1)


def center_kernel(k: torch.Tensor, min_shift: int = 2) -> torch.Tensor:
    """Shift each kernel of ``k`` ``(B, 1, s, s)`` by whole pixels so that its centre of mass
    is at the central pixel (what is shifted out is dropped), if it is ``min_shift`` or more
    pixels off along either axis. A blind estimate is defined only up to a shift; one that
    drifts off-centre at a coarse scale gets its tail cut by the window's border at the finer
    scales (seen on Levin's 27 px kernel 4). Shifting by a single pixel only perturbed the
    alternation (Levin, ``fast``: −0.5 to −1.4 dB on four images, for nothing)."""
    s = k.shape[-1]
    shifts = (s // 2 - torch.round(kernel_centroid(k))).to(torch.long).tolist()
    out = torch.zeros_like(k)
    for b, (dy, dx) in enumerate(shifts):
        kb = k[b, 0]
        if float(kb.sum()) <= 0 or max(abs(dy), abs(dx)) < min_shift:  # empty or centred
            out[b, 0] = kb
            continue
        src_y, dst_y = slice(max(0, -dy), s - max(0, dy)), slice(max(0, dy), s - max(0, -dy))
        src_x, dst_x = slice(max(0, -dx), s - max(0, dx)), slice(max(0, dx), s - max(0, -dx))
        out[b, 0, dst_y, dst_x] = kb[src_y, src_x]
    return out / out.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def drop_kernel_islands(k: torch.Tensor, min_mass: float) -> torch.Tensor:
    """Zero the 8-connected components of the support of ``k`` ``(B, 1, s, s)`` that carry less
    than ``min_mass`` of its sum (isolated specks the least-squares update leaves around a
    motion trajectory; Pan et al. 2014 remove them the same way), renormalise. The heaviest
    component is always kept."""
    if min_mass <= 0:
        return k
    out = k.detach().cpu().numpy().copy()
    for b in range(out.shape[0]):
        kb = out[b, 0]
        labels, n = ndimage.label(kb > 0, structure=np.ones((3, 3)))
        if n < 2:
            continue
        mass = ndimage.sum_labels(kb, labels, index=np.arange(1, n + 1)) / max(kb.sum(), 1e-12)
        drop = np.flatnonzero(mass < min(min_mass, mass.max())) + 1
        kb[np.isin(labels, drop)] = 0
    k = torch.from_numpy(out).to(k.device, k.dtype)
    return k / k.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def coarse_to_fine_stage(
    y: torch.Tensor, kernel_size: int, cfg: PyramidConfig, init: torch.Tensor | None = None,
    levels: int | None = None, ref: torch.Tensor | None = None, prox: float = 0.0,
    support_radius: int | None = None, weight: torch.Tensor | None = None,
    guard: DivergenceGuard | None = None,
) -> Iterator[tuple[float, torch.Tensor]]:
    """Estimate the kernel of gray ``y`` ``(1, 1, H, W)`` in [0, 1] by coarse-to-fine L0 /
    least-squares alternation (Xu et al. 2013, Pan et al. 2014 style; our implementation).

    Yields ``(loss, kernel)`` after every alternation, the kernel resampled to ``kernel_size``;
    the last yield is the estimate. ``init`` (any size) seeds the coarsest scale; ``levels``
    keeps only that many of the finest pyramid levels (a warm start needs no coarse levels).

    ``ref`` (``(B, 1, k, k)``, resampled per level) with ``prox`` > 0 adds the proximity term of
    :func:`least_squares_kernel`; ``support_radius`` restricts the kernel to the support of
    ``ref`` dilated by that many pixels (scaled per level). Both are for SVOLA patch kernels;
    the defaults leave the uniform estimation unchanged.

    ``weight`` ``(1, 1, H, W)`` in [0, 1] (``y``'s shape) weighs the kernel step's data term per
    pixel (0: excluded, e.g. saturated highlights and their blur footprint); per level it is
    reduced with a minimum filter, so a coarse pixel is trusted only where all its fine pixels
    are.

    A kernel update that comes out non-finite is rolled back and the rest of that scale is
    skipped (recorded with ``guard.note`` when a ``guard`` is given).
    """
    sizes = pyramid_sizes(kernel_size, cfg.min_kernel, cfg.ratio)
    if levels is not None:
        sizes = sizes[-levels:]
    s0 = sizes[0]
    if init is None:
        k = torch.zeros(1, 1, s0, s0, dtype=y.dtype, device=y.device)
        k[..., s0 // 2, s0 // 2 - 1 : s0 // 2 + 2] = 1.0 / 3.0
    else:
        k = resize_kernel(init.to(y.dtype), s0)
    n_ref = 255.0 * 255.0
    loss = torch.tensor(float("nan"))
    for si, s in enumerate(sizes):
        if si > 0:
            k = resize_kernel(k, s)
        ys = _downscale(y, s / kernel_size, 2 * s + 1)
        gyx, gyy = _grads(ys)
        gamma = cfg.kernel_gamma * ys.shape[-2] * ys.shape[-1] / n_ref
        if weight is not None:
            w = weight if weight.shape[-2:] == ys.shape[-2:] else \
                -F.adaptive_max_pool2d(-weight, ys.shape[-2:])
            wgx = torch.minimum(w[..., :, 1:], w[..., :, :-1])
            wgy = torch.minimum(w[..., 1:, :], w[..., :-1, :])
            extra_w = dict(weights=[wgx, wgy])
            gamma = gamma * float(w.mean().clamp_min(0.05))
        else:
            wgx = wgy = None
            extra_w = {}
        extra = {}
        if ref is not None:
            ref_s = resize_kernel(ref.to(y.dtype), s)
            extra = dict(ref=ref_s, prox=prox)
            if support_radius is not None:
                r = max(1, int(round(support_radius * s / kernel_size)))
                extra["support"] = dilated_support(ref_s, cfg.threshold, r)
        lam = cfg.l0_lambda
        n_iters = cfg.outer_iters + (cfg.refine_iters if si == len(sizes) - 1 else 0)
        for it in range(n_iters):
            refining = it >= cfg.outer_iters
            if refining:  # finest-scale refinement (see PyramidConfig)
                lam = cfg.refine_lambda
                if it == cfg.outer_iters:
                    k = threshold_kernel(k, cfg.threshold)
            x = l0_deconv(ys, k, lam)
            gxx, gxy = _grads(x)
            k_new = least_squares_kernel([gxx, gxy], [gyx, gyy], k, gamma, cfg.cg_iters,
                                         **extra, **extra_w)
            if refining:
                k_new = threshold_kernel(k_new, cfg.threshold)
            rx = conv_valid(gxx, k_new, method="fft") - gyx
            ry = conv_valid(gxy, k_new, method="fft") - gyy
            if wgx is not None:
                rx, ry = rx * wgx.sqrt(), ry * wgy.sqrt()
            new_loss = rx.pow(2).mean() + ry.pow(2).mean()
            if not all_finite([k_new, new_loss]):
                if guard is not None:
                    guard.note("kernel", it, f"non-finite kernel update at size {s} rolled back")
                break
            k, loss = k_new, new_loss
            lam = max(lam / cfg.l0_lambda_decay, cfg.l0_lambda_min)
            yield float(loss), resize_kernel(k, kernel_size)
        k = threshold_kernel(k, cfg.threshold)
        if cfg.center:
            k = center_kernel(k)
    yield float(loss), drop_kernel_islands(k, cfg.island_mass)


def projection_stage(
    kernel_prior: nn.Module, target: torch.Tensor, cfg: ProjectionConfig,
    guard: DivergenceGuard | None = None,
) -> Iterator[float]:
    """Fit the kernel prior's parameters (GLKM: the first-layer feature map) to ``target``
    ``(1, 1, k, k)`` by L1 with Adam; yields the L1 error every ``cfg.chunk`` steps.
    Non-finite steps are undone by ``guard`` (a fresh :class:`DivergenceGuard` by default)."""
    guard = guard if guard is not None else DivergenceGuard()
    opt = torch.optim.Adam(_trainable(kernel_prior), lr=cfg.lr)
    last = float("nan")
    for step in range(cfg.steps):
        loss = guard.step("glkm", step, opt, lambda: (kernel_prior() - target).abs().sum())
        if loss is not None:
            last = float(loss.detach())
        if (step + 1) % cfg.chunk == 0 or step + 1 == cfg.steps:
            yield last


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def dip_stage(
    y: torch.Tensor, kernel_prior: nn.Module, cfg: DIPConfig, *, seed: int = 0,
    guard: DivergenceGuard | None = None,
) -> Iterator[tuple[float, torch.Tensor]]:
    """Joint DIP image + kernel optimisation on ``y`` ``(1, C, H, W)``; yields ``(loss, x)``.
    Non-finite steps are undone by ``guard`` (a fresh :class:`DivergenceGuard` by default).

    ``x`` is the current sharp estimate ``(1, C, H, W)`` aligned with ``y`` (the centre of the
    DIP output, which covers ``(H + k - 1, W + k - 1)``).
    """
    k_size = kernel_prior.size
    h, w = y.shape[-2:]
    torch.manual_seed(seed)
    if cfg.kind not in ("dip", "vdip", "diffusion"):
        raise ValueError(f"unknown image prior {cfg.kind!r}; expected 'dip', 'vdip' or "
                         f"'diffusion'")
    if cfg.kind == "diffusion":
        image_prior = _diffusion_prior(y, kernel_prior, cfg, seed)
    else:
        prior_cls = VDIPImagePrior if cfg.kind == "vdip" else DIPImagePrior
        image_prior = prior_cls(
            (h + k_size - 1, w + k_size - 1), y.shape[1],
            channels=(cfg.channels,) * cfg.scales, skip=(cfg.skip,) * cfg.scales,
            nonlocal_scales=(2, 3, 4) if cfg.nonlocal_blocks else (), seed=seed,
        ).to(y.device)
    opt = torch.optim.Adam([
        {"params": _trainable(image_prior), "lr": cfg.image_lr},
        {"params": _trainable(kernel_prior), "lr": cfg.kernel_lr},
    ])
    n = cfg.iters
    milestones = [int(n * f) for f in (0.4, 0.6, 0.8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.5)
    c = k_size // 2
    guard = guard if guard is not None else DivergenceGuard()
    last = float("nan")
    out: list[torch.Tensor] = []

    elbo_end = max(int(n * cfg.elbo_fraction), cfg.mse_iters) if cfg.kind == "vdip" else 0

    def closure(it: int) -> torch.Tensor:
        if cfg.kind == "vdip":
            x, std = image_prior.distribution()
        else:
            x = image_prior()
        out[:] = [x.detach()]
        k = kernel_prior()
        if it < cfg.kernel_warmup:
            k = k.detach()
        if cfg.mse_iters <= it < elbo_end:
            sigma_n = vdip_noise_level(it - cfg.mse_iters, elbo_end - cfg.mse_iters)
            return vdip_elbo(y, x, std, k, sigma_n, lam=cfg.vdip_lambda)
        y_hat = conv_valid(x, k)
        if it < cfg.mse_iters or cfg.kind == "diffusion":
            return F.mse_loss(y_hat, y)
        return 1.0 - kornia_ssim(y_hat, y, window_size=11).mean()

    for it in range(n):
        loss = guard.step("dip", it, opt, lambda: closure(it))
        if loss is not None:
            last = float(loss.detach())
        sched.step()
        yield last, out[0][..., c : c + h, c : c + w]


def _diffusion_prior(y: torch.Tensor, kernel_prior: nn.Module, cfg: DIPConfig,
                     seed: int) -> DiffusionImagePrior:
    """The diffusion image prior on gray ``y``, started from a hyper-Laplacian deconvolution
    with the current kernel (on the valid domain, ``(H + k − 1, W + k − 1)``)."""
    if y.shape[1] != 1:
        raise ValueError("the diffusion prior works on the luminance only (1 channel)")
    model = cfg.diffusion_model
    if not isinstance(model, nn.Module):
        model = load_diffusion_model(model)
    with torch.no_grad():
        x_init = sparse_deconv(y, kernel_prior().detach(), return_valid_domain=True)
    return DiffusionImagePrior(model.to(y.device), x_init.clamp(0.0, 1.0),
                               t_start=cfg.diffusion_t, ddim_steps=cfg.ddim_steps, seed=seed)
