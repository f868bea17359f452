"""GAN training of the kernel generator on synthetic camera-shake kernels.

Recipe (GKPILE/GLKM): BCE GAN loss, Adam lr 2e-4, betas (0.5, 0.999) for both networks,
batch 128, z ~ N(0, 1). Real kernels come fresh from :func:`motion_kernels` for every batch
(an endless data set, so there is no over-fitting to a fixed pool). The official run is
20 epochs of 100k kernels (~15.6k steps).

Checkpoints (``checkpoint.pt``: our own state dicts, read back with ``weights_only=True``) are
written every ``checkpoint_every`` steps; a run started again with the same ``out_dir``
resumes from the last one. The generator is exported as safetensors at the end.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..generator import KernelDiscriminator, KernelGenerator
from ..trajectories import motion_kernels
from ..weights import save_state_dict
from .checkpoint import resume_checkpoint, save_checkpoint, start_run

__all__ = ["GANConfig", "train_generator"]

ProgressFn = Callable[[int, int, dict], None]


@dataclass
class GANConfig:
    """Hyper-parameters of generator training (defaults: the official recipe)."""

    size: int = 31
    steps: int = 15600
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    threads: int = 0  # 0: leave torch's default


def train_generator(
    config: GANConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = True,
    device: str = "cpu",
    on_progress: ProgressFn | None = None,
) -> Path:
    """Train a generator; return the path of ``generator_{size}.safetensors`` in ``out_dir``.

    ``on_progress(step, total, metrics)`` is called after every step with the losses.
    """
    if config.steps < 1 or config.batch_size < 2:
        raise ValueError("steps must be >= 1 and batch_size >= 2")
    out, ckpt_path = start_run(out_dir, config.seed, config.threads)
    gen = KernelGenerator(config.size).to(device)
    dis = KernelDiscriminator(config.size).to(device)
    betas = (config.beta1, config.beta2)
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr, betas=betas)
    opt_d = torch.optim.Adam(dis.parameters(), lr=config.lr, betas=betas)
    rng = np.random.default_rng(config.seed)
    start, elapsed = 0, 0.0
    state = {"gen": gen, "dis": dis, "opt_g": opt_g, "opt_d": opt_d}
    if resume and ckpt_path.exists():
        start, elapsed = resume_checkpoint(ckpt_path, config, rng, state, device)
    bce = nn.BCEWithLogitsLoss()
    b = config.batch_size
    ones = torch.ones(b, device=device)
    zeros = torch.zeros(b, device=device)
    t0 = time.perf_counter() - elapsed
    for step in range(start, config.steps):
        real = torch.from_numpy(motion_kernels(b, config.size, rng=rng))[:, None].to(device)
        z = torch.randn(b, gen.latent_dim, 1, 1, device=device)
        fake = gen(z)
        opt_d.zero_grad(set_to_none=True)
        d_real = dis(real)
        d_fake = dis(fake.detach())
        loss_d = bce(d_real, ones) + bce(d_fake, zeros)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        loss_g = bce(dis(fake), ones)
        loss_g.backward()
        opt_g.step()
        done = step + 1
        if on_progress is not None:
            on_progress(done, config.steps, {
                "loss_d": float(loss_d), "loss_g": float(loss_g),
                "d_real": float(torch.sigmoid(d_real).mean()),
                "d_fake": float(torch.sigmoid(d_fake).mean()),
            })
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(ckpt_path, config, done, time.perf_counter() - t0, rng, state)
    seconds = time.perf_counter() - t0
    meta = {**{k: str(v) for k, v in asdict(config).items()}, "role": "generator",
            "train_seconds": f"{seconds:.0f}", "recipe": "GAN BCE, synthetic trajectory kernels"}
    final = out / f"generator_{config.size}.safetensors"
    save_state_dict(gen.state_dict(), final, meta)
    return final
