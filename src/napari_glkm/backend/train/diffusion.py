"""DDPM training of the small diffusion image prior on grayscale natural-image crops.

Objective (Ho et al., NeurIPS 2020, "simple" loss): for a sharp luminance crop ``x_0`` in model
space ``[-1, 1]``, a uniform step ``t`` and ``ε ~ N(0, I)``, minimise
``||ε − ε_θ(sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε, t)||²``. Crops are random ``crop × crop`` windows of
the training images (luminance), flipped and rotated by multiples of 90°. Adam with a short
linear warm-up; an exponential moving average (EMA) of the weights is kept and is what gets
exported (``diffusion_unet.safetensors``, float16), as is usual for diffusion models.

Checkpoints (``checkpoint.pt``: our own state dicts, read back with ``weights_only=True``) are
written every ``checkpoint_every`` steps; running again with the same ``out_dir`` resumes.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..priors.diffusion import DiffusionUNet, NoiseSchedule
from ..weights import save_state_dict
from .checkpoint import resume_checkpoint, save_checkpoint, start_run

__all__ = ["DiffusionConfig", "train_diffusion", "random_crops", "ddpm_loss",
           "export_diffusion", "export_checkpoint"]

ProgressFn = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class DiffusionConfig:
    """Hyper-parameters of DDPM training (CPU defaults)."""

    size: int = 64                        # crop side in pixels
    channels: tuple[int, ...] = (16, 32, 64)
    steps: int = 20000
    batch_size: int = 16
    lr: float = 5e-4
    warmup: int = 200
    ema: float = 0.995
    seed: int = 0
    checkpoint_every: int = 100
    threads: int = 0                      # 0: leave torch's default


def random_crops(images: Sequence[np.ndarray], n: int, size: int,
                 rng: np.random.Generator) -> torch.Tensor:
    """``n`` random ``size²`` crops (flips, 90° rotations; BKSE's sampler) in model space
    ``[-1, 1]``."""
    from ..bkse.data import random_crops as crops01

    return crops01(images, n, size, rng) * 2.0 - 1.0


def ddpm_loss(model: torch.nn.Module, schedule: NoiseSchedule, x0: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The DDPM ε-prediction MSE at uniformly drawn steps."""
    t = torch.randint(0, schedule.steps, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    return torch.mean((model(schedule.add_noise(x0, noise, t), t) - noise) ** 2)


def train_diffusion(
    config: DiffusionConfig,
    images: Sequence[np.ndarray],
    out_dir: str | os.PathLike,
    *,
    resume: bool = True,
    on_progress: ProgressFn | None = None,
) -> Path:
    """Train the UNet on ``images`` (float32 luminance in [0, 1]); return the exported file.

    ``on_progress(step, total, metrics)`` is called after every step with ``loss`` (this batch)
    and ``loss_avg`` (running mean of the last 100 steps).
    """
    if config.steps < 1 or config.batch_size < 1 or config.size < 8:
        raise ValueError("steps and batch_size must be >= 1 and size >= 8")
    images = [im for im in images if min(im.shape) >= config.size]
    if not images:
        raise ValueError(f"no training image is at least {config.size} px on each side")
    out, ckpt_path = start_run(out_dir, config.seed, config.threads)
    model = DiffusionUNet(config.channels)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(config.warmup, 1)))
    rng = np.random.default_rng(config.seed)
    state = {"model": model, "ema": ema, "opt": opt, "sched": sched}
    start, elapsed = 0, 0.0
    if resume and ckpt_path.exists():
        start, elapsed = resume_checkpoint(ckpt_path, config, rng, state)
    schedule = NoiseSchedule()
    recent: list[float] = []
    t0 = time.perf_counter() - elapsed
    for step in range(start, config.steps):
        x0 = random_crops(images, config.batch_size, config.size, rng)
        loss = ddpm_loss(model, schedule, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(config.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1.0 - decay)
        recent = (recent + [float(loss.detach())])[-100:]
        done = step + 1
        if on_progress is not None:
            on_progress(done, config.steps, {"loss": recent[-1],
                                             "loss_avg": sum(recent) / len(recent)})
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(ckpt_path, config, done, time.perf_counter() - t0, rng, state)
    return export_diffusion(ema, config, out / "diffusion_unet.safetensors",
                            train_seconds=time.perf_counter() - t0)


def export_diffusion(model: DiffusionUNet, config: DiffusionConfig, path: Path,
                     train_seconds: float | None = None) -> Path:
    """Write ``model`` as float16 safetensors with its architecture in the metadata."""
    meta = {**{k: str(v) for k, v in asdict(config).items()}, "role": "diffusion",
            "channels": ",".join(map(str, model.channels)), "emb_dim": str(model.emb_dim),
            "recipe": "DDPM eps-prediction, linear betas 1e-4..0.02, T=1000, EMA weights"}
    if train_seconds is not None:
        meta["train_seconds"] = f"{train_seconds:.0f}"
    save_state_dict(model.state_dict(), path, meta, half=True)
    return path


def export_checkpoint(ckpt_path: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Export the EMA weights of a (possibly unfinished) run's ``checkpoint.pt``."""
    ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in ck["config"].items()}
    config = DiffusionConfig(**fields)
    model = DiffusionUNet(config.channels)
    model.load_state_dict(ck["ema"])
    return export_diffusion(model, replace(config, steps=int(ck["step"])), Path(path),
                            train_seconds=float(ck["elapsed"]))
