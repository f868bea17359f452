"""Kernel priors: modules with ``forward() -> (1, 1, k, k)`` kernels (non-negative, sum 1).

* :class:`GeneratorKernelPrior` — GLKM: the kernel is ``G.decode(F)`` where ``F`` is the
  generator's first-layer feature map, the only trainable parameter (the generator is frozen).
* :class:`FreeKernelPrior` — the kernel is a softmax of free logits (SelfDeblur-style, no learned
  prior); a baseline and a fallback for kernel sizes without a trained generator.

Both can return the kernel resampled to a smaller odd size (``forward(size=...)``) for
coarse-to-fine estimation: resampling uses antialiased bilinear interpolation around the centre
pixel, so a kernel resampled to ``s`` matches an image resampled by ``s / k``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .generator import KernelGenerator
from .weights import freeze

__all__ = ["GeneratorKernelPrior", "FreeKernelPrior", "resize_kernel"]


def resize_kernel(k: torch.Tensor, size: int) -> torch.Tensor:
    """Resample kernel(s) ``(B, 1, K, K)`` to ``(B, 1, size, size)`` (odd), renormalised to sum 1."""
    if k.shape[-1] == size:
        return k
    out = F.interpolate(k, size=(size, size), mode="bilinear", align_corners=False,
                        antialias=size < k.shape[-1])
    out = out.clamp_min(0)
    return out / out.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


class GeneratorKernelPrior(nn.Module):
    """GLKM kernel prior: a frozen generator and a trainable first-layer feature map.

    Parameters
    ----------
    generator:
        Trained :class:`KernelGenerator` (kept frozen, in eval mode).
    fmap:
        Initial feature map ``(1, 256, s, s)``; by default the map of a random latent drawn
        with ``seed``.
    crop:
        Kernel size to return (odd, at most the generator's): the centre crop of the generated
        kernel, renormalised. Lets a 31-pixel generator serve every smaller kernel size.
    """

    def __init__(
        self,
        generator: KernelGenerator,
        fmap: torch.Tensor | None = None,
        seed: int = 0,
        crop: int | None = None,
    ) -> None:
        super().__init__()
        if crop is not None and (crop > generator.size or crop % 2 == 0):
            raise ValueError(f"crop must be odd and at most {generator.size}, got {crop}")
        self._crop = crop or generator.size
        self.generator = freeze(generator)
        if fmap is None:
            g = torch.Generator().manual_seed(seed)
            z = torch.randn(1, generator.latent_dim, 1, 1, generator=g)
            with torch.no_grad():
                ref = next(generator.parameters())
                fmap = generator.features(z.to(ref.device, ref.dtype))
        self.fmap = nn.Parameter(fmap.detach().clone())

    @property
    def size(self) -> int:
        return self._crop

    def train(self, mode: bool = True) -> "GeneratorKernelPrior":
        super().train(mode)
        self.generator.eval()  # BatchNorm statistics of the trained generator stay fixed
        return self

    def forward(self, size: int | None = None) -> torch.Tensor:
        k = self.generator.decode(self.fmap)
        if self._crop < self.generator.size:
            m = (self.generator.size - self._crop) // 2
            k = k[..., m : m + self._crop, m : m + self._crop]
            k = k / k.sum(dim=(-2, -1), keepdim=True)
        return k if size is None else resize_kernel(k, size)


class FreeKernelPrior(nn.Module):
    """Kernel as a softmax over free logits, initialised to a small centred Gaussian blob."""

    def __init__(self, size: int, init: torch.Tensor | None = None) -> None:
        super().__init__()
        self._size = size
        if init is None:
            r = torch.arange(size, dtype=torch.float32) - size // 2
            init = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * (size / 6) ** 2))[None, None]
            init = init / init.sum()
        self.logits = nn.Parameter(torch.log(init.clamp_min(1e-8)).reshape(1, 1, size, size))

    @property
    def size(self) -> int:
        return self._size

    def forward(self, size: int | None = None) -> torch.Tensor:
        k = F.softmax(self.logits.reshape(1, -1), dim=1).reshape(1, 1, self._size, self._size)
        return k if size is None else resize_kernel(k, size)
