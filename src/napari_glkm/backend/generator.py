"""DCGAN motion-kernel generator and discriminator (GLKM's kernel prior).

The generator maps a latent ``z`` of shape ``(B, 100, 1, 1)`` to a kernel ``(B, 1, k, k)``
whose pixels are a softmax over all ``k * k`` positions (non-negative, sum 1). Its first
block produces a ``(B, 256, s, s)`` feature map; blind deblurring optimises that map rather
than ``z`` (Generative Latent Kernel Modeling). The layer shapes follow the published GKPILE
/ GLKM generator so that official checkpoints load (see :mod:`napari_glkm.backend.weights`):
``BatchNorm2d(c, eps=0.8)`` is kept on purpose.

Example
-------
>>> import torch
>>> g = KernelGenerator(31).eval()
>>> k = g(torch.randn(2, 100, 1, 1))
>>> tuple(k.shape), bool(torch.allclose(k.sum((2, 3)), torch.ones(2, 1)))
((2, 1, 31, 31), True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KernelGenerator", "KernelDiscriminator", "SUPPORTED_SIZES", "init_dcgan_weights"]

LATENT_DIM = 100
_NGF = 64
_NDF = 64

# size -> (first block kernel, [(kernel, padding) for the three stride-2 transposed convs])
_GEN_LAYOUT: dict[int, tuple[int, list[tuple[int, int]]]] = {
    31: (3, [(5, 1), (5, 1), (5, 1)]),
    55: (5, [(5, 0), (5, 1), (5, 1)]),
    65: (7, [(5, 1), (6, 1), (5, 1)]),
    75: (7, [(5, 0), (4, 0), (5, 0)]),
}
# size -> ([(kernel, padding) for the three stride-2 convs], final kernel)
_DIS_LAYOUT: dict[int, tuple[list[tuple[int, int]], int]] = {
    31: ([(5, 1), (5, 1), (5, 1)], 3),
    55: ([(5, 1), (5, 1), (5, 0)], 5),
    65: ([(5, 1), (6, 1), (5, 1)], 7),
    75: ([(5, 0), (4, 0), (5, 0)], 7),
}
SUPPORTED_SIZES = tuple(sorted(_GEN_LAYOUT))


def _check_size(size: int) -> None:
    if size not in _GEN_LAYOUT:
        raise ValueError(
            f"no generator architecture for kernel size {size}; supported sizes are "
            f"{list(SUPPORTED_SIZES)}"
        )


def _up_block(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, bias=False),
        nn.BatchNorm2d(c_out, eps=0.8),
        nn.ReLU(inplace=True),
    )


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class KernelGenerator(nn.Module):
    """DCGAN generator: latent ``(B, 100, 1, 1)`` -> kernel ``(B, 1, size, size)``.

    Parameters
    ----------
    size:
        Kernel side in pixels; one of :data:`SUPPORTED_SIZES`.
    latent_dim:
        Latent channels (100 in the paper).
    """

    def __init__(self, size: int = 31, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        _check_size(size)
        self.size = size
        self.latent_dim = latent_dim
        first, ups = _GEN_LAYOUT[size]
        self.layer1 = _up_block(latent_dim, _NGF * 4, first, 1, 0)
        (k1, p1), (k2, p2), (k3, p3) = ups
        self.layers = nn.Sequential(
            _up_block(_NGF * 4, _NGF * 2, k1, 2, p1),
            _up_block(_NGF * 2, _NGF, k2, 2, p2),
            nn.ConvTranspose2d(_NGF, 1, k3, 2, p3, bias=False),
        )
        self.feature_shape = (_NGF * 4, first, first)
        init_dcgan_weights(self)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """First-layer feature map ``(B, 256, s, s)`` of latent ``z`` ``(B, latent_dim, 1, 1)``."""
        return self.layer1(z)

    def decode(self, fmap: torch.Tensor) -> torch.Tensor:
        """Kernel ``(B, 1, size, size)`` (softmax over pixels) from a first-layer feature map."""
        logits = self.layers(fmap)
        b = logits.shape[0]
        return F.softmax(logits.reshape(b, -1), dim=1).reshape(b, 1, self.size, self.size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(z))


class KernelDiscriminator(nn.Module):
    """DCGAN discriminator: kernel ``(B, 1, size, size)`` -> real/fake logit ``(B,)``.

    The published network ends in a sigmoid; we return the logit and train with
    ``BCEWithLogitsLoss`` (the same loss, numerically safer).
    """

    def __init__(self, size: int = 31) -> None:
        super().__init__()
        _check_size(size)
        self.size = size
        convs, final = _DIS_LAYOUT[size]
        chans = [1, _NDF, _NDF * 2, _NDF * 4]
        blocks: list[nn.Module] = []
        for i, (k, p) in enumerate(convs):
            layers: list[nn.Module] = [nn.Conv2d(chans[i], chans[i + 1], k, 2, p, bias=False)]
            if i > 0:
                layers.append(nn.BatchNorm2d(chans[i + 1], eps=0.8))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            blocks.append(nn.Sequential(*layers))
        blocks.append(nn.Conv2d(chans[-1], 1, final, 1, 0, bias=False))
        self.main = nn.Sequential(*blocks)
        init_dcgan_weights(self)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        return self.main(k).reshape(-1)


def invert_kernels(
    generator: KernelGenerator,
    target: torch.Tensor,
    *,
    space: str = "features",
    steps: int = 300,
    lr: float | None = None,
    init: torch.Tensor | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAN inversion: find the latent or first-layer feature map whose kernel matches ``target``.

    Minimises the L1 distance between ``generator(...)`` and ``target`` ``(B, 1, k, k)`` with
    Adam. ``space="features"`` optimises the ``(B, 256, s, s)`` first-layer map (what GLKM
    deblurring optimises, default lr 5e-4·10); ``space="latent"`` optimises ``z`` (lr 0.01, as
    in the collaborative training of the initializer).

    Returns
    -------
    (variable, kernel):
        The optimised latent/feature map and its kernel, both detached.
    """
    if space not in ("features", "latent"):
        raise ValueError(f"space must be 'features' or 'latent', got {space!r}")
    gen_mode = generator.training
    generator.eval()
    b = target.shape[0]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if init is None:
            init = torch.randn(b, generator.latent_dim, 1, 1, generator=g)
            if space == "features":
                init = generator.features(init)
    var = init.detach().clone().requires_grad_(True)
    lr = lr if lr is not None else (5e-3 if space == "features" else 1e-2)
    opt = torch.optim.Adam([var], lr=lr)
    decode = generator.decode if space == "features" else generator
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = (decode(var) - target).abs().sum(dim=(1, 2, 3)).mean()
        loss.backward()
        opt.step()
    generator.train(gen_mode)
    with torch.no_grad():
        return var.detach(), decode(var).detach()
