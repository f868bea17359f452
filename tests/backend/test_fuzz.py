"""Fuzzing the input validation of ``deblur()`` with hypothesis: any array either becomes a clean
float32 image in [0, 1] or is refused with a ``ValueError`` that says why; nothing else escapes,
and the caller's array is never modified.

The default run is derandomized (the same examples every time, so CI cannot turn red by
chance); set ``NAPARI_GLKM_FUZZ=N`` to explore N fresh random examples per test instead.
Failures found that way become fixed cases in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import array_shapes, arrays  # noqa: E402

from napari_glkm import iter_deblur  # noqa: E402
from napari_glkm.backend.validation import prepare_image  # noqa: E402

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16,
                          np.float32, np.float64, np.bool_, np.complex64])
_EXPLORE = int(os.environ.get("NAPARI_GLKM_FUZZ", "0"))
_MODE = dict(derandomize=not _EXPLORE, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SHAPES = st.one_of(
    array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),  # degenerate: all refused
    st.tuples(st.integers(28, 48), st.integers(28, 48)),
    st.tuples(st.integers(30, 40), st.integers(30, 40), st.sampled_from([1, 2, 3, 4, 5])),
    st.tuples(st.sampled_from([3, 4]), st.integers(32, 40), st.integers(32, 40)),
)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@settings(max_examples=_EXPLORE or 300, **_MODE)
@given(arrays(DTYPES, SHAPES))
def test_prepare_image_accepts_or_explains(arr):
    before = arr.copy()
    try:
        p = prepare_image(arr, 15)
    except ValueError as exc:
        assert len(str(exc)) > 15
    else:
        assert p.data.dtype == np.float32 and p.data.ndim == 3 and p.data.shape[-1] in (1, 3)
        assert p.data.shape[:2] == arr.shape[:2]
        assert np.all(np.isfinite(p.data)) and p.data.min() >= 0.0 and p.data.max() <= 1.0
        assert not np.shares_memory(p.data, arr)
        back = p.to_user_range(p.data)
        assert back.shape == arr.shape and np.all(np.isfinite(back))
    assert _same(arr, before)


@settings(max_examples=_EXPLORE or 60, **_MODE)
@given(arrays(DTYPES, SHAPES), st.sampled_from(["fast", "default", "nope"]),
       st.one_of(st.none(), st.integers(-3, 3)), st.sampled_from([7, 8, 15, 0, -5]))
def test_iter_deblur_validates_at_the_call(arr, preset, iterations, kernel_size):
    before = arr.copy()
    try:
        iter_deblur(arr, kernel_size=kernel_size, preset=preset, iterations=iterations,
                    kernel_prior="free", init="random")
    except ValueError as exc:
        assert len(str(exc)) > 15
    assert _same(arr, before)
