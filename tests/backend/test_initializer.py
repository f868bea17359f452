"""ResNet-18 initializer: contracts, official checkpoint import, collaborative training."""

import numpy as np
import pytest
import torch

from napari_glkm import load_weights
from napari_glkm.backend.initializer import KernelInitializer
from napari_glkm.backend.train.initializer import (
    InitializerConfig,
    make_blurry_batch,
    refine_latents,
    train_initializer,
    train_step,
)
from napari_glkm.backend.weights import WeightsError, load_generator, load_initializer


def test_resnet18_shapes_and_size():
    net = KernelInitializer().eval()
    for shape in [(1, 1, 64, 64), (3, 1, 97, 131)]:
        assert net(torch.rand(shape)).shape == (shape[0], 100, 1, 1)
    n_params = sum(p.numel() for p in net.parameters())
    # torchvision's resnet18 has 11.69 M parameters with a 3-channel stem and 1000 classes;
    # a 1-channel stem (-6272) and a 100-way fc (-461,700) give 11.22 M.
    assert n_params == 11_689_512 - 2 * 64 * 49 - 900 * 513
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.rand(1, 3, 64, 64))


def test_official_netE_layout_loads(tmp_path):
    ref = KernelInitializer().eval()
    official = {f"model.{k}": v for k, v in ref.state_dict().items()}
    path = tmp_path / "netE_31.pth"
    torch.save(official, path)
    net = load_weights(path)
    assert isinstance(net, KernelInitializer)
    y = torch.rand(2, 1, 80, 80)
    torch.testing.assert_close(net(y), ref(y))
    assert isinstance(load_initializer(31, path), KernelInitializer)


def test_initializer_with_wrong_shapes_is_refused(tmp_path):
    state = KernelInitializer().state_dict()
    state["fc.weight"] = torch.zeros(10, 512)
    path = tmp_path / "netE.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="wrong shapes"):
        load_initializer(31, path)


def test_blurry_batch_and_refinement(rng):
    cfg = InitializerConfig(batch_size=4, crop=48)
    images = [rng.random((60, 70)).astype(np.float32) for _ in range(3)]
    y, k = make_blurry_batch(images, cfg, rng)
    assert y.shape == (4, 1, 48, 48) and k.shape == (4, 1, 31, 31)
    torch.testing.assert_close(k.sum(dim=(1, 2, 3)), torch.ones(4))
    gen = load_generator(31)
    z0 = torch.randn(4, 100, 1, 1)
    z1 = refine_latents(gen, z0, k, steps=30, lr=0.05)
    err = lambda z: float((gen(z) - k).abs().sum(dim=(1, 2, 3)).mean())  # noqa: E731
    assert err(z1) < err(z0) - 0.2


def test_training_step_fits_a_fixed_batch(rng):
    torch.manual_seed(0)
    images = [rng.random((64, 64)).astype(np.float32)]
    cfg = InitializerConfig(batch_size=4, crop=48, inner_steps=5)
    y, k = make_blurry_batch(images, cfg, rng)
    gen = load_generator(31)
    enc = KernelInitializer()
    opt = torch.optim.Adam(enc.parameters(), lr=3e-4)
    losses = [train_step(enc, gen, opt, y, k, cfg)["kernel_l1"] for _ in range(25)]
    assert losses[-1] < losses[0] - 0.3, losses


def test_training_writes_checkpoint_and_resumes(tmp_path, rng):
    images = [rng.random((64, 64)).astype(np.float32) for _ in range(2)]
    gen = load_generator(31)
    cfg = InitializerConfig(steps=3, batch_size=2, crop=48, inner_steps=2, checkpoint_every=2)
    seen = []
    path = train_initializer(cfg, gen, images, tmp_path, on_progress=lambda s, n, m: seen.append(s))
    assert seen == [1, 2, 3] and path.exists() and (tmp_path / "checkpoint.pt").exists()
    assert load_initializer(31, path)(torch.rand(1, 1, 64, 64)).shape == (1, 100, 1, 1)
    more = []  # resuming a finished run does no more steps
    train_initializer(cfg, gen, images, tmp_path, on_progress=lambda s, n, m: more.append(s))
    assert more == []
    with pytest.raises(ValueError, match="at least 128 px"):
        train_initializer(InitializerConfig(crop=128), gen, images, tmp_path / "x")


def test_shipped_initializer_beats_a_random_start():
    """On fixed synthetic blurs (sharp sample crops, seeded trajectory kernels, 1 % noise) the
    shipped initializer's starting kernel G(E(y)) is closer to the truth than G(z) for random z."""
    from napari_glkm._sample_data import blurred_sample
    from napari_glkm.backend.blur import conv_same
    from napari_glkm.backend.trajectories import motion_kernels
    from napari_glkm.backend.weights import shipped_entry, sha256_file

    entry = shipped_entry("initializer", 31)
    assert sha256_file(entry.path) == entry.sha256 and entry.path.stat().st_size < 25e6
    enc, gen = load_initializer(31), load_generator(31)
    rng = np.random.default_rng(11)
    sharp = blurred_sample("camera").sharp
    kernels = motion_kernels(6, 31, rng=rng)
    net_err, rnd_err = [], []
    for i, k in enumerate(kernels):
        r, c = 40 * i, 200 - 30 * i
        crop = torch.from_numpy(np.ascontiguousarray(sharp[r : r + 192, c : c + 192]))[None, None].double()
        y = conv_same(crop, torch.from_numpy(k)[None, None].double()).float()
        y = y + 0.01 * torch.from_numpy(rng.standard_normal(y.shape).astype(np.float32))
        with torch.no_grad():
            k_net = gen(enc(y))[0, 0].numpy()
            k_rnd = gen(torch.randn(1, 100, 1, 1))[0, 0].numpy()
        net_err.append(np.abs(k_net - k).sum())
        rnd_err.append(np.abs(k_rnd - k).sum())
    assert np.mean(net_err) < np.mean(rnd_err) - 0.2, (net_err, rnd_err)
