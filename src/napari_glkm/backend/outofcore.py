"""Stacks out of core and scaled out: :func:`deblur_stack` for numpy, dask, Zarr, OME-Zarr and
OME-TIFF inputs, one frame in memory at a time, each finished frame written to a Zarr output
at once (an interrupted run resumes where it stopped), optionally mapped over a
``dask.distributed`` cluster in chunks of consecutive frames.

Warm start works inside a *chunk* of consecutive selected frames: the first frame of a chunk
starts cold, each later one from its predecessor's kernel. Serially there is one chunk (the
whole selection) unless ``chunk_frames`` is given; on a cluster every chunk is one task. The
frames computed depend only on the options and ``chunk_frames``, never on the scheduler, so a
cluster run gives the same frames as a serial run with the same ``chunk_frames``.

With ``shared_kernel=True`` the kernel is estimated once on frame ``reference`` (in this
process) and every selected frame is restored with it (chunks then only spread the work).

Nothing here imports Qt or napari; dask, zarr and ome-zarr are imported only when used.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .solver import DeblurStep, iter_deblur
from .stack import StackResult, StackStep, restore_frame
from .stack_io import FrameSource, StackMeta, ZarrStackOutput, open_stack, require

__all__ = ["deblur_stack", "iter_deblur_frames", "StackPlan", "plan_stack", "dask_client"]

Progress = Callable[[int, int], None]


class StackPlan:
    """A validated stack run: the frames to compute, their chunks, and the output.

    Build it with :func:`plan_stack`; run it with :func:`iter_deblur_frames` (serial) or
    :func:`deblur_stack` (serial or on a cluster).
    """

    def __init__(self, source: FrameSource, indices: list[int], chunks: list[list[int]],
                 output: ZarrStackOutput | None, shared_kernel: bool, warm_start: bool,
                 reference: int, options: dict):
        self.source = source
        self.indices = indices
        self.chunks = chunks
        self.output = output
        self.shared_kernel = shared_kernel
        self.warm_start = warm_start
        self.reference = reference
        self.options = options

    def todo(self) -> list[int]:
        """Selected frames not yet in the output (all of them without an output)."""
        if self.output is None:
            return list(self.indices)
        done = self.output.done(self.indices)
        return [i for i, d in zip(self.indices, done) if not d]


def _selection(frames: Any, n: int) -> list[int]:
    if frames is None:
        return list(range(n))
    if isinstance(frames, slice):
        return list(range(n))[frames]
    try:
        raw = [int(i) if not isinstance(i, bool) and float(i) == int(i) else None
               for i in frames]
    except (TypeError, ValueError):
        raw = [None]
    if any(i is None for i in raw):
        raise ValueError(f"frames must be a slice or a sequence of frame indices, got {frames!r}")
    bad = [i for i in raw if not -n <= i < n]
    if bad:
        raise ValueError(f"frame indices {bad[:5]} are outside the stack of {n} frames")
    return sorted({i % n for i in raw})


def plan_stack(data: Any, axis: int | str = 0, *, out: str | Path | None = None,
               frames: Any = None, shared_kernel: bool = False, warm_start: bool = True,
               reference: int = 0, chunk_frames: int | None = None, overwrite: bool = False,
               meta: StackMeta | None = None, **options) -> StackPlan:
    """Validate a stack run and create (or reopen, to resume) its Zarr output.

    Parameters are those of :func:`deblur_stack`. Raises ``ValueError`` for bad input or
    options, before anything is computed.
    """
    src_path = None
    if isinstance(data, (str, Path)):
        src_path = Path(data)
        data, meta = open_stack(data)
    source = FrameSource(data, axis, meta)
    n = source.n
    indices = _selection(frames, n)
    if not indices:
        raise ValueError("no frames selected")
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)) \
            or not -n <= reference < n:
        raise ValueError(f"reference must be a frame index in [0, {n}), got {reference!r}")
    if chunk_frames is not None and (isinstance(chunk_frames, bool) or
                                     not isinstance(chunk_frames, (int, np.integer)) or
                                     chunk_frames < 1):
        raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
    if options.get("nonuniform"):
        raise ValueError("non-uniform mode deblurs single images only, not stacks")
    if "preview_every" not in options:
        options["preview_every"] = 10**9
    size = chunk_frames or len(indices)
    chunks = [indices[s:s + size] for s in range(0, len(indices), size)]
    output = None
    if isinstance(options.get("kernel_size", "auto"), str) and \
            options.get("kernel_size", "auto") == "auto":
        # Decided once, on the first frame to compute, so every frame (and the Zarr output's
        # kernel array) has the same size.
        first = int(reference) % n if shared_kernel else indices[0]
        options["kernel_size"] = _auto_kernel_size(source.read(first), options)
    if out is not None:
        kernel_size = options["kernel_size"]
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)):
            raise ValueError(f"kernel_size must be 'auto' or an odd integer, got {kernel_size!r}")
        _check_not_input(out, data, src_path)
        settings = {k: v for k, v in options.items() if k not in ("preview_every", "device")}
        if src_path is not None:  # resuming is for the same input file only
            settings["source"] = str(src_path.resolve())
        settings.update(shared_kernel=bool(shared_kernel), warm_start=bool(warm_start),
                        reference=int(reference) % n, chunk_frames=chunk_frames)
        output = ZarrStackOutput.create_or_resume(out, source, int(kernel_size), settings,
                                                  overwrite=overwrite)
    plan = StackPlan(source, indices, chunks, output, bool(shared_kernel), bool(warm_start),
                     int(reference) % n, options)
    todo = plan.todo()
    if todo:  # options and the first frame to compute are checked here, at the call
        first = plan.reference if shared_kernel else todo[0]
        iter_deblur(source.read(first), **options).close()
    return plan


def _check_not_input(out: str | Path, data: Any, src_path: Path | None) -> None:
    """Refuse an output that is the input, or inside it, or contains it."""
    store = getattr(getattr(data, "store", None), "root", None)
    target = Path(out).resolve()
    for src in (src_path, store):
        if src is None:
            continue
        src = Path(src).resolve()
        if target == src or src in target.parents or target in src.parents:
            raise ValueError(f"refusing to write over the input {src}; choose another output")


def _iter_chunk(read: Callable[[int], np.ndarray], chunk: Sequence[int], n: int,
                output: ZarrStackOutput | None, warm_start: bool, options: dict,
                kernel: np.ndarray | None = None) -> Iterator[StackStep]:
    """Per-frame estimation over one chunk: warm start from the predecessor in the chunk
    (the chunk's first frame starts from ``options["init_kernel"]`` if given, else cold);
    frames already in ``output`` are skipped (their stored kernel seeds the next frame)."""
    options = dict(options)
    given = options.pop("init_kernel", None)
    done = output.done(chunk) if output is not None else np.zeros(len(chunk), bool)
    prev = None
    for pos, (i, is_done) in enumerate(zip(chunk, done)):
        if is_done:
            prev = output.kernel(i)
            continue
        t0 = time.perf_counter()
        if kernel is not None:  # shared kernel: non-blind restoration only
            step = _restored_step(restore_frame(read(i), kernel, options), kernel)
            yield StackStep(i, n, step, shared=True)
            warm = False
        else:
            start = prev if warm_start and prev is not None else (given if pos == 0 else None)
            warm = start is not None
            for step in iter_deblur(read(i), init_kernel=start, **options):
                yield StackStep(i, n, step, warm_start=warm)
        if output is not None:
            output.write(i, step.image, step.kernel, time.perf_counter() - t0, step.loss, warm)
        prev = step.kernel


def _restored_step(image: np.ndarray, kernel: np.ndarray) -> DeblurStep:
    return DeblurStep(0, 1, "final", kernel, float("nan"), 0.0, final=True,
                      info={"shared_kernel": True}, _render=lambda: image)


def _shared_kernel(plan: StackPlan) -> Iterator[StackStep]:
    """Estimate the shared kernel on the reference frame (or read it back from the output);
    yields the estimation's snapshots (the final one only if the reference frame is
    selected) and returns the kernel."""
    ref, out = plan.reference, plan.output
    if out is not None and out.done([ref])[0]:
        return out.kernel(ref)
    t0 = time.perf_counter()
    for step in iter_deblur(plan.source.read(ref), **plan.options):
        if not step.final or ref in plan.indices:
            yield StackStep(ref, plan.source.n, step)
    if out is not None:
        out.write(ref, step.image, step.kernel, time.perf_counter() - t0, step.loss, False)
    return step.kernel


def iter_deblur_frames(data: Any = None, axis: int | str = 0, *, plan: StackPlan | None = None,
                       **kwargs) -> Iterator[StackStep]:
    """Serial stack run as a generator of :class:`~napari_glkm.backend.stack.StackStep`
    snapshots (``step.final`` ends a frame; its ``frame`` is the index in the stack).

    Takes the arguments of :func:`deblur_stack` (except ``client``/``workers``), or a
    ready ``plan``. Validation happens at the call. Stopping the iteration (``close()``)
    after some frames leaves those frames in the output; a new run resumes after them.
    """
    plan = plan or plan_stack(data, axis, **kwargs)
    return _iter_plan(plan)


def _iter_plan(plan: StackPlan) -> Iterator[StackStep]:
    kernel = (yield from _shared_kernel(plan)) if plan.shared_kernel else None
    for chunk in plan.chunks:
        if kernel is not None:
            chunk = [i for i in chunk if i != plan.reference]
        yield from _iter_chunk(plan.source.read, chunk, plan.source.n, plan.output,
                               plan.warm_start, plan.options, kernel)


def _chunk_task(block: np.ndarray, chunk: list[int], todo: list[int], n: int,
                out_path: str | None, warm_start: bool, options: dict,
                kernel: np.ndarray | None) -> list[tuple]:
    """One cluster task: deblur the frames ``todo`` of ``chunk`` (``block`` holds them, in
    order); returns ``(frame, image or None, kernel, seconds, loss, warm)`` per frame."""
    rows = dict(zip(todo, block))
    output = ZarrStackOutput.open(out_path) if out_path else None
    results, t0 = [], time.perf_counter()
    for s in _iter_chunk(lambda i: np.asarray(rows[i]), chunk, n, output, warm_start, options,
                         kernel):
        if s.step.final:
            now = time.perf_counter()
            results.append((s.frame, None if output is not None else s.step.image,
                            s.step.kernel, now - t0, s.step.loss, s.warm_start))
            t0 = now
    return results


@contextlib.contextmanager
def dask_client(client: Any = None, workers: int | None = None) -> Iterator[Any]:
    """A ``distributed.Client``: ``client`` itself (left open), one connected to the scheduler
    address ``client``, or a new ``LocalCluster`` of ``workers`` single-threaded processes
    (both closed on exit). Yields ``None`` when neither is given."""
    if client is None and workers is None:
        yield None
        return
    distributed = require("distributed", "scale-out with dask")
    if client is not None and not isinstance(client, str):
        yield client
        return
    if client is not None:
        with distributed.Client(client) as c:
            yield c
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _auto_kernel_size(frame: np.ndarray, options: dict) -> int:
    """The size ``kernel_size="auto"`` picks for ``frame``: the solver's own choice, read from
    its first snapshot that reports it (when auto compares two sizes, that is
    after both kernel estimates, before the image prior and the final restoration)."""
    run = iter_deblur(frame, **{**options, "kernel_size": "auto", "preview_every": 1})
    try:
        for step in run:
            if "kernel_size" in step.info:
                return int(step.info["kernel_size"])
    finally:
        run.close()
    raise RuntimeError("the solver finished without reporting a kernel size")


def deblur_stack(data: Any, axis: int | str = 0, *, out: str | Path | None = None,
                 frames: Any = None, shared_kernel: bool = False, warm_start: bool = True,
                 reference: int = 0, chunk_frames: int | None = None, client: Any = None,
                 workers: int | None = None, overwrite: bool = False,
                 progress: Progress | None = None, meta: StackMeta | None = None,
                 **options) -> StackResult:
    """Deblur a stack frame by frame, out of core and optionally on a dask cluster.

    Parameters
    ----------
    data:
        A numpy array, a dask array (e.g. a napari layer's data), a Zarr array, or the path of
        a Zarr array, an OME-Zarr image or an (OME-)TIFF. Frames are ``(H, W)`` or
        ``(H, W, 3|4)``; other axes must have length 1. Never modified, never read whole.
    axis:
        The frame axis (time, z, …): an integer, or an axis letter (``"t"``, ``"z"``) when
        the input's axes are known (OME-Zarr, OME-TIFF).
    out:
        Zarr output folder (``.zarr``; OME-Zarr metadata when the axes are known). Each frame
        is written as soon as it is finished; an existing output started with the same
        settings is resumed (frames already written are skipped); anything else at ``out`` is
        replaced only with ``overwrite=True``. ``None``: keep the results in memory.
    frames:
        Which frames to compute: a slice or a sequence of indices (default all).
    shared_kernel, warm_start, reference:
        As in :func:`~napari_glkm.backend.stack.iter_deblur_stack`.
    chunk_frames:
        Frames per chunk (the warm start restarts at every chunk; one cluster task each).
        Default: all selected frames serially; on a cluster enough chunks for two per worker.
    client, workers:
        Run the chunks on a dask cluster: a ``distributed.Client`` or a scheduler address
        (``"tcp://host:8786"``), or ``workers=N`` for a local cluster of N single-threaded
        processes. With ``out``, the workers must see the same file system.
    progress:
        Called as ``progress(frames_finished, frames_to_compute)`` after each frame.
    meta:
        Axes and pixel sizes of an array ``data`` (as :func:`open_stack` returns them), for
        axis letters and OME-Zarr output metadata; read from the file when ``data`` is a path.
    **options:
        Options of :func:`~napari_glkm.iter_deblur` (``kernel_size``, ``preset``, ``seed``,
        ``iterations``, ``device``, …); ``kernel_size="auto"`` (the default) is decided once,
        on the first frame to compute, and used for every frame.

    Returns
    -------
    StackResult
        Without ``out``: ``images`` ``(n_selected, H, W[, C])`` float32 (the input's value
        range) and ``kernels`` ``(n_selected, k, k)``. With ``out``: ``images`` is a lazy dask
        view of the whole output (the input's shape) and ``kernels`` the Zarr array of
        kernels. ``frames`` lists the frames computed by this call, ``skipped`` those found
        already written.

    Example
    -------
    >>> import numpy as np
    >>> from napari_glkm import deblur_stack
    >>> stack = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    >>> res = deblur_stack(stack, out="out.zarr", preset="fast", kernel_size=15)  # doctest: +SKIP
    >>> res.images.shape                                                      # doctest: +SKIP
    (3, 64, 64)
    """
    plan = plan_stack(data, axis, out=out, frames=frames, shared_kernel=shared_kernel,
                      warm_start=warm_start, reference=reference, chunk_frames=chunk_frames,
                      overwrite=overwrite, meta=meta, **options)
    todo = plan.todo()
    skipped = [i for i in plan.indices if i not in set(todo)]
    records: dict[int, tuple] = {}

    def record(r: tuple) -> None:
        records[r[0]] = r
        if progress is not None:
            progress(len(records), len(todo))

    with dask_client(client, workers) as c:
        if c is None:
            t0 = time.perf_counter()
            for s in _iter_plan(plan):
                if s.step.final:
                    now = time.perf_counter()
                    record((s.frame, None if plan.output is not None else s.step.image,
                            s.step.kernel, now - t0, s.step.loss, s.warm_start))
                    t0 = now
        else:
            _run_on_cluster(plan, c, chunk_frames, todo, record)
    return _result(plan, records, skipped)


def _run_on_cluster(plan: StackPlan, client: Any, chunk_frames: int | None, todo: list[int],
                    record: Callable[[tuple], None]) -> None:
    dask = require("dask", "scale-out with dask")
    distributed = require("distributed", "scale-out with dask")
    kernel = None
    if plan.shared_kernel:  # estimated here, once; the workers only restore
        steps = _shared_kernel(plan)
        while True:
            try:
                s = next(steps)
            except StopIteration as stop:
                kernel = stop.value
                break
            if s.step.final:
                record((s.frame, None if plan.output is not None else s.step.image,
                        s.step.kernel, s.step.timings.get("total", 0.0), s.step.loss, False))
    chunks = plan.chunks
    if chunk_frames is None:
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        size = max(1, math.ceil(len(plan.indices) / (2 * workers)))
        chunks = [plan.indices[s:s + size] for s in range(0, len(plan.indices), size)]
    todo_set = set(todo) - ({plan.reference} if kernel is not None else set())
    out_path = plan.output.path if plan.output is not None else None
    work = []
    for chunk in chunks:
        chunk_todo = [i for i in chunk if i in todo_set]
        if chunk_todo:
            work.append(([i for i in chunk if i in todo_set or kernel is None], chunk_todo))

    def submit(chunk: list[int], chunk_todo: list[int]):
        block = plan.source.block(chunk_todo)  # read only now: at most a few blocks in memory
        return client.compute(dask.delayed(_chunk_task, pure=False)(
            block, chunk, chunk_todo, plan.source.n, out_path, plan.warm_start, plan.options,
            kernel))

    # Keep every worker busy with one chunk and one queued, no more.
    workers = max(len(client.scheduler_info().get("workers", {})), 1)
    pending = iter(work)
    running = distributed.as_completed(
        [submit(*w) for w in itertools.islice(pending, 2 * workers)])
    for future in running:
        for r in future.result():
            record(r)
        nxt = next(pending, None)
        if nxt is not None:
            running.add(submit(*nxt))


def _result(plan: StackPlan, records: dict[int, tuple], skipped: list[int]) -> StackResult:
    computed = sorted(records)
    if plan.output is not None:
        images, kernels = plan.output.lazy(), plan.output.kernels
    else:
        images = np.stack([records[i][1] for i in plan.indices])
        kernels = np.stack([records[i][2] for i in plan.indices])
    return StackResult(images, kernels, [records[i][3] for i in computed],
                       [bool(records[i][5]) for i in computed], plan.shared_kernel,
                       [{"loss": float(records[i][4])} for i in computed], frames=computed,
                       skipped=skipped,
                       output=plan.output.path if plan.output is not None else None)
