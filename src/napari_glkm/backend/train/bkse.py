"""Training of the BKSE networks: ``F(x, G(x, y)) ≈ y`` with a Charbonnier loss.

Each step draws a batch of sharp luminance crops, blurs them synthetically (trajectory kernels,
uniform or 2×2 SVOLA fields, see :mod:`napari_glkm.backend.bkse.data`) and, when folders of real
pairs are given, replaces a fraction ``real_fraction`` of the batch with aligned crops of real
pairs. Loss: Charbonnier ``mean(sqrt((F(x, G(x, y)) - y)² + 1e-6))`` (the paper sums; the mean
only rescales the learning rate). Adam with cosine decay of the learning rate.

Every ``val_every`` steps the reproduction PSNR on a fixed set of held-out synthetic pairs is
measured; the best networks so far are written to ``best.safetensors``. Checkpoints
(``checkpoint.pt``, read back with ``weights_only=True``) allow resuming; the final weights are
``bkse.safetensors``.

The paper trains ≈ 49 M parameters for 600k iterations (batch 16, 256² RGB crops, Adam 1e-4,
GoPro/REDS); the CPU recipe here (defaults) trains 0.91 M parameters on 64² gray crops.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..bkse.data import heldout_pairs, random_crops, real_pair_crops, synthetic_pairs
from ..bkse.networks import BKSEConfig, BKSENet
from ..weights import save_state_dict
from .checkpoint import resume_checkpoint, save_checkpoint, start_run

__all__ = ["BKSETrainConfig", "train_bkse", "charbonnier", "bkse_train_step", "psnr_batch"]

ProgressFn = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class BKSETrainConfig:
    """Hyper-parameters of BKSE training (CPU defaults; the paper's values in brackets)."""

    size: int = 19              # trajectory kernel size in pixels (synthetic blurs)
    steps: int = 6000           # [600k]
    batch_size: int = 8         # [16]
    crop: int = 64              # [256]
    lr: float = 5e-4            # [1e-4]
    lr_min_fraction: float = 0.05  # cosine decay to lr * this [cosine restarts]
    nonuniform_fraction: float = 0.5
    real_fraction: float = 0.5  # used only when real pairs are given
    seed: int = 0
    checkpoint_every: int = 100
    val_every: int = 250
    val_pairs: int = 24
    val_crop: int = 96
    threads: int = 0            # 0: leave torch's default
    net: BKSEConfig = field(default_factory=BKSEConfig)


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean Charbonnier penalty ``sqrt(d² + eps)``."""
    return torch.sqrt((pred - target) ** 2 + eps).mean()


def psnr_batch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (peak 1) of each image of two ``(B, C, H, W)`` batches."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def bkse_train_step(net: BKSENet, opt: torch.optim.Optimizer, x: torch.Tensor,
                    y: torch.Tensor) -> float:
    """One optimiser step on the batch; returns the Charbonnier loss."""
    net.train()
    loss = charbonnier(net(x, y), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def _validate(net: BKSENet, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    net.eval()
    codes = torch.cat([net.extract(x[i:i + 8], y[i:i + 8]) for i in range(0, len(x), 8)])
    out = torch.cat([net.blur(x[i:i + 8], codes[i:i + 8]) for i in range(0, len(x), 8)])
    # the codes of the other pairs: if this is as good, the operator ignores its code
    other = codes.roll(1, dims=0)
    swapped = torch.cat([net.blur(x[i:i + 8], other[i:i + 8]) for i in range(0, len(x), 8)])
    return {"val_psnr": float(psnr_batch(out.clamp(0, 1), y).mean()),
            "val_identity_psnr": float(psnr_batch(x, y).mean()),
            "val_swapped_code_psnr": float(psnr_batch(swapped.clamp(0, 1), y).mean())}


def train_bkse(
    config: BKSETrainConfig,
    images: Sequence[np.ndarray],
    out_dir: str | os.PathLike,
    *,
    val_images: Sequence[np.ndarray] | None = None,
    real_pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    resume: bool = True,
    device: str = "cpu",
    on_progress: ProgressFn | None = None,
) -> Path:
    """Train ``G`` and ``F``; return the path of ``bkse.safetensors`` in ``out_dir``.

    ``images``: sharp luminance images (float32 [0, 1], each at least ``crop`` px) for synthetic
    pairs; ``val_images``: images for the held-out set (default: ``images``); ``real_pairs``:
    ``(sharp, blurry)`` pairs from :func:`~napari_glkm.backend.bkse.data.load_pair_folder`.
    ``on_progress(step, total, metrics)`` is called after every step (``loss``, and
    ``val_psnr``/``best_psnr`` once measured).
    """
    if config.steps < 1 or config.batch_size < 1 or config.crop < 16:
        raise ValueError("steps and batch_size must be >= 1 and crop >= 16")
    if not images or min(min(im.shape) for im in images) < config.crop:
        raise ValueError(f"need training images of at least {config.crop} px")
    if real_pairs and min(min(s.shape) for s, _ in real_pairs) < config.crop:
        raise ValueError(f"every real pair must be at least {config.crop} px")
    out, ckpt_path = start_run(out_dir, config.seed, config.threads)
    net = BKSENet(config.net).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, 0.99))
    floor = config.lr_min_fraction

    def lr_factor(step: int) -> float:
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step / config.steps, 1)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    rng = np.random.default_rng(config.seed)
    best = torch.tensor(-1.0)
    state = {"net": net, "opt": opt, "sched": sched}
    start, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        start, elapsed = resume_checkpoint(ckpt_path, config, rng, state, device)
        best_file = out / "best.safetensors"
        if best_file.exists():
            from safetensors import safe_open

            with safe_open(str(best_file), "pt") as fh:
                best = torch.tensor(float(fh.metadata().get("val_psnr", -1.0)))
    vx, vy = heldout_pairs(val_images or images, config.val_pairs, config.val_crop, config.size)
    vx, vy = vx.to(device), vy.to(device)
    meta = {**{k: str(v) for k, v in asdict(config).items()}, "role": "bkse",
            "net": str(config.net.to_dict())}
    t0 = time.perf_counter() - elapsed
    n_real = int(round(config.batch_size * config.real_fraction)) if real_pairs else 0
    for step in range(start, config.steps):
        x = random_crops(images, config.batch_size - n_real, config.crop, rng)
        y, _ = synthetic_pairs(x, config.size, rng, nonuniform_fraction=config.nonuniform_fraction)
        if n_real:
            xr, yr = real_pair_crops(real_pairs, n_real, config.crop, rng)
            x, y = torch.cat([x, xr]), torch.cat([y, yr])
        metrics: dict[str, float] = {"loss": bkse_train_step(net, opt, x.to(device), y.to(device)),
                                     "lr": opt.param_groups[0]["lr"]}
        sched.step()
        done = step + 1
        if done % config.val_every == 0 or done == config.steps:
            metrics.update(_validate(net, vx, vy))
            if metrics["val_psnr"] > float(best):
                best = torch.tensor(metrics["val_psnr"])
                save_state_dict(net.state_dict(), out / "best.safetensors",
                                {**meta, "step": str(done), "val_psnr": f"{float(best):.4f}"})
            metrics["best_psnr"] = float(best)
        if on_progress is not None:
            on_progress(done, config.steps, metrics)
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(ckpt_path, config, done, time.perf_counter() - t0, rng, state)
    seconds = time.perf_counter() - t0
    final = out / "bkse.safetensors"
    save_state_dict(net.state_dict(), final, {**meta, "train_seconds": f"{seconds:.0f}",
                                              "recipe": "Charbonnier F(x, G(x, y)) vs y"})
    return final
