"""Big stacks in the deblur widget: a dask- or Zarr-backed layer is deblurred frame by frame
without ever being loaded whole, each finished frame goes straight into a Zarr store, and the
result layer is a lazy view of that store (so a 100-frame stack never sits in memory).

The store lives in ``$NAPARI_GLKM_CACHE_DIR`` (default: the platform's user cache folder,
e.g. ``~/.cache/napari-glkm/stacks``), named after the layer and a hash of the options: running
the same layer with the same options again resumes after the frames already written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import numpy as np
from napari.layers import Image

from ..backend.outofcore import StackPlan, plan_stack
from ..backend.stack_io import is_lazy, require
from ._layers import FramePlan, kernel_kwargs, output_kwargs

__all__ = ["is_lazy_stack", "lazy_frames_of", "stack_output_dir", "LazyResult"]


def is_lazy_stack(layer: Image) -> bool:
    """True for a stack layer whose data is read on demand (dask, Zarr)."""
    spatial = 3 if layer.rgb else 2
    return is_lazy(layer.data) and layer.data.ndim > spatial


def lazy_frames_of(layer: Image):
    """The layer's data as a lazy ``(N, H, W[, C])`` dask array (nothing is read or copied)."""
    da = require("dask.array", "deblurring a dask-backed layer")
    data = layer.data if isinstance(layer.data, da.Array) else da.from_array(layer.data)
    spatial = 3 if layer.rgb else 2
    plan = FramePlan(tuple(data.shape), tuple(data.shape[:-spatial]), bool(layer.rgb))
    return data.reshape((plan.n_frames,) + plan.frame_shape), plan


def stack_output_dir() -> Path:
    """Folder of the widget's Zarr outputs."""
    import platformdirs

    base = os.environ.get("NAPARI_GLKM_CACHE_DIR") or platformdirs.user_cache_dir("napari-glkm")
    return Path(base) / "stacks"


def _output_path(name: str, settings: dict) -> Path:
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "layer"
    return stack_output_dir() / f"{safe}-{digest[:10]}.zarr"


class LazyResult:
    """The Zarr-backed result and kernel layers of one widget run."""

    def __init__(self, viewer, layer: Image, frames, plan: FramePlan, options: dict,
                 shared: bool, warm_start: bool):
        self.viewer, self.layer, self.frame_plan = viewer, layer, plan
        settings = dict(options, shared=shared, warm=warm_start, shape=plan.shape)
        settings.pop("preview_every", None)
        settings.pop("device", None)
        path = _output_path(layer.name, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.plan: StackPlan = plan_stack(frames, 0, out=path, shared_kernel=shared,
                                          warm_start=warm_start, **options)
        self.output = self.plan.output
        self.path = str(path)
        self.out_layer = None
        self.kern_layer = None

    def done(self) -> list[bool]:
        """Per frame: already in the store (from an earlier, interrupted run)."""
        return [bool(d) for d in self.output.done()]

    def _views(self):
        da = require("dask.array", "deblurring a dask-backed layer")
        k = self.output.kernels.shape[-1]
        # a new name each time: napari's dask cache must not serve frames read before they
        # were written
        tag = uuid.uuid4().hex
        images = da.from_zarr(self.output.images, name=f"glkm-{tag}").reshape(
            self.frame_plan.shape)
        kernels = da.from_zarr(self.output.kernels, name=f"glkm-k-{tag}").reshape(
            self.frame_plan.lead + (k, k))
        return images, kernels

    def add_layers(self) -> tuple[Image, Image]:
        """Add the lazy result and kernel layers (frames not yet written read as 0)."""
        images, kernels = self._views()
        name = self.layer.name
        self.out_layer = self.viewer.add_image(images, name=f"{name} deblurred (running)",
                                               **output_kwargs(self.layer))
        kw = kernel_kwargs(self.layer, tuple(kernels.shape))
        self.kern_layer = self.viewer.add_image(kernels, name=f"{name} kernel",
                                                contrast_limits=(0.0, 0.1), **kw)
        for lyr in (self.out_layer, self.kern_layer):
            lyr.metadata["napari_glkm_zarr"] = self.path
        return self.out_layer, self.kern_layer

    def refresh(self, kernel: np.ndarray | None = None) -> None:
        """Show newly written frames (call after each finished frame)."""
        images, kernels = self._views()
        if self.out_layer is not None and self.out_layer in self.viewer.layers:
            self.out_layer.data = images
        if self.kern_layer is not None and self.kern_layer in self.viewer.layers:
            self.kern_layer.data = kernels
            if kernel is not None:
                self.kern_layer.contrast_limits = (0.0, max(float(kernel.max()), 1e-8))
