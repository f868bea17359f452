"""The kernel-grid overlay of a non-uniform (SVOLA) run: the per-patch kernels drawn on the
image at their patch centres, and the patch outlines.

Two layers per run, both aligned with the input image in world coordinates:

* ``<name> kernel grid`` — Image layer of the mosaic from
  :func:`~napari_glkm.backend.kernel_grid.kernel_grid_mosaic` (each kernel scaled to its own
  maximum, ``inferno``, additive blending), the centre of tile ``(i, j)`` on patch centre
  ``centres[i, j]`` of the image;
* ``<name> patches`` — Shapes layer of the patch rectangles (outlines only).

The mosaic's placement in image pixels (``scale_m``, ``translate_m``) is composed with the input
layer's transform: a mosaic pixel ``m`` lies at image pixel ``p = translate_m + scale_m * m``,
which the image maps to ``world = affine(T + L p)`` (``T`` translate, ``L`` = rotate · shear ·
scale). So the overlay gets the image's rotate, shear and affine, ``scale = S * scale_m`` and
``translate = T + L translate_m`` (``= T + S * translate_m`` without rotation or shear).

Main-thread code (it adds and edits layers); the worker only yields the plain arrays.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image
from napari.utils.transforms import CompositeAffine

from ..backend.kernel_grid import kernel_grid_mosaic, patch_outlines

__all__ = ["overlay_geometry", "KernelGridOverlay"]

EDGE_COLOR = "cyan"


def _spatial_geometry(layer: Image) -> dict:
    """The input layer's 2-D transform (it is a single gray or RGB image: ndim 2)."""
    kwargs = dict(rotate=layer.rotate, shear=layer.shear, affine=layer.affine.affine_matrix)
    if hasattr(layer, "units"):  # napari >= 0.6
        kwargs["units"] = tuple(layer.units)[-2:]
    return kwargs


def overlay_geometry(layer: Image, scale: tuple[float, float],
                     translate: tuple[float, float]) -> dict:
    """``add_image`` keyword arguments that put a picture placed at image pixels
    ``translate + scale * index`` (as returned by ``kernel_grid_mosaic``) on ``layer`` in world
    coordinates."""
    s = np.asarray(layer.scale, float)[-2:]
    t = np.asarray(layer.translate, float)[-2:]
    linear = CompositeAffine(scale=s, translate=(0.0, 0.0), rotate=layer.rotate,
                             shear=layer.shear, ndim=2).linear_matrix
    return dict(scale=s * np.asarray(scale, float),
                translate=t + linear @ np.asarray(translate, float),
                **_spatial_geometry(layer))


class KernelGridOverlay:
    """The two overlay layers of one run; created on the first kernel grid, then updated."""

    def __init__(self, viewer, layer: Image, image_shape: tuple[int, int], visible: bool = True):
        self.viewer = viewer
        self.layer = layer
        self.image_shape = tuple(image_shape[:2])
        self.visible = visible
        self.grid_layer = None
        self.patch_layer = None
        self._grid_meta: dict = {}

    @property
    def layers(self) -> list:
        """The overlay layers still in the viewer."""
        return [l for l in (self.grid_layer, self.patch_layer)
                if l is not None and l in self.viewer.layers]

    def update(self, kernel_grid: np.ndarray, centres: np.ndarray, info: dict) -> None:
        """Show ``(gy, gx, k, k)`` kernels at ``(gy, gx, 2)`` patch centres (image pixels)."""
        mosaic, scale, translate = kernel_grid_mosaic(kernel_grid, centres, self.image_shape)
        name = self.layer.name
        self._grid_meta = dict(centres=np.asarray(centres).tolist(), grid=info.get("grid"),
                               overlap=info.get("overlap"), patch_shape=info.get("patch_shape"))
        meta = {"napari_glkm": dict(self._grid_meta)}
        if self.grid_layer is None or self.grid_layer not in self.viewer.layers:
            self.grid_layer = self.viewer.add_image(
                mosaic, name=f"{name} kernel grid", colormap="inferno", blending="additive",
                opacity=0.8, contrast_limits=(0.0, 1.0), interpolation2d="nearest",
                visible=self.visible, metadata=meta,
                **overlay_geometry(self.layer, scale, translate))
        else:
            self.grid_layer.data = mosaic
        if (self.patch_layer is None or self.patch_layer not in self.viewer.layers) \
                and info.get("patch_shape") is not None:
            rects = patch_outlines(centres, info["patch_shape"], self.image_shape)
            width = max(1.0, 0.004 * max(self.image_shape))  # image pixels
            self.patch_layer = self.viewer.add_shapes(
                rects, shape_type="rectangle", name=f"{name} patches", edge_color=EDGE_COLOR,
                face_color="transparent", edge_width=width, opacity=0.7, visible=self.visible,
                scale=np.asarray(self.layer.scale, float)[-2:],
                translate=np.asarray(self.layer.translate, float)[-2:],
                metadata=meta, **_spatial_geometry(self.layer))

    def set_visible(self, visible: bool) -> None:
        """Show or hide both layers (also those created later in this run)."""
        self.visible = bool(visible)
        for l in self.layers:
            l.visible = self.visible

    def finish(self, suffix: str, meta: dict) -> None:
        """Rename the layers (``suffix`` e.g. ``" (partial)"``) and store the run's metadata."""
        for l, base in ((self.grid_layer, "kernel grid"), (self.patch_layer, "patches")):
            if l is not None and l in self.viewer.layers:
                l.name = f"{self.layer.name} {base}{suffix}"
                l.metadata["napari_glkm"] = dict(meta, **self._grid_meta)
