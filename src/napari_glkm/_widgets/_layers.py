"""Between napari layers and the backend: which layers can be deblurred, how a layer's data
becomes a stack of frames, where a Shapes rectangle lies in the image's pixels, and the keyword
arguments that give the output and kernel layers the input's geometry.

Functions here read layers but never change them, and need no running Qt event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from napari.layers import Image, Layer, Shapes

__all__ = ["FramePlan", "check_layer", "frames_of", "roi_from_shapes", "output_kwargs",
           "kernel_kwargs"]


@dataclass(frozen=True)
class FramePlan:
    """How a layer's data maps to frames: ``data.reshape((n_frames,) + frame_shape)``.

    Attributes
    ----------
    shape:
        The layer's data shape.
    lead:
        Leading (stack) axes: time, z, channels, … (empty for a single image).
    rgb:
        Whether the last axis holds colour channels.
    """

    shape: tuple[int, ...]
    lead: tuple[int, ...]
    rgb: bool

    @property
    def n_frames(self) -> int:
        return int(np.prod(self.lead)) if self.lead else 1

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self.shape[len(self.lead):]

    @property
    def is_stack(self) -> bool:
        return self.n_frames > 1 or bool(self.lead)


def check_layer(layer: Layer | None) -> Image:
    """Return ``layer`` if it can be deblurred, else raise ``ValueError`` saying why."""
    if layer is None:
        raise ValueError("no image layer selected: open an image, or use "
                         "File → Open Sample → napari-glkm")
    if not isinstance(layer, Image):
        kind = type(layer).__name__
        why = " (labels hold segment ids, not intensities)" if kind == "Labels" else ""
        raise ValueError(f"'{layer.name}' is a {kind} layer{why}; choose an Image layer")
    if layer.multiscale:
        raise ValueError(f"'{layer.name}' is a multiscale (pyramid) image; add its full-"
                         f"resolution level as an Image layer and deblur that")
    if layer.rgb and layer.data.shape[-1] not in (3, 4):
        raise ValueError(f"'{layer.name}' has {layer.data.shape[-1]} colour channels; "
                         f"expected RGB or RGBA")
    return layer


def frames_of(layer: Image) -> tuple[np.ndarray, FramePlan]:
    """A private float/int copy of the layer's data as ``(N, H, W[, C])`` frames.

    Call on the main thread: the copy is what the worker reads, so later edits of the layer
    do not race with the computation, and the layer itself is never touched.
    """
    data = np.array(layer.data, copy=True)  # materialises dask/zarr data, too
    spatial = 3 if layer.rgb else 2
    plan = FramePlan(tuple(data.shape), tuple(data.shape[:-spatial]), bool(layer.rgb))
    return data.reshape((plan.n_frames,) + plan.frame_shape), plan


def roi_from_shapes(shapes: Shapes, image: Image) -> tuple[int, int, int, int]:
    """Bounding box ``(row0, col0, row1, col1)`` (half-open, image pixels) of the first
    rectangle of ``shapes``, mapped through both layers' world transforms."""
    rects = [i for i, kind in enumerate(shapes.shape_type) if kind == "rectangle"]
    if not rects:
        raise ValueError(f"Shapes layer '{shapes.name}' has no rectangle: draw one around the "
                         f"region to estimate the kernel in, or choose no ROI")
    vertices = np.asarray(shapes.data[rects[0]], dtype=float)
    pts = np.array([image.world_to_data(shapes.data_to_world(v)) for v in vertices])[:, -2:]
    h, w = image.data.shape[-3:-1] if image.rgb else image.data.shape[-2:]
    r0, c0 = np.floor(pts.min(axis=0) + 0.5).astype(int)
    r1, c1 = np.floor(pts.max(axis=0) + 0.5).astype(int)
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"the rectangle in '{shapes.name}' lies outside the image "
                         f"'{image.name}'")
    return int(r0), int(c0), int(r1), int(c1)


def output_kwargs(layer: Image) -> dict:
    """Keyword arguments of ``viewer.add_image`` giving the result the input's geometry."""
    kwargs = dict(scale=layer.scale, translate=layer.translate, rotate=layer.rotate,
                  shear=layer.shear, rgb=layer.rgb, colormap=layer.colormap.name,
                  contrast_limits=layer.contrast_limits, blending=layer.blending)
    for attr in ("units", "axis_labels"):  # present in napari >= 0.6
        if hasattr(layer, attr):
            kwargs[attr] = getattr(layer, attr)
    if layer.rgb:
        kwargs.pop("colormap")
    return kwargs


def kernel_kwargs(layer: Image, kernel_shape: tuple[int, ...]) -> dict:
    """Keyword arguments of ``viewer.add_image`` for the kernel layer of ``layer``.

    The kernel is shown to the right of the image, top-aligned, magnified by an integer
    factor so that it spans about a quarter of the image height (a 31 px kernel next to a
    2000 px image would otherwise be a dot). ``kernel_shape`` is ``(k, k)`` for one kernel or
    ``lead + (k, k)`` for one kernel per frame.
    """
    scale = np.asarray(layer.scale, float)
    translate = np.asarray(layer.translate, float)
    h, w = layer.data.shape[-3:-1] if layer.rgb else layer.data.shape[-2:]
    k = kernel_shape[-1]
    mag = max(1, int(round(h / (4 * k))))
    n_lead = len(kernel_shape) - 2
    lead_scale = scale[-2 - n_lead:-2] if n_lead else np.empty(0)
    lead_translate = translate[-2 - n_lead:-2] if n_lead else np.empty(0)
    sy, sx = scale[-2:]
    ty, tx = translate[-2:]
    k_scale = np.concatenate([lead_scale, [sy * mag, sx * mag]])
    # pixel centres: image columns end at tx + (w - 1) sx; leave a gap of 2 % of the width
    left = tx + (w - 0.5) * sx + max(2.0, 0.02 * w) * sx
    k_translate = np.concatenate([lead_translate,
                                  [ty - 0.5 * sy + 0.5 * sy * mag, left + 0.5 * sx * mag]])
    kwargs = dict(scale=k_scale, translate=k_translate, colormap="inferno",
                  interpolation2d="nearest", blending="translucent_no_depth",
                  metadata={"magnification": mag, "pixel_size": (float(sy), float(sx))})
    if hasattr(layer, "units"):
        kwargs["units"] = tuple(layer.units)[-len(kernel_shape):]
    return kwargs
