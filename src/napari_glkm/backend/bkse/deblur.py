"""Code-space blind deblurring with the BKSE blur operator (Tran et al., CVPR 2021, Sec. 4.3).

The blur model is ``y ≈ F(x, c)``: instead of a kernel, the code map ``c`` is optimised (so the
estimated blur stays in the learned space, uniform or not), together with the sharp image ``x``.
The paper parameterises ``x`` by a DIP network and ``c`` by a second DIP (5000 iterations); to
run in minutes on a CPU we optimise ``x`` directly with a hyper-Laplacian prior on its gradients
(``Σ (|∇x|² + ε)^{α/2}``, α = 0.66, as the paper's HL term) and ``c`` directly, started from the
mean code of synthetic blurs of the input (a typical blur of the space) with a weak pull towards
that start. Loss::

    charbonnier(F(x, c), y) + λ_hl · HL(x) + λ_code · mean((c - c0)²)

Adam on both, with ``λ_hl`` raised from ``hl_weight`` to ``2.5 × hl_weight`` halfway (the
paper raises it from 2e-2 to 5e-2). Colour images: ``x`` is RGB, the code is shared by the
channels. Progress comes as :class:`BKSEStep` snapshots like :class:`~napari_glkm.DeblurStep`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .api import SHIPPED_KERNEL_SIZE, _t, as_bkse_images, load_bkse
from .data import synthetic_pairs
from .networks import code_shape

__all__ = ["BKSEStep", "BKSEResult", "iter_deblur_bkse", "deblur_bkse", "hyper_laplacian"]


@dataclass
class BKSEStep:
    """A snapshot of code-space deblurring.

    iteration, total: 0-based iteration and planned count. stage: ``"init"`` (code start),
    ``"code"`` (joint optimisation) or ``"final"``. loss: data + prior loss. image: current
    estimate in the input's layout and value range (float32). reblurred: ``F(x, c)`` in the
    same layout. code: ``(code_channels, h, w)`` current code map. history: loss per iteration.
    """

    iteration: int
    total: int
    stage: str
    loss: float
    image: np.ndarray
    elapsed: float
    final: bool = False
    reblurred: np.ndarray | None = None
    code: np.ndarray | None = None
    history: list[float] = field(default_factory=list)


@dataclass
class BKSEResult:
    """Result of :func:`deblur_bkse`: restored image, ``F(x, c)``, code map, losses, seconds."""

    image: np.ndarray
    reblurred: np.ndarray
    code: np.ndarray
    losses: list[float]
    seconds: float


def hyper_laplacian(x: torch.Tensor, alpha: float = 0.66, eps: float = 1e-4) -> torch.Tensor:
    """Mean of ``(|∂x|² + eps)^{α/2}`` over horizontal and vertical forward differences."""
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return ((dx ** 2 + eps) ** (alpha / 2)).mean() + ((dy ** 2 + eps) ** (alpha / 2)).mean()


def _check_positive(name: str, value, integer: bool = False) -> None:
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not value > 0:
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, "
                         f"got {value!r}")


def iter_deblur_bkse(image, *, iterations: int = 300, lr_image: float = 5e-3,
                     lr_code: float = 2e-2, hl_weight: float = 2e-2, code_weight: float = 1e-3,
                     init_codes: int = 4, code=None, learn_code: bool = True, seed: int = 0,
                     weights=None, device: str = "cpu",
                     preview_every: int = 10) -> Iterator[BKSEStep]:
    """Blind deblurring by optimising the BKSE code and the image; yields snapshots.

    Parameters
    ----------
    image:
        ``(H, W)`` gray or ``(H, W, 3)`` colour blurry image (integer or float); never modified.
    iterations:
        Adam iterations (each one ``F`` forward + backward on the whole image).
    lr_image, lr_code:
        Adam learning rates of the image and the code.
    hl_weight:
        Weight of the hyper-Laplacian gradient prior (raised ×2.5 halfway).
    code_weight:
        Pull of the code towards its start ``c0``.
    init_codes:
        Synthetic blurs of the input whose mean code is the start ``c0``.
    code:
        Start code ``(code_channels, h, w)`` instead of ``c0`` (e.g. ``G`` of a reference pair
        with the same blur, resized with :func:`~napari_glkm.backend.bkse.api.resize_code`);
        with ``learn_code=False`` it stays fixed (non-blind deblurring through ``F``).
    seed, weights, device:
        Randomness of the start, BKSE weights file (``None``: shipped), torch device.
    preview_every:
        A snapshot every this many iterations (and the last one, ``final=True``).

    Example
    -------
    >>> import numpy as np
    >>> img = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    >>> *_, last = iter_deblur_bkse(img, iterations=3)
    >>> last.final, last.image.shape
    (True, (48, 48))
    """
    _check_positive("iterations", iterations, integer=True)
    _check_positive("preview_every", preview_every, integer=True)
    _check_positive("init_codes", init_codes, integer=True)
    for name, value in (("lr_image", lr_image), ("lr_code", lr_code)):
        _check_positive(name, value)
    for name, value in (("hl_weight", hl_weight), ("code_weight", code_weight)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    (img,) = as_bkse_images((image, "image"))
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = load_bkse(weights).to(device)
    y = _t(img.data, device)  # (C, 1, H, W)
    lum = _t(img.luminance, device)
    grid = (net.config.code_channels, *code_shape(img.data.shape[1:], net.config))
    if code is not None:
        c0 = torch.as_tensor(np.asarray(code, dtype=np.float32), device=device)
        if tuple(c0.shape) != grid or not torch.isfinite(c0).all():
            raise ValueError(f"code must be a finite array of shape {grid} for this image, got "
                             f"{tuple(c0.shape)}")
        c0 = c0[None]
    else:
        with torch.no_grad():
            starts = synthetic_pairs(lum.expand(init_codes, -1, -1, -1).contiguous(),
                                     SHIPPED_KERNEL_SIZE, rng, nonuniform_fraction=0.0)[0]
            c0 = net.extract(lum.expand(init_codes, -1, -1, -1), starts).mean(0, keepdim=True)
    code = c0.clone().requires_grad_(learn_code)
    x = y.clone().requires_grad_(True)
    groups = [{"params": [x], "lr": lr_image}]
    if learn_code:
        groups.append({"params": [code], "lr": lr_code})
    opt = torch.optim.Adam(groups)
    history: list[float] = []

    def snapshot(it: int, stage: str, loss: float, final: bool = False) -> BKSEStep:
        with torch.no_grad():
            xr = x.detach().clamp(0, 1)
            re = net.blur(xr, code.detach().expand(xr.shape[0], -1, -1, -1)).clamp(0, 1)
        return BKSEStep(iteration=it, total=iterations, stage=stage, loss=loss,
                        image=img.to_user(xr[:, 0].cpu().numpy()),
                        elapsed=time.perf_counter() - t0, final=final,
                        reblurred=img.to_user(re[:, 0].cpu().numpy()),
                        code=code.detach()[0].cpu().numpy(), history=history)

    yield snapshot(0, "init", float("nan"))
    for it in range(iterations):
        lam = hl_weight * (2.5 if it >= iterations // 2 else 1.0)
        blurred = net.blur(x, code.expand(x.shape[0], -1, -1, -1))
        data = torch.sqrt((blurred - y) ** 2 + 1e-6).mean()
        loss = data + lam * hyper_laplacian(x) + code_weight * ((code - c0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
        history.append(float(loss.detach()))
        last = it == iterations - 1
        if last or (it + 1) % preview_every == 0:
            yield snapshot(it, "final" if last else "code", history[-1], final=last)


def deblur_bkse(image, **options) -> BKSEResult:
    """Run :func:`iter_deblur_bkse` to the end and return a :class:`BKSEResult`."""
    options.pop("preview_every", None)
    last = None
    for last in iter_deblur_bkse(image, preview_every=10**9, **options):
        pass
    return BKSEResult(image=last.image, reblurred=last.reblurred, code=last.code,
                      losses=list(last.history), seconds=last.elapsed)
