"""Denoising-diffusion image prior: a small noise-prediction UNet, its DDPM schedule and a
deterministic DDIM sampler that can be differentiated through.

Model (our own small design, trained by ``napari-glkm train-diffusion``): a 3-level UNet on one
luminance channel, residual blocks (GroupNorm, SiLU, 3×3 convs) conditioned on a sinusoidal
time embedding, stride-2 convs down, nearest-neighbour + conv up, skip connections by
concatenation. It is fully convolutional, so it runs on any image size (inputs are reflect-padded
to a multiple of 4). Images live in ``[-1, 1]`` in model space (``2 x − 1`` for ``x`` in [0, 1]).

Schedule (Ho et al., "Denoising Diffusion Probabilistic Models", NeurIPS 2020): ``T = 1000``
steps, betas linear from 1e-4 to 0.02, ``x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε``; the network
predicts ``ε``. Sampling (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021) with
``η = 0`` is a deterministic map from ``x_t`` to ``x_0`` through a few timesteps, so it can be
back-propagated through — which is what fast inversion (BIRD, Chihaoui et al., "Blind Image
Restoration via Fast Diffusion Inversion", NeurIPS 2024) optimises.

User models: a ``diffusers`` ``UNet2DModel`` folder (``config.json`` +
``diffusion_pytorch_model.safetensors``) with one input/output channel, trained for ε-prediction
with the same linear schedule, loads with :func:`load_diffusion_model` (``diffusers`` is an
optional extra: ``pip install napari-glkm[diffusion]``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DiffusionImagePrior", "DiffusionUNet", "DiffusersDenoiser", "NoiseSchedule", "ddim_sample",
           "ddim_timesteps", "predict_x0", "diffusion_loss", "load_diffusion_model", "load_diffusers_unet"]

T_STEPS = 1000


class NoiseSchedule:
    """Linear-beta DDPM schedule; ``alpha_bar[t]`` for ``t`` in ``0 .. T-1``."""

    def __init__(self, steps: int = T_STEPS, beta_start: float = 1e-4, beta_end: float = 0.02):
        betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
        self.steps = steps
        self.alpha_bar = torch.cumprod(1.0 - betas, 0).float()

    def sigma(self, t: int) -> float:
        """Noise-to-signal ratio ``sqrt((1 − ᾱ)/ᾱ)`` at step ``t`` in model units ([-1, 1])."""
        ab = float(self.alpha_bar[t])
        return math.sqrt((1.0 - ab) / ab)

    def step_for_sigma(self, sigma: float) -> int:
        """The step whose noise-to-signal ratio is closest to ``sigma`` (model units)."""
        ratios = ((1.0 - self.alpha_bar) / self.alpha_bar).sqrt()
        return int(torch.argmin((ratios - sigma).abs()))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar.to(x0.device)[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise


def _timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, cout)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class DiffusionUNet(nn.Module):
    """Noise-prediction UNet: ``forward(x_t (B, 1, H, W), t (B,) int) -> ε̂ (B, 1, H, W)``.

    ``channels`` are the widths of the levels (each level halves the resolution); the defaults
    give ~0.4 M parameters.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), emb_dim: int = 64) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 1 or any(c < 1 or c % min(8, c) for c in channels):
            raise ValueError(f"channels must be positive multiples of 8, got {channels}")
        self.channels = channels
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, 2 * emb_dim), nn.SiLU(),
                                      nn.Linear(2 * emb_dim, 2 * emb_dim))
        e = 2 * emb_dim
        self.inc = nn.Conv2d(1, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(_ResBlock(prev, c, e))
            if i < len(channels) - 1:
                self.pool.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            prev = c
        self.mid = _ResBlock(prev, prev, e)
        self.up = nn.ModuleList()
        self.unpool = nn.ModuleList()
        for i, c in reversed(list(enumerate(channels))):
            self.up.append(_ResBlock(prev + c, c, e))
            if i > 0:
                self.unpool.append(nn.Conv2d(c, channels[i - 1], 3, padding=1))
                prev = channels[i - 1]
            else:
                prev = c
        self.out = nn.Sequential(_norm(prev), nn.SiLU(), nn.Conv2d(prev, 1, 3, padding=1))

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h_in, w_in = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h_in) % m, (-w_in) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h_in, w_in) > max(ph, pw)
                      else "replicate")
        emb = self.time_mlp(_timestep_embedding(t.expand(x.shape[0]), self.emb_dim))
        h = self.inc(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)
        h = self.mid(h, emb)
        for j, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], 1), emb)
            if j < len(self.unpool):
                h = self.unpool[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(h)[..., :h_in, :w_in]


class DiffusersDenoiser(nn.Module):
    """Adapter giving a ``diffusers.UNet2DModel`` our ``forward(x_t, t) -> ε̂`` signature."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        blocks = len(getattr(unet.config, "block_out_channels", (0,)))
        self.multiple = 2 ** max(blocks - 1, 0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h_in, w_in = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h_in) % m, (-w_in) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        out = self.unet(x, t.expand(x.shape[0])).sample
        return out[..., :h_in, :w_in]


def predict_x0(model: nn.Module, schedule: NoiseSchedule, x_t: torch.Tensor, t: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One network call: ``(x̂_0, ε̂)`` from ``x_t`` at step ``t`` (Tweedie/DDIM estimate)."""
    ab = schedule.alpha_bar[t]
    eps = model(x_t, torch.tensor([t], device=x_t.device))
    x0 = (x_t - (1.0 - ab).sqrt() * eps) / ab.sqrt()
    return x0, eps


def ddim_timesteps(t_start: int, n_steps: int) -> list[int]:
    """``n_steps`` decreasing timesteps from ``t_start`` (evenly spaced, ending above 0)."""
    if not 0 <= t_start < T_STEPS or n_steps < 1:
        raise ValueError(f"need 0 <= t_start < {T_STEPS} and n_steps >= 1, got {t_start}, {n_steps}")
    n = max(1, min(n_steps, t_start))
    return [t_start * (n - i) // n for i in range(n)]


def ddim_sample(model: nn.Module, schedule: NoiseSchedule, x_t: torch.Tensor,
                timesteps: Sequence[int]) -> torch.Tensor:
    """Deterministic DDIM (η = 0) from ``x_t`` at ``timesteps[0]`` down to ``x̂_0``.

    Differentiable with respect to ``x_t``; returns model-space values (clamped to [-1, 1] at each
    step's ``x̂_0``, as in DDIM's reference sampler).
    """
    x = x_t
    for i, t in enumerate(timesteps):
        x0, eps = predict_x0(model, schedule, x, t)
        x0 = x0.clamp(-1.0, 1.0)
        if i == len(timesteps) - 1:
            return x0
        ab_next = schedule.alpha_bar[timesteps[i + 1]]
        x = ab_next.sqrt() * x0 + (1.0 - ab_next).sqrt() * eps
    return x


class DiffusionImagePrior(nn.Module):
    """Fast diffusion inversion as an image prior: ``forward()`` = DDIM(latent) in [0, 1].

    The trainable parameter is the latent ``x_t`` at ``timesteps[0]`` (BIRD optimises the
    initial noise of a few deterministic DDIM steps). It starts from ``x_init`` (the current
    deconvolved estimate, (1, 1, H, W) in [0, 1]) noised to that step, so the chain starts near
    the solution (as in SDEdit) instead of from pure noise — a small model and a few CPU minutes
    cannot afford the search from ``t = T``. The denoiser is frozen.
    """

    def __init__(self, denoiser: nn.Module, x_init: torch.Tensor, *, t_start: int = 100,
                 ddim_steps: int = 2, seed: int = 0) -> None:
        super().__init__()
        if x_init.ndim != 4 or x_init.shape[:2] != (1, 1):
            raise ValueError(f"the diffusion prior works on one gray image (1, 1, H, W), got "
                             f"{tuple(x_init.shape)}")
        self.schedule = NoiseSchedule()
        self.timesteps = ddim_timesteps(t_start, ddim_steps)
        self.denoiser = denoiser.eval().requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(x_init.shape, generator=g).to(x_init)
        ab = self.schedule.alpha_bar[self.timesteps[0]]
        self.latent = nn.Parameter(ab.sqrt() * (2.0 * x_init.detach() - 1.0)
                                   + (1.0 - ab).sqrt() * noise)

    def forward(self) -> torch.Tensor:
        x0 = ddim_sample(self.denoiser, self.schedule, self.latent, self.timesteps)
        return (x0 + 1.0) * 0.5


def diffusion_loss(prior: DiffusionImagePrior, k: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BIRD's data term ``mean ||x ⋆ k − y||²`` for ``x = prior()`` (valid correlation, so
    ``x`` is ``(H + k − 1, W + k − 1)`` for ``y`` ``(H, W)``)."""
    from ..blur import conv_valid

    return torch.mean((conv_valid(prior(), k) - y) ** 2)


def load_diffusers_unet(folder: str | os.PathLike) -> DiffusersDenoiser:
    """Load a ``diffusers`` ``UNet2DModel`` folder as a 1-channel ε-prediction denoiser.

    Raises ``ValueError`` for a folder in another format and ``ImportError`` (with the install
    command) when ``diffusers`` is not installed.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"diffusion model folder {str(root)!r} does not exist")
    cfg_path = root / "config.json"
    weights = root / "diffusion_pytorch_model.safetensors"
    if not cfg_path.is_file() or not weights.is_file():
        raise ValueError(
            f"{root} is not a diffusers UNet2DModel folder: it needs config.json and "
            f"diffusion_pytorch_model.safetensors (save one with UNet2DModel.save_pretrained)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("_class_name") != "UNet2DModel":
        name = cfg.get("_class_name") if isinstance(cfg, dict) else None
        raise ValueError(f"{cfg_path} describes {name!r}, not a UNet2DModel")
    if cfg.get("in_channels", 3) != 1 or cfg.get("out_channels", 3) != 1:
        raise ValueError(f"{root}: the UNet2DModel must have in_channels = out_channels = 1 "
                         f"(grayscale), got {cfg.get('in_channels')} / {cfg.get('out_channels')}")
    try:
        from diffusers import UNet2DModel
    except ImportError as exc:
        raise ImportError("loading a diffusers model folder needs the optional 'diffusers' "
                          "package: pip install 'napari-glkm[diffusion]'") from exc
    unet = UNet2DModel.from_pretrained(str(root), use_safetensors=True)
    return DiffusersDenoiser(unet.float().eval())


def load_diffusion_model(path: str | os.PathLike | None = None) -> nn.Module:
    """The denoiser for ``prior="diffusion"``: the shipped model (``None``), a folder holding a
    diffusers ``UNet2DModel``, or a ``.safetensors`` file written by ``train-diffusion``."""
    from ..weights import load_diffusion_unet

    if path is not None and Path(path).is_dir():
        return load_diffusers_unet(path)
    return load_diffusion_unet(path)
