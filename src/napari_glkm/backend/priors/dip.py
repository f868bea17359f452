"""Deep Image Prior: the encoder-decoder "skip" network used by SelfDeblur and GLKM.

Ulyanov, Vedaldi & Lempitsky, "Deep Image Prior" (CVPR 2018); configuration of Ren et al.,
"Neural Blind Deconvolution Using Deep Priors" (SelfDeblur, CVPR 2020) and of the GLKM/GKPILE
deblurring scripts: 5 scales, 128 channels down and up, 16 skip channels, bilinear upsampling,
reflection padding, LeakyReLU(0.2), sigmoid output; optional non-local blocks (dot product,
64 inter-channels, 2x2 max-pooled keys/values, zero-initialised output) after the stride-2
convolution of scales 3-5 as in GKPILE. Written from the papers' descriptions in plain torch.

:class:`DIPImagePrior` wraps the network with its fixed noise input (jittered every call while
training) so that ``prior() -> (1, C, H, W)`` in [0, 1].

Example
-------
>>> import torch
>>> net = SkipNet(8, 1, channels=(16, 16, 16), skip=(4, 4, 4))
>>> tuple(net(torch.rand(1, 8, 37, 31)).shape)
(1, 1, 37, 31)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SkipNet", "NonLocalBlock", "DIPImagePrior"]


def _conv(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    pad = (k - 1) // 2
    layers: list[nn.Module] = []
    if pad > 0:
        layers.append(nn.ReflectionPad2d(pad))
    layers.append(nn.Conv2d(c_in, c_out, k, stride, bias=True))
    return nn.Sequential(*layers)


def _bn_act(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.LeakyReLU(0.2, inplace=True)]


class NonLocalBlock(nn.Module):
    """Embedded dot-product non-local block (Wang et al., CVPR 2018), residual, zero-initialised."""

    def __init__(self, channels: int, inter: int = 64) -> None:
        super().__init__()
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Sequential(nn.Conv2d(channels, inter, 1), nn.MaxPool2d(2))
        self.g = nn.Sequential(nn.Conv2d(channels, inter, 1), nn.MaxPool2d(2))
        self.out = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if h < 2 or w < 2:
            return x
        q = self.theta(x).flatten(2).transpose(1, 2)  # (B, HW, I)
        k = self.phi(x).flatten(2)  # (B, I, hw)
        v = self.g(x).flatten(2).transpose(1, 2)  # (B, hw, I)
        attn = (q @ k) / k.shape[-1]
        y = (attn @ v).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out(y)


def _center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    dh, dw = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., dh : dh + h, dw : dw + w]


class _Level(nn.Module):
    """One scale: skip branch and (downsample -> deeper -> upsample) branch, then merge."""

    def __init__(
        self, c_in: int, c_down: int, c_up: int, c_skip: int, deeper: nn.Module | None,
        c_deeper_out: int, nonlocal_block: bool,
    ) -> None:
        super().__init__()
        self.skip = nn.Sequential(_conv(c_in, c_skip, 1), *_bn_act(c_skip)) if c_skip else None
        down: list[nn.Module] = [_conv(c_in, c_down, 3, stride=2), *_bn_act(c_down)]
        if nonlocal_block:
            down.append(NonLocalBlock(c_down))
        down += [_conv(c_down, c_down, 3), *_bn_act(c_down)]
        self.down = nn.Sequential(*down)
        self.deeper = deeper
        c_cat = c_skip + (c_deeper_out if deeper is not None else c_down)
        self.merge = nn.Sequential(
            nn.BatchNorm2d(c_cat),
            _conv(c_cat, c_up, 3), *_bn_act(c_up),
            _conv(c_up, c_up, 1), *_bn_act(c_up),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        d = self.down(x)
        if self.deeper is not None:
            d = self.deeper(d)
        d = F.interpolate(d, scale_factor=2, mode="bilinear", align_corners=False)
        d = _center_crop(d, h, w)
        if self.skip is not None:
            d = torch.cat([self.skip(x), d], dim=1)
        return self.merge(d)


class SkipNet(nn.Module):
    """DIP encoder-decoder with skip connections.

    Parameters
    ----------
    in_channels, out_channels:
        Noise input channels (8 in SelfDeblur/GLKM) and image channels (1 or 3).
    channels:
        Channels at each scale, top to bottom (``(128,) * 5`` in the paper).
    skip:
        Skip-connection channels at each scale (``(16,) * 5``).
    nonlocal_scales:
        0-based scales that get a non-local block after their stride-2 conv (GKPILE: 2, 3, 4).
    """

    def __init__(
        self,
        in_channels: int = 8,
        out_channels: int = 1,
        channels: Sequence[int] = (128,) * 5,
        skip: Sequence[int] = (16,) * 5,
        nonlocal_scales: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if len(channels) != len(skip) or not channels:
            raise ValueError("channels and skip must be non-empty and of equal length")
        n = len(channels)
        deeper: nn.Module | None = None
        c_deeper_out = 0
        for i in reversed(range(n)):
            c_in = in_channels if i == 0 else channels[i - 1]
            deeper = _Level(c_in, channels[i], channels[i], skip[i], deeper, c_deeper_out,
                            i in nonlocal_scales)
            c_deeper_out = channels[i]
        self.body = deeper
        self.head = _conv(channels[0], out_channels, 1)
        self.min_size = 2 ** n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.body(x)))


class DIPImagePrior(nn.Module):
    """A skip network and its fixed noise input: ``forward() -> (1, C, H, W)`` in [0, 1].

    While training, the input is perturbed by ``N(0, noise_jitter²)`` each call (SelfDeblur's
    regularising trick). The noise is ``U(0, 1) * 0.1`` as in the reference scripts.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        out_channels: int = 1,
        *,
        in_channels: int = 8,
        channels: Sequence[int] = (128,) * 5,
        skip: Sequence[int] = (16,) * 5,
        nonlocal_scales: Sequence[int] = (),
        noise_jitter: float = 1e-3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = SkipNet(in_channels, out_channels, channels, skip, nonlocal_scales)
        self.register_buffer("noise", torch.rand(1, in_channels, *shape, generator=g) * 0.1)
        self.noise_jitter = noise_jitter

    def forward(self) -> torch.Tensor:
        z = self.noise
        if self.training and self.noise_jitter > 0:
            z = z + torch.randn_like(z) * self.noise_jitter
        return self.net(z)
