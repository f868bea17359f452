"""Frame-by-frame blind deblurring of stacks: ``(N, H, W)`` gray or ``(N, H, W, C)`` colour.

Two modes, both built on :func:`~napari_glkm.backend.solver.iter_deblur`:

* **per frame** (default): every frame gets its own kernel; frame ``i`` is warm-started from
  frame ``i - 1``'s kernel (``init_kernel``), so only the two finest pyramid levels of the
  kernel stage run. Blur that drifts slowly along a time series or a focus stack is followed,
  at a lower cost per frame than a cold start.
* **shared kernel** (``shared_kernel=True``): the kernel is estimated once, on one reference
  frame (``reference``, default the first), and every frame is restored with it by the same
  non-blind deconvolution that finishes a single-image run. We estimate on a real frame rather
  than on a mean or max projection: a projection of a scene that moves or changes focus is not
  "sharp image convolved with the kernel" (the mean adds the scene's own motion as extra blur,
  the max is not even linear), whereas any single frame obeys the blur model exactly.

Snapshots are :class:`StackStep` objects: the solver's :class:`DeblurStep` tagged with the
frame index and an overall progress fraction. Nothing here imports Qt or napari.

Example
-------
>>> import numpy as np
>>> from napari_glkm.backend.stack import deblur_stack
>>> frames = np.random.default_rng(0).random((2, 80, 80)).astype(np.float32)
>>> res = deblur_stack(frames, preset="fast", iterations=1, kernel_size=15)
>>> res.images.shape, res.kernels.shape, res.warm_start
((2, 80, 80), (2, 15, 15), [False, True])
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .solver import PRESETS, DeblurStep, iter_deblur, resolve_device, restore_with_kernel
from .validation import prepare_image

__all__ = ["StackStep", "StackResult", "iter_deblur_stack", "deblur_stack", "check_stack",
           "restore_frame"]


@dataclass
class StackStep:
    """A snapshot of a stack run.

    Attributes
    ----------
    frame:
        Index of the frame this snapshot belongs to (0-based).
    n_frames:
        Number of frames in the stack.
    step:
        The solver snapshot; ``step.final`` marks the last snapshot of *this frame*, whose
        ``step.image`` is the restored frame.
    warm_start:
        True if this frame's kernel estimation started from the previous frame's kernel.
    shared:
        True if the frame is restored with the shared kernel (no estimation of its own).
    """

    frame: int
    n_frames: int
    step: DeblurStep
    warm_start: bool = False
    shared: bool = False

    @property
    def fraction(self) -> float:
        """Overall progress in [0, 1]: finished frames plus the fraction of the current one."""
        s = self.step
        within = 1.0 if s.final else (s.iteration + 1) / max(s.total, 1)
        return (self.frame + within) / self.n_frames

    @property
    def done(self) -> bool:
        """True for the very last snapshot of the stack."""
        return self.step.final and self.frame == self.n_frames - 1


@dataclass
class StackResult:
    """Outcome of :func:`deblur_stack`.

    Attributes
    ----------
    images:
        Restored stack, the input's shape and value range, float32.
    kernels:
        ``(N, k, k)`` float32 kernel of each frame (all equal with a shared kernel).
    seconds:
        Wall-clock seconds spent on each frame.
    warm_start:
        Per frame: whether its estimation was warm-started.
    shared_kernel:
        Whether one kernel was used for the whole stack.
    info:
        Per frame, the solver's ``info`` dict (noise level, crop, warm start).
    frames:
        Out-of-core runs (:func:`napari_glkm.deblur_stack`): indices of the frames computed by
        this call (``seconds``, ``warm_start`` and ``info`` follow this order).
    skipped:
        Out-of-core runs: selected frames found already written in the output (resumed).
    output:
        Out-of-core runs: path of the Zarr output, or ``None``.
    """

    images: np.ndarray
    kernels: np.ndarray
    seconds: list[float]
    warm_start: list[bool]
    shared_kernel: bool
    info: list[dict] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    output: str | None = None


def check_stack(frames: object) -> np.ndarray:
    """Validate a stack: ``(N, H, W)`` or ``(N, H, W, 3|4)``, N >= 1, finite values.

    Returns the array (not copied). Per-frame checks (size, constant frames) are those of
    :func:`iter_deblur`.
    """
    if hasattr(frames, "__array__") and not isinstance(frames, np.ndarray):
        frames = np.asarray(frames)
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"expected a numpy array (N, H, W), got {type(frames).__name__}")
    if frames.ndim == 4 and frames.shape[-1] not in (3, 4):
        raise ValueError(
            f"expected a stack (N, H, W) or a colour stack (N, H, W, 3), got shape {frames.shape}; "
            f"flatten the leading axes first (frames.reshape(-1, H, W))"
        )
    if frames.ndim not in (3, 4):
        raise ValueError(
            f"expected a stack (N, H, W) or (N, H, W, 3), got a {frames.ndim}-D array "
            f"{frames.shape}"
        )
    if frames.shape[0] < 1:
        raise ValueError("the stack has no frames")
    if np.issubdtype(frames.dtype, np.floating) and not np.all(np.isfinite(frames)):
        if frames.shape[0] == 1:
            raise ValueError("the image contains NaN or infinite values; replace them first "
                             "(e.g. np.nan_to_num)")
        bad = sorted({int(i) for i in np.argwhere(~np.isfinite(frames))[:, 0]})
        raise ValueError(
            f"frames {bad[:10]} contain NaN or infinite values; replace them first "
            f"(e.g. np.nan_to_num)"
        )
    return frames


def iter_deblur_stack(
    frames: np.ndarray,
    *,
    shared_kernel: bool = False,
    warm_start: bool = True,
    reference: int = 0,
    **options,
) -> Iterator[StackStep]:
    """Deblur a stack frame by frame; a generator of :class:`StackStep` snapshots.

    Parameters
    ----------
    frames:
        ``(N, H, W)`` gray or ``(N, H, W, 3|4)`` colour stack (time, z or channels first; any
        dtype :func:`iter_deblur` accepts). Never modified.
    shared_kernel:
        Estimate one kernel on frame ``reference`` and restore every frame with it.
    warm_start:
        Per-frame mode only: start frame ``i``'s estimation from frame ``i - 1``'s kernel.
    reference:
        Shared mode only: index of the frame the kernel is estimated on.
    **options:
        Keyword options of :func:`iter_deblur` (``kernel_size`` — ``"auto"`` is resolved
        once, on the first estimated frame, and kept for the others —, ``preset``, ``device``,
        ``seed``, ``iterations``, ``kernel_prior``, ``weights``, ``preview_every``, ``roi``,
        ``init_kernel`` — the latter seeds only the first estimated frame).

    Yields
    ------
    StackStep
        Snapshots in frame order (shared mode: the reference frame's estimation first, then
        one final snapshot per frame).

    Errors in the options or in the first estimated frame raise ``ValueError`` at the call,
    not at the first ``next()``.
    """
    frames = check_stack(frames)
    n = frames.shape[0]
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)) \
            or not -n <= reference < n:
        raise ValueError(f"reference must be a frame index in [0, {n}), got {reference!r}")
    reference = int(reference) % n
    first = reference if shared_kernel else 0
    # Calling iter_deblur validates the options and the first frame right here.
    first_run = iter_deblur(frames[first], **options)
    if shared_kernel:
        return _run_shared(frames, first_run, reference, options)
    return _run_per_frame(frames, first_run, bool(warm_start), options)


def _run_per_frame(frames: np.ndarray, first_run: Iterator[DeblurStep], warm: bool,
                   options: dict) -> Iterator[StackStep]:
    n = frames.shape[0]
    run, kernel = first_run, None
    options = {k: v for k, v in options.items() if k != "init_kernel"}
    for i in range(n):
        is_warm = kernel is not None and warm
        if i == 1:  # kernel_size="auto" is resolved once, on the first frame
            options["kernel_size"] = kernel.shape[0]
        if i > 0:
            run = iter_deblur(frames[i], init_kernel=kernel if warm else None, **options)
        for step in run:
            yield StackStep(i, n, step, warm_start=is_warm)
        kernel = step.kernel


def _run_shared(frames: np.ndarray, first_run: Iterator[DeblurStep], reference: int,
                options: dict) -> Iterator[StackStep]:
    n = frames.shape[0]
    for step in first_run:
        if step.final:
            break
        yield StackStep(reference, n, step)
    kernel, info = step.kernel, step.info
    for i in range(n):
        t0 = time.perf_counter()
        if i == reference:
            restored = step.image
        else:
            restored = restore_frame(frames[i], kernel, options)
        elapsed = time.perf_counter() - t0
        final = DeblurStep(0, 1, "final", kernel, step.loss, elapsed, final=True,
                           history=step.history if i == reference else [],
                           timings=dict(step.timings) if i == reference else {"total": elapsed},
                           info=dict(info, shared_kernel=True, reference=reference),
                           _render=lambda r=restored: r)
        yield StackStep(i, n, final, shared=i != reference)


def restore_frame(frame: np.ndarray, kernel: np.ndarray, options: dict) -> np.ndarray:
    """Restore one frame with a known ``(k, k)`` kernel by the final non-blind step of the
    preset in ``options`` (on ``options["device"]``, with its ``noise``/``saturation``
    handling); the frame's shape and value range, float32. This is how the shared-kernel mode
    restores every frame but the reference."""
    opts = PRESETS[options.get("preset", "default")]
    dev = resolve_device(options.get("device", "auto"))
    k = torch.from_numpy(np.ascontiguousarray(kernel, dtype=np.float32))[None, None].to(dev)
    prepared = prepare_image(frame, kernel.shape[0])
    with torch.no_grad():
        restored, _ = restore_with_kernel(prepared, k, opts, noise=options.get("noise", "auto"),
                                          saturation=options.get("saturation", "auto"))
    return restored


def deblur_stack(frames: np.ndarray, **options) -> StackResult:
    """Deblur a stack to the end (see :func:`iter_deblur_stack` for the options).

    Example
    -------
    >>> import numpy as np
    >>> from napari_glkm.backend.stack import deblur_stack
    >>> frames = np.random.default_rng(0).random((2, 80, 80)).astype(np.float32)
    >>> res = deblur_stack(frames, preset="fast", iterations=1, kernel_size=15,
    ...                    shared_kernel=True)
    >>> bool(np.all(res.kernels[0] == res.kernels[1]))
    True
    """
    options["preview_every"] = 10**9
    frames = check_stack(frames)
    n = frames.shape[0]
    images: list[np.ndarray | None] = [None] * n
    kernels: list[np.ndarray | None] = [None] * n
    seconds = [0.0] * n
    warm = [False] * n
    info: list[dict] = [{} for _ in range(n)]
    t0 = time.perf_counter()
    for s in iter_deblur_stack(frames, **options):
        if s.step.final:
            images[s.frame] = s.step.image
            kernels[s.frame] = s.step.kernel
            now = time.perf_counter()
            seconds[s.frame] = now - t0
            t0 = now
            warm[s.frame] = s.warm_start
            info[s.frame] = dict(s.step.info)
    return StackResult(np.stack(images), np.stack(kernels), seconds, warm,
                       bool(options.get("shared_kernel", False)), info)
