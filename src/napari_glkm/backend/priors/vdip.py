"""Variational Deep Image Prior (VDIP).

Huo, Masoumzadeh, Kushol & Yang, "Blind Image Deconvolution Using Variational Deep Image Prior",
IEEE TPAMI 2023 (arXiv:2202.00179). Instead of one image, the DIP network outputs a Gaussian
distribution per pixel, ``q(x) = N(mean, std²)``, and is trained on the evidence lower bound

    E_q[ ||x ⋆ k − y||² ] / (2 σ_n²)  +  E_q[ −log p(x) ]  −  H(q)

where ``p`` is a hand-crafted sparse-gradient prior and ``H`` the entropy of ``q``. The expectation
of the data term is estimated with one reparameterised sample ``x = mean + std · ε`` per step.
The noise level ``σ_n`` starts high (0.1) and decays (×0.1 per fifth of the schedule), so the
prior dominates early and the data late, as in the paper's schedule (warm-up with MSE, ELBO, then
1 − SSIM, which we scale to the iteration budget of the preset).

The sparse-gradient prior is the hyper-Laplacian ``p(∇x) ∝ exp(−λ |∇x|^α)``, ``α = 0.8``. Its
expectation under a Gaussian ``q`` has no closed form; we use the standard variational bound of
a sparse prior by a Gaussian scale mixture at the current mean (iteratively reweighted): with
weights ``w = λ α / 2 · (|∇mean| + ε)^(α − 2)`` (held fixed within a step),
``E_q[w |∇x|²] = w (|∇mean|² + std_i² + std_j²)`` for a forward difference between pixels i and j.
This is what makes the variance meaningful: pixels on flat regions are pushed towards small
variance by the prior, pixels the data cannot determine keep a large one, and the mean — the
image the stage returns — is not driven into the sharp-but-noisy solutions that a MAP DIP finds.

This module holds the network wrapper and the loss; the optimisation loop is
:func:`napari_glkm.backend.stages.dip_stage` with ``DIPConfig(kind="vdip")``.
"""

from __future__ import annotations

import torch

from ..blur import conv_valid
from .dip import DIPImagePrior

__all__ = ["VDIPImagePrior", "vdip_elbo", "vdip_noise_level"]


class VDIPImagePrior(DIPImagePrior):
    """A skip network with ``2 C`` outputs: a mean image in [0, 1] and a per-pixel standard
    deviation in ``(0, std_max)``. ``forward()`` returns the mean (the image estimate), so the
    module is a drop-in image prior; :meth:`distribution` returns ``(mean, std)``. Other
    keywords are those of :class:`~napari_glkm.backend.priors.dip.DIPImagePrior`."""

    def __init__(self, shape: tuple[int, int], out_channels: int = 1, *,
                 std_max: float = 0.1, **kwargs) -> None:
        super().__init__(shape, 2 * out_channels, **kwargs)
        self.out_channels = out_channels
        self.std_max = std_max

    def distribution(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = super().forward()  # sigmoid output, noise input jittered while training
        c = self.out_channels
        return out[:, :c], out[:, c:] * self.std_max + 1e-4

    def forward(self) -> torch.Tensor:
        return self.distribution()[0]


def _fwd_diffs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def vdip_noise_level(it: int, n: int, sigma0: float = 0.1, decay: float = 0.1,
                     floor: float = 1e-3) -> float:
    """``σ_n`` of the ELBO's data term at iteration ``it`` of ``n``: ``sigma0`` times ``decay``
    per fifth of the run (the paper: 0.1, ×0.1 per 1000 of 5000 iterations), floored."""
    return max(sigma0 * decay ** (5.0 * it / max(n, 1)), floor)


def vdip_elbo(
    y: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    k: torch.Tensor,
    sigma_n: float,
    *,
    lam: float = 0.2,
    alpha: float = 0.8,
    eps: float = 1e-2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The negative ELBO per observed pixel (see the module docstring).

    ``mean``, ``std`` are ``(1, C, H + k - 1, W + k - 1)``; ``y`` is ``(1, C, H, W)``; ``k`` the
    ``(1, 1, k, k)`` kernel (valid correlation, as everywhere in the solver).
    """
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device) \
        if generator is not None else torch.randn_like(mean)
    x = mean + std * noise
    data = (conv_valid(x, k) - y).pow(2).sum() / (2.0 * sigma_n**2)
    var = std.pow(2)
    prior = mean.new_zeros(())
    for d, (vi, vj) in zip(_fwd_diffs(mean), ((var[..., :, 1:], var[..., :, :-1]),
                                             (var[..., 1:, :], var[..., :-1, :]))):
        w = (lam * alpha / 2.0) * (d.detach().abs() + eps).pow(alpha - 2.0)
        prior = prior + (w * (d.pow(2) + vi + vj)).sum()
    entropy = torch.log(std).sum()
    return (data + prior - entropy) / y.numel()
