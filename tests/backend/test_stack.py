"""Stacks: per-frame runs with warm start, one shared kernel, contracts and errors."""

import numpy as np
import pytest
import torch

from napari_glkm import deblur
from napari_glkm.backend.blur import conv_same
from napari_glkm.backend.stack import deblur_stack, iter_deblur_stack
from napari_glkm.backend.trajectories import motion_kernels
from skimage import data

FAST = dict(preset="fast", iterations=1, kernel_size=15, kernel_prior="free")


def _blurred_stack(n=3, side=96, seed=0):
    """n shifted crops of `camera`, all blurred by one 15-px kernel, + 1% noise; and the truth."""
    sharp = data.camera().astype(np.float32) / 255
    k = motion_kernels(1, 15, rng=seed)[0].astype(np.float32)
    k = k / k.sum()
    crops = np.stack([sharp[150 + 6 * i: 150 + 6 * i + side, 200: 200 + side] for i in range(n)])
    with torch.no_grad():
        y = conv_same(torch.from_numpy(crops)[:, None], torch.from_numpy(k)[None, None],
                      padding_mode="reflect")[:, 0].numpy()
    rng = np.random.default_rng(seed)
    return np.clip(y + rng.normal(0, 0.01, y.shape), 0, 1).astype(np.float32), crops, k


def test_per_frame_warm_start_contract():
    frames, _, _ = _blurred_stack()
    before = frames.copy()
    steps = list(iter_deblur_stack(frames, preview_every=1, **FAST))
    np.testing.assert_array_equal(frames, before)
    finals = [s for s in steps if s.step.final]
    assert [s.frame for s in finals] == [0, 1, 2]
    assert [s.warm_start for s in finals] == [False, True, True]
    assert [s.step.info["warm_start"] for s in finals] == [False, True, True]
    # a warm start skips the coarse pyramid levels: fewer iterations per frame
    assert finals[1].step.total < finals[0].step.total
    assert finals[2].step.total == finals[1].step.total
    fr = [s.fraction for s in steps]
    assert fr == sorted(fr) and fr[-1] == 1.0 and steps[-1].done
    assert not any(s.done for s in steps[:-1])
    for s in finals:
        assert s.step.image.shape == (96, 96) and s.step.image.dtype == np.float32


def test_warm_start_off_matches_independent_runs():
    frames, _, _ = _blurred_stack(n=2)
    res = deblur_stack(frames, warm_start=False, **FAST)
    assert res.warm_start == [False, False]
    single = deblur(frames[1], **FAST)
    np.testing.assert_allclose(res.kernels[1], single.kernel, atol=1e-6)
    np.testing.assert_allclose(res.images[1], single.image, atol=1e-5)


def test_shared_kernel_estimates_once_and_restores_every_frame():
    frames, _, _ = _blurred_stack(n=2)
    frames = np.stack([frames[0], frames[1], frames[0]])  # frame 2 repeats frame 0
    steps = list(iter_deblur_stack(frames, shared_kernel=True, reference=2, preview_every=1,
                                   **FAST))
    # only the reference frame is estimated; then one final snapshot per frame, in order
    assert {s.frame for s in steps if not s.step.final} == {2}
    finals = [s for s in steps if s.step.final]
    assert [s.frame for s in finals] == [0, 1, 2]
    assert [s.shared for s in finals] == [True, True, False]
    assert all(s.step.info["shared_kernel"] for s in finals)
    kernels = np.stack([s.step.kernel for s in finals])
    assert kernels.shape == (3, 15, 15) and np.all(kernels == kernels[2])
    images = np.stack([s.step.image for s in finals])
    assert images.shape == frames.shape and images.dtype == np.float32
    # frame 0 (restored with the shared kernel) equals frame 2 (restored by the solver itself)
    np.testing.assert_allclose(images[0], images[2], atol=1e-5)
    assert np.abs(images[1] - images[0]).mean() > 1e-3


def test_colour_stack_shape():
    frames, _, _ = _blurred_stack(n=2)
    rgb = np.repeat(frames[..., None], 3, axis=-1)
    rgb[..., 0] *= 0.9
    res = deblur_stack(rgb, **FAST)
    assert res.images.shape == rgb.shape and res.kernels.shape == (2, 15, 15)


@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((64, 64), np.float32), "stack"),
        (np.zeros((2, 64, 64, 5), np.float32), "colour stack"),
        (np.zeros((0, 64, 64), np.float32), "no frames"),
        ("not an array", "numpy array"),
    ],
)
def test_bad_stacks_raise(frames, match):
    with pytest.raises(ValueError, match=match):
        iter_deblur_stack(frames, **FAST)


def test_nan_frame_and_bad_reference_raise_at_call():
    frames, _, _ = _blurred_stack()
    frames[2, 5, 5] = np.nan
    with pytest.raises(ValueError, match=r"frames \[2\]"):
        iter_deblur_stack(frames, **FAST)
    frames[2, 5, 5] = 0.5
    with pytest.raises(ValueError, match="reference"):
        iter_deblur_stack(frames, shared_kernel=True, reference=3, **FAST)
    with pytest.raises(ValueError, match="preset"):
        iter_deblur_stack(frames, **dict(FAST, preset="nope"))
