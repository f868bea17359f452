"""Kernel initializer: a ResNet-18 that predicts the generator's latent from a blurry image.

GLKM's second half of the kernel prior (Zhang et al., "Generative Latent Kernel Modeling for
Blind Motion Deblurring"; GKPILE): an encoder ``E`` maps the blurry luminance ``y`` to a latent
``z = E(y)`` of the kernel generator ``G``, so that ``G(E(y))`` is already close to the blur
kernel and deblurring starts near the right answer.

The network is ResNet-18 (He et al., CVPR 2016) written here in plain torch (torchvision is not
a dependency), with a 1-channel stem ``Conv2d(1, 64, 7, 2, 3)`` and ``fc: 512 -> latent_dim``.
Global average pooling lets it run on an image of any size. Parameter names follow
torchvision's ResNet, so an official GLKM ``netE_{k}.pth`` (the same names under a ``model.``
prefix) loads after stripping that prefix (:func:`convert_official_initializer_keys`).

Output: the latent ``z`` ``(B, 100, 1, 1)`` rather than the first-layer feature map. The latent
is 100 numbers instead of 256·s² (2304 for size 31), it is what the official checkpoints
predict, and every latent decodes to a plausible kernel, while a regressed feature map can
leave the generator's training distribution. The solver turns ``z`` into a feature map with
``G.features(z)`` and optimises the feature map from there.

Example
-------
>>> import torch
>>> net = KernelInitializer()
>>> net(torch.rand(2, 1, 96, 80)).shape
torch.Size([2, 100, 1, 1])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .generator import LATENT_DIM

__all__ = ["KernelInitializer", "BasicBlock", "convert_official_initializer_keys"]


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


def conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias (the projection shortcut)."""
    return nn.Conv2d(c_in, c_out, 1, stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class KernelInitializer(nn.Module):
    """ResNet-18 encoder: blurry luminance ``(B, 1, H, W)`` in [0, 1] -> latent ``(B, 100, 1, 1)``.

    Parameters
    ----------
    latent_dim:
        Size of the generator's latent (100 for the GLKM generators).
    kernel_size:
        The generator size this initializer was trained for (stored, not used by the layers).
    """

    def __init__(self, latent_dim: int = LATENT_DIM, kernel_size: int = 31) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.kernel_size = kernel_size
        self.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 64, stride=1)
        self.layer2 = self._make_layer(64, 128, stride=2)
        self.layer3 = self._make_layer(128, 256, stride=2)
        self.layer4 = self._make_layer(256, 512, stride=2)
        self.fc = nn.Linear(512, latent_dim)
        self._init_weights()

    @staticmethod
    def _make_layer(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out))

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each block: every block starts as the identity.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.ndim != 4 or y.shape[1] != 1:
            raise ValueError(f"expected a (B, 1, H, W) luminance batch, got {tuple(y.shape)}")
        x = F.relu(self.bn1(self.conv1(y)))
        x = F.max_pool2d(x, 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)[:, :, None, None]


def convert_official_initializer_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official ``netE_{k}.pth`` state dict (torchvision names under ``model.``) to ours.

    Drops ``num_batches_tracked`` buffers only when absent from ours (they are kept otherwise).
    """
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith("model."):
            key = key[len("model."):]
        out[key] = value
    return out
