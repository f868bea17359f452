"""Stacks that need not fit in memory: frame-by-frame reads from numpy, dask, Zarr, OME-Zarr
and OME-TIFF inputs, and a Zarr (OME-Zarr when the axes are known) output written one finished
frame at a time, so that an interrupted run can resume.

The optional packages (``zarr``, ``ome-zarr``, ``dask``) are imported only when needed; a
missing one raises ``ImportError`` that says ``pip install 'napari-glkm[stacks]'``. Nothing
here imports Qt or napari, and the input is only ever read.

Output layout (a Zarr v3 group)::

    out.zarr/
      0            restored frames, the input's shape, float32, one chunk per frame
      kernels      (N, k, k) float32 kernel of each frame
      frame_info   (N, 4) float64, one chunk per frame: done, seconds, final loss, warm start
      zarr.json    attributes: napari_glkm.settings (what the frames were computed with),
                   and OME-NGFF "multiscales" metadata (axes, pixel sizes) when known

A frame counts as written only once its ``frame_info`` row says ``done``; that row is written
after the frame's pixels and kernel (Zarr writes each chunk atomically), so an interruption
loses at most the frame in flight.
"""

from __future__ import annotations

import importlib
import json
import pickle
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["require", "StackMeta", "FrameSource", "open_stack", "ZarrStackOutput",
           "write_ome_tiff", "is_lazy"]

_INFO_COLUMNS = ("done", "seconds", "loss", "warm_start")
_OME_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def require(module: str, what: str = "this") -> Any:
    """Import an optional dependency, or raise ``ImportError`` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the optional package {module.split('.')[0]!r}: "
            f"pip install 'napari-glkm[stacks]'"
        ) from exc


def is_lazy(data: object) -> bool:
    """True for arrays that are read on demand (dask, Zarr, tifffile's Zarr store)."""
    return not isinstance(data, np.ndarray) and hasattr(data, "shape") and hasattr(data, "dtype")


@dataclass(frozen=True)
class StackMeta:
    """What is known about an input's axes.

    Attributes
    ----------
    axes:
        One lower-case letter per array axis (``"tyx"``, ``"tczyx"``, ``"zyxs"``), or ``None``.
    scale:
        Physical size of one step along each axis (e.g. micrometres per pixel), or ``None``.
    units:
        Unit of each axis (``None`` where unknown), or ``None``.
    """

    axes: str | None = None
    scale: tuple[float, ...] | None = None
    units: tuple[str | None, ...] | None = None


class FrameSource:
    """Frames of an array along ``axis``, read one at a time.

    ``data`` is a numpy array, a dask array or a Zarr array (anything with ``shape``, ``dtype``
    and numpy-style indexing). Axes other than the frame axis and the image axes ``(H, W)`` or
    ``(H, W, 3|4)`` must have length 1 (they are dropped when reading and kept in the output).

    Example
    -------
    >>> import numpy as np
    >>> src = FrameSource(np.zeros((64, 3, 80)), axis=1)
    >>> src.n, src.frame_shape
    (3, (64, 80))
    """

    def __init__(self, data: Any, axis: int | str = 0, meta: StackMeta | None = None):
        if not (hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__")):
            raise ValueError(f"expected an array (numpy, dask or Zarr), got {type(data).__name__}")
        self.data = data
        self.meta = meta or StackMeta()
        self._last: tuple[int, np.ndarray] | None = None
        self._remote: bool | None = None
        self.shape = tuple(int(s) for s in data.shape)
        ndim = len(self.shape)
        self.axis = self._resolve_axis(axis, ndim)
        rest = [a for a in range(ndim) if a != self.axis]
        rgb = len(rest) >= 3 and self.shape[rest[-1]] in (3, 4) and (
            self.meta.axes is None or self.meta.axes[rest[-1]] in "sc")
        image_axes = rest[-3:] if rgb else rest[-2:]
        self.dropped = [a for a in rest if a not in image_axes]
        extra = [a for a in self.dropped if self.shape[a] != 1]
        if len(rest) < 2 or extra:
            raise ValueError(
                f"cannot read frames along axis {self.axis} of an array of shape {self.shape}: "
                f"each frame must be (H, W) or (H, W, 3), but axes {extra or rest} are left; "
                f"choose another axis, or select one index of the other axes first"
            )
        self.frame_shape = tuple(self.shape[a] for a in image_axes)
        self.n = self.shape[self.axis]
        if self.n < 1:
            raise ValueError("the stack has no frames")

    def _resolve_axis(self, axis: int | str, ndim: int) -> int:
        if isinstance(axis, str):
            axes = self.meta.axes
            if axes is None or axis.lower() not in axes:
                raise ValueError(f"axis {axis!r} is not one of the input's axes "
                                 f"({axes or 'unknown: pass an integer axis'})")
            return axes.index(axis.lower())
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) \
                or not -ndim <= axis < ndim:
            raise ValueError(f"axis must be an integer in [{-ndim}, {ndim}) for an array of "
                             f"shape {self.shape}, got {axis!r}")
        return int(axis) % ndim

    def index(self, i: int) -> tuple:
        """The index of frame ``i`` in the full array (dropped axes at 0)."""
        idx: list[Any] = [slice(None)] * len(self.shape)
        idx[self.axis] = int(i)
        for a in self.dropped:
            idx[a] = 0
        return tuple(idx)

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` as a new numpy array (reads only that frame's chunks; the last frame
        read is kept, so checking a frame and then computing it reads it once)."""
        if self._last is None or self._last[0] != i:
            block = self.data[self.index(i)]
            if hasattr(block, "compute"):  # dask
                block = block.compute()
            self._last = (i, np.asarray(block))
        return np.array(self._last[1], copy=True)

    def block(self, indices: Sequence[int]):
        """Frames ``indices`` stacked ``(n, H, W[, C])`` for a cluster task: a lazy dask array
        (the worker reads the frames itself) when the input can be sent to another process,
        else numpy read here (numpy inputs, TIFF files held open by this process)."""
        if self._remote is None:
            try:
                pickle.dumps(self.data) if not isinstance(self.data, np.ndarray) else None
                self._remote = not isinstance(self.data, np.ndarray)
            except Exception:  # open file handles, locks: read the frames in this process
                self._remote = False
        if not self._remote:
            return np.stack([self.read(i) for i in indices])
        da = require("dask.array", "scale-out")
        arr = self.data if isinstance(self.data, da.Array) else da.from_array(
            self.data, chunks=tuple(1 if a == self.axis else -1 for a in range(len(self.shape))))
        return da.stack([arr[self.index(i)] for i in indices])


def open_stack(path: str | Path) -> tuple[Any, StackMeta]:
    """Open a Zarr array, an OME-Zarr image, a (OME-)TIFF or a ``.npy`` file (memory-mapped)
    without reading its pixels.

    Returns ``(array, meta)``: a lazy array (Zarr or dask) and what is known of its axes and
    physical pixel sizes. OME-Zarr: the full-resolution level; TIFF: the first series.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"input not found: {path}")
    if path.suffix.lower() in (".tif", ".tiff"):
        return _open_tiff(path)
    if path.suffix.lower() == ".npy":  # memory-mapped: frames are read from disk on demand
        try:
            return np.load(path, mmap_mode="r"), StackMeta()
        except ValueError as exc:
            raise ValueError(f"cannot read {path.name}: not a valid .npy file ({exc})") from exc
    zarr = require("zarr", "reading Zarr")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several error types for non-Zarr folders
        raise ValueError(f"cannot open {path} as Zarr: {exc}") from exc
    attrs = dict(node.attrs)
    if "ome" in attrs or "multiscales" in attrs:
        return _open_ome_zarr(path)
    if not hasattr(node, "shape"):
        names = sorted(name for name, _ in node.arrays())
        raise ValueError(f"{path} is a Zarr group, not an array; open one of its arrays "
                         f"({', '.join(names) or 'none'}), e.g. {path / (names or ['0'])[0]}")
    return node, StackMeta()


def _open_ome_zarr(path: Path) -> tuple[Any, StackMeta]:
    io = require("ome_zarr.io", "reading OME-Zarr")
    reader = require("ome_zarr.reader", "reading OME-Zarr")
    nodes = list(reader.Reader(io.parse_url(str(path)))())
    if not nodes or not nodes[0].data:
        raise ValueError(f"{path} holds no OME-Zarr image")
    meta = nodes[0].metadata
    axes_meta = meta.get("axes") or []
    axes = "".join(a["name"][0].lower() for a in axes_meta) if axes_meta else None
    units = tuple(a.get("unit") for a in axes_meta) if axes_meta else None
    scale = None
    for t in (meta.get("coordinateTransformations") or [[]])[0]:
        if t.get("type") == "scale":
            scale = tuple(float(v) for v in t["scale"])
    return nodes[0].data[0], StackMeta(axes, scale, units)


def _open_tiff(path: Path) -> tuple[Any, StackMeta]:
    import tifffile

    zarr = require("zarr", "reading TIFF stacks lazily")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes.lower()
            ome = tif.ome_metadata if tif.is_ome else None
        store = tifffile.imread(path, aszarr=True)
        data = zarr.open(store, mode="r")
    except Exception as exc:  # corrupt or truncated files raise many different errors
        raise ValueError(f"cannot read {path.name}: not a valid TIFF ({exc})") from exc
    if hasattr(data, "arrays") and not hasattr(data, "shape"):  # multi-resolution: level 0
        data = data["0"]
    scale, units = None, None
    if ome:
        pixels = tifffile.xml2dict(ome).get("OME", {}).get("Image", {})
        pixels = (pixels[0] if isinstance(pixels, list) else pixels).get("Pixels", {})
        keys = [_ome_size_key(a) for a in axes]
        scale = tuple(float(pixels.get(k, 1.0)) if k else 1.0 for k in keys)
        units = tuple(pixels.get(k + "Unit") if k else None for k in keys)
    return data, StackMeta(axes, scale, units)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist")
                                 else str(v)))


class ZarrStackOutput:
    """The Zarr output of a stack run (see the module docstring for the layout)."""

    def __init__(self, group: Any):
        self.group = group
        self.images = group["0"]
        self.kernels = group["kernels"]
        self.info = group["frame_info"]
        self.settings = dict(group.attrs["napari_glkm"]["settings"])
        self.axis = int(group.attrs["napari_glkm"]["axis"])
        self.dropped = list(group.attrs["napari_glkm"]["dropped"])

    @property
    def path(self) -> str:
        return str(self.group.store_path).removeprefix("file://")

    @classmethod
    def open(cls, path: str | Path, *, mode: str = "r+") -> ZarrStackOutput:
        """Open an existing output (``mode="r"`` to only read it)."""
        zarr = require("zarr", "a Zarr output")
        try:
            group = zarr.open_group(str(path), mode=mode)
            return cls(group)
        except (KeyError, FileNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"{path} is not a napari-glkm stack output ({exc})") from exc

    @classmethod
    def create_or_resume(cls, path: str | Path, source: FrameSource, kernel_size: int,
                         settings: dict, *, overwrite: bool = False) -> ZarrStackOutput:
        """Create the output for ``source``, or reopen it to resume if it was started with
        the same ``settings``. Anything else at ``path`` is refused unless ``overwrite``;
        with ``overwrite`` only a Zarr store is ever deleted."""
        zarr = require("zarr", "a Zarr output")
        path = Path(path)
        settings = _jsonable(dict(settings, shape=list(source.shape), axis=source.axis))
        if path.exists():
            try:
                existing = cls.open(path)
            except ValueError:
                existing = None
            if existing is not None and existing.settings == settings and not overwrite:
                return existing
            if not overwrite:
                why = ("was written with other settings" if existing is not None
                       else "is not a napari-glkm stack output")
                raise ValueError(f"{path} exists and {why}; pass overwrite=True (CLI: "
                                 f"--overwrite) to replace it, or choose another output")
            if not ((path / "zarr.json").exists() or (path / ".zgroup").exists()):
                raise ValueError(f"{path} is not a Zarr store; refusing to delete it")
            shutil.rmtree(path)
        if not path.parent.is_dir():
            raise ValueError(f"output folder does not exist: {path.parent}")
        group = zarr.open_group(str(path), mode="w-")
        n, k = source.n, int(kernel_size)
        chunks = tuple(1 if a == source.axis or a in source.dropped else s
                       for a, s in enumerate(source.shape))
        group.create_array("0", shape=source.shape, chunks=chunks, dtype="float32",
                           fill_value=0.0)
        group.create_array("kernels", shape=(n, k, k), chunks=(1, k, k), dtype="float32",
                           fill_value=0.0)
        group.create_array("frame_info", shape=(n, len(_INFO_COLUMNS)),
                           chunks=(1, len(_INFO_COLUMNS)), dtype="float64", fill_value=0.0)
        group.attrs["napari_glkm"] = dict(settings=settings, axis=source.axis,
                                          dropped=source.dropped, columns=list(_INFO_COLUMNS))
        _write_ome_metadata(group, source)
        return cls(group)

    def done(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Boolean mask: which of ``indices`` (default all frames) are written."""
        if indices is None:
            return self.info[:, 0] == 1.0
        idx = np.asarray(list(indices), dtype=np.int64)
        if idx.size == 0:
            return np.zeros(0, bool)
        return self.info.get_orthogonal_selection((idx, 0)) == 1.0

    def kernel(self, i: int) -> np.ndarray:
        return np.asarray(self.kernels[int(i)])

    def frame_index(self, i: int) -> tuple:
        idx: list[Any] = [slice(None)] * len(self.images.shape)
        idx[self.axis] = int(i)
        for a in self.dropped:
            idx[a] = 0
        return tuple(idx)

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.images[self.frame_index(i)])

    def write(self, i: int, image: np.ndarray, kernel: np.ndarray, seconds: float, loss: float,
              warm_start: bool) -> None:
        """Store frame ``i``; its ``frame_info`` row (the 'done' mark) goes last."""
        self.images[self.frame_index(i)] = np.asarray(image, np.float32)
        self.kernels[int(i)] = np.asarray(kernel, np.float32)
        self.info[int(i)] = np.array([1.0, seconds, loss, float(warm_start)])

    def lazy(self):
        """The restored frames as a dask array (nothing read until used)."""
        da = require("dask.array", "a lazy view of the output")
        return da.from_zarr(self.images)


def _write_ome_metadata(group: Any, source: FrameSource) -> None:
    """OME-NGFF axes and pixel sizes, when the input's axes are known and OME-compatible."""
    axes = source.meta.axes
    if not axes or not set(axes) <= set(_OME_TYPES) or len(axes) != len(source.shape):
        return
    writer = require("ome_zarr.writer", "OME-Zarr output")
    units = source.meta.units or (None,) * len(axes)
    axes_meta = [dict({"name": a, "type": _OME_TYPES[a]}, **({"unit": u} if u else {}))
                 for a, u in zip(axes, units)]
    scale = list(source.meta.scale or (1.0,) * len(axes))
    try:
        writer.write_multiscales_metadata(
            group, datasets=[{"path": "0", "coordinateTransformations":
                              [{"type": "scale", "scale": scale}]}],
            axes=axes_meta, name="deblurred")
    except ValueError:  # an axis order OME-NGFF does not allow: keep the plain Zarr output
        pass


def _ome_size_key(axis: str) -> str | None:
    return {"x": "PhysicalSizeX", "y": "PhysicalSizeY", "z": "PhysicalSizeZ",
            "t": "TimeIncrement"}.get(axis)


def write_ome_tiff(path: str | Path, output: ZarrStackOutput, meta: StackMeta | None = None, *,
                   overwrite: bool = False) -> Path:
    """Write the restored frames of ``output`` to an OME-TIFF, one frame at a time.

    Axes and physical sizes come from ``meta`` (e.g. those of the input TIFF). The file is
    written atomically and an existing file is kept unless ``overwrite``.
    """
    import tifffile

    from .._io import atomic_path

    images = output.images
    meta = meta or StackMeta()
    axes = (meta.axes or "").upper()
    if len(axes) != len(images.shape):
        axes = "Q" * (len(images.shape) - 2) + "YX"
    metadata: dict[str, Any] = {"axes": axes}
    for a, s, u in zip(axes.lower(), meta.scale or (), meta.units or (None,) * len(axes)):
        key = _ome_size_key(a)
        if key and s:
            metadata[key] = float(s)
            if u:
                metadata[key + "Unit"] = u
    lead = images.shape[:-3] if axes.endswith("S") else images.shape[:-2]

    def planes() -> Iterator[np.ndarray]:
        for idx in np.ndindex(*lead):
            yield np.asarray(images[idx], np.float32)

    with atomic_path(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, data=planes(), shape=images.shape, dtype="float32",
                         ome=True, metadata=metadata,
                         photometric="rgb" if axes.endswith("S") else "minisblack")
    return Path(path)
