"""The optimisation stages that :func:`~napari_glkm.backend.solver.iter_deblur` chains.

Each stage is a generator that updates a kernel prior in place and yields ``(loss, done)``
after every iteration, so the caller can report progress, show previews and stop at any time.

* :func:`coarse_to_fine_stage` — fast kernel estimation: on an image pyramid (kernel sizes
  e.g. 7 -> 11 -> 15 -> 21 -> 31), alternate an L0-gradient image estimate (closed form by FFT)
  with Adam steps on the kernel prior against the gradient-domain data term
  ``||∇x ⋆ k - ∇y||²``. Kernels are always the prior's output (GLKM: the generator's decoded
  first-layer feature map), resampled to the scale's size.
* :func:`dip_stage` — GLKM's joint optimisation of a Deep Image Prior network and the kernel
  prior on ``||x ⋆ k - y||²`` (MSE first, then 1 - SSIM), as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.metrics import ssim as kornia_ssim
from torch import nn

from .blur import conv_valid
from .nonblind import l0_deconv
from .priors.dip import DIPImagePrior

__all__ = ["PyramidConfig", "DIPConfig", "pyramid_sizes", "coarse_to_fine_stage", "dip_stage"]


@dataclass(frozen=True)
class PyramidConfig:
    """Settings of the coarse-to-fine kernel estimation (per scale unless stated)."""

    outer_iters: int = 8
    kernel_steps: int = 30
    kernel_lr: float = 0.2
    l0_lambda: float = 4e-3
    l0_lambda_min: float = 1e-4
    l0_lambda_decay: float = 1.1
    min_kernel: int = 7
    ratio: float = 2**-0.5


@dataclass(frozen=True)
class DIPConfig:
    """Settings of the DIP + GLKM joint stage (learning rates and loss switch of the paper)."""

    iters: int = 0
    channels: int = 128
    scales: int = 5
    skip: int = 16
    nonlocal_blocks: bool = False
    image_lr: float = 0.01
    kernel_lr: float = 5e-4
    mse_iters: int = 500
    kernel_warmup: int = 0


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


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def coarse_to_fine_stage(
    y: torch.Tensor, kernel_prior: nn.Module, cfg: PyramidConfig, sizes: Sequence[int]
) -> Iterator[tuple[float, int]]:
    """Estimate the kernel of gray ``y`` ``(1, 1, H, W)`` in [0, 1]; yields ``(loss, size)``.

    One yield per alternation (``len(sizes) * cfg.outer_iters`` in all); ``size`` is the
    kernel size of the current scale.
    """
    full = kernel_prior.size
    opt = torch.optim.Adam(_trainable(kernel_prior), lr=cfg.kernel_lr)
    for s in sizes:
        ys = _downscale(y, s / full, 2 * s + 1)
        gyx, gyy = _grads(ys)
        lam = cfg.l0_lambda
        for _ in range(cfg.outer_iters):
            with torch.no_grad():
                k = kernel_prior(size=s)
                x = l0_deconv(ys, k, lam)
                gxx, gxy = _grads(x)
            loss = torch.zeros(())
            for _ in range(cfg.kernel_steps):
                opt.zero_grad(set_to_none=True)
                k = kernel_prior(size=s)
                loss = F.mse_loss(conv_valid(gxx, k, method="fft"), gyx) + F.mse_loss(
                    conv_valid(gxy, k, method="fft"), gyy
                )
                loss.backward()
                opt.step()
            lam = max(lam / cfg.l0_lambda_decay, cfg.l0_lambda_min)
            yield float(loss.detach()), s


def dip_stage(
    y: torch.Tensor, kernel_prior: nn.Module, cfg: DIPConfig, *, seed: int = 0
) -> Iterator[tuple[float, torch.Tensor]]:
    """Joint DIP image + kernel optimisation on ``y`` ``(1, C, H, W)``; yields ``(loss, x)``.

    ``x`` is the current sharp estimate ``(1, C, H, W)`` aligned with ``y`` (the centre of the
    DIP output, which covers ``(H + k - 1, W + k - 1)``).
    """
    k_size = kernel_prior.size
    h, w = y.shape[-2:]
    torch.manual_seed(seed)
    image_prior = DIPImagePrior(
        (h + k_size - 1, w + k_size - 1), y.shape[1],
        channels=(cfg.channels,) * cfg.scales, skip=(cfg.skip,) * cfg.scales,
        nonlocal_scales=(2, 3, 4) if cfg.nonlocal_blocks else (), seed=seed,
    ).to(y.device)
    opt = torch.optim.Adam([
        {"params": image_prior.parameters(), "lr": cfg.image_lr},
        {"params": _trainable(kernel_prior), "lr": cfg.kernel_lr},
    ])
    n = cfg.iters
    milestones = [int(n * f) for f in (0.4, 0.6, 0.8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.5)
    c = k_size // 2
    for it in range(n):
        opt.zero_grad(set_to_none=True)
        x = image_prior()
        k = kernel_prior()
        if it < cfg.kernel_warmup:
            k = k.detach()
        y_hat = conv_valid(x, k)
        if it < cfg.mse_iters:
            loss = F.mse_loss(y_hat, y)
        else:
            loss = 1.0 - kornia_ssim(y_hat, y, window_size=11).mean()
        loss.backward()
        opt.step()
        sched.step()
        yield float(loss.detach()), x.detach()[..., c : c + h, c : c + w]
