"""The iter_deblur loop: contracts, and real blind deblurring on synthetic blur."""

import numpy as np
import pytest
import torch

from napari_glkm import deblur, iter_deblur
from napari_glkm._sample_data import sample_kernels
from napari_glkm.backend.blur import conv_valid
from napari_glkm.backend.metrics import aligned_psnr_ssim
from skimage import data


def _synthetic(noise=0.01, crop=(slice(100, 356), slice(100, 356))):
    """camera crop (256 px) blurred (valid) by shipped sample kernel 0 + Gaussian noise."""
    sharp = data.camera().astype(np.float64) / 255
    k = sample_kernels()[0].astype(np.float64)
    x = torch.from_numpy(sharp)[None, None]
    y = conv_valid(x, torch.from_numpy(k)[None, None])[0, 0].numpy()
    c = k.shape[0] // 2
    truth = sharp[c:-c, c:-c]
    rng = np.random.default_rng(0)
    y = np.clip(y + rng.normal(0, noise, y.shape), 0, 1)
    return y[crop].astype(np.float32), truth[crop], k


def _kernel_l1(est, truth):
    """L1 over shifts <= 3 px; a smaller box (kernel_size="auto") is zero-padded, centred."""
    pad = (truth.shape[0] - est.shape[0]) // 2
    if pad > 0:
        est = np.pad(est, pad)
    best = np.inf
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            best = min(best, np.abs(np.roll(est, (dy, dx), (0, 1)) - truth).sum())
    return best


def test_fast_preset_restores_synthetic_blur():
    blurry, truth, k_true = _synthetic()
    before = blurry.copy()
    res = deblur(blurry, preset="fast", seed=0)
    np.testing.assert_array_equal(blurry, before)
    p_blurry = aligned_psnr_ssim(blurry, truth)["psnr"]
    p_out = aligned_psnr_ssim(np.clip(res.image, 0, 1), truth)["psnr"]
    assert p_out > p_blurry + 3.0, (p_blurry, p_out)
    # the estimated kernel is close to the truth, far closer than a centred delta
    delta = np.zeros_like(k_true)
    delta[15, 15] = 1
    err = _kernel_l1(res.kernel, k_true)
    assert err < 1.2 and err < 0.65 * _kernel_l1(delta, k_true), err


def test_snapshots_and_result_contract():
    img = (np.random.default_rng(0).random((80, 90)) * 255).astype(np.uint8)
    steps = list(iter_deblur(img, preset="fast", iterations=1, preview_every=1))
    its = [s.iteration for s in steps]
    assert its == sorted(its) and steps[-1].final and not any(s.final for s in steps[:-1])
    assert {s.stage for s in steps} >= {"kernel", "glkm", "final"}
    assert steps[-1].iteration + 1 == steps[-1].total
    preview = steps[0].image
    assert preview.shape == (80, 90) and preview.dtype == np.float32
    for s in steps:
        assert s.kernel.shape == (31, 31)
        assert abs(float(s.kernel.sum()) - 1) < 1e-4 and s.kernel.min() >= 0
    assert len(steps[-1].history) == steps[-1].total - 1
    final = steps[-1].image
    assert final.min() >= 0 and final.max() <= 255 and np.isfinite(final).all()


def test_colour_and_alpha(rng):
    img = rng.random((72, 70, 4)).astype(np.float32)
    res = deblur(img, preset="fast", iterations=1, kernel_size=15)
    assert res.image.shape == (72, 70, 4)
    np.testing.assert_array_equal(res.image[..., 3], img[..., 3])
    assert res.kernel.shape == (15, 15)


def test_same_seed_same_result(rng):
    img = rng.random((64, 64)).astype(np.float32)
    a = deblur(img, preset="fast", iterations=1, seed=3)
    b = deblur(img, preset="fast", iterations=1, seed=3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.kernel, b.kernel)


@pytest.mark.parametrize("kwargs, match", [
    ({"preset": "turbo"}, "unknown preset"),
    ({"iterations": 0}, "positive integer"),
    ({"kernel_size": 30}, "odd"),
    ({"device": "tpu"}, "unknown device"),
    ({"kernel_prior": "magic"}, "unknown kernel_prior"),
    ({"seed": 1.5}, "seed"),
])
def test_bad_options_raise_at_call(kwargs, match):
    img = np.random.default_rng(0).random((64, 64))
    with pytest.raises(ValueError, match=match):
        iter_deblur(img, **kwargs)  # no iteration needed: checked at the call


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        deblur(np.zeros((64, 64)), kernal_size=31)


def test_roi_and_warm_start():
    blurry, truth, k_true = _synthetic()
    res = deblur(blurry, preset="fast", roi=(20, 20, 200, 220))
    assert res.info["crop"] == (20, 20, 180, 200)
    assert res.image.shape == blurry.shape
    warm = list(iter_deblur(blurry, preset="fast", init_kernel=res.kernel, preview_every=1))
    cold = list(iter_deblur(blurry, preset="fast", preview_every=1))
    assert warm[-1].info["warm_start"] and not cold[-1].info["warm_start"]
    assert warm[-1].total < cold[-1].total  # coarse levels are skipped
    p_warm = aligned_psnr_ssim(np.clip(warm[-1].image, 0, 1), truth)["psnr"]
    p_blurry = aligned_psnr_ssim(blurry, truth)["psnr"]
    assert p_warm > p_blurry + 3.0


@pytest.mark.parametrize("kwargs, match", [
    ({"roi": (0, 0, 10, 10)}, "region of interest"),
    ({"roi": "everything"}, "roi must be"),
    ({"init_kernel": np.ones((4, 4))}, "odd"),
    ({"init_kernel": -np.ones((5, 5))}, "non-negative"),
    ({"init": "smart"}, "unknown init"),
    ({"init": "random", "initializer": "x.safetensors"}, "needs init='network'"),
])
def test_bad_roi_and_init(kwargs, match):
    with pytest.raises(ValueError, match=match):
        iter_deblur(np.random.default_rng(0).random((96, 96)), **kwargs)


def test_network_init_uses_the_given_initializer(tmp_path):
    from napari_glkm.backend.initializer import KernelInitializer
    from napari_glkm.backend.weights import save_state_dict

    path = tmp_path / "init.safetensors"
    save_state_dict(KernelInitializer().eval().state_dict(), path)
    img = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    res = deblur(img, preset="fast", iterations=1, initializer=str(path))
    assert res.info["init"] == "network" and res.info["init_seconds"] > 0
    assert deblur(img, preset="fast", iterations=1, init="random").info["init"] == "random"
    warm = deblur(img, preset="fast", iterations=1, init_kernel=res.kernel, initializer=str(path))
    assert warm.info["init"].startswith("warm start")


def test_small_init_kernel_is_padded_not_stretched():
    from napari_glkm.backend.solver import _check_init_kernel

    k = np.zeros((5, 5))
    k[2, 1:4] = [1.0, 2.0, 1.0]
    out = _check_init_kernel(k, 31)[0, 0].numpy()
    assert out.shape == (31, 31)
    np.testing.assert_allclose(out[13:18, 13:18], k / k.sum(), atol=1e-7)
    assert out.sum() == pytest.approx(1.0)
    big = np.pad(k, 20)  # 45 x 45 with the mass in the centre: cropped, not shrunk
    np.testing.assert_allclose(_check_init_kernel(big, 31)[0, 0].numpy(), out, atol=1e-7)


def test_kernel_islands_are_dropped_but_the_trajectory_is_kept():
    from napari_glkm.backend.stages import drop_kernel_islands

    k = torch.zeros(2, 1, 21, 21, dtype=torch.float64)
    k[0, 0, 10, 4:15] = 1.0  # an 11 px line ...
    k[0, 0, 11, 14:17] = 0.5  # ... with a bend that touches it diagonally (same component)
    k[0, 0, 2, 2] = 0.3  # a speck far away: 2.4 % of the mass
    k[1, 0, 5, 5:8] = 1.0  # two comparable pieces: both carry > 5 %, both kept
    k[1, 0, 15, 12:16] = 1.0
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    out = drop_kernel_islands(k, 0.05)
    assert out[0, 0, 2, 2] == 0
    assert torch.count_nonzero(out[0]) == 11 + 3
    torch.testing.assert_close(out[1], k[1])
    torch.testing.assert_close(out.sum(dim=(-2, -1)), torch.ones(2, 1, dtype=torch.float64))
    assert torch.equal(drop_kernel_islands(k, 0.0), k)


def test_center_kernel_moves_the_centre_of_mass_to_the_middle():
    from napari_glkm.backend.stages import center_kernel

    k = torch.zeros(2, 1, 15, 15, dtype=torch.float64)
    k[0, 0, 2, 1:6] = 1.0  # a 5 px line in the top-left corner
    k[1, 0, 7, 7:10] = 1.0  # one pixel off: left alone (min_shift=2)
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    out = center_kernel(k)
    expected = torch.zeros(15, 15, dtype=torch.float64)
    expected[7, 5:10] = 0.2
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[1], k[1])


def test_fit_ratio_tells_a_wrong_kernel_from_the_right_one():
    """The fit check flags a restoration with a kernel that does not explain the blur (the
    transposed line: 274x the noise variance at 0.3 % noise) and passes the true one (0.84)."""
    from napari_glkm.backend.noise import noise_lambda
    from napari_glkm.backend.nonblind import sparse_deconv
    from napari_glkm.backend.solver import FIT_WARN, fit_ratio
    from skimage import transform

    sharp = transform.resize(data.camera() / 255.0, (160, 160), anti_aliasing=True)
    k = np.zeros((15, 15))
    k[7, 2:13] = 1.0 / 11
    kt = torch.from_numpy(k)[None, None]
    noise = np.random.default_rng(0).normal(0, 0.003, (146, 146))
    y = (conv_valid(torch.from_numpy(sharp)[None, None], kt) + torch.from_numpy(noise)).clamp(0, 1)
    lam = noise_lambda(2e-3, 0.003)
    good = fit_ratio(y, sparse_deconv(y, kt, lam=lam).clamp(0, 1), kt, 0.003)
    wrong = kt.transpose(-1, -2)
    bad = fit_ratio(y, sparse_deconv(y, wrong, lam=lam).clamp(0, 1), wrong, 0.003)
    assert good < 2.0 < FIT_WARN < bad, (good, bad)
    # colour: the check runs on the luminance, so three equal channels score the same
    y3, x3 = y.expand(-1, 3, -1, -1), sparse_deconv(y, kt, lam=lam).clamp(0, 1).expand(-1, 3, -1, -1)
    assert abs(fit_ratio(y3, x3, kt, 0.003) - good) < 1e-3 * good


def test_fit_check_reports_and_warns(monkeypatch):
    """Every uniform run reports ``fit_ratio``; above FIT_WARN the run warns and says why."""
    import napari_glkm.backend.solver as solver

    blurry, _, _ = _synthetic()
    res = deblur(blurry, preset="fast", kernel_size=23, iterations=1, seed=0)
    assert 0 < res.info["fit_ratio"] < 5 and "fit_note" not in res.info
    monkeypatch.setattr(solver, "FIT_WARN", 0.0)
    with pytest.warns(UserWarning, match="does not explain the image"):
        res = deblur(blurry, preset="fast", kernel_size=23, iterations=1, seed=0)
    assert "nonuniform=True" in res.info["fit_note"]
