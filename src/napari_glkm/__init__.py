"""napari-glkm: blind motion deblurring with generative latent kernel models (GLKM).

Public API::

    from napari_glkm import deblur
    result = deblur(image, preset="fast")      # DeblurResult: image, kernel, losses, timings

``iter_deblur`` is the same computation as a generator of snapshots (for live previews);
``load_weights`` reads a generator file (ours or an official GLKM ``.pth``);
``deblur_stack`` deblurs stacks frame by frame, out of core (dask, Zarr, OME-Zarr, OME-TIFF)
and optionally on a dask cluster, and ``open_stack`` opens such files lazily.
BKSE (encoded blur-kernel space, Tran et al. CVPR 2021): ``transfer_blur``, ``synthesize_blur``
and the code-space deblurring ``deblur_bkse`` / ``iter_deblur_bkse``.
Importing this package never imports Qt or napari.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .backend.outofcore import deblur_stack
from .backend.solver import PRESETS, DeblurResult, DeblurStep, iter_deblur
from .backend.stack_io import open_stack
from .backend.bkse.api import synthesize_blur, transfer_blur
from .backend.bkse.deblur import BKSEResult, BKSEStep, deblur_bkse, iter_deblur_bkse
from .backend.weights import WeightsError, load_generator

try:
    __version__ = version("napari-glkm")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "deblur",
    "iter_deblur",
    "deblur_stack",
    "open_stack",
    "DeblurResult",
    "DeblurStep",
    "load_weights",
    "WeightsError",
    "PRESETS",
    "transfer_blur",
    "synthesize_blur",
    "deblur_bkse",
    "iter_deblur_bkse",
    "BKSEStep",
    "BKSEResult",
    "__version__",
]


def deblur(image, **options) -> DeblurResult:
    """Blind deblurring of one image; runs :func:`iter_deblur` to the end.

    Parameters
    ----------
    image:
        ``(H, W)`` gray or ``(H, W, 3)`` / ``(H, W, 4)`` colour array (uint8, uint16, other
        integers or float). Never modified.
    **options:
        Keyword options of :func:`iter_deblur`: ``kernel_size="auto"`` (or an odd size in
        pixels), ``preset="default"`` (``"fast"``, ``"default"``, ``"quality"``),
        ``device="auto"``, ``seed=0``, ``iterations``, ``kernel_prior="glkm"``, ``weights``,
        ``roi``, ``init_kernel``, ``noise="auto"`` (or ``"off"`` or a standard deviation),
        ``saturation="auto"`` (or ``"off"`` or a threshold), ``nonuniform=False`` with
        ``grid``, ``patch_size``, ``overlap``, ``smoothness``, ``blur_model``.

    Returns
    -------
    DeblurResult
        ``image`` (input's shape and value range, float32), ``kernel`` ``(k, k)``,
        ``kernel_size`` (the chosen one with ``"auto"``), ``losses``, ``timings``, ``info``
        (``noise_sigma``, ``saturated_fraction``, ``auto_size``, ...); with ``nonuniform=True`` also
        ``kernel_grid`` ``(gy, gx, k, k)`` and ``centres`` ``(gy, gx, 2)``.

    Example
    -------
    >>> import numpy as np
    >>> from napari_glkm import deblur
    >>> img = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    >>> res = deblur(img, preset="fast", iterations=1, kernel_size=31)
    >>> res.image.shape, res.kernel.shape
    ((96, 96), (31, 31))
    """
    options.pop("preview_every", None)
    last = None
    for last in iter_deblur(image, preview_every=10**9, **options):
        pass
    if last is None or not last.final:  # cannot happen: the loop always ends with a final step
        raise RuntimeError("deblurring ended without a result")
    return DeblurResult(
        image=last.image, kernel=last.kernel, kernel_size=last.kernel.shape[0],
        losses=list(last.history), timings=dict(last.timings), info=dict(last.info),
        kernel_grid=last.kernel_grid, centres=last.centres,
    )


def load_weights(path, kernel_size: int | None = None):
    """Load a kernel generator or initializer from ``path`` (our safetensors or an official
    GLKM/GKPILE ``netG_{k}.pth`` / ``netE_{k}.pth``).

    ``.pth`` files are read with ``torch.load(weights_only=True)``: a file that would run code
    is refused (:class:`WeightsError`), nothing in it is executed. The kind of network is
    recognised from the keys (both official generator key layouts are accepted). Returns the
    network in eval mode; pass ``weights=path`` (generator) or ``initializer=path`` to
    :func:`deblur` to use the file, or convert it with ``napari-glkm convert-weights``.

    Example
    -------
    >>> from napari_glkm import load_weights
    >>> gen = load_weights("netG_31.pth")          # doctest: +SKIP
    >>> gen.size                                   # doctest: +SKIP
    31
    """
    from .backend.weights import load_any

    net = load_any(path)
    size = getattr(net, "size", None)
    if kernel_size is not None and size is not None and size != kernel_size:
        raise WeightsError(f"these generator weights are for kernel size {size}, not {kernel_size}")
    return net
