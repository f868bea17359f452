import numpy as np
from scipy import ndimage

from napari_glkm.backend.metrics import aligned_psnr_ssim, psnr


def test_shift_is_found_and_psnr_exact(rng):
    gt = ndimage.gaussian_filter(rng.random((80, 80)), 2)
    est = np.roll(gt, (3, -2), axis=(0, 1))
    r = aligned_psnr_ssim(est, gt, border=15)
    assert r["shift"] == (-3.0, 2.0)
    assert r["psnr"] > 60 and r["ssim"] > 0.999


def test_noise_lowers_psnr(rng):
    gt = rng.random((60, 60))
    noisy = gt + rng.normal(0, 0.1, gt.shape)
    r = aligned_psnr_ssim(noisy, gt, border=12, max_shift=2)
    assert abs(r["psnr"] - psnr(noisy[12:-12, 12:-12], gt[12:-12, 12:-12])) < 0.5
    assert 18 < r["psnr"] < 22
