"""Reading and writing image files for the CLI: PNG/JPEG (imageio) and TIFF (tifffile).

Writes are atomic (a temporary file in the target folder, then a rename), so an interrupted run
never leaves a half-written output, and they refuse to replace an existing file unless asked.
TIFF resolution and description tags are carried from input to output.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import tifffile

__all__ = ["ImageFileError", "ImageFile", "read_image", "write_image", "to_dtype", "atomic_path"]

TIFF_SUFFIXES = (".tif", ".tiff")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
KNOWN_SUFFIXES = TIFF_SUFFIXES + RASTER_SUFFIXES


class ImageFileError(ValueError):
    """An image file cannot be read or written (missing, corrupt, unsupported)."""


@dataclass
class ImageFile:
    """Pixels and the metadata worth carrying to the output."""

    data: np.ndarray
    tiff: dict[str, Any] = field(default_factory=dict)


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def read_image(path: str | os.PathLike) -> ImageFile:
    """Read PNG/JPEG/BMP/TIFF into an array (and TIFF resolution/description)."""
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"input file not found: {path}")
    if not path.is_file():
        raise ImageFileError(f"input is not a file: {path}")
    suffix = _suffix(path)
    if suffix not in KNOWN_SUFFIXES:
        raise ImageFileError(
            f"unsupported file type {suffix or '(none)'!r} for {path.name}; use one of "
            f"{', '.join(KNOWN_SUFFIXES)}"
        )
    try:
        if suffix in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                data = page.asarray()
                meta: dict[str, Any] = {}
                tags = page.tags
                if "XResolution" in tags and "YResolution" in tags:
                    meta["resolution"] = (tags["XResolution"].value, tags["YResolution"].value)
                    if "ResolutionUnit" in tags:
                        meta["resolutionunit"] = int(tags["ResolutionUnit"].value)
                if "ImageDescription" in tags:
                    meta["description"] = str(tags["ImageDescription"].value)
            return ImageFile(data, meta)
        return ImageFile(np.asarray(iio.imread(path)))
    except ImageFileError:
        raise
    except Exception as exc:  # corrupt or truncated files raise many different errors
        # Keep the message to one line: some readers append multi-line installation hints.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise ImageFileError(f"cannot read {path.name}: not a valid image ({reason})") from exc


def to_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip a float result into an integer dtype (floats pass through as float32)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(np.float32)


def write_image(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    tiff: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``data`` atomically; refuse to replace an existing file unless ``overwrite``."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in KNOWN_SUFFIXES + (".npy",):
        raise ImageFileError(
            f"unsupported output type {suffix or '(none)'!r}; use .png, .jpg, .tif or .npy"
        )
    with atomic_path(path, overwrite=overwrite) as tmp:
        if suffix in TIFF_SUFFIXES:
            kwargs: dict[str, Any] = {}
            meta = tiff or {}
            if "resolution" in meta:
                kwargs["resolution"] = meta["resolution"]
                if "resolutionunit" in meta:
                    kwargs["resolutionunit"] = meta["resolutionunit"]
            photometric = "rgb" if data.ndim == 3 and data.shape[-1] in (3, 4) else "minisblack"
            tifffile.imwrite(tmp, data, photometric=photometric,
                             description=meta.get("description"), metadata=None, **kwargs)
        elif suffix == ".npy":
            np.save(tmp, data)
        else:
            iio.imwrite(tmp, data, extension=suffix)
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary file name next to ``path``; on success it is renamed to ``path``.

    Refuses (``ImageFileError``) when ``path`` exists and ``overwrite`` is false or when its
    folder is missing. If the body raises, the temporary file is removed and ``path`` is left
    as it was; write errors (``OSError``, ``ValueError``, ``TypeError``) become
    ``ImageFileError``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ImageFileError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.exists():
        raise ImageFileError(f"output folder does not exist: {path.parent}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=_suffix(path))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, ValueError, TypeError) as exc:
        raise ImageFileError(f"cannot write {path.name}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
