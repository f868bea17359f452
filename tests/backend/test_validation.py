import numpy as np
import pytest

from napari_glkm.backend.validation import check_kernel_size, prepare_image


def test_uint8_gray_and_copy(rng):
    img = (rng.random((64, 70)) * 255).astype(np.uint8)
    before = img.copy()
    p = prepare_image(img, 15)
    assert p.data.shape == (64, 70, 1) and p.data.dtype == np.float32
    assert p.data.max() <= 1.0
    p.data[:] = 0
    np.testing.assert_array_equal(img, before)
    back = p.to_user_range(p.data)
    assert back.shape == (64, 70)


def test_float_outside_unit_range_round_trips(rng):
    img = rng.random((50, 50, 3)) * 1000 - 200
    p = prepare_image(img, 11)
    assert p.is_color and p.data.min() >= 0 and p.data.max() <= 1
    np.testing.assert_allclose(p.to_user_range(p.data), img, rtol=1e-4, atol=1e-2)


def test_rgba_alpha_kept(rng):
    img = (rng.random((40, 40, 4)) * 65535).astype(np.uint16)
    p = prepare_image(img, 11)
    out = p.to_user_range(p.data)
    assert out.shape == (40, 40, 4)
    np.testing.assert_array_equal(out[..., 3], img[..., 3])


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((0, 10)), "empty"),
        (np.zeros(100), "1-D"),
        (np.zeros((2, 3, 64, 64)), "2-D image"),
        (np.zeros((5, 64, 64)), "stack"),
        (np.zeros((3, 64, 80)), "channel-first"),
        (np.full((64, 64), np.nan), "NaN"),
        (np.full((64, 64), np.inf), "NaN or infinite"),
        (np.ones((64, 64)), "constant"),
        (np.ones((64, 64), bool), "boolean"),
        (np.ones((20, 64)), "too small"),
    ],
)
def test_bad_input(arr, match):
    before = arr.copy()
    with pytest.raises(ValueError, match=match):
        prepare_image(arr, 15)
    np.testing.assert_array_equal(arr, before)


def test_not_an_array():
    with pytest.raises(ValueError, match="numpy array"):
        prepare_image("image.png", 15)


@pytest.mark.parametrize("bad", [4, 1, -3, 2.5, "31", True])
def test_bad_kernel_size(bad):
    with pytest.raises(ValueError, match="kernel_size"):
        check_kernel_size(bad)
