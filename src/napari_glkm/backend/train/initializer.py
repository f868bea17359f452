"""Collaborative training of the kernel initializer (GLKM's encoder ``E``).

Each step (Zhang et al., GLKM; numbers from the official GKPILE code, see DESIGN.md):

1. sharp luminance crops are blurred by random trajectory kernels ``k`` (reflect padding) and
   Gaussian noise of a random level is added (the official recipe adds none; real photos are
   noisy, and the solver feeds the initializer the raw input);
2. ``z0 = E(y)`` (detached) is refined by GAN inversion: ``inner_steps`` Adam steps on
   ``L1(G(z), k)`` give ``z*``;
3. the encoder learns from both: ``L1(G(E(y)), k) + latent_weight * MSE(E(y), z*)``.

The generator is frozen in eval mode. Checkpoints (``checkpoint.pt``, our own state dicts, read
back with ``weights_only=True``) allow resuming; the final weights are written as
``initializer_{size}.safetensors``.

The CPU recipe (defaults) uses 128² crops, batch 32 and 20 inner steps; the official one is
256² crops, batch 128, 100 inner steps, 60 epochs (set them on a GPU).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..blur import conv_same
from ..generator import KernelGenerator
from ..initializer import KernelInitializer
from ..trajectories import motion_kernels
from ..weights import freeze, save_state_dict
from .checkpoint import resume_checkpoint, save_checkpoint, start_run

__all__ = ["InitializerConfig", "train_initializer", "load_image_folder", "make_blurry_batch",
           "refine_latents", "train_step", "IMAGE_SUFFIXES"]

ProgressFn = Callable[[int, int, dict], None]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class InitializerConfig:
    """Hyper-parameters of collaborative training (CPU defaults; official values in brackets)."""

    size: int = 31              # generator / kernel size
    steps: int = 3000           # optimiser steps [60 epochs of the training set]
    batch_size: int = 32        # [128]
    crop: int = 128             # sharp crop side in pixels [256]
    lr: float = 1e-4            # Adam [1e-4]
    lr_drops: tuple[float, float] = (2 / 3, 5 / 6)  # fractions of steps where lr *= 0.1 [40, 50 of 60]
    inner_steps: int = 20       # GAN-inversion steps per batch [100]
    inner_lr: float = 0.01      # [0.01]
    latent_weight: float = 0.1  # [0.1]
    noise: tuple[float, float] = (0.0, 0.03)  # range of the Gaussian noise sigma [0]
    seed: int = 0
    checkpoint_every: int = 100
    threads: int = 0            # 0: leave torch's default


def load_image_folder(folders: Sequence[str | os.PathLike], min_side: int) -> list[np.ndarray]:
    """Read every image under ``folders`` (recursively) as float32 luminance in [0, 1].

    Images smaller than ``min_side`` on either side are skipped. Raises ``ValueError`` if none
    is usable.
    """
    images = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"training image folder {str(root)!r} does not exist")
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                img = _read_luminance(path)
                if min(img.shape) >= min_side:
                    images.append(img)
    if not images:
        raise ValueError(f"no images of at least {min_side} px found in {list(map(str, folders))}")
    return images


def _read_luminance(path: Path) -> np.ndarray:
    import imageio.v3 as iio
    from skimage.color import rgb2gray
    from skimage.util import img_as_float32

    img = np.asarray(iio.imread(path))
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    img = img_as_float32(img)
    return rgb2gray(img).astype(np.float32) if img.ndim == 3 else img


def make_blurry_batch(
    images: Sequence[np.ndarray], config: InitializerConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops blurred by random kernels plus noise: ``(y (B,1,c,c), k (B,1,s,s))``."""
    b, c = config.batch_size, config.crop
    crops = np.empty((b, 1, c, c), dtype=np.float32)
    for i in range(b):
        img = images[rng.integers(len(images))]
        r = rng.integers(img.shape[0] - c + 1)
        q = rng.integers(img.shape[1] - c + 1)
        crop = img[r : r + c, q : q + c]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crops[i, 0] = crop
    k = torch.from_numpy(motion_kernels(b, config.size, rng=rng))[:, None]
    with torch.no_grad():
        y = conv_same(torch.from_numpy(crops), k, padding_mode="reflect")
    sigma = rng.uniform(*config.noise, size=(b, 1, 1, 1)).astype(np.float32)
    y = y + torch.from_numpy(sigma) * torch.from_numpy(
        rng.standard_normal(y.shape).astype(np.float32))
    return y, k


def refine_latents(
    gen: KernelGenerator, z0: torch.Tensor, k: torch.Tensor, steps: int, lr: float
) -> torch.Tensor:
    """GAN inversion: ``steps`` Adam steps on ``L1(G(z), k)`` from ``z0``; returns ``z*`` (detached)."""
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (gen(z) - k).abs().sum(dim=(1, 2, 3)).mean()
        loss.backward()
        opt.step()
    return z.detach()


def train_step(
    enc: KernelInitializer,
    gen: KernelGenerator,
    opt: torch.optim.Optimizer,
    y: torch.Tensor,
    k: torch.Tensor,
    config: InitializerConfig,
) -> dict[str, float]:
    """One collaborative-learning step on the batch ``(y, k)``; returns the step's metrics."""
    enc.train()
    z = enc(y)
    z_star = refine_latents(gen, z, k, config.inner_steps, config.inner_lr)
    kernel_l1 = (gen(z) - k).abs().sum(dim=(1, 2, 3)).mean()
    latent_mse = F.mse_loss(z, z_star)
    loss = kernel_l1 + config.latent_weight * latent_mse
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        refined = float((gen(z_star) - k).abs().sum(dim=(1, 2, 3)).mean())
    return {"kernel_l1": float(kernel_l1.detach()), "latent_mse": float(latent_mse.detach()),
            "refined_l1": refined}


def train_initializer(
    config: InitializerConfig,
    generator: KernelGenerator,
    images: Sequence[np.ndarray],
    out_dir: str | os.PathLike,
    *,
    resume: bool = True,
    device: str = "cpu",
    on_progress: ProgressFn | None = None,
) -> Path:
    """Train an initializer for ``generator``; return the path of its safetensors file.

    ``on_progress(step, total, metrics)`` is called after every step with ``kernel_l1`` (mean
    per-kernel L1 of ``G(E(y))``), ``latent_mse`` and ``refined_l1`` (L1 of ``G(z*)``).
    """
    if config.steps < 1 or config.batch_size < 2 or config.inner_steps < 0:
        raise ValueError("steps must be >= 1, batch_size >= 2 and inner_steps >= 0")
    if generator.size != config.size:
        raise ValueError(f"generator is for size {generator.size}, config says {config.size}")
    if min(min(im.shape) for im in images) < config.crop:
        raise ValueError(f"every training image must be at least {config.crop} px")
    out, ckpt_path = start_run(out_dir, config.seed, config.threads)
    gen = freeze(generator.to(device))
    enc = KernelInitializer(gen.latent_dim, config.size).to(device)
    opt = torch.optim.Adam(enc.parameters(), lr=config.lr)
    drops = sorted({int(config.steps * f) for f in config.lr_drops})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=drops, gamma=0.1)
    rng = np.random.default_rng(config.seed)
    start, elapsed = 0, 0.0
    state = {"enc": enc, "opt": opt, "sched": sched}
    if resume and ckpt_path.exists():
        start, elapsed = resume_checkpoint(ckpt_path, config, rng, state, device)
    t0 = time.perf_counter() - elapsed
    for step in range(start, config.steps):
        y, k = make_blurry_batch(images, config, rng)
        metrics = train_step(enc, gen, opt, y.to(device), k.to(device), config)
        sched.step()
        done = step + 1
        if on_progress is not None:
            on_progress(done, config.steps, metrics)
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(ckpt_path, config, done, time.perf_counter() - t0, rng, state)
    seconds = time.perf_counter() - t0
    meta = {**{key: str(v) for key, v in asdict(config).items()}, "role": "initializer",
            "train_seconds": f"{seconds:.0f}",
            "recipe": "collaborative learning (GAN inversion + encoder), synthetic trajectory blurs"}
    final = out / f"initializer_{config.size}.safetensors"
    save_state_dict(enc.state_dict(), final, meta)
    return final
