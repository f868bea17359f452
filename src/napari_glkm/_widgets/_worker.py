"""The deblur widget's worker body and the updates it yields (no Qt, no layers)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..backend.stack import StackStep

__all__ = ["Update", "DeblurFailed", "run_stack"]


class DeblurFailed(Exception):
    """Wraps errors raised inside the worker (superqt swallows RuntimeError as 'deleted')."""


@dataclass
class Update:
    """What the worker yields to the main thread (plain data, no layers)."""

    frame: int
    n_frames: int
    fraction: float
    stage: str
    iteration: int
    total: int
    kernel: np.ndarray
    image: np.ndarray | None = None  # preview or restored frame, when rendered
    frame_done: bool = False
    warm_start: bool = False
    frame_seconds: float | None = None  # wall time of the frame, on its last update
    info: dict = field(default_factory=dict)
    kernel_grid: np.ndarray | None = None  # non-uniform mode: (gy, gx, k, k) patch kernels
    centres: np.ndarray | None = None  # non-uniform mode: (gy, gx, 2) patch centres, pixels


def run_stack(run: Iterator[StackStep], preview_every: int) -> Iterator[Update]:
    """The worker's body: drain ``run``, rendering a preview every ``preview_every`` iterations.

    Qt-free; reads ``step.image`` here (in the worker thread), never in the GUI thread.
    """
    t_frame = time.perf_counter()
    try:
        for s in run:
            st = s.step
            render = st.final or st.iteration % preview_every == 0
            seconds = None
            if st.final:
                now = time.perf_counter()
                seconds, t_frame = now - t_frame, now
            yield Update(s.frame, s.n_frames, s.fraction, st.stage, st.iteration, st.total,
                         st.kernel, st.image if render else None, st.final, s.warm_start,
                         seconds, dict(st.info), st.kernel_grid, st.centres)
    except RuntimeError as exc:
        raise DeblurFailed(str(exc)) from exc
