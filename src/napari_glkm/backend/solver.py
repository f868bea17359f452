"""``iter_deblur()``: the one blind-deblurring loop behind the API, the CLI and the napari widget.

Pipeline:

1. **kernel** — coarse-to-fine estimation of a pixel kernel on the luminance (L0 image steps
   and least-squares kernel steps), on the most informative crop of large images, after a
   light TV denoising when the estimated noise level calls for it;
2. **glkm** — GAN inversion: the generator's first-layer feature map is fitted to that kernel,
   so the kernel becomes a point of GLKM's kernel space;
3. **dip** — optional joint Deep-Image-Prior / feature-map optimisation (the paper's DIP-GLKM
   loop), started from that feature map;
4. **final** — every channel of the full-resolution image restored by hyper-Laplacian
   non-blind deconvolution with the kernel (see ``DeblurOptions.final_kernel``).

With ``nonuniform=True`` the stages ``local`` (per-patch kernels) and ``glkm-grid`` (joint
projection of all patch kernels into the generator) run between 2/3 and 4, and the final
restoration uses the SVOLA blur model (see :mod:`napari_glkm.backend.svola`).

See docs/algorithm.md for the reasoning and the measurements behind this order.

The generator yields a :class:`DeblurStep` after every iteration that is a preview point; the
last one has ``final=True``. Previews are computed lazily (a Wiener deconvolution, only when
``step.image`` is read), so draining the loop costs nothing extra.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable

import numpy as np
import torch

from .kernel_prior import FreeKernelPrior, GeneratorKernelPrior, resize_kernel
from .kernel_size import (
    AutoSizeConfig, candidate_sizes, choose_kernel_size, compared_sizes, restoration_scores,
    restored_scores,
)
from .noise import (NOISE_FLOOR, check_noise, denoise_for_kernel_estimation, estimate_noise,
                    noise_lambda)
from .saturation import check_saturation, estimation_weight, restoration_weight, saturated_mask
from .nonblind import iter_sparse_deconv_tiled, sparse_deconv, wiener_deconv
from .resources import TILE_PIXELS, TILE_SIDE, with_oom_fallback
from .safety import DivergenceError, DivergenceGuard, all_finite
from .stages import (
    DIPConfig,
    ProjectionConfig,
    PyramidConfig,
    coarse_to_fine_stage,
    dip_stage,
    informative_crop,
    projection_stage,
    pyramid_sizes,
)
from .svola import (
    LOCAL_MODELS,
    PatchGrid,
    SVOLAConfig,
    camera_input_is_raw,
    camera_kernel_stage,
    camera_lambda_schedule,
    grid_projection_stage,
    local_kernel_stage,
    make_patch_grid,
    n_local_iterations,
    patch_confidence,
    recentre_kernels,
    select_patch_kernels,
    svola_restore,
)
from .validation import LUMA_WEIGHTS, PreparedImage, check_kernel_size, min_image_side, prepare_image
from .weights import has_shipped, load_generator, load_initializer, shipped_weights

__all__ = ["PRESETS", "DeblurOptions", "DeblurStep", "DeblurResult", "iter_deblur", "resolve_device",
           "restore_with_kernel", "fit_ratio", "FIT_WARN"]


@dataclass(frozen=True)
class DeblurOptions:
    """Everything that controls a run; presets fill it, keyword overrides replace fields."""

    pyramid: PyramidConfig = PyramidConfig()
    projection: ProjectionConfig = ProjectionConfig()
    dip: DIPConfig = DIPConfig()
    final_kernel: str = "estimate"  # "estimate" (pixel kernel) or "prior" (GLKM kernel)
    final_lambda: float = 2e-3
    final_alpha: float = 0.8
    final_iters: int = 4
    preview_every: int = 10
    init_levels: int | None = None  # pyramid levels run after a network start (None: all)
    svola: SVOLAConfig = SVOLAConfig()
    auto_size: AutoSizeConfig = AutoSizeConfig()


PRESETS: dict[str, DeblurOptions] = {
    "fast": DeblurOptions(pyramid=PyramidConfig(outer_iters=5),
                          projection=ProjectionConfig(steps=150),
                          svola=SVOLAConfig(outer_iters=4, projection_steps=150)),
    "default": DeblurOptions(pyramid=PyramidConfig(outer_iters=10)),
    "quality": DeblurOptions(
        pyramid=PyramidConfig(outer_iters=14),
        dip=DIPConfig(iters=1500, channels=128, mse_iters=300, kernel_warmup=100),
        final_kernel="prior",
    ),
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then MPS, then the CPU; other names must be available."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not str(device).startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'mps'")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was requested but MPS is not available")
    return torch.device(device)


@dataclass
class DeblurStep:
    """A snapshot of the loop.

    Attributes
    ----------
    iteration, total:
        0-based iteration index and the planned number of iterations.
    stage:
        ``"kernel"``, ``"dip"`` or ``"final"``.
    kernel:
        ``(k, k)`` float32 current kernel estimate (sums to 1).
    loss:
        Loss of the current stage.
    elapsed:
        Seconds since the start.
    final:
        True for the last snapshot, whose ``image`` is the restored result.
    history:
        Loss after every iteration so far (one list shared by all snapshots of a run).
    timings:
        Seconds per finished stage (and ``"total"`` on the final snapshot).
    info:
        Facts about the run: ``noise_sigma`` (estimated noise, [0, 1] units), ``crop``
        (row, col, height, width of the kernel-estimation window), ``warm_start``,
        ``recovered`` (a list with one entry per non-finite step that was undone: stage,
        iteration and the lowered learning rate; empty on a healthy run); in
        non-uniform mode also ``grid`` (gy, gx), ``overlap``, ``patch_shape`` (ph, pw) and
        ``patch_confidence`` ``(gy, gx)`` (1: the patch's own kernel is trusted), and with
        the camera model ``camera_schedule`` (its first L0 weight, the weight's decay per
        alternation and its ``input``: ``"raw"`` luminance or the denoised ``"estimation"``
        one; see :func:`~napari_glkm.backend.svola.camera_lambda_schedule`).
    kernel_grid:
        Non-uniform mode: ``(gy, gx, k, k)`` float32 current per-patch kernels (``None``
        before the local stage and in uniform mode).
    centres:
        Non-uniform mode: ``(gy, gx, 2)`` float (row, col) patch centres in image pixels.
    """

    iteration: int
    total: int
    stage: str
    kernel: np.ndarray
    loss: float
    elapsed: float
    final: bool = False
    history: list[float] = field(default_factory=list, repr=False)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    kernel_grid: np.ndarray | None = field(default=None, repr=False)
    centres: np.ndarray | None = field(default=None, repr=False)
    _render: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    @cached_property
    def image(self) -> np.ndarray:
        """Current sharp estimate in the input's layout and value range (float32)."""
        if self._render is None:
            raise RuntimeError("this step carries no image")
        return self._render()


@dataclass
class DeblurResult:
    """Outcome of :func:`napari_glkm.deblur`.

    Attributes
    ----------
    image:
        Restored image, the input's shape and value range, float32.
    kernel:
        ``(k, k)`` float32 estimated blur kernel (cross-correlation convention, sums to 1); in
        non-uniform mode the global (uniform) estimate.
    kernel_size:
        Kernel side in pixels.
    losses:
        Loss after every iteration, in order.
    timings:
        Seconds spent per stage and ``"total"``.
    info:
        ``noise_sigma``, ``crop`` and ``warm_start`` (see :class:`DeblurStep`).
    kernel_grid, centres:
        Non-uniform mode: ``(gy, gx, k, k)`` patch kernels and ``(gy, gx, 2)`` (row, col)
        patch centres; ``None`` in uniform mode.
    """

    image: np.ndarray
    kernel: np.ndarray
    kernel_size: int
    losses: list[float]
    timings: dict[str, float]
    info: dict = field(default_factory=dict)
    kernel_grid: np.ndarray | None = None
    centres: np.ndarray | None = None


def _make_kernel_prior(kernel_size: int, kernel_prior: str, weights, seed: int, device):
    if kernel_prior == "glkm":
        gen = load_generator(kernel_size, weights, at_least=True).to(device)
        return GeneratorKernelPrior(gen, seed=seed, crop=kernel_size).to(device)
    if kernel_prior == "free":
        if weights is not None:
            raise ValueError("weights= is the generator for kernel_prior='glkm'; the 'free' "
                             "kernel prior has no weights (drop one of the two options)")
        return FreeKernelPrior(kernel_size).to(device)
    raise ValueError(f"unknown kernel_prior {kernel_prior!r}; expected 'glkm' or 'free'")


def _options(preset: str, iterations: int | None, preview_every: int | None) -> DeblurOptions:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    opts = PRESETS[preset]
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        opts = replace(opts, pyramid=replace(opts.pyramid, outer_iters=int(iterations)))
    if preview_every is not None:
        if isinstance(preview_every, bool) or not isinstance(preview_every, (int, np.integer)) or preview_every < 1:
            raise ValueError(f"preview_every must be a positive integer, got {preview_every!r}")
        opts = replace(opts, preview_every=int(preview_every))
    return opts


def restore_steps(
    prepared: PreparedImage, kernel: torch.Tensor, opts: DeblurOptions, *,
    noise: float | str = "auto", saturation: float | str = "auto",
) -> Iterator[tuple[int, int, tuple[np.ndarray, dict] | None]]:
    """The final step as a generator: every channel of ``prepared`` restored with ``kernel``
    ``(1, 1, k, k)`` by hyper-Laplacian deconvolution, the weight adapted to the noise level and
    saturated pixels left out of the data term (options as in :func:`iter_deblur`).

    Images above ``TILE_PIXELS`` are restored in overlapping tiles (bounded memory); between
    tiles it yields ``(tiles_done, n_tiles, None)``. The last item is ``(n, n, (image, facts))``
    with the image in the input's layout and range and ``facts = {"noise_sigma": ...,
    "final_lambda": ..., "saturated_fraction": ...}``.
    """
    noise = check_noise(noise)
    threshold = check_saturation(saturation)
    sigma = estimate_noise(prepared.luminance()) if not isinstance(noise, float) else noise
    lam = opts.final_lambda if noise == "off" else noise_lambda(opts.final_lambda, sigma)
    y = torch.from_numpy(prepared.data).permute(2, 0, 1)[None].to(kernel.device)
    weight, frac = None, 0.0
    if threshold is not None:
        mask = saturated_mask(prepared.data, threshold)
        frac = float(mask.any(axis=-1).mean())
        w_np = restoration_weight(mask, kernel.shape[-1])
        if w_np is not None:
            weight = torch.from_numpy(w_np)[None, None].to(kernel.device, y.dtype)
    kw = dict(lam=lam, alpha=opts.final_alpha, outer=opts.final_iters, weight=weight)
    k = kernel.to(y.dtype)
    if y.shape[-2] * y.shape[-1] <= TILE_PIXELS:
        x, n = sparse_deconv(y, k, **kw), 1
    else:
        for done, n, x in iter_sparse_deconv_tiled(y, k, tile=TILE_SIDE, **kw):
            if done < n:
                yield done, n, None
    x = x.clamp(0, 1)
    fit = fit_ratio(y, x, k, sigma, weight)
    x = x[0].permute(1, 2, 0).cpu().numpy()
    facts = {"noise_sigma": sigma, "final_lambda": lam, "saturated_fraction": frac,
             "fit_ratio": fit}
    yield n, n, (prepared.to_user_range(x), facts)


# A restoration whose re-blurred luminance misses the input by more than this many times the
# noise variance did not come from a kernel that explains the image: on Levin's 32 blurs every
# good estimate scores <= 0.83 and the one failure (im4_kernel4, 21.8 dB) 55; on 25 BSDS val
# blurs at 1 % noise good estimates score 0.5-2 (one 9.5) and failed ones 20-130; uniform mode on
# the synthetic non-uniform fields at 0.3 % noise scores 73 and 107 on the two photos where it
# fell below the blurry input, at most 2.1 on the others (docs/reliability.md). A low score does
# not prove success: a delta kernel (no deblurring) explains any image.
FIT_WARN = 20.0


def fit_ratio(y: torch.Tensor, x: torch.Tensor, k: torch.Tensor, sigma: float,
              weight: torch.Tensor | None = None, max_side: int = 1024) -> float:
    """How well the restoration ``x`` explains the blurry ``y`` (both ``(1, C, H, W)`` in [0, 1])
    under kernel ``k``: the mean squared residual of the re-blurred luminance over the trusted
    pixels (``weight``; a kernel-wide border left out) divided by the noise variance
    ``max(sigma, NOISE_FLOOR)²``. About 1 or less for an estimate that explains the data; a
    failed estimate scores tens to hundreds (:data:`FIT_WARN`). Computed on the central
    ``max_side``-pixel square, so it costs one small FFT convolution at any image size."""
    h, w = y.shape[-2:]
    r0, c0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    crop = (..., slice(r0, r0 + max_side), slice(c0, c0 + max_side))
    y, x = y[crop], x[crop]  # crop first: no full-size temporaries on a huge image
    if y.shape[1] == 3:
        lum = torch.from_numpy(LUMA_WEIGHTS).to(y.device, y.dtype)[:, None, None]
        y, x = (y * lum).sum(1, keepdim=True), (x * lum).sum(1, keepdim=True)
    wc = None if weight is None else weight[crop]
    res = restored_scores(y, x, k.to(y.dtype), weight=wc, margin=k.shape[-1])
    return res["residual"] / max(float(sigma), NOISE_FLOOR) ** 2


def restore_with_kernel(
    prepared: PreparedImage, kernel: torch.Tensor, opts: DeblurOptions, *,
    noise: float | str = "auto", saturation: float | str = "auto",
) -> tuple[np.ndarray, dict]:
    """:func:`restore_steps` run to the end: returns ``(image, facts)``."""
    result = None
    for _done, _n, result in restore_steps(prepared, kernel, opts, noise=noise,
                                           saturation=saturation):
        pass
    return result


def _preview(prepared: PreparedImage, kernel: torch.Tensor,
             nsr: float = 3e-3) -> Callable[[], np.ndarray]:
    def render() -> np.ndarray:
        with torch.no_grad():
            y = torch.from_numpy(prepared.data).permute(2, 0, 1)[None].to(kernel.device)
            x = wiener_deconv(y, kernel, nsr=nsr).clamp(0, 1)
        return prepared.to_user_range(x[0].permute(1, 2, 0).cpu().numpy())
    return render


def iter_deblur(
    image: np.ndarray,
    *,
    kernel_size: int | str = "auto",
    preset: str = "default",
    device: str = "auto",
    seed: int = 0,
    iterations: int | None = None,
    kernel_prior: str = "glkm",
    weights: str | None = None,
    preview_every: int | None = None,
    roi: tuple[int, int, int, int] | None = None,
    init_kernel: np.ndarray | None = None,
    init: str = "network",
    initializer: str | None = None,
    nonuniform: bool = False,
    grid: int | tuple[int, int] | None = None,
    patch_size: int | None = None,
    overlap: float | None = None,
    smoothness: float | None = None,
    blur_model: str | None = None,
    noise: float | str = "auto",
    saturation: float | str = "auto",
    prior: str | None = None,
    diffusion_model: str | None = None,
) -> Iterator[DeblurStep]:
    """Blind deblurring as a generator of :class:`DeblurStep` snapshots.

    Parameters
    ----------
    image:
        ``(H, W)`` gray or ``(H, W, 3)`` / ``(H, W, 4)`` colour; uint8, uint16, other integers or
        float. Never modified.
    kernel_size:
        ``"auto"`` (default): chosen from the image among the sizes the kernel prior serves
        (23 and 31 with the shipped generator, 15 for images too small for those; larger
        ones when their generators ship), by a
        quick half-resolution estimate with the largest size (see
        :mod:`napari_glkm.backend.kernel_size`; about a second). If that estimate fills the
        largest size, the blur may be larger: a ``UserWarning`` says so. The choice is in
        ``info["kernel_size"]`` and ``info["auto_size"]``. Or an odd integer: side of the
        kernel in pixels, at most the generator's size unless ``kernel_prior="free"``.
    preset:
        ``"fast"``, ``"default"`` or ``"quality"``.
    device:
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    seed:
        Seed of the random starting kernel and of the networks.
    iterations:
        Overrides the alternations per pyramid scale of the kernel stage.
    kernel_prior:
        ``"glkm"`` (trained generator, default) or ``"free"`` (softmax of free pixels).
    weights:
        Path of a generator file to use instead of the shipped one.
    preview_every:
        Yield a snapshot every this many iterations (and always the last).
    roi:
        ``(row0, col0, row1, col1)``: estimate the kernel inside this rectangle (half-open, in
        pixels) instead of the automatically chosen window; the whole image is restored.
    init_kernel:
        ``(k, k)`` kernel to start from (e.g. the previous frame's): only the two finest pyramid
        levels are run, which is several times faster.
    init:
        ``"network"`` (default): the kernel initializer (a ResNet-18 trained with the
        generator) predicts the starting kernel and feature map from the blurry image;
        ``"random"``: start from a small centred line and a random latent. Without an
        initializer for the generator's size, ``"network"`` falls back to ``"random"``
        (reported in ``info["init"]``). Ignored when ``init_kernel`` is given.
    initializer:
        Path of an initializer file (ours or an official ``netE_{k}.pth``) instead of the
        shipped one.
    nonuniform:
        Estimate a spatially varying blur (SVOLA): one kernel per patch of a grid, started
        from the global kernel; see :mod:`napari_glkm.backend.svola`.
    grid:
        Non-uniform mode: patches per side, ``n`` or ``(gy, gx)`` (default 3, fewer when the
        image is too small for patches of at least ``2 * kernel_size`` pixels).
    patch_size:
        Non-uniform mode: patch side in pixels instead of ``grid``.
    overlap:
        Non-uniform mode: overlap fraction of neighbouring patches, in [0, 0.9] (default 0.5).
    smoothness:
        Non-uniform mode: weight of the penalty between neighbouring patches' feature maps
        (default 1.0; 0 disables it).
    blur_model:
        Non-uniform mode: how the patch kernels are estimated. ``"camera"`` (default): from
        one camera motion shared by all patches — translation plus in-plane roll, the way a
        hand-held camera shakes — so every kernel is backed by the whole image; ``"free"``:
        an independent kernel per patch, projected into the GLKM prior (any smooth blur
        field, e.g. depth- or object-dependent, but each kernel sees one patch's data);
        ``"camera+free"``: free patch kernels started from the camera model's.
    noise:
        ``"auto"`` (default): estimate the noise level (robust median of the finest wavelet
        band, :func:`~napari_glkm.backend.noise.estimate_noise`) and adapt to it — the image
        is TV-denoised before kernel estimation (above 0.3 %) and the final deconvolution's
        regularisation follows the noise (lighter below 1 %, heavier above); a number: the
        noise standard deviation in units of the image's value range (0.02 = 2 %), adapted to
        the same way; ``"off"``: no adaptation (no denoising, the preset's fixed weight). The
        level used is reported in ``info["noise_sigma"]``.
    saturation:
        ``"auto"`` (default): pixels at or above 98 % of the value range (any channel) are
        treated as clipped — excluded, with their blur footprint, from kernel estimation and
        left out of the final deconvolution's data term; a number in (0, 1]: that threshold;
        ``"off"``: every pixel is trusted. ``info["saturated_fraction"]`` reports the share
        of clipped pixels.
    prior:
        Image prior of the joint image + kernel stage that refines the GLKM kernel:
        ``"dip"`` (Deep Image Prior, the paper's DIP-GLKM), ``"vdip"`` (variational DIP,
        :mod:`~napari_glkm.backend.priors.vdip`) or ``"none"`` (skip the stage: the kernel
        from the coarse-to-fine estimate and its GLKM projection is final). ``None`` (default)
        keeps the preset's choice: ``"none"`` for ``fast`` and ``default``, ``"dip"`` for
        ``quality``. With ``fast``/``default`` an explicit prior runs
        ``PRIOR_ITERS[preset]`` iterations (150 / 400) of a 64-channel network.
        ``"diffusion"`` uses a denoising diffusion model (fast DDIM inversion, BIRD style) on
        the luminance crop for ``DIFFUSION_ITERS[preset]`` iterations (60 / 120 / 300).
    diffusion_model:
        With ``prior="diffusion"``: ``None`` (the shipped model), a ``.safetensors`` file from
        ``napari-glkm train-diffusion``, or a folder with a ``diffusers`` ``UNet2DModel``
        (``config.json`` + ``diffusion_pytorch_model.safetensors``; needs ``diffusers``).

    Yields
    ------
    DeblurStep
        Snapshots; the last has ``final=True`` and the restored image.

    Example
    -------
    >>> import numpy as np
    >>> from napari_glkm import iter_deblur
    >>> img = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    >>> for step in iter_deblur(img, preset="fast", iterations=1):
    ...     pass
    >>> step.final, step.image.shape
    (True, (96, 96))
    """
    opts = _options(preset, iterations, preview_every)
    opts = _with_image_prior(opts, preset, prior, diffusion_model)
    noise = check_noise(noise)
    sat_threshold = check_saturation(saturation)
    if kernel_prior not in ("glkm", "free"):
        raise ValueError(f"unknown kernel_prior {kernel_prior!r}; expected 'glkm' or 'free'")
    candidates = None
    if isinstance(kernel_size, str) and kernel_size == "auto":
        offered = candidate_sizes(_largest_size(kernel_prior, weights))
        floor = min(offered + (AUTO_FALLBACK_SIZE,))  # for images too small for the others
        prepared = prepare_image(image, floor)
        side = min(prepared.data.shape[:2])
        if roi is not None:
            r0, c0, r1, c1 = _check_roi(roi, prepared.data.shape[:2], floor)
            side = min(side, r1 - r0, c1 - c0)
        candidates = tuple(c for c in offered if min_image_side(c) <= side) or (floor,)
        if init_kernel is not None:  # a warm start fixes the size: the kernel's own, if served
            n = np.shape(init_kernel)[0] if np.ndim(init_kernel) == 2 else 0
            fits = [c for c in candidates if c >= n]
            kernel_size, candidates = (fits[0] if fits else candidates[-1]), None
        elif len(candidates) == 1:
            kernel_size, candidates = candidates[0], None
        else:
            kernel_size = candidates[-1]
    else:
        if isinstance(kernel_size, str):
            raise ValueError(f"kernel_size must be 'auto' or an odd integer, got {kernel_size!r}")
        kernel_size = check_kernel_size(kernel_size)
        prepared = prepare_image(image, kernel_size)
    dev = resolve_device(device)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    box = _check_roi(roi, prepared.data.shape[:2], kernel_size)
    start_kernel = _check_init_kernel(init_kernel, kernel_size)
    patch_grid = None
    if not isinstance(nonuniform, (bool, np.bool_)):
        raise ValueError(f"nonuniform must be True or False, got {nonuniform!r}")
    settings = _RunSettings(noise=noise, saturation=sat_threshold, candidates=candidates,
                            denoise_strength=2.0 if nonuniform else None)
    if nonuniform and candidates is not None:  # the patch grid depends on the size: choose now
        lum, weight, _ = _estimation_input(prepared, settings, candidates[-1])
        kernel_size = _auto_size(lum, weight, candidates, opts, box)[0].size
        settings = replace(settings, candidates=None, chosen_eagerly=True)
    if nonuniform:
        opts, patch_grid = _svola_options(opts, prepared.data.shape[:2], kernel_size, grid,
                                          patch_size, overlap, smoothness, blur_model)
        # no re-centring in SVOLA mode: the patch kernels are estimated around the global one
        # and blended across patches; measured on the two-kernel test, re-centring the global
        # kernel left the vertical patch kernel behind it (distance 0.358 vs 0.355)
        opts = replace(opts, pyramid=replace(opts.pyramid, center=False))
    elif any(v is not None for v in (grid, patch_size, overlap, smoothness, blur_model)):
        raise ValueError("grid, patch_size, overlap, smoothness and blur_model need "
                         "nonuniform=True")
    torch.manual_seed(seed)
    prior = _make_kernel_prior(kernel_size, kernel_prior, weights, seed, dev)
    encoder, init_info = _make_initializer(init, initializer, prior, start_kernel is not None, dev)
    # Everything is checked: errors above surface at the call, not at the first next().

    def run_on(d: torch.device) -> Iterator[DeblurStep]:
        return _run(prepared, prior.to(d), kernel_size, opts, d, int(seed), box, start_kernel,
                    None if encoder is None else encoder.to(d), init_info, patch_grid, settings)

    return with_oom_fallback(run_on, dev)


#: Iterations of the image-prior stage when a prior is asked for with a preset that has none.
PRIOR_ITERS = {"fast": 150, "default": 400}
IMAGE_PRIORS = ("none", "dip", "vdip", "diffusion")
#: Iterations and DDIM steps of the diffusion-prior stage per preset (an iteration costs
#: ``ddim_steps`` UNet passes forward and back, ~1.2 s each at 285² on one idle CPU thread).
DIFFUSION_ITERS = {"fast": 60, "default": 120, "quality": 300}
DIFFUSION_DDIM_STEPS = {"fast": 1, "default": 2, "quality": 2}


def _with_image_prior(opts: DeblurOptions, preset: str, prior: str | None,
                      diffusion_model=None) -> DeblurOptions:
    if diffusion_model is not None and prior != "diffusion":
        raise ValueError("diffusion_model= needs prior='diffusion'")
    if prior is None:
        return opts
    if prior not in IMAGE_PRIORS:
        raise ValueError(f"unknown prior {prior!r}; expected one of {', '.join(IMAGE_PRIORS)}")
    if prior == "diffusion":
        from .priors.diffusion import load_diffusion_model

        n = DIFFUSION_ITERS[preset]
        return replace(opts, dip=replace(
            opts.dip, kind="diffusion", iters=n, image_lr=0.05, kernel_lr=5e-3,
            kernel_warmup=n // 10, diffusion_t=50, ddim_steps=DIFFUSION_DDIM_STEPS[preset],
            diffusion_model=load_diffusion_model(diffusion_model)))
    if prior == "none":
        return replace(opts, dip=replace(opts.dip, iters=0))
    dip = opts.dip
    if dip.iters == 0:
        n = PRIOR_ITERS[preset]
        dip = replace(dip, iters=n, channels=64, mse_iters=n // 10, kernel_warmup=n // 10)
    return replace(opts, dip=replace(dip, kind=prior))


AUTO_FALLBACK_SIZE = 15


@dataclass(frozen=True)
class _RunSettings:
    """Photo options of one run: noise (``"auto"``, ``"off"`` or sigma), saturation threshold
    (``None``: off) and the kernel sizes left to choose from (``None``: size fixed)."""

    noise: float | str = "auto"
    saturation: float | None = None
    candidates: tuple[int, ...] | None = None
    chosen_eagerly: bool = False
    # TV strength of the pre-estimation denoising (None: adapted to the noise, see
    # denoise_for_kernel_estimation). SVOLA keeps 2: its patch kernels see a fraction of the
    # pixels, and with 1 the two-kernel test's kernels came out farther from the truth
    # (distances 0.46/0.47 vs 0.31/0.36 with 2, at 0.5 % noise).
    denoise_strength: float | None = None


def _largest_size(kernel_prior: str, weights) -> int:
    """Largest kernel size the prior can serve: the user generator's size, else the largest
    shipped generator's (31 today)."""
    if kernel_prior == "glkm" and weights is not None:
        return load_generator(3, weights, at_least=True).size
    sizes = [e.kernel_size for e in shipped_weights() if e.role == "generator"]
    return max(sizes) if sizes else 31


def _estimation_input(prepared: PreparedImage, settings: _RunSettings, kernel_size: int):
    """Luminance for kernel estimation (denoised unless noise is off), its saturation weight
    ``(H, W)`` (or ``None``) and facts for ``info``."""
    lum_np = prepared.luminance()
    est = estimate_noise(lum_np)
    sigma = settings.noise if isinstance(settings.noise, float) else est
    facts = {"noise_sigma": sigma, "noise_estimate": est, "noise_mode": (
        "given" if isinstance(settings.noise, float) else settings.noise)}
    lum_d = lum_np if settings.noise == "off" else denoise_for_kernel_estimation(
        lum_np, sigma, strength=settings.denoise_strength)
    w = None
    facts["saturated_fraction"] = 0.0
    if settings.saturation is not None:
        mask = saturated_mask(prepared.data, settings.saturation)
        facts["saturated_fraction"] = float(mask.any(axis=-1).mean())
        w, dropped = _saturation_weight(mask, kernel_size)
        if dropped:
            facts["saturation_note"] = ("more than 80 % of the image is within a kernel of a "
                                        "clipped pixel: saturated pixels were not excluded")
    lum = torch.from_numpy(np.ascontiguousarray(lum_d))[None, None]
    return lum, w, facts


def _saturation_weight(mask: np.ndarray, kernel_size: int) -> tuple[torch.Tensor | None, bool]:
    """Kernel-estimation weight ``(1, 1, H, W)`` for saturation ``mask`` and a kernel size (0
    within a kernel of a clipped pixel), or ``None`` when nothing is clipped or when more than
    80 % of the image would be excluded — then nothing is, and the flag says so."""
    weight = estimation_weight(mask, kernel_size)
    if weight is None:
        return None, False
    if weight.mean() < 0.2:
        return None, True
    return torch.from_numpy(weight)[None, None], False


def _auto_size(lum: torch.Tensor, weight, candidates, opts: DeblurOptions, roi):
    """Run the automatic size choice (on the ROI if one is given)."""
    if roi is not None:
        lum = lum[..., roi[0] : roi[2], roi[1] : roi[3]]
        weight = None if weight is None else weight[..., roi[0] : roi[2], roi[1] : roi[3]]
    choice = choose_kernel_size(lum, candidates, opts.auto_size, opts.pyramid, weight=weight)
    note = None
    if choice.exceeds:
        note = (f"the blur may be larger than {candidates[-1]} px, the largest kernel size "
                f"available (the quick estimate's tails span {choice.tail_support:.0f} px); "
                f"results may be poor. "
                f"Larger kernels need a generator trained for them (napari-glkm "
                f"train-generator --size 55|75, then weights=...)")
    return choice, note


def _resized_prior(prior, size: int, seed: int):
    """``prior`` re-made for kernel ``size`` (GLKM: the same generator, centre-cropped)."""
    if isinstance(prior, GeneratorKernelPrior):
        return GeneratorKernelPrior(prior.generator, seed=seed, crop=size).to(prior.fmap.device)
    return FreeKernelPrior(size).to(next(prior.parameters()).device)


def _make_initializer(init: str, path, prior, warm: bool, dev: torch.device):
    """The initializer network to use (or None) and the ``info["init"]`` text."""
    if init not in ("network", "random"):
        raise ValueError(f"unknown init {init!r}; expected 'network' or 'random'")
    if warm:
        return None, "warm start (init_kernel)"
    if init == "random" or not isinstance(prior, GeneratorKernelPrior):
        if path is not None:
            raise ValueError("initializer= needs init='network' and kernel_prior='glkm'")
        return None, "random"
    size = prior.generator.size
    if path is None and not has_shipped("initializer", size):
        return None, f"random (no initializer shipped for generator size {size})"
    net = load_initializer(size, path).to(dev)
    return net, "network"


def _svola_options(opts: DeblurOptions, shape, kernel_size: int, grid, patch_size, overlap,
                   smoothness, blur_model=None) -> tuple[DeblurOptions, PatchGrid]:
    cfg = opts.svola
    if blur_model is not None:
        if blur_model not in LOCAL_MODELS:
            raise ValueError(f"blur_model must be one of {', '.join(LOCAL_MODELS)}, "
                             f"got {blur_model!r}")
        cfg = replace(cfg, local_model=blur_model)
    if overlap is not None:
        cfg = replace(cfg, overlap=overlap)
    if smoothness is not None:
        if isinstance(smoothness, bool) or not isinstance(smoothness, (int, float, np.floating)) \
                or not np.isfinite(smoothness) or smoothness < 0:
            raise ValueError(f"smoothness must be a non-negative number, got {smoothness!r}")
        cfg = replace(cfg, smoothness=float(smoothness))
    patch_grid = make_patch_grid(shape, kernel_size, grid=grid, patch_size=patch_size,
                                 overlap=cfg.overlap, default_grid=cfg.default_grid)
    return replace(opts, svola=replace(cfg, grid=patch_grid.grid)), patch_grid


def _check_roi(roi, shape: tuple[int, int], kernel_size: int) -> tuple[int, int, int, int] | None:
    if roi is None:
        return None
    try:
        r0, c0, r1, c1 = (int(v) for v in roi)
    except (TypeError, ValueError):
        raise ValueError(f"roi must be (row0, col0, row1, col1), got {roi!r}") from None
    h, w = shape
    r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, h), min(c1, w)
    need = min_image_side(kernel_size)
    if r1 - r0 < need or c1 - c0 < need:
        raise ValueError(
            f"the region of interest must lie in the image and be at least {need} x {need} "
            f"pixels for kernel size {kernel_size}; got rows {r0}:{r1}, columns {c0}:{c1}"
        )
    return r0, c0, r1, c1


def _check_init_kernel(k, kernel_size: int) -> torch.Tensor | None:
    if k is None:
        return None
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
        raise ValueError(f"init_kernel must be a square (k, k) array with odd k, got {k.shape}")
    if not np.all(np.isfinite(k)) or k.min() < 0 or k.sum() <= 0:
        raise ValueError("init_kernel must be finite, non-negative and not all zero")
    n = k.shape[0]
    if n < kernel_size:  # zero-pad, centred: a kernel's scale must not change
        m = (kernel_size - n) // 2
        k = np.pad(k, m)
    elif n > kernel_size:  # keep the centre
        m = (n - kernel_size) // 2
        k = k[m : m + kernel_size, m : m + kernel_size]
        if k.sum() <= 0:
            raise ValueError(f"init_kernel has no mass in its central {kernel_size} x {kernel_size} pixels")
    return torch.from_numpy(k / k.sum()).float()[None, None]


def _network_start(encoder, prior, y_raw: torch.Tensor) -> torch.Tensor:
    """Predict the latent from the raw luminance crop; set the prior's feature map from it and
    return the starting kernel ``(1, 1, k, k)``."""
    with torch.no_grad():
        z = encoder(y_raw.float())
        prior.fmap.data.copy_(prior.generator.features(z))
        return prior().detach()


def _run(
    prepared: PreparedImage, prior, kernel_size: int, opts: DeblurOptions, dev: torch.device,
    seed: int, roi: tuple[int, int, int, int] | None, init: torch.Tensor | None,
    encoder=None, init_info: str = "random",
    patch_grid: PatchGrid | None = None,
    settings: _RunSettings = _RunSettings(),
) -> Iterator[DeblurStep]:
    t_start = time.perf_counter()
    lum_np = prepared.luminance()
    lum, weight, facts = _estimation_input(prepared, settings, kernel_size)
    info = dict(facts)
    weight_size = kernel_size  # the size whose saturation footprint ``weight`` is
    tried = (kernel_size,)  # sizes whose kernels are estimated (two when auto compares)
    if settings.candidates is not None:
        choice, note = _auto_size(lum, weight, settings.candidates, opts, roi)
        info["auto_size"] = choice.as_info()
        timings_size = choice.seconds
        if note is not None:
            info["kernel_size_note"] = note
            warnings.warn(note, UserWarning, stacklevel=2)
        # A blur beyond the largest size truncates every candidate: when the quick choice is
        # the largest size and the blur may exceed it, the largest is kept without comparing.
        compare = opts.auto_size.compare and not (
            choice.exceeds and choice.size == max(settings.candidates))
        tried = compared_sizes(choice.size, settings.candidates) if compare else (choice.size,)
        kernel_size = tried[0]
    sat_mask = None if settings.saturation is None else \
        saturated_mask(prepared.data, settings.saturation)
    est_mask = sat_mask if weight is not None else None  # None: estimation uses every pixel
    if est_mask is not None and kernel_size != weight_size:  # footprint of the first size
        weight = _saturation_weight(est_mask, kernel_size)[0]
    if len(tried) == 1:
        info["kernel_size"] = kernel_size
    info["kernel_size_mode"] = "auto" if settings.candidates is not None or \
        settings.chosen_eagerly else "fixed"
    lum = lum.to(dev)
    weight = None if weight is None else weight.to(dev)
    if roi is None:
        side = opts.pyramid.max_side
        r, c = informative_crop(lum if weight is None else lum * weight, side)
        h, w = min(side, lum.shape[-2] - r), min(side, lum.shape[-1] - c)
    else:
        r, c, h, w = roi[0], roi[1], roi[2] - roi[0], roi[3] - roi[1]
    y = lum[..., r : r + h, c : c + w]
    wy = None if weight is None else weight[..., r : r + h, c : c + w]
    y_raw = torch.from_numpy(np.ascontiguousarray(lum_np))[None, None][..., r : r + h, c : c + w]
    y_raw = y_raw.to(dev)
    guard = DivergenceGuard()
    info.update({"crop": (r, c, int(h), int(w)), "warm_start": init is not None,
                 "init": init_info, "recovered": guard.events})
    sigma = info["noise_sigma"]
    # the live preview (Wiener) keeps at least its clean-image damping: it has no prior
    nsr = 3e-3 if settings.noise == "off" else max(3e-3, noise_lambda(3e-3, sigma))
    lam_final = opts.final_lambda if settings.noise == "off" else \
        noise_lambda(opts.final_lambda, sigma)
    levels = 2 if init is not None else opts.init_levels if encoder is not None else None

    def n_kernel_iters(size: int) -> int:
        n_scales = len(pyramid_sizes(size, opts.pyramid.min_kernel, opts.pyramid.ratio))
        return min(n_scales, levels or n_scales) * opts.pyramid.outer_iters + \
            opts.pyramid.refine_iters + 1

    n_proj = -(-opts.projection.steps // opts.projection.chunk)
    total = sum(n_kernel_iters(s) + n_proj for s in tried) + (len(tried) > 1) \
        + opts.dip.iters + 1
    if patch_grid is not None:
        total += n_local_iterations(opts.svola)
        info.update(grid=patch_grid.grid, overlap=patch_grid.overlap,
                    patch_shape=patch_grid.patch_shape)
    timings: dict[str, float] = {}
    if settings.candidates is not None:
        timings["size"] = timings_size
    history: list[float] = []
    it = 0
    grid_now: list[np.ndarray | None] = [None]  # latest (gy, gx, k, k) kernel grid
    centres = None if patch_grid is None else patch_grid.centres.copy()

    def snapshot(stage: str, loss: float, k: torch.Tensor) -> DeblurStep:
        k = k.detach()
        return DeblurStep(it, total, stage, k[0, 0].cpu().numpy().copy(), loss,
                          time.perf_counter() - t_start, history=history, timings=dict(timings),
                          info=info, kernel_grid=grid_now[0], centres=centres,
                          _render=_preview(prepared, k, nsr))

    def record(stage: str, loss: float, k_fn) -> Iterator[DeblurStep]:
        nonlocal it
        history.append(loss)
        if it % opts.preview_every == 0:
            yield snapshot(stage, loss, k_fn())
        it += 1

    def estimate(size: int, prior_s, wy_s) -> Iterator[DeblurStep]:
        """Pixel kernel (coarse to fine), then its projection into the prior; returns the
        pixel kernel (``prior_s`` holds the projection)."""
        start = None if init is None else init.to(dev)
        if encoder is not None:
            t0 = time.perf_counter()
            start = _network_start(encoder, prior_s, y_raw)
            info["init_seconds"] = info.get("init_seconds", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        k_est = torch.empty(0)
        for loss, k_est in coarse_to_fine_stage(y, size, opts.pyramid, init=start,
                                                levels=levels, weight=wy_s, guard=guard):
            yield from record("kernel", loss, lambda: k_est)
        timings["kernel"] = timings.get("kernel", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        for loss in projection_stage(prior_s, k_est.detach(), opts.projection, guard=guard):
            yield from record("glkm", loss, lambda: prior_s())
        timings["glkm"] = timings.get("glkm", 0.0) + time.perf_counter() - t0
        return k_est.detach()

    def kernel_of(prior_s, k_est: torch.Tensor) -> torch.Tensor:
        if opts.final_kernel == "prior" or opts.dip.iters > 0:
            with torch.no_grad():
                return prior_s().detach()
        return k_est

    results = []  # (size, prior, pixel kernel, weight crop, restoration scores)
    for size in tried:
        torch.manual_seed(seed)  # each size's estimate is the one a fixed-size run makes
        prior_s, wy_s = prior, wy
        if size != prior.size:
            prior_s = _resized_prior(prior, size, seed)
        if est_mask is not None and size != tried[0]:
            w_s = _saturation_weight(est_mask, size)[0]
            wy_s = None if w_s is None else w_s.to(dev)[..., r : r + h, c : c + w]
        k_s = yield from estimate(size, prior_s, wy_s)
        fit = {"sparsity": float("nan"), "residual": float("nan")}
        if len(tried) > 1:
            t0 = time.perf_counter()
            w_rest = None  # saturated pixels out of the restoration, as in the final step
            w_np = None if sat_mask is None else restoration_weight(sat_mask, size)
            if w_np is not None:
                w_rest = torch.from_numpy(w_np)[None, None][..., r : r + h, c : c + w]
                w_rest = w_rest.to(dev, y_raw.dtype)
            fit = restoration_scores(y_raw, kernel_of(prior_s, k_s), lam=lam_final,
                                     alpha=opts.final_alpha, iters=opts.final_iters,
                                     weight=w_rest, margin=max(tried) // 2 + 5)
            timings["size"] = timings.get("size", 0.0) + time.perf_counter() - t0
        results.append((size, prior_s, k_s, wy_s, fit))
    # the sharpest, cleanest restoration (lowest normalised gradient sparsity) wins
    kernel_size, prior, k_est, wy, _ = min(results, key=lambda t: t[4]["sparsity"])
    if len(tried) > 1:
        info["kernel_size"] = kernel_size
        info["auto_size"]["scores"] = {str(t[0]): t[4] for t in results}
        yield from record("size", min(t[4]["sparsity"] for t in results),
                          lambda: kernel_of(prior, k_est))
    del results

    if opts.dip.iters > 0:
        t0 = time.perf_counter()
        for loss, _x in dip_stage(y, prior, opts.dip, seed=seed, guard=guard):
            yield from record("dip", loss, lambda: prior())
        timings["dip"] = time.perf_counter() - t0

    k = kernel_of(prior, k_est)
    patch_kernels = None
    if patch_grid is not None:
        gy, gx = patch_grid.grid

        def to_grid(ks: torch.Tensor) -> np.ndarray:
            return ks.detach()[:, 0].cpu().numpy().reshape(gy, gx, *ks.shape[-2:]).copy()

        t0 = time.perf_counter()
        k_loc = k
        local_pyr = replace(opts.pyramid, refine_iters=0)  # counted by n_local_iterations
        model = opts.svola.local_model
        anchor = k  # what the free patch kernels start from and are pulled towards
        if model in ("camera", "camera+free"):
            noise = None if settings.noise == "off" else sigma
            # on the noise ramp the camera model fits the luminance as it is: its larger L0
            # weight copes with the noise, and the pre-estimation denoising changes the blur
            # the density must explain (docs/benchmarks.md, Non-uniform)
            raw = camera_input_is_raw(opts.svola, noise)
            cam_lum = torch.from_numpy(np.ascontiguousarray(lum_np))[None, None].to(lum) \
                if raw else lum
            lam0, decay = camera_lambda_schedule(opts.svola, noise)
            info["camera_schedule"] = {"l0_lambda": lam0, "l0_decay": decay,
                                       "input": "raw" if raw else "estimation"}
            for loss, k_loc in camera_kernel_stage(cam_lum, patch_grid, k, local_pyr,
                                                   opts.svola, noise=noise):
                grid_now[0] = to_grid(k_loc)
                yield from record("local", loss, lambda: k)
            anchor = k_loc
        if model in ("free", "camera+free"):
            for loss, k_loc in local_kernel_stage(lum, patch_grid, anchor, local_pyr,
                                                  opts.svola):
                grid_now[0] = to_grid(k_loc)
                yield from record("local", loss, lambda: k)
        conf = patch_confidence(lum, patch_grid, opts.svola.anchor_energy).to(k.dtype)
        info["patch_confidence"] = conf.cpu().numpy().reshape(gy, gx)
        if model == "camera":  # a shared model: a flat patch's kernel is backed by the others
            targets = k_loc
        else:
            c4 = conf[:, None, None, None]
            targets = c4 * k_loc + (1 - c4) * anchor
        grid_now[0] = to_grid(targets)
        timings["local"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        patch_kernels = targets
        if isinstance(prior, GeneratorKernelPrior) and opts.svola.final_kernel_kind() == "prior":
            gprior = GeneratorKernelPrior(prior.generator, fmap=prior.fmap.detach().expand(
                patch_grid.n, -1, -1, -1).contiguous(), crop=prior.size)
            for loss in grid_projection_stage(gprior, targets, patch_grid, opts.svola,
                                              guard=guard):
                with torch.no_grad():
                    grid_now[0] = to_grid(gprior())
                yield from record("glkm-grid", loss, lambda: k)
            with torch.no_grad():
                patch_kernels = gprior().detach()
        if opts.svola.recentre:
            patch_kernels = recentre_kernels(patch_kernels, k)
        timings["glkm-grid"] = time.perf_counter() - t0
        if opts.svola.select:
            t0 = time.perf_counter()
            info["patch_candidates"] = to_grid(patch_kernels)
            with torch.no_grad():
                patch_kernels, sel = select_patch_kernels(
                    lum, patch_grid, k, patch_kernels, opts.pyramid.max_side, opts.svola)
            info["patch_energy_global"] = sel["energy_global"].cpu().numpy().reshape(gy, gx)
            info["patch_energy_local"] = sel["energy_local"].cpu().numpy().reshape(gy, gx)
            info["patch_local"] = sel["keep"].cpu().numpy().reshape(gy, gx)
            timings["select"] = time.perf_counter() - t0
        grid_now[0] = to_grid(patch_kernels)
        if opts.svola.select and not bool(sel["keep"].any()):
            patch_kernels = None  # every patch keeps the global kernel: the uniform restoration

    t0 = time.perf_counter()
    if not all_finite([k]):  # every stage rolls back non-finite steps; belt and braces
        raise DivergenceError("the kernel estimate is not finite; try another seed")
    k = k.detach()
    if patch_kernels is None:
        # No torch.no_grad() around a yield: it would leak into the caller's code.
        for done, n_tiles, result in restore_steps(
                prepared, k, opts, noise=sigma if settings.noise != "off" else "off",
                saturation=settings.saturation if settings.saturation is not None else "off"):
            if result is None:  # a large image, between tiles: report, allow a stop
                info["final_tiles"] = (done, n_tiles)
                yield snapshot("final", history[-1] if history else float("nan"), k)
        restored, final_info = result
        info["final_lambda"] = final_info["final_lambda"]
        info["fit_ratio"] = final_info["fit_ratio"]
        if final_info["fit_ratio"] > FIT_WARN:
            note = (f"the kernel estimate does not explain the image (re-blurred, the result "
                    f"misses the input by {final_info['fit_ratio']:.0f} times the noise "
                    f"variance); if the blur varies across the image try nonuniform=True, "
                    f"otherwise another kernel_size or a region of interest")
            info["fit_note"] = note
            warnings.warn(note, UserWarning, stacklevel=2)
    else:
        lam = opts.final_lambda if settings.noise == "off" else \
            noise_lambda(opts.final_lambda, sigma)
        info["final_lambda"] = lam
        with torch.no_grad():
            restored = _restore_svola(prepared, patch_kernels, patch_grid,
                                      replace(opts, final_lambda=lam))
    with torch.no_grad():
        if not np.all(np.isfinite(restored)):
            guard.note("final", it, "non-finite restoration replaced by Wiener deconvolution")
            restored = _preview(prepared, k, nsr)()
            if not np.all(np.isfinite(restored)):
                raise DivergenceError("the restoration is not finite; try another seed")
    timings["final"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    yield DeblurStep(it, total, "final", k[0, 0].cpu().numpy().copy(),
                     history[-1] if history else float("nan"), timings["total"], final=True,
                     history=history, timings=timings, info=info, kernel_grid=grid_now[0],
                     centres=centres, _render=lambda: restored)


def _restore_svola(prepared: PreparedImage, kernels: torch.Tensor, grid: PatchGrid,
                   opts: DeblurOptions) -> np.ndarray:
    y = torch.from_numpy(prepared.data).permute(2, 0, 1)[None].to(kernels.device)
    x = svola_restore(y, kernels, grid, lam=opts.final_lambda, alpha=opts.final_alpha,
                      outer=opts.final_iters)
    x = x.clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return prepared.to_user_range(x)
