"""VDIP image prior: the ELBO and its gradients, a short run that deblurs, the solver option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_glkm import iter_deblur
from napari_glkm._sample_data import blurred_sample
from napari_glkm.backend.blur import conv_valid
from napari_glkm.backend.kernel_prior import FreeKernelPrior
from napari_glkm.backend.metrics import psnr
from napari_glkm.backend.priors.vdip import VDIPImagePrior, vdip_elbo, vdip_noise_level
from napari_glkm.backend.stages import DIPConfig, dip_stage


def _problem(side=64, ks=9, noise=0.005):
    s = blurred_sample("camera")
    k = torch.nn.functional.interpolate(torch.from_numpy(s.kernel)[None, None].float(),
                                        size=(ks, ks), mode="area")
    k = k / k.sum()
    sharp = torch.from_numpy(s.sharp[160 : 160 + side + ks - 1, 170 : 170 + side + ks - 1]
                             .copy())[None, None].float()
    g = torch.Generator().manual_seed(0)
    y = conv_valid(sharp, k) + noise * torch.randn(1, 1, side, side, generator=g)
    c = ks // 2
    return y, k, sharp[..., c:-c, c:-c]


def test_elbo_and_gradients_are_finite_on_random_input():
    prior = VDIPImagePrior((40, 40), 3, channels=(8, 8), skip=(2, 2), seed=1)
    mean, std = prior.distribution()
    assert mean.shape == std.shape == (1, 3, 40, 40)
    assert float(std.min()) > 0 and float(std.max()) <= prior.std_max + 1e-4
    k = torch.rand(1, 1, 5, 5)
    k = (k / k.sum()).requires_grad_()
    y = torch.rand(1, 3, 36, 36)
    loss = vdip_elbo(y, mean, std, k, sigma_n=0.05)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in prior.parameters() if p.grad is not None] + [k.grad]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_entropy_and_prior_shape_the_variance():
    """On a flat image the bound prefers a moderate std: the prior's pull (w * 2 var) balances
    the entropy (log std); a far larger or far smaller std scores worse."""
    y = torch.full((1, 1, 20, 20), 0.5)
    k = torch.zeros(1, 1, 3, 3)
    k[..., 1, 1] = 1.0
    mean = torch.full((1, 1, 22, 22), 0.5)
    g = torch.Generator().manual_seed(0)
    vals = {s: float(vdip_elbo(y, mean, torch.full_like(mean, s), k, 0.1, generator=g))
            for s in (1e-4, 0.05, 0.5)}
    assert vals[0.05] < vals[1e-4] and vals[0.05] < vals[0.5]
    assert vdip_noise_level(0, 100) == pytest.approx(0.1)
    assert vdip_noise_level(20, 100) == pytest.approx(0.01)


def test_short_vdip_run_deblurs_with_a_known_kernel():
    y, k, ref = _problem()
    cfg = DIPConfig(kind="vdip", iters=150, channels=16, scales=3, skip=4, mse_iters=15,
                    kernel_lr=0.0)
    x = None
    for _loss, x in dip_stage(y, FreeKernelPrior(k.shape[-1], init=k.clone()), cfg, seed=0):
        pass
    gain = float(psnr(x.clamp(0, 1), ref)) - float(psnr(y.clamp(0, 1), ref))
    assert gain > 2.0, gain


def test_solver_prior_option(monkeypatch):
    from napari_glkm.backend import solver

    monkeypatch.setitem(solver.PRIOR_ITERS, "fast", 6)  # a short stage: the contract, not quality
    img = blurred_sample("camera").blurry[180:260, 160:240].copy()
    base = list(iter_deblur(img, kernel_size=9, preset="fast", iterations=1,
                            kernel_prior="free", init="random"))
    steps = list(iter_deblur(img, kernel_size=9, preset="fast", iterations=1, prior="vdip",
                             kernel_prior="free", init="random", preview_every=1))
    last = steps[-1]
    assert np.all(np.isfinite(last.image)) and "dip" in last.timings
    assert "dip" not in base[-1].timings
    assert last.total == base[-1].total + 6 and [s.stage for s in steps].count("dip") == 6
    with pytest.raises(ValueError, match="unknown prior"):
        iter_deblur(img, kernel_size=9, prior="diffusionz")
    # "none" removes the quality preset's DIP stage
    *_, q = iter_deblur(img, kernel_size=9, preset="quality", iterations=1, prior="none",
                        kernel_prior="free", init="random")
    assert "dip" not in q.timings
