"""Random camera-shake trajectories rasterised into motion-blur kernels.

The model is our own (the GLKM/GKPILE trajectory generator is not public). It follows the
physical picture of Boracchi & Foi, "Modeling the performance of image restoration from
motion blur" (IEEE TIP 2012): the camera moves with inertia, its velocity changes by small
random accelerations plus rare impulsive jerks, a weak spring pulls it back towards the start,
and the sensor integrates light along the path, so slow parts of the path are brighter.

Every kernel is non-negative, sums to one and has its centre of mass at the centre pixel
``((k - 1) / 2, (k - 1) / 2)``. All kernels of a batch are made together with numpy array
operations (one Python loop over the time steps, none over kernels).

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
from scipy import ndimage

__all__ = ["TrajectoryParams", "random_trajectories", "rasterize", "motion_kernels"]


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
        idx = base + (y0 + dy) * size + (x0 + dx)
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
