"""BKSE networks: kernel extractor ``G`` and blur operator ``F`` (Tran et al., CVPR 2021).

``G(x, y)`` reads a sharp image ``x`` and its blurry version ``y`` and returns a *code map*
that describes the blur; ``F(x, c)`` blurs a sharp image with code ``c``. Trained together
(``F(x, G(x, y)) ≈ y``) they define an encoded blur-kernel space: codes can be moved to other
images (blur transfer), drawn at random (blur synthesis), or optimised (code-space deblurring).

Our configuration is small enough to train on a 2-core CPU (see :data:`SMALL`, 0.91 M
parameters, gray 1-channel images, code ``32 × H/16 × W/16``); the paper's is ≈ 49 M
parameters on RGB with a ``512 × H/128 × W/128`` code (10 + 4 residual blocks in the
extractor, a 5-level U-Net with 20 residual blocks in the operator). What the smaller size
costs is measured in ``docs/bkse.md`` (reproduction PSNR on held-out pairs).

Inputs of any size are accepted: they are padded (reflect) to a multiple of
:attr:`BKSEConfig.multiple` and the outputs cropped back (the official code fails on sizes
that are not multiples of 128).

Example
-------
>>> import torch
>>> net = BKSENet(BKSEConfig(width=8, code_channels=4))
>>> x = torch.rand(1, 1, 37, 50); y = torch.rand(1, 1, 37, 50)
>>> code = net.extract(x, y)
>>> tuple(code.shape), tuple(net.blur(x, code).shape)
((1, 4, 3, 4), (1, 1, 37, 50))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BKSEConfig", "SMALL", "KernelExtractor", "BlurOperator", "BKSENet",
           "pad_to_multiple", "code_shape"]

_SLOPE = 0.1  # LeakyReLU slope of the paper
_RESIDUAL_GAIN = 5.0


@dataclass(frozen=True)
class BKSEConfig:
    """Size of the two networks.

    width:
        Channels of the operator's full-resolution level; level ``i`` has
        ``width * mults[i]`` channels.
    mults:
        Channel multipliers of the U-Net levels (5 levels: 1, 1/2, ..., 1/16).
    code_channels:
        Channels of the code map (the paper: 512).
    extractor_width:
        Channels of the extractor's first layer (it doubles up to ``2 * extractor_width``).
    res_blocks:
        Residual blocks in the extractor's trunk and in the operator's bottleneck.
    """

    width: int = 16
    mults: tuple[int, ...] = (1, 2, 3, 4, 4)
    code_channels: int = 32
    extractor_width: int = 32
    res_blocks: int = 2

    @property
    def multiple(self) -> int:
        """Inputs are padded to a multiple of this (the code grid's pixel size)."""
        return 2 ** (len(self.mults) - 1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "BKSEConfig":
        d = dict(d)
        if "mults" in d:
            d["mults"] = tuple(int(v) for v in d["mults"])
        return cls(**d)


SMALL = BKSEConfig()


def _act() -> nn.Module:
    return nn.LeakyReLU(_SLOPE, inplace=True)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1)


def _init_convs(module: nn.Module) -> None:
    """Kaiming-normal (fan-in, LeakyReLU 0.1) weights and zero biases for every conv.

    PyTorch's default init shrinks the signal by about 1/3 in variance per layer; through the
    extractor's ~10 layers the code then hardly depends on the input, and training settles on
    an operator that ignores the code (one average blur for every input — seen in our first
    CPU run). Residual branches are scaled by 0.1 at init (as in EDSR) to keep the trunk stable.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, ResBlock):
            with torch.no_grad():
                m.conv2.weight.mul_(0.1)


class ResBlock(nn.Module):
    """conv-LReLU-conv with identity shortcut (no normalisation, as in the paper)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(ch, ch)
        self.conv2 = conv3x3(ch, ch)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv2(self.act(self.conv1(x)))
        return out + identity


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv3x3(cin, cout, 2), _act(), conv3x3(cout, cout), _act())


def code_shape(shape: tuple[int, int], config: BKSEConfig = SMALL) -> tuple[int, int]:
    """Spatial size ``(h, w)`` of the code map of an ``(H, W)`` image."""
    m = config.multiple
    return math.ceil(shape[0] / m), math.ceil(shape[1] / m)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` at the bottom/right to multiples of ``multiple`` (reflect when the
    image is large enough, otherwise replicate)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class KernelExtractor(nn.Module):
    """``G``: ``(sharp, blurry)`` ``(B, 1, H, W)`` each -> code ``(B, code_channels, H/16, W/16)``.

    Input channels are ``x``, ``y`` and ``y - x`` (the blur residual); a front end (conv,
    two stride-2 convs, residual blocks) to ``H/4``, two more stride-2 convs to the code grid,
    residual blocks, and a 1×1 projection to the code.
    """

    def __init__(self, config: BKSEConfig = SMALL) -> None:
        super().__init__()
        c = config.extractor_width
        c2 = 2 * c
        n_down = len(config.mults) - 1
        layers: list[nn.Module] = [conv3x3(3, c), _act()]
        ch = c
        for i in range(n_down):
            out = c2 if i >= 1 else (c + c2) // 2
            layers += [conv3x3(ch, out, 2), _act()]
            ch = out
            if i == 1:
                layers += [ResBlock(ch) for _ in range(config.res_blocks)]
        layers += [ResBlock(ch) for _ in range(max(1, config.res_blocks // 2))]
        layers += [nn.Conv2d(ch, config.code_channels, 1)]
        self.body = nn.Sequential(*layers)
        _init_convs(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # the blur residual is small (a few % of the range): amplify it to the inputs' scale
        return self.body(torch.cat([x, y, _RESIDUAL_GAIN * (y - x)], dim=1))


class BlurOperator(nn.Module):
    """``F``: sharp ``(B, 1, H, W)`` and code -> blurry ``(B, 1, H, W)``.

    A U-Net with ``len(mults)`` levels; the code is concatenated at the bottleneck
    (``H/16``), followed by residual blocks; the decoder upsamples (bilinear + conv) and
    concatenates the skips; the output is ``x + residual``.
    """

    def __init__(self, config: BKSEConfig = SMALL) -> None:
        super().__init__()
        chs = [config.width * m for m in config.mults]
        self.inc = nn.Sequential(conv3x3(1, chs[0]), _act(), conv3x3(chs[0], chs[0]), _act())
        self.downs = nn.ModuleList(_down(chs[i], chs[i + 1]) for i in range(len(chs) - 1))
        bott = chs[-1]
        self.fuse = nn.Sequential(nn.Conv2d(bott + config.code_channels, bott, 1), _act())
        self.mid = nn.Sequential(*[ResBlock(bott) for _ in range(config.res_blocks)])
        self.up_convs = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(len(chs) - 1, 0, -1):
            self.up_convs.append(nn.Sequential(conv3x3(chs[i], chs[i - 1]), _act()))
            self.dec.append(nn.Sequential(conv3x3(2 * chs[i - 1], chs[i - 1]), _act()))
        self.out = conv3x3(chs[0], 1)
        _init_convs(self)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        h = skips.pop()
        if code.shape[-2:] != h.shape[-2:]:
            raise ValueError(f"code grid {tuple(code.shape[-2:])} does not match the image's "
                             f"{tuple(h.shape[-2:])}")
        h = self.mid(self.fuse(torch.cat([h, code], dim=1)))
        for up, dec in zip(self.up_convs, self.dec):
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            h = dec(torch.cat([up(h), skip], dim=1))
        return x + self.out(h)


class BKSENet(nn.Module):
    """Both networks with padding to the code grid: :meth:`extract` and :meth:`blur` take
    ``(B, 1, H, W)`` images of any size."""

    def __init__(self, config: BKSEConfig = SMALL) -> None:
        super().__init__()
        self.config = config
        self.extractor = KernelExtractor(config)
        self.operator = BlurOperator(config)

    def extract(self, sharp: torch.Tensor, blurry: torch.Tensor) -> torch.Tensor:
        """Code map ``(B, code_channels, ceil(H/16), ceil(W/16))``."""
        m = self.config.multiple
        return self.extractor(pad_to_multiple(sharp, m), pad_to_multiple(blurry, m))

    def blur(self, sharp: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """``F(sharp, code)`` cropped back to ``sharp``'s size."""
        h, w = sharp.shape[-2:]
        if code.shape[-2:] != code_shape((h, w), self.config):
            raise ValueError(f"code grid {tuple(code.shape[-2:])} does not fit an image of "
                             f"{h}x{w} (expected {code_shape((h, w), self.config)})")
        out = self.operator(pad_to_multiple(sharp, self.config.multiple), code)
        return out[..., :h, :w]

    def forward(self, sharp: torch.Tensor, blurry: torch.Tensor) -> torch.Tensor:
        """Reproduction ``F(x, G(x, y))``."""
        return self.blur(sharp, self.extract(sharp, blurry))
