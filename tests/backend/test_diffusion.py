"""Diffusion image prior: the network and DDIM, the loss and its gradients, the shipped model's
denoising, the solver option, training (loss falls, resume is exact) and user model folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_glkm import iter_deblur
from napari_glkm._sample_data import blurred_sample
from napari_glkm.backend.kernel_prior import FreeKernelPrior
from napari_glkm.backend.priors.diffusion import (
    DiffusionImagePrior,
    DiffusionUNet,
    NoiseSchedule,
    ddim_sample,
    ddim_timesteps,
    diffusion_loss,
    load_diffusion_model,
    predict_x0,
)
from napari_glkm.backend.stages import DIPConfig, dip_stage
from napari_glkm.backend.train.diffusion import (
    DiffusionConfig,
    ddpm_loss,
    export_checkpoint,
    random_crops,
    train_diffusion,
)
from napari_glkm.backend.weights import WeightsError, load_diffusion_unet

SHARED_VAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "bsds500" / "val"


def test_unet_any_size_and_ddim_timesteps():
    net = DiffusionUNet((8, 16, 16), emb_dim=16)
    x = torch.randn(2, 1, 37, 31)
    assert net(x, torch.tensor([5, 900])).shape == x.shape
    assert ddim_timesteps(100, 2) == [100, 50]
    assert ddim_timesteps(2, 5) == [2, 1] and ddim_timesteps(0, 3) == [0]
    with pytest.raises(ValueError):
        ddim_timesteps(1000, 2)
    with pytest.raises(ValueError, match="multiples of 8"):
        DiffusionUNet((12, 16))


def test_diffusion_loss_and_gradients_are_finite_on_random_input():
    torch.manual_seed(0)
    net = DiffusionUNet((8, 16), emb_dim=16)
    for p in net.parameters():  # the zero-initialised last convs would hide the network
        p.data.normal_(0, 0.1)
    prior = DiffusionImagePrior(net, torch.rand(1, 1, 36, 36), t_start=200, ddim_steps=3)
    k = torch.rand(1, 1, 5, 5)
    k = (k / k.sum()).requires_grad_()
    loss = diffusion_loss(prior, k, torch.rand(1, 1, 32, 32))
    loss.backward()
    assert torch.isfinite(loss)
    assert prior.latent.grad is not None and torch.isfinite(prior.latent.grad).all()
    assert float(prior.latent.grad.abs().sum()) > 0 and float(k.grad.abs().sum()) > 0
    assert all(p.grad is None for p in net.parameters())  # the denoiser is frozen


def _val_crop(side=96) -> np.ndarray:
    if SHARED_VAL.is_dir():
        from napari_glkm.backend.train.initializer import load_image_folder

        img = load_image_folder([SHARED_VAL], side)[0]
    else:
        from skimage import data

        img = data.camera().astype(np.float32) / 255.0
    r, c = img.shape[0] // 2 - side // 2, img.shape[1] // 2 - side // 2
    return img[r : r + side, c : c + side].copy()


def test_shipped_denoiser_reduces_noise_on_a_held_out_patch():
    model = load_diffusion_unet()
    schedule = NoiseSchedule()
    x0 = torch.from_numpy(_val_crop())[None, None] * 2 - 1
    g = torch.Generator().manual_seed(3)
    for sigma in (0.1, 0.2):  # noise std in [0, 1] image units
        t = schedule.step_for_sigma(2 * sigma)
        x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=g), torch.tensor([t]))
        ab = schedule.alpha_bar[t]
        noisy = x_t / ab.sqrt()  # the noisy image at signal scale 1
        with torch.no_grad():
            den, _ = predict_x0(model, schedule, x_t, t)
        mse_noisy = float(((noisy - x0) ** 2).mean())
        mse_den = float(((den.clamp(-1, 1) - x0) ** 2).mean())
        assert mse_den < 0.35 * mse_noisy, (sigma, mse_den, mse_noisy)


def test_ddim_from_a_noised_image_stays_close_to_it():
    """A few deterministic DDIM steps from a lightly noised natural patch return an image near
    the clean patch (closer than the noised input): the map the stage inverts is sensible."""
    model = load_diffusion_unet()
    schedule = NoiseSchedule()
    x0 = torch.from_numpy(_val_crop(64))[None, None] * 2 - 1
    ts = ddim_timesteps(100, 3)
    x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)),
                             torch.tensor([ts[0]]))
    with torch.no_grad():
        out = ddim_sample(model, schedule, x_t, ts)
    ab = schedule.alpha_bar[ts[0]]
    assert float(((out - x0) ** 2).mean()) < 0.5 * float(((x_t / ab.sqrt() - x0) ** 2).mean())


def test_stage_with_a_known_kernel_fits_the_data():
    s = blurred_sample("camera")
    ks, side = 9, 48
    k = torch.nn.functional.interpolate(torch.from_numpy(s.kernel)[None, None].float(),
                                        size=(ks, ks), mode="area")
    k = k / k.sum()
    from napari_glkm.backend.blur import conv_valid

    sharp = torch.from_numpy(s.sharp[160 : 160 + side + ks - 1, 170 : 170 + side + ks - 1]
                             .copy())[None, None].float()
    y = conv_valid(sharp, k)
    cfg = DIPConfig(kind="diffusion", iters=8, image_lr=0.02, kernel_lr=0.0, diffusion_t=60,
                    ddim_steps=1)
    losses = [loss for loss, _x in dip_stage(y, FreeKernelPrior(ks, init=k.clone()), cfg)]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


def test_solver_diffusion_option(monkeypatch, tmp_path):
    from napari_glkm.backend import solver

    monkeypatch.setitem(solver.DIFFUSION_ITERS, "fast", 3)
    img = blurred_sample("camera").blurry[180:260, 160:240].copy()
    steps = list(iter_deblur(img, kernel_size=9, preset="fast", iterations=1, prior="diffusion",
                             kernel_prior="free", init="random", preview_every=1))
    last = steps[-1]
    assert last.final and np.all(np.isfinite(last.image)) and last.image.shape == img.shape
    assert [s.stage for s in steps].count("dip") == 3 and "dip" in last.timings
    with pytest.raises(ValueError, match="needs prior='diffusion'"):
        iter_deblur(img, kernel_size=9, prior="dip", diffusion_model=str(tmp_path))


def test_wrong_model_folder_or_file_gives_clear_errors(tmp_path):
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="not a diffusers UNet2DModel folder"):
        iter_deblur(img, kernel_size=9, prior="diffusion", diffusion_model=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a UNet2DModel"):
        load_diffusion_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel",
                                                      "in_channels": 3, "out_channels": 3}))
    with pytest.raises(ValueError, match="in_channels = out_channels = 1"):
        load_diffusion_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_diffusion_model(tmp_path)
    with pytest.raises(WeightsError, match="not found"):
        load_diffusion_model(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match="must be a .safetensors"):
        load_diffusion_model(tmp_path / "config.json")
    from napari_glkm.backend.weights import save_state_dict

    save_state_dict({"w": torch.zeros(3)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightsError, match="not a napari-glkm diffusion UNet"):
        load_diffusion_model(tmp_path / "other.safetensors")


def _images(n=3, side=40):
    rng = np.random.default_rng(0)
    s = blurred_sample("camera").sharp
    return [s[r : r + side, c : c + side].copy()
            for r, c in rng.integers(0, min(s.shape) - side, size=(n, 2))]


def test_short_training_reduces_the_loss_and_resumes_exactly(tmp_path):
    images = _images()
    cfg = DiffusionConfig(size=16, channels=(8, 16), steps=60, batch_size=8, lr=2e-3,
                          warmup=5, checkpoint_every=30, seed=1)
    rng = np.random.default_rng(5)
    batch = random_crops(images, 32, 16, rng)
    schedule = NoiseSchedule()

    def eval_loss(net) -> float:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return float(np.mean([float(ddpm_loss(net, schedule, batch, g)) for _ in range(4)]))

    torch.manual_seed(cfg.seed)
    before = eval_loss(DiffusionUNet(cfg.channels))
    seen = []
    path = train_diffusion(cfg, images, tmp_path / "a", on_progress=lambda s, n, m: seen.append(s))
    assert seen == list(range(1, 61))
    after = eval_loss(load_diffusion_unet(path))
    assert after < 0.7 * before, (before, after)
    # a run stopped at 30 steps and resumed to 60 ends with the same weights
    from dataclasses import replace

    train_diffusion(replace(cfg, steps=30), images, tmp_path / "b")
    resumed = train_diffusion(cfg, images, tmp_path / "b")
    a, b = load_diffusion_unet(path).state_dict(), load_diffusion_unet(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    exported = export_checkpoint(tmp_path / "b" / "checkpoint.pt", tmp_path / "e.safetensors")
    e = load_diffusion_unet(exported).state_dict()
    assert all(torch.equal(a[k], e[k]) for k in a)
    with pytest.raises(ValueError, match="at least 64 px"):
        train_diffusion(DiffusionConfig(size=64, steps=1), images, tmp_path / "c")


def test_diffusers_unet_folder_is_accepted(tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    from napari_glkm.backend import solver

    monkeypatch.setitem(solver.DIFFUSION_ITERS, "fast", 3)
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    unet.save_pretrained(tmp_path / "unet")
    model = load_diffusion_model(tmp_path / "unet")
    x = torch.randn(1, 1, 16, 16)
    t = torch.tensor([250])
    with torch.no_grad():
        assert torch.allclose(model(x, t), unet(x, t).sample, atol=1e-5)
        assert model(torch.randn(1, 1, 21, 19), t).shape == (1, 1, 21, 19)
    img = blurred_sample("camera").blurry[180:244, 160:224].copy()
    *_, last = iter_deblur(img, kernel_size=9, preset="fast", iterations=1, prior="diffusion",
                           diffusion_model=str(tmp_path / "unet"), kernel_prior="free",
                           init="random")
    assert np.all(np.isfinite(last.image)) and "dip" in last.timings
