"""Non-uniform (SVOLA) blind deblurring: patch grid, local kernels, joint GLKM projection.

Schedule (global -> local), run by :func:`~napari_glkm.backend.solver.iter_deblur` with
``nonuniform=True`` after the uniform kernel and GLKM stages. The local stage has two models
(``SVOLAConfig.local_model``, the API's ``blur_model``):

**camera** (default) — the patch kernels are views of one camera motion: a density over kernel
offset and in-plane roll angle, shared by all patches (:class:`MotionDensityMap`,
:func:`camera_kernel_stage`). Every kernel is backed by the whole image's data, and the
kernels vary across the image the way a shaken camera's do (translation everywhere, roll
growing with the distance from the centre). Its kernels are used as estimated
(``final_kernel="auto"``), re-centred as below.

**free** — the steps below: an independent pixel kernel per patch, projected into the GLKM
prior. It represents any smooth blur field (depth, moving objects), but each kernel sees only
its patch's data. ``camera+free`` starts the free kernels from the camera model's.

1. **local** — every patch of a ``gy x gx`` grid (overlapping, see :class:`PatchGrid`) gets a
   pixel kernel by the same L0 / least-squares alternation as the global stage, warm-started
   from the global kernel on the two finest pyramid levels; all patches run as one batch. The
   kernel step is kept near the global kernel ``k_g``: a proximity term
   ``prox · (Σ||∇x||²) · ||k_p - k_g||²`` and a support restricted to ``k_g``'s support dilated
   by ``support_radius`` pixels (rotation- or scale-varying blur stays near that support).
2. **trust** — patches with little texture (gradient energy below ``anchor_energy`` times the
   median patch's) cannot constrain a kernel: their target is blended towards the global kernel
   in proportion (``confidence`` in [0, 1]).
3. **glkm-grid** — the ``P`` feature maps of the generator's first layer, all started from the
   global kernel's map, are fitted jointly (one generator call per step for all patches) to
   those targets: ``Σ_p ||G(F_p) - t_p||_1 + smoothness Σ_{p~q} mean((F_p - F_q)²)`` over
   4-neighbours, so the GLKM prior and the neighbours regularise noisy patch estimates. The
   results are shifted by whole pixels to ``k_g``'s centre of mass (``recentre``).
4. **select** (opt-in, ``select=True``) — model selection per patch: the patch kernel is kept
   only if its L0 deblurring energy on the patch (:func:`l0_energy`) is lower than ``k_g``'s by
   more than ``select_margin`` (relative); otherwise the patch uses ``k_g`` exactly. If no patch
   keeps its own kernel the restoration is the uniform one. Off by default: on ~128-pixel
   patches the energy of the *true* kernel was higher than the global estimate's in 13 of 27
   patches of the synthetic benchmark, and dropping the step gained +0.3 dB there while Levin
   (uniform blur) stayed above the uniform mode (docs/benchmarks.md, Non-uniform).
5. **final** — hyper-Laplacian deconvolution on the SVOLA model (conjugate gradients on the
   normal equations of ``Σ_p (w_p ⊙ x) ⋆ k_p``) at full resolution.

No public GLKM code covers the non-uniform case; patch size, overlap, windows and schedule are
ours (docs/algorithm.md, "Non-uniform blur").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch

from .blur import svola_adjoint, svola_blur, svola_windows, svola_windows_1d
from .kernel_prior import GeneratorKernelPrior, resize_kernel
from .blur import conv_valid
from .nonblind import l0_deconv, sparse_deconv_op
from .safety import DivergenceGuard
from .stages import (PyramidConfig, _downscale, _grads, coarse_to_fine_stage, dilated_support,
                     kernel_centroid, threshold_kernel)
from .validation import min_image_side

__all__ = ["SVOLAConfig", "PatchGrid", "make_patch_grid", "local_kernel_stage",
           "camera_kernel_stage", "camera_lambda_schedule", "LatentFn", "camera_input_is_raw",
           "MotionDensityMap", "roll_geometry",
           "patch_confidence", "grid_projection_stage", "svola_restore", "l0_energy",
           "recentre_kernels", "select_patch_kernels"]


LOCAL_MODELS = ("camera", "free", "camera+free")

# the camera model's latent: (patches (P, 1, h, w), kernels (P, 1, s, s), L0 weight) -> the
# sharp patches (P, 1, h + s - 1, w + s - 1) (see camera_kernel_stage)
LatentFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@dataclass(frozen=True)
class SVOLAConfig:
    """Settings of the non-uniform mode.

    grid / patch_size:
        Patches per side ``(gy, gx)``, or the patch side in pixels (the grid follows); at most
        one of them; neither gives ``default_grid`` (reduced if the image is too small).
    overlap:
        Fraction of a patch shared with its neighbour, in [0, 0.9].
    smoothness:
        Weight of the feature-map difference between neighbouring patches.
    prox / support_radius:
        Pull of the patch kernels towards the global kernel (relative to the data term) and
        the dilation (pixels at full kernel size) of the global support they are confined to.
    select / select_lambda / select_margin:
        Per-patch model selection, off by default (L0 energy with ``select_lambda``; the patch
        kernel must beat the global kernel by the relative ``select_margin``).
    recentre:
        Shift the patch kernels to the global kernel's centre of mass.
    """

    grid: tuple[int, int] | None = None
    patch_size: int | None = None
    overlap: float = 0.5
    smoothness: float = 1.0
    default_grid: int = 3
    levels: int = 2
    outer_iters: int = 8
    anchor_energy: float = 0.5
    projection_steps: int = 300
    projection_lr: float = 2e-2
    chunk: int = 50
    # "prior": the patch kernels projected into the GLKM prior (G(F_p), glkm-grid stage);
    # "estimate": the local stage's kernels as they are; "auto": estimate for the camera
    # model (already regularised by the shared density), prior for the others
    final_kernel: str = "auto"
    prox: float = 0.3  # relative pull of the patch kernels towards the global one
    support_radius: int | None = 4  # patch kernel support: global support dilated (px)
    select: bool = False  # per-patch L0-energy model selection (off: it rejects good kernels)
    select_lambda: float = 1e-3
    select_margin: float = 0.02
    recentre: bool = True  # shift patch kernels to the global kernel's centre of mass
    # local_model "camera": one shared camera-motion density (see camera_kernel_stage);
    # "free": an independent pixel kernel per patch (local_kernel_stage); "camera+free":
    # the free patch kernels started from (and pulled towards) the camera model's
    local_model: str = "camera"
    roll_arc: float = 8.0  # largest roll arc (px) at the farthest patch centre the model spans
    max_roll: float = 2.0  # ... and largest roll angle (degrees) either way
    roll_penalty: float = 0.3  # pull of the density towards no roll (relative to the data)
    camera_iters: int = 10  # alternations of the camera model
    camera_levels: int = 1  # pyramid levels of the camera model (ratio of the pyramid's)
    # first L0 weight of the camera model and its decay per alternation, for low noise; from
    # noise_ramp[0] to noise_ramp[1] (σ, [0, 1] units) they move linearly to camera_lambda_noisy
    # and camera_lambda_decay_noisy (see camera_lambda_schedule)
    camera_lambda: float = 1e-3
    camera_lambda_decay: float = 1.1
    camera_lambda_noisy: float = 3e-3
    camera_lambda_decay_noisy: float = 1.0
    noise_ramp: tuple[float, float] = (0.0035, 0.01)
    camera_prox: float = 1.0  # pull of the density towards its start (the global kernel)
    # above noise_ramp[0] the camera model sees the luminance before denoising
    camera_raw: bool = True
    fista_iters: int = 100  # projected-gradient steps per density update

    def final_kernel_kind(self) -> str:
        """``final_kernel`` with ``"auto"`` resolved for ``local_model``."""
        if self.final_kernel != "auto":
            return self.final_kernel
        return "estimate" if self.local_model == "camera" else "prior"

    def __post_init__(self):
        if self.final_kernel not in ("auto", "prior", "estimate"):
            raise ValueError(f"final_kernel must be auto, prior or estimate, "
                             f"got {self.final_kernel!r}")
        if self.local_model not in LOCAL_MODELS:
            raise ValueError(f"local_model must be one of {', '.join(LOCAL_MODELS)}, "
                             f"got {self.local_model!r}")
        lo, hi = self.noise_ramp
        if not (0 <= lo < hi):
            raise ValueError(f"noise_ramp must be two increasing noise levels >= 0, "
                             f"got {self.noise_ramp!r}")
        if not (math.isfinite(self.roll_arc) and self.roll_arc >= 0):
            raise ValueError(f"roll_arc must be a non-negative number, got {self.roll_arc!r}")


@dataclass(frozen=True)
class PatchGrid:
    """A ``gy x gx`` grid of equal, overlapping patches over an ``(H, W)`` image.

    Attributes
    ----------
    shape:
        ``(H, W)`` of the image.
    grid:
        ``(gy, gx)``.
    overlap:
        Overlap fraction of neighbouring patches.
    centres:
        ``(gy, gx, 2)`` float (row, col) patch centres, pixels.
    patch_shape:
        ``(ph, pw)`` integer patch size (the support of a window).
    boxes:
        ``(gy * gx, 4)`` int ``(row0, col0, row1, col1)`` half-open patch boxes, row-major.
    """

    shape: tuple[int, int]
    grid: tuple[int, int]
    overlap: float
    centres: np.ndarray
    patch_shape: tuple[int, int]
    boxes: np.ndarray

    @property
    def n(self) -> int:
        return self.grid[0] * self.grid[1]

    def windows(self, pad: int = 0, dtype=torch.float32, device=None) -> torch.Tensor:
        """``(P, 1, H + 2 pad, W + 2 pad)`` SVOLA windows (sum to one)."""
        return svola_windows(self.shape, self.grid, self.overlap, pad=pad, dtype=dtype,
                             device=device)[0]

    def neighbours(self) -> list[tuple[int, int]]:
        """4-connected pairs ``(p, q)`` of patch indices."""
        gy, gx = self.grid
        pairs = [(i * gx + j, i * gx + j + 1) for i in range(gy) for j in range(gx - 1)]
        return pairs + [(i * gx + j, (i + 1) * gx + j) for i in range(gy - 1) for j in range(gx)]


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _grid_for(length: int, patch: int, overlap: float) -> int:
    return max(1, int(round(1 + (length / patch - 1) / (1 - overlap))))


def make_patch_grid(
    shape: tuple[int, int], kernel_size: int, *, grid=None, patch_size=None,
    overlap: float = 0.5, default_grid: int = 3,
) -> PatchGrid:
    """Validate the grid options and lay out the patches (see :class:`SVOLAConfig`).

    Raises ``ValueError`` when the options are malformed or when a patch would be smaller than
    the solver's minimum image side for ``kernel_size`` (``2 k`` and at least 32 pixels).
    """
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.floating)) \
            or not 0.0 <= float(overlap) <= 0.9:
        raise ValueError(f"overlap must be a number in [0, 0.9], got {overlap!r}")
    overlap = float(overlap)
    h, w = shape
    need = min_image_side(kernel_size)
    if grid is not None and patch_size is not None:
        raise ValueError("give either grid or patch_size, not both")
    if grid is not None:
        if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
            grid = (grid, grid)
        if not isinstance(grid, (tuple, list)) or len(grid) != 2:
            raise ValueError(f"grid must be an integer or (gy, gx), got {grid!r}")
        gy, gx = (_positive_int(g, "grid") for g in grid)
    elif patch_size is not None:
        ps = _positive_int(patch_size, "patch_size")
        if ps < need:
            raise ValueError(f"patch_size must be at least {need} pixels for kernel size "
                             f"{kernel_size}, got {ps}")
        gy, gx = _grid_for(h, min(ps, h), overlap), _grid_for(w, min(ps, w), overlap)
    else:
        gy = gx = default_grid
        while gy > 1 and h / (1 + (gy - 1) * (1 - overlap)) < need:
            gy -= 1
        while gx > 1 and w / (1 + (gx - 1) * (1 - overlap)) < need:
            gx -= 1
    _, cy, sy = svola_windows_1d(h, gy, overlap)
    _, cx, sx = svola_windows_1d(w, gx, overlap)
    ph, pw = min(int(round(sy)), h), min(int(round(sx)), w)
    if min(ph, pw) < need:
        raise ValueError(
            f"a {gy}x{gx} grid with overlap {overlap} gives {ph}x{pw}-pixel patches on a "
            f"{h}x{w} image; kernel size {kernel_size} needs at least {need} pixels per side: "
            f"use fewer patches, a smaller overlap or a smaller kernel_size"
        )
    centres = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), dim=-1).numpy()
    r0 = np.clip(np.round(cy.numpy() - (ph - 1) / 2).astype(int), 0, h - ph)
    c0 = np.clip(np.round(cx.numpy() - (pw - 1) / 2).astype(int), 0, w - pw)
    boxes = np.array([(r, c, r + ph, c + pw) for r in r0 for c in c0], dtype=int)
    return PatchGrid((h, w), (gy, gx), overlap, centres, (ph, pw), boxes)


def _patches(lum: torch.Tensor, grid: PatchGrid, max_side: int) -> torch.Tensor:
    """``(P, 1, ph', pw')`` luminance patches, centre-cropped to at most ``max_side``."""
    ph, pw = grid.patch_shape
    mh, mw = (ph - min(ph, max_side)) // 2, (pw - min(pw, max_side)) // 2
    return torch.cat([lum[..., r0 + mh : r1 - mh, c0 + mw : c1 - mw]
                      for r0, c0, r1, c1 in grid.boxes.tolist()])


def local_kernel_stage(
    lum: torch.Tensor, grid: PatchGrid, k_global: torch.Tensor, pyramid: PyramidConfig,
    cfg: SVOLAConfig,
) -> Iterator[tuple[float, torch.Tensor]]:
    """Per-patch pixel kernels of gray ``lum`` ``(1, 1, H, W)``, all patches as one batch,
    started from and kept near ``k_global`` — ``(1, 1, k, k)``, or ``(P, 1, k, k)``: one per
    patch (the camera model's, for ``local_model="camera+free"``).

    Yields ``(loss, kernels (P, 1, k, k))`` after every alternation; the last is the estimate.
    """
    patches = _patches(lum, grid, pyramid.max_side)
    init = k_global.expand(grid.n, -1, -1, -1).contiguous()  # one kernel, or one per patch
    local = replace(pyramid, outer_iters=cfg.outer_iters)
    ref = init if (cfg.prox > 0 or cfg.support_radius is not None) else None
    yield from coarse_to_fine_stage(patches, k_global.shape[-1], local, init=init,
                                    levels=cfg.levels, ref=ref, prox=cfg.prox,
                                    support_radius=cfg.support_radius)


def roll_geometry(grid: PatchGrid, roll_arc: float,
                  max_roll: float = 180.0) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres relative to the image centre ``(P, 2)`` (col, row; pixels) and the roll
    angles ``(J,)`` (radians) the camera model spans: ``±roll_arc`` pixels of arc at the
    farthest patch centre but at most ``±max_roll`` degrees, in steps of at most one pixel
    there. A single bin (no roll) when every patch centre is at the image centre or the span
    is 0."""
    h, w = grid.shape
    cen = grid.centres.reshape(-1, 2)
    r = np.stack([cen[:, 1] - (w - 1) / 2, cen[:, 0] - (h - 1) / 2], axis=1)
    rmax = float(np.hypot(r[:, 0], r[:, 1]).max())
    arc = min(roll_arc, rmax * math.radians(max_roll))
    if rmax < 1.0 or arc <= 0:
        return r, np.zeros(1)
    n = int(math.ceil(arc))
    return r, np.linspace(-arc / rmax, arc / rmax, 2 * n + 1)


class MotionDensityMap:
    """The linear map from a camera-motion density ``w`` ``(J, s, s)`` — mass ``w_j(d)`` at
    kernel offset ``d`` and roll angle ``θ_j`` — to the patch kernels ``(P, 1, s, s)``: patch
    ``p`` (centre ``r_p`` relative to the image centre, complex ``col + 1j row``) receives
    ``w_j(d)`` at ``d + r_p (exp(1j θ_j) - 1)``, bilinearly; mass moved off the canvas is lost.

    This is the motion density function of Gupta et al. (ECCV 2010) restricted to translation
    and roll, evaluated at the SVOLA patch centres as in Hirsch et al. (ICCV 2011). A roll
    centre other than the image centre is the same model with ``w`` moved (to first order in
    the angle). :meth:`__call__` gathers and :meth:`adjoint` scatters, so the pair is exact.
    """

    def __init__(self, r: np.ndarray, thetas: np.ndarray, size: int, device=None):
        self.size, self.n_bins, self.n_patches = size, len(thetas), len(r)
        v = (r[:, 0] + 1j * r[:, 1])[:, None] * (np.exp(1j * np.asarray(thetas))[None] - 1)
        ix, iy = np.floor(v.real).astype(int), np.floor(v.imag).astype(int)
        fx, fy = v.real - ix, v.imag - iy
        self.margin = m = int(max(np.abs(ix).max(), np.abs(iy).max())) + 2
        big = size + 2 * m
        e = torch.arange(size * size, device=device)
        ey, ex = e // size, e % size
        idx, wts = [], []
        for oy, ox, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            sy = torch.as_tensor(iy + oy, device=device)[..., None]  # (P, J, 1)
            sx = torch.as_tensor(ix + ox, device=device)[..., None]
            j = torch.arange(self.n_bins, device=device)[None, :, None]
            idx.append(j * big * big + (ey + m - sy) * big + (ex + m - sx))
            wts.append(torch.as_tensor(wt, device=device)[..., None].expand_as(idx[-1]))
        self.index = torch.stack(idx, dim=2)  # (P, J, 4, s*s) into the padded, flat density
        self._weights = torch.stack(wts, dim=2)

    def _pad(self, w: torch.Tensor) -> torch.Tensor:
        m = self.margin
        return torch.nn.functional.pad(w, (m, m, m, m)).reshape(-1)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        wt = self._weights.to(w.dtype)
        k = (self._pad(w)[self.index] * wt).sum(dim=(1, 2))
        return k.reshape(self.n_patches, 1, self.size, self.size)

    def adjoint(self, k: torch.Tensor) -> torch.Tensor:
        wt = self._weights.to(k.dtype)
        m, s = self.margin, self.size
        vals = (k.reshape(self.n_patches, 1, 1, s * s) * wt).reshape(-1)
        flat = torch.zeros(self.n_bins * (s + 2 * m) ** 2, dtype=k.dtype, device=k.device)
        flat.index_add_(0, self.index.reshape(-1), vals)
        return flat.reshape(self.n_bins, s + 2 * m, s + 2 * m)[:, m : m + s, m : m + s]


def _nonneg_fista(normal, rhs: torch.Tensor, w0: torch.Tensor, mask: torch.Tensor,
                  iters: int) -> torch.Tensor:
    """``argmin_{w >= 0, w = 0 off mask} ½ wᵀ N w - rhsᵀ w`` by accelerated projected gradient
    (FISTA), started at ``w0``; the step is 1 / (1.05 λ_max(N)) by 15 power iterations."""
    v = torch.randn(rhs.shape, generator=torch.Generator().manual_seed(0), dtype=rhs.dtype)
    v = v.to(rhs.device) * mask
    lip = 1.0
    for _ in range(15):
        v = normal(v)
        lip = float(v.norm())
        if not math.isfinite(lip) or lip <= 0:
            return w0
        v = v / lip
    step = 1.0 / (1.05 * lip)
    w, z, t = w0.clone(), w0.clone(), 1.0
    for _ in range(iters):
        w_new = (z - step * (normal(z) - rhs)).clamp_min(0) * mask
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = w_new + ((t - 1) / t_new) * (w_new - w)
        w, t = w_new, t_new
    return w


def camera_lambda_schedule(cfg: SVOLAConfig, sigma: float | None) -> tuple[float, float]:
    """``(first L0 weight, decay per alternation)`` of the camera model at noise ``sigma``
    (``None``: no noise adaptation, the low-noise pair).

    Low noise keeps ``camera_lambda`` decaying by ``camera_lambda_decay``; from
    ``noise_ramp[0]`` to ``noise_ramp[1]`` both move linearly to ``camera_lambda_noisy`` and
    ``camera_lambda_decay_noisy``: a noisy latent needs the larger, fixed weight (fewer,
    stronger edges). Measured on the camera-shake benchmark at 1 % noise: 3e-3 fixed gave
    +0.3 dB over 1e-3 decaying; on Levin (σ ≈ 0.3 %) it cost 2.3 dB, so the low-noise end
    keeps the old schedule (docs/benchmarks.md, Non-uniform)."""
    if sigma is None:
        return cfg.camera_lambda, cfg.camera_lambda_decay
    lo, hi = cfg.noise_ramp
    t = float(np.clip((float(sigma) - lo) / max(hi - lo, 1e-12), 0.0, 1.0))
    return (cfg.camera_lambda + t * (cfg.camera_lambda_noisy - cfg.camera_lambda),
            cfg.camera_lambda_decay + t * (cfg.camera_lambda_decay_noisy
                                           - cfg.camera_lambda_decay))


def camera_input_is_raw(cfg: SVOLAConfig, sigma: float | None) -> bool:
    """Whether the camera model fits the raw luminance at noise ``sigma`` (``camera_raw`` and
    ``sigma`` on the noise ramp, past its start) rather than the denoised estimation input."""
    return cfg.camera_raw and sigma is not None and float(sigma) > cfg.noise_ramp[0]


def camera_kernel_stage(
    lum: torch.Tensor, grid: PatchGrid, k_global: torch.Tensor, pyramid: PyramidConfig,
    cfg: SVOLAConfig, noise: float | None = None, latent: LatentFn | None = None,
) -> Iterator[tuple[float, torch.Tensor]]:
    """Patch kernels of gray ``lum`` ``(1, 1, H, W)`` from one camera-motion density shared by
    all patches (:class:`MotionDensityMap`), started from the global kernel (no roll).

    Alternates, at full resolution on the patches: the L0 latent of every patch with its
    current kernel, then the density that explains all patches' gradients at once —
    ``Σ_p ||∇x_p ⋆ (A w)_p - ∇y_p||² + γ ||w||² + s̄ Σ_j (roll_penalty (θ_j / θ_max)²
    + camera_prox) ||w_j - w⁰_j||²`` (``s̄`` the mean patch gradient energy, ``w⁰`` the start:
    the global kernel at zero roll) over ``w >= 0`` on the global kernel's support dilated by
    ``support_radius`` — by :func:`_nonneg_fista`. The L0 weight and its decay per
    alternation follow the image's ``noise`` σ (:func:`camera_lambda_schedule`; ``None``:
    the low-noise pair), restarting on every level. ``camera_levels`` pyramid levels (kernel
    sides shrunk by the pyramid's ratio; the density is resampled bin by bin between levels,
    roll angles are scale-free), the full resolution last. Nine patches share one density,
    so each kernel is backed by the whole image's data and the roll structure; independent
    patch kernels (``local_model="free"``) are backed by one patch each.

    ``latent(patches, kernels, lam)`` replaces the L0 latent (:func:`l0_deconv`, the
    default): it gets the level's patches ``(P, 1, h, w)``, the current patch kernels
    ``(P, 1, s, s)`` and the L0 weight, and returns the sharp patches ``(P, 1, h + s - 1,
    w + s - 1)`` that :func:`conv_valid` maps onto the patches. The latent is what limits this
    stage (docs/benchmarks.md, "Which latent the camera model needs"); the hook lets another
    image prior, or a diagnostic with the true sharp image, take its place.

    Yields ``(loss, kernels (P, 1, k, k))`` after every alternation; the last (thresholded)
    is the estimate.
    """
    latent = l0_deconv if latent is None else latent
    patches = _patches(lum, grid, pyramid.max_side)
    s = k_global.shape[-1]
    r, thetas = roll_geometry(grid, cfg.roll_arc, cfg.max_roll)
    n_bins = len(thetas)
    tmax = max(float(np.abs(thetas).max()), 1e-12)
    roll_w = torch.as_tensor((thetas / tmax) ** 2, dtype=lum.dtype, device=lum.device)
    radius = cfg.support_radius if cfg.support_radius is not None else s
    k_g = k_global.to(lum.dtype)
    levels = [max(3, 2 * int(round((s * pyramid.ratio ** i) / 2 - 0.5)) + 1)
              for i in reversed(range(cfg.camera_levels))]
    levels[-1] = s
    lam0, decay = camera_lambda_schedule(cfg, noise)
    w = None
    loss, k = float("nan"), k_g.expand(grid.n, -1, -1, -1)
    for s_l in levels:
        f = s_l / s
        ys = patches if s_l == s else _downscale(patches, f, 2 * s_l + 1)
        f_eff = ys.shape[-1] / patches.shape[-1]
        amap = MotionDensityMap(r * f_eff, thetas, s_l, device=lum.device)
        kg_l = resize_kernel(k_g, s_l)
        mask = dilated_support(kg_l, pyramid.threshold,
                               max(1, int(round(radius * f))))[0].expand(n_bins, -1, -1)
        w_start = torch.zeros(n_bins, s_l, s_l, dtype=lum.dtype, device=lum.device)
        w_start[n_bins // 2] = kg_l[0, 0]
        if w is None:
            w = w_start.clone()
        else:  # the previous level's density, resampled bin by bin
            mass = w.sum(dim=(-2, -1))
            w = resize_kernel(w[:, None], s_l)[:, 0] * mass[:, None, None] * mask
            w = w / w.sum().clamp_min(1e-12)
        gamma = pyramid.kernel_gamma * ys.shape[-2] * ys.shape[-1] / 255.0**2
        gyx, gyy = _grads(ys)
        k = amap(w)
        lam = lam0
        for _ in range(cfg.camera_iters):
            x = latent(ys, k, lam)
            if x.shape[-2:] != (ys.shape[-2] + s_l - 1, ys.shape[-1] + s_l - 1):
                raise ValueError(f"the latent must be {ys.shape[-2] + s_l - 1}x"
                                 f"{ys.shape[-1] + s_l - 1} per patch, got "
                                 f"{tuple(x.shape[-2:])}")
            gxx, gxy = _grads(x)
            energy = float((gxx ** 2).sum() + (gxy ** 2).sum()) / grid.n
            pen = (gamma + (cfg.roll_penalty * roll_w + cfg.camera_prox) * energy)[:, None, None]

            def normal(v: torch.Tensor) -> torch.Tensor:
                kk = amap(v)
                nk = conv_valid(gxx, conv_valid(gxx, kk, method="fft"), method="fft") + \
                    conv_valid(gxy, conv_valid(gxy, kk, method="fft"), method="fft")
                return amap.adjoint(nk) * mask + pen * v

            rhs = amap.adjoint(conv_valid(gxx, gyx, method="fft")
                               + conv_valid(gxy, gyy, method="fft")) * mask
            if cfg.camera_prox > 0:
                rhs = rhs + cfg.camera_prox * energy * w_start
            w_new = _nonneg_fista(normal, rhs, w, mask, cfg.fista_iters)
            w_new = w_new / w_new.sum().clamp_min(1e-12)
            k_new = amap(w_new)
            k_new = k_new / k_new.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
            res = (conv_valid(gxx, k_new, method="fft") - gyx).pow(2).mean() + \
                (conv_valid(gxy, k_new, method="fft") - gyy).pow(2).mean()
            if not (torch.isfinite(k_new).all() and torch.isfinite(res)):
                break  # keep the last finite density
            w, k, loss = w_new, k_new, float(res)
            lam = max(lam / decay, pyramid.l0_lambda_min)
            yield loss, resize_kernel(k, s) if s_l != s else k
    yield loss, threshold_kernel(k, pyramid.threshold)


def l0_energy(y: torch.Tensor, k: torch.Tensor, lam: float) -> torch.Tensor:
    """``(B,)`` L0 deblurring energy ``(||x ⋆ k - y||² + lam #{|∇x| > 0.01}) / #pixels`` of
    ``y`` ``(B, 1, h, w)`` with kernels ``k`` ``(B, 1, s, s)`` at the L0 estimate ``x``."""
    x = l0_deconv(y, k, lam)
    res = ((conv_valid(x, k, method="fft") - y) ** 2).sum(dim=(1, 2, 3))
    gx = x[..., :, 1:] - x[..., :, :-1]
    gy = x[..., 1:, :] - x[..., :-1, :]
    mag = gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2
    count = (mag > 1e-4).to(y.dtype).sum(dim=(1, 2, 3))
    return (res + lam * count) / (y.shape[-2] * y.shape[-1])


def recentre_kernels(k: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Shift each kernel of ``k`` ``(B, 1, s, s)`` by whole pixels so that its centre of mass
    is nearest to ``ref``'s ``(1, 1, s, s)``: a kernel shift is a free image shift in blind
    deblurring, and patches restored with shifted kernels would be misaligned at the seams."""
    d = torch.round(kernel_centroid(ref) - kernel_centroid(k)).to(torch.long).tolist()
    return torch.cat([torch.roll(k[i : i + 1], (dy, dx), dims=(-2, -1))
                      for i, (dy, dx) in enumerate(d)])


def select_patch_kernels(
    lum: torch.Tensor, grid: PatchGrid, k_global: torch.Tensor, k_local: torch.Tensor,
    max_side: int, cfg: SVOLAConfig,
) -> tuple[torch.Tensor, dict]:
    """Per-patch model selection: keep a patch's kernel only where it explains the patch
    clearly better than the global kernel (L0 energy lower by more than ``select_margin``,
    relative); elsewhere the global kernel. Returns ``(kernels, info)``, info with the
    ``energy_global``, ``energy_local`` ``(P,)`` and the boolean ``keep`` ``(P,)``."""
    patches = _patches(lum, grid, max_side)
    kg = k_global.expand(grid.n, -1, -1, -1).contiguous()
    e_g = l0_energy(patches, kg, cfg.select_lambda)
    e_l = l0_energy(patches, k_local, cfg.select_lambda)
    keep = e_l < e_g * (1.0 - cfg.select_margin)
    kernels = torch.where(keep[:, None, None, None], k_local, kg)
    return kernels, {"energy_global": e_g, "energy_local": e_l, "keep": keep}


def patch_confidence(lum: torch.Tensor, grid: PatchGrid, anchor_energy: float) -> torch.Tensor:
    """``(P,)`` trust in each patch's own kernel: its mean gradient magnitude over
    ``anchor_energy`` times the median patch's, clipped to [0, 1]."""
    patches = _patches(lum, grid, 10**9)
    gx = (patches[..., :, 1:] - patches[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    gy = (patches[..., 1:, :] - patches[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    energy = gx + gy
    ref = anchor_energy * energy.median().clamp_min(1e-12)
    return (energy / ref).clamp(0.0, 1.0)


def grid_projection_stage(
    prior: GeneratorKernelPrior, targets: torch.Tensor, grid: PatchGrid, cfg: SVOLAConfig,
    guard: DivergenceGuard | None = None,
) -> Iterator[float]:
    """Fit ``prior``'s ``P`` feature maps ``(P, 256, s, s)`` to ``targets`` ``(P, 1, k, k)``
    with the neighbour smoothness penalty; yields the loss every ``cfg.chunk`` steps.
    Non-finite steps are undone by ``guard`` (a fresh :class:`DivergenceGuard` by default)."""
    guard = guard if guard is not None else DivergenceGuard()
    opt = torch.optim.Adam([prior.fmap], lr=cfg.projection_lr)
    pairs = grid.neighbours()
    p_idx = torch.tensor([a for a, _ in pairs], dtype=torch.long)
    q_idx = torch.tensor([b for _, b in pairs], dtype=torch.long)

    def objective() -> torch.Tensor:
        loss = (prior() - targets).abs().sum()
        if pairs and cfg.smoothness > 0:
            f = prior.fmap
            loss = loss + cfg.smoothness * ((f[p_idx] - f[q_idx]) ** 2).mean(dim=(1, 2, 3)).sum()
        return loss

    last = float("nan")
    for step in range(cfg.projection_steps):
        loss = guard.step("glkm-grid", step, opt, objective)
        if loss is not None:
            last = float(loss.detach())
        if (step + 1) % cfg.chunk == 0 or step + 1 == cfg.projection_steps:
            yield last


def svola_restore(
    y: torch.Tensor, kernels: torch.Tensor, grid: PatchGrid, *, lam: float, alpha: float,
    outer: int,
) -> torch.Tensor:
    """Hyper-Laplacian deconvolution of ``y`` ``(1, C, H, W)`` on the SVOLA model with patch
    ``kernels`` ``(P, 1, k, k)``; returns ``(1, C, H, W)`` aligned with ``y``."""
    c = kernels.shape[-1] // 2
    win = grid.windows(pad=c, dtype=y.dtype, device=y.device)
    x = sparse_deconv_op(y, lambda v: svola_blur(v, kernels, win),
                         lambda r: svola_adjoint(r, kernels, win), c,
                         lam=lam, alpha=alpha, outer=outer)
    return x[..., c : c + y.shape[-2], c : c + y.shape[-1]]


def n_local_iterations(cfg: SVOLAConfig) -> int:
    """Snapshots the local + grid-projection stages yield (for progress totals)."""
    local = cfg.camera_iters * cfg.camera_levels * ("camera" in cfg.local_model) \
        + cfg.levels * cfg.outer_iters * ("free" in cfg.local_model)
    if cfg.final_kernel_kind() == "prior":
        local += math.ceil(cfg.projection_steps / cfg.chunk)
    return local + 1
