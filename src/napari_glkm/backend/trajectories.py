"""Random camera-shake trajectories rasterised into motion-blur kernels.

The model is our own (the GLKM/GKPILE trajectory generator is not public). It follows the
physical picture of Boracchi & Foi, "Modeling the performance of image restoration from
motion blur" (IEEE TIP 2012): the camera moves with inertia, its velocity changes by small
random accelerations plus rare impulsive jerks, a weak spring pulls it back towards the start,
and the sensor integrates light along the path, so slow parts of the path are brighter.

Every kernel is non-negative, sums to one and has its centre of mass at the centre pixel
``((k - 1) / 2, (k - 1) / 2)``. All kernels of a batch are made together with numpy array
operations (one Python loop over the time steps, none over kernels).

:func:`camera_shake` draws a *non-uniform* shake from the same paths (translation plus in-plane
roll), :func:`camera_shake_blur` renders it exactly and :func:`camera_shake_kernels` gives its
local kernels (the second non-uniform benchmark, ``benchmarks/nonuniform.py --field camera``).

Example
-------
>>> import numpy as np
>>> k = motion_kernels(4, 31, rng=np.random.default_rng(0))
>>> k.shape, bool(np.allclose(k.sum(axis=(1, 2)), 1.0))
((4, 31, 31), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["TrajectoryParams", "random_trajectories", "rasterize", "motion_kernels",
           "CameraShake", "camera_shake", "camera_shake_kernels", "camera_shake_blur"]


@dataclass(frozen=True)
class TrajectoryParams:
    """Parameters of the random camera-shake model.

    Attributes
    ----------
    n_steps:
        Number of time steps of the exposure.
    anxiety:
        Range ``(lo, hi)`` of the per-kernel strength of random accelerations, as a fraction of
        the current speed per step. Low values give smooth, nearly straight paths.
    jerk_probability:
        Range of the per-step probability of an impulsive jerk (a sudden turn).
    centripetal:
        Range of the spring constant pulling the path back to its start.
    speed_jitter:
        Standard deviation of the log-speed random walk (brightness variation along the path).
    extent:
        Range ``(lo, hi)`` of the path's largest extent as a fraction of ``size - 3`` pixels.
    thickness:
        Range of the Gaussian sigma (pixels) that thickens the rasterised path.
    """

    n_steps: int = 96
    anxiety: tuple[float, float] = (0.01, 0.2)
    jerk_probability: tuple[float, float] = (0.0, 0.025)
    centripetal: tuple[float, float] = (0.0, 0.01)
    speed_jitter: float = 0.12
    extent: tuple[float, float] = (0.08, 1.0)
    thickness: tuple[float, float] = (0.0, 0.6)


def _uniform(rng: np.random.Generator, lohi: tuple[float, float], n: int) -> np.ndarray:
    lo, hi = lohi
    return rng.uniform(lo, hi, size=n)


def random_trajectories(
    n: int, rng: np.random.Generator, params: TrajectoryParams = TrajectoryParams()
) -> np.ndarray:
    """Random camera paths as complex positions, shape ``(n, n_steps)`` (arbitrary units).

    Parameters
    ----------
    n:
        Number of paths.
    rng:
        Source of randomness (``numpy.random.default_rng(seed)``).
    params:
        Model parameters.
    """
    steps = params.n_steps
    anxiety = _uniform(rng, params.anxiety, n)
    p_jerk = _uniform(rng, params.jerk_probability, n)
    spring = _uniform(rng, params.centripetal, n)
    direction = np.exp(2j * np.pi * rng.random(n))
    pos = np.zeros((n, steps), dtype=np.complex128)
    vel = direction.copy()
    speed = np.ones(n)
    for t in range(1, steps):
        noise = rng.normal(size=n) + 1j * rng.normal(size=n)
        jerk = rng.random(n) < p_jerk
        turn = np.exp(1j * rng.uniform(np.pi / 4, np.pi, size=n) * rng.choice([-1.0, 1.0], size=n))
        vel = np.where(jerk, vel * turn, vel)
        vel = vel + anxiety * noise * np.abs(vel) / np.sqrt(2) - spring * pos[:, t - 1]
        speed = speed * np.exp(params.speed_jitter * rng.normal(size=n))
        speed = np.clip(speed, 0.25, 4.0)
        vel = vel / np.maximum(np.abs(vel), 1e-9) * speed
        pos[:, t] = pos[:, t - 1] + vel
    return pos


def rasterize(
    paths: np.ndarray,
    size: int,
    extents: np.ndarray,
    *,
    samples_per_step: int = 8,
) -> np.ndarray:
    """Rasterise paths into ``(n, size, size)`` kernels by bilinear splatting.

    Each path is resampled at ``samples_per_step`` points per time step (equal exposure per
    time step, so slow parts collect more weight), scaled so that its largest extent is
    ``extents[i]`` pixels, and shifted so that its centre of mass lands on the centre pixel.
    Paths are shrunk further when needed to stay one pixel inside the border.
    """
    n, steps = paths.shape
    t_fine = np.linspace(0.0, steps - 1.0, (steps - 1) * samples_per_step + 1)
    lo = np.floor(t_fine).astype(int).clip(0, steps - 2)
    frac = t_fine - lo
    pts = paths[:, lo] * (1.0 - frac) + paths[:, lo + 1] * frac
    pts = pts - pts.mean(axis=1, keepdims=True)
    span = np.maximum(np.ptp(pts.real, axis=1), np.ptp(pts.imag, axis=1))
    half = (size - 1) / 2.0
    max_dev = np.maximum(np.abs(pts.real).max(axis=1), np.abs(pts.imag).max(axis=1))
    scale = np.minimum(extents / np.maximum(span, 1e-9), (half - 1.0) / np.maximum(max_dev, 1e-9))
    pts = pts * scale[:, None] + complex(half, half)
    return _splat(pts, size)


def _splat(pts: np.ndarray, size: int) -> np.ndarray:
    """Bilinear splatting of complex points ``(n, T)`` (``col + 1j * row``, pixels; equal weight
    each) into ``(n, size, size)`` kernels summing to one; points past the border are clipped."""
    n = pts.shape[0]
    x, y = pts.real, pts.imag
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    base = (np.arange(n) * size * size)[:, None]
    flat = np.zeros(n * size * size)
    for dy, dx, w in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        idx = base + np.clip(y0 + dy, 0, size - 1) * size + np.clip(x0 + dx, 0, size - 1)
        flat += np.bincount(idx.ravel(), weights=w.ravel(), minlength=n * size * size)
    kernels = flat.reshape(n, size, size)
    return kernels / kernels.sum(axis=(1, 2), keepdims=True)


def _thicken(kernels: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    out = kernels.copy()
    for i in np.nonzero(sigmas > 0.05)[0]:
        out[i] = ndimage.gaussian_filter(kernels[i], float(sigmas[i]), mode="constant", truncate=3.0)
    return out


def _recentre(kernels: np.ndarray) -> np.ndarray:
    """Shift each kernel by whole pixels so that its centre of mass is within 0.5 px of centre."""
    n, size, _ = kernels.shape
    grid = np.arange(size)
    cy = np.einsum("nij,i->n", kernels, grid)
    cx = np.einsum("nij,j->n", kernels, grid)
    half = (size - 1) / 2.0
    out = kernels
    for i in np.nonzero((np.abs(cy - half) > 0.5) | (np.abs(cx - half) > 0.5))[0]:
        shift = (int(np.round(half - cy[i])), int(np.round(half - cx[i])))
        out[i] = np.roll(kernels[i], shift, axis=(0, 1))
    return out


def motion_kernels(
    n: int,
    size: int,
    *,
    rng: np.random.Generator | int | None = None,
    params: TrajectoryParams = TrajectoryParams(),
    dtype: type = np.float32,
) -> np.ndarray:
    """Make ``n`` random motion-blur kernels of odd ``size``.

    Parameters
    ----------
    n:
        Number of kernels (``>= 1``).
    size:
        Kernel side in pixels; odd, at least 3.
    rng:
        A ``numpy.random.Generator`` or an integer seed; the same seed gives the same kernels.
    params:
        Trajectory model parameters.
    dtype:
        Output floating dtype.

    Returns
    -------
    numpy.ndarray
        ``(n, size, size)`` kernels, non-negative, each summing to 1, centre of mass within
        half a pixel of ``((size - 1) / 2, (size - 1) / 2)``.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd integer >= 3, got {size!r}")
    rng = np.random.default_rng(rng)
    paths = random_trajectories(n, rng, params)
    extents = _uniform(rng, params.extent, n) * max(size - 3, 1)
    kernels = rasterize(paths, size, extents)
    kernels = _thicken(kernels, _uniform(rng, params.thickness, n))
    kernels = np.clip(kernels, 0.0, None)
    kernels /= kernels.sum(axis=(1, 2), keepdims=True)
    kernels = _recentre(kernels)
    return kernels.astype(dtype)


# --------------------------------------------------------------------------- camera shake
# Spatially varying (non-uniform) blur of a shaken camera: translation plus in-plane roll.


@dataclass(frozen=True)
class CameraShake:
    """An exposure's camera motion, sampled at ``T`` instants.

    Attributes
    ----------
    shift:
        ``(T,)`` complex image translation ``col + 1j * row`` (pixels), mean zero.
    roll:
        ``(T,)`` roll angle about the image centre (radians), mean zero.

    The scene point seen at pixel ``p`` (complex) at instant ``t`` is
    ``c + (p - c) exp(1j roll_t) + shift_t``, ``c`` the image centre: the local blur kernel at
    ``p`` is the translation path plus a roll component that grows with ``|p - c|`` and turns
    with the direction of ``p - c`` (the camera-shake model of Whyte et al., "Non-uniform
    deblurring for shaken images", IJCV 2012, restricted to roll; yaw and pitch act as
    translations at moderate fields of view).
    """

    shift: np.ndarray
    roll: np.ndarray


def camera_shake(
    rng: np.random.Generator | int | None, shift_px: float, roll_corner_px: float,
    corner_radius: float, *, max_offset: float = 14.0,
    params: TrajectoryParams = TrajectoryParams(extent=(0.8, 1.0), anxiety=(0.01, 0.1)),
    samples_per_step: int = 4,
) -> CameraShake:
    """A random :class:`CameraShake`: translation and roll are two inertial paths of
    :func:`random_trajectories`, centred to mean zero (every local kernel then has its centre
    of mass at the kernel centre). The translation's largest extent is ``shift_px`` pixels;
    the roll's span moves a point at ``corner_radius`` pixels from the centre by
    ``roll_corner_px`` pixels of arc. Both are shrunk together (5 % steps) until no kernel at
    the four corners at ``corner_radius`` reaches past ``max_offset`` pixels (14: the
    31-pixel canvas)."""
    for name, v in (("shift_px", shift_px), ("roll_corner_px", roll_corner_px),
                    ("corner_radius", corner_radius), ("max_offset", max_offset)):
        if not np.isfinite(v) or v < 0 or (name in ("corner_radius", "max_offset") and v <= 0):
            raise ValueError(f"{name} must be a finite non-negative number "
                             f"(positive for radius and offset), got {v!r}")
    rng = np.random.default_rng(rng)
    paths = random_trajectories(2, rng, params)
    steps = paths.shape[1]
    tf = np.linspace(0.0, steps - 1.0, (steps - 1) * samples_per_step + 1)
    lo = np.floor(tf).astype(int).clip(0, steps - 2)
    fr = tf - lo
    pts = paths[:, lo] * (1 - fr) + paths[:, lo + 1] * fr
    z = pts[0] - pts[0].mean()
    z = z * shift_px / max(np.ptp(z.real), np.ptp(z.imag), 1e-9)
    th = pts[1].real - pts[1].real.mean()
    th = th * (roll_corner_px / corner_radius) / max(np.ptp(th), 1e-9)
    corners = corner_radius * np.exp(1j * np.pi * np.array([0.25, 0.75, 1.25, 1.75]))
    for _ in range(200):
        off = z[None] + corners[:, None] * (np.exp(1j * th)[None] - 1)
        if max(np.abs(off.real).max(), np.abs(off.imag).max()) <= max_offset:
            break
        z, th = 0.95 * z, 0.95 * th
    return CameraShake(z, th)


def _offsets(shake: CameraShake, points: np.ndarray, centre: complex) -> np.ndarray:
    """``(N, T)`` complex offsets ``q_t(p) - p`` for complex ``points`` ``(N,)``."""
    return shake.shift[None] + (points[:, None] - centre) * (np.exp(1j * shake.roll)[None] - 1)


def camera_shake_kernels(shake: CameraShake, points_rc: np.ndarray, shape: tuple[int, int],
                         size: int = 31) -> np.ndarray:
    """``(N, size, size)`` local kernels of ``shake`` at ``points_rc`` ``(N, 2)`` (row, col) of
    an image of ``shape``, in the cross-correlation convention of
    :func:`~napari_glkm.backend.blur.conv_valid` (bilinear splatting, each sums to one; offsets
    beyond the canvas are clipped to its border)."""
    points_rc = np.asarray(points_rc, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    off = _offsets(shake, points_rc[:, 1] + 1j * points_rc[:, 0], complex((w - 1) / 2, (h - 1) / 2))
    return _splat(off + (size - 1) / 2 * (1 + 1j), size)


def camera_shake_blur(sharp: np.ndarray, shake: CameraShake, margin: int) -> np.ndarray:
    """Blur ``sharp`` ``(H, W)`` by ``shake``, exactly (no patch approximation): the mean over
    the exposure of ``sharp`` sampled bilinearly at ``q_t(p)`` for every pixel ``p`` of the
    ``(H - 2 margin, W - 2 margin)`` output (the *valid* part: ``margin`` must cover the largest
    offset, e.g. 15 for 31-pixel kernels; sampling past the border repeats it)."""
    sharp = np.asarray(sharp, dtype=np.float64)
    if sharp.ndim != 2 or min(sharp.shape) <= 2 * margin:
        raise ValueError(f"sharp must be a 2-D image larger than 2 * margin = {2 * margin} "
                         f"pixels per side, got shape {sharp.shape}")
    h, w = sharp.shape[0] - 2 * margin, sharp.shape[1] - 2 * margin
    rows, cols = np.mgrid[0:h, 0:w]
    p = (cols + 1j * rows).ravel()
    centre = complex((w - 1) / 2, (h - 1) / 2)
    src = torch.from_numpy(sharp)[None, None]
    acc = torch.zeros(h * w, dtype=src.dtype)
    hs, ws = sharp.shape
    n_t = len(shake.shift)
    for t0 in range(0, n_t, 64):
        part = CameraShake(shake.shift[t0 : t0 + 64], shake.roll[t0 : t0 + 64])
        q = p[None] + _offsets(part, p, centre).T + margin * (1 + 1j)
        g = np.stack([2 * q.real / (ws - 1) - 1, 2 * q.imag / (hs - 1) - 1], axis=-1)
        grid = torch.from_numpy(g.reshape(-1, 1, h * w, 2))
        s = F.grid_sample(src.expand(grid.shape[0], -1, -1, -1), grid, mode="bilinear",
                          padding_mode="border", align_corners=True)
        acc += s[:, 0, 0].sum(dim=0)
    return (acc / n_t).reshape(h, w).numpy()
