"""Synthetic non-uniform blur benchmark: uniform vs SVOLA (non-uniform) mode.

Images: the first ``--n`` BSDS500 val photos (sorted names), gray (Rec. 601), centre crop of
``crop + 30`` pixels. Blur: SVOLA (:func:`napari_glkm.backend.blur.svola_blur`, windows before
the convolution) on a fine 8x8 grid with 50 % overlap, i.e. a *finer* field than the estimator's
grid; the kernel of each patch is one long camera-shake trajectory (size 21 in a 31 canvas,
extent 80-100 %, seeded per image) rotated in-plane by ``max_angle * (u + v) / 2`` degrees, with
``u, v`` in [-1, 1] the patch centre's normalised row and column (a smooth rotation field,
+-max_angle at opposite corners). The valid blur gives a ``crop x crop`` blurry image; 1 %
Gaussian noise (sigma 0.01) is added and values clipped to [0, 1].

``--field camera`` (the second benchmark) replaces that field by a *physical* camera shake,
rendered exactly rather than through SVOLA
(:func:`~napari_glkm.backend.trajectories.camera_shake_blur`): a translation path of
``--shift`` pixels plus an in-plane roll about the image centre whose arc at the image corners
is ``--roll`` pixels (both shrunk together if a corner kernel would leave the 31-pixel canvas).
The local kernel is the translation path plus a roll part that grows with the distance from the
centre and turns with the direction, as on a real shaken photo (Whyte et al. 2012).

``--crop 0`` uses the whole photo (481 x 321 or 321 x 481, minus the 30-pixel kernel margin)
instead of the 256 centre crop: larger patches for the same grid, the same +-max_angle at the
corners. The 256 crop stays the default so that results remain comparable.

Oracles (modes ``oracle-uniform`` and ``oracle-svola``; non-blind, the solvers' final step
with weight ``noise_lambda(2e-3, sigma)``): the uniform restoration with the mean kernel of the
true field, and the SVOLA restoration with the true kernels taken at the centres of the
estimator's ``--grid`` patches. They bound what the blind modes can reach: the gap between the
two is all that non-uniform estimation can gain over a perfect uniform kernel.

Scoring: :func:`napari_glkm.backend.metrics.aligned_psnr_ssim` against the sharp centre crop —
the SelfDeblur protocol (one *global* shift within +-10 px at 0.25 px steps, 15 px border crop,
PSNR with peak 1, SSIM 11x11 Gaussian sigma 1.5). A global shift is the right alignment here:
the estimated patch kernels are re-centred to the global kernel's centre of mass.

Usage::

    python benchmarks/nonuniform.py [--n 8] [--crop 256|0] [--grid 3] [--modes fast,nonuniform]
    python benchmarks/nonuniform.py --n 6 \
        --modes fast,nonuniform-fast,oracle-uniform,oracle-svola
    python benchmarks/nonuniform.py --timing512     # 512x512, 4x4 grid, default preset
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage import color, io

from napari_glkm import deblur
from napari_glkm.backend.solver import PRESETS
from napari_glkm.backend.blur import svola_blur, svola_windows, svola_windows_1d
from napari_glkm.backend.metrics import aligned_psnr_ssim
from napari_glkm.backend.noise import noise_lambda
from napari_glkm.backend.nonblind import sparse_deconv
from napari_glkm.backend.svola import make_patch_grid, svola_restore
from napari_glkm.backend.trajectories import (TrajectoryParams, camera_shake, camera_shake_blur,
                                              camera_shake_kernels, motion_kernels)

BSDS_VAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "bsds500" / "val"
K = 31
TRUE_GRID = 8
LONG_PATHS = TrajectoryParams(extent=(0.8, 1.0), anxiety=(0.01, 0.1))


def rotate_kernel(k: np.ndarray, degrees: float) -> np.ndarray:
    """In-plane rotation of a kernel about its centre (bilinear), clipped and renormalised."""
    r = np.clip(ndimage.rotate(k, degrees, reshape=False, order=1), 0.0, None)
    return r / r.sum()


def kernel_field(seed: int, grid: int, max_angle: float) -> np.ndarray:
    """``(grid, grid, 31, 31)`` smoothly rotating copies of one seeded trajectory kernel."""
    k0 = np.pad(motion_kernels(1, 21, rng=seed, params=LONG_PATHS, dtype=np.float64)[0], 5)
    u = np.linspace(-1.0, 1.0, grid)
    return np.stack([[rotate_kernel(k0, max_angle * (a + b) / 2) for b in u] for a in u])


def true_kernels_at(seed: int, shape: tuple[int, int], centres: np.ndarray,
                    max_angle: float) -> np.ndarray:
    """``(N, 31, 31)`` true kernels of :func:`kernel_field` at ``centres`` ``(N, 2)`` (row, col
    pixels of the blurry image of ``shape``): the same rotation law, continued between the
    true grid's patch centres (for the oracles)."""
    k0 = np.pad(motion_kernels(1, 21, rng=seed, params=LONG_PATHS, dtype=np.float64)[0], 5)
    _, cy, _ = svola_windows_1d(shape[0], TRUE_GRID, 0.5)
    _, cx, _ = svola_windows_1d(shape[1], TRUE_GRID, 0.5)
    u = -1 + 2 * (centres[:, 0] - float(cy[0])) / (float(cy[-1]) - float(cy[0]))
    v = -1 + 2 * (centres[:, 1] - float(cx[0])) / (float(cx[-1]) - float(cx[0]))
    return np.stack([rotate_kernel(k0, max_angle * (a + b) / 2) for a, b in zip(u, v)])


def load_sharp(path: Path, crop: int) -> np.ndarray:
    """The sharp gray photo a case is blurred from: the centre ``crop + 30`` square (``crop=0``:
    the whole photo), i.e. the truth plus the kernel margin of ``K // 2`` pixels per side."""
    img = io.imread(path)
    gray = color.rgb2gray(img) if img.ndim == 3 else img / 255.0
    if crop:
        side = crop + K - 1
        r0, c0 = (gray.shape[0] - side) // 2, (gray.shape[1] - side) // 2
        return gray[r0 : r0 + side, c0 : c0 + side].astype(np.float64)
    return gray.astype(np.float64)  # the whole photo (481 x 321 or 321 x 481)


def make_case(path: Path, crop: int, seed: int, max_angle: float, noise: float,
              field_kind: str = "rotation", shift: float = 18.0, roll: float = 12.0):
    """Sharp truth, blurry image (``(crop, crop)``; ``crop=0``: the whole photo less the
    kernel margin) and the true kernel field: ``(grid, grid, 31, 31)`` for ``rotation``, the
    :class:`~napari_glkm.backend.trajectories.CameraShake` for ``camera``."""
    sharp = load_sharp(path, crop)
    out_shape = (sharp.shape[0] - K + 1, sharp.shape[1] - K + 1)
    if field_kind == "camera":
        radius = float(np.hypot((out_shape[0] - 1) / 2, (out_shape[1] - 1) / 2))
        field = camera_shake(seed, shift, roll, radius)
        y = camera_shake_blur(sharp, field, K // 2)
    else:
        field = kernel_field(seed, TRUE_GRID, max_angle)
        win, _ = svola_windows(out_shape, (TRUE_GRID, TRUE_GRID), 0.5, pad=K // 2,
                               dtype=torch.float64)
        ks = torch.from_numpy(field.reshape(-1, 1, K, K))
        y = svola_blur(torch.from_numpy(sharp)[None, None], ks, win)[0, 0].numpy()
    y = y + noise * np.random.default_rng(seed).normal(size=y.shape)
    c = K // 2
    truth = sharp[c : c + out_shape[0], c : c + out_shape[1]]
    return truth, np.clip(y, 0, 1).astype(np.float32), field


def oracle(mode: str, blurry: np.ndarray, grid: int, seed: int, max_angle: float,
           noise: float, field=None) -> np.ndarray:
    """Non-blind restorations with the *true* kernels (upper bounds for the blind modes), by
    the solvers' own final step (hyper-Laplacian, weight ``noise_lambda(2e-3, noise)``):
    ``oracle-uniform``: one kernel, the mean of the true field; ``oracle-svola``: the true
    kernels at the centres of the estimator's ``grid x grid`` patches, SVOLA restoration.
    ``field``: the camera field's ``CameraShake`` (None: the rotation field)."""
    y = torch.from_numpy(blurry.astype(np.float64))[None, None]
    lam = noise_lambda(2e-3, noise)
    if mode == "oracle-uniform":
        if field is None:
            k = kernel_field(seed, TRUE_GRID, max_angle).reshape(-1, K, K).mean(0)
        else:  # mean of the local kernels on a 16 x 16 lattice over the image
            rr, cc = np.meshgrid(np.linspace(0, blurry.shape[0] - 1, 16),
                                 np.linspace(0, blurry.shape[1] - 1, 16), indexing="ij")
            pts = np.stack([rr.ravel(), cc.ravel()], axis=1)
            k = camera_shake_kernels(field, pts, blurry.shape, K).mean(0)
        x = sparse_deconv(y, torch.from_numpy(k)[None, None], lam=lam)
    else:
        pg = make_patch_grid(blurry.shape, K, grid=grid, overlap=0.5)
        if field is None:
            ks = true_kernels_at(seed, blurry.shape, pg.centres.reshape(-1, 2), max_angle)
        else:
            ks = camera_shake_kernels(field, pg.centres.reshape(-1, 2), blurry.shape,
                                      K)
        x = svola_restore(y, torch.from_numpy(ks)[:, None], pg, lam=lam, alpha=0.8, outer=4)
    return np.clip(x[0, 0].numpy(), 0, 1)


def run_mode(mode: str, blurry: np.ndarray, grid: int) -> tuple[np.ndarray, float, object]:
    t0 = time.perf_counter()
    if mode == "nonuniform":
        res = deblur(blurry, preset="default", nonuniform=True, grid=grid)
    elif mode == "nonuniform-fast":
        res = deblur(blurry, preset="fast", nonuniform=True, grid=grid)
    else:
        res = deblur(blurry, preset=mode)
    return np.clip(res.image, 0, 1), time.perf_counter() - t0, res


def timing512(grid: int = 4) -> dict:
    """Seconds for a 512x512 gray image, ``grid x grid`` patches, default preset."""
    path = sorted(BSDS_VAL.glob("*.jpg"))[0]
    img = color.rgb2gray(io.imread(path))
    big = np.pad(img, ((0, max(0, 512 - img.shape[0])), (0, max(0, 512 - img.shape[1]))),
                 mode="reflect")[:512, :512]
    field = kernel_field(0, TRUE_GRID, 30.0)
    win, _ = svola_windows((512 - K + 1,) * 2, (TRUE_GRID, TRUE_GRID), 0.5, pad=K // 2,
                           dtype=torch.float64)
    y = svola_blur(torch.from_numpy(big)[None, None], torch.from_numpy(field.reshape(-1, 1, K, K)),
                   win)[0, 0].numpy()
    y = np.pad(y, K // 2, mode="reflect").astype(np.float32)
    t0 = time.perf_counter()
    res = deblur(np.clip(y, 0, 1), preset="default", nonuniform=True, grid=grid)
    sec = time.perf_counter() - t0
    print(f"512x512, {grid}x{grid} grid, default preset: {sec:.1f} s; stages "
          + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()))
    return {"shape": [512, 512], "grid": [grid, grid], "preset": "default", "seconds": sec,
            "timings": res.timings}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--grid", type=int, default=3, help="estimator grid (patches per side)")
    ap.add_argument("--max-angle", type=float, default=40.0)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--field", choices=("rotation", "camera"), default="rotation",
                    help="rotation: one kernel rotated across the image (SVOLA-rendered); "
                         "camera: physical translation + roll shake, rendered exactly")
    ap.add_argument("--shift", type=float, default=18.0,
                    help="camera field: translation path extent (pixels)")
    ap.add_argument("--roll", type=float, default=12.0,
                    help="camera field: roll arc at the image corners (pixels)")
    ap.add_argument("--modes", default="fast,default,nonuniform")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--timing512", action="store_true", help="only the 512x512 4x4 timing")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a field of the fast and default presets for this run, e.g. "
                         "svola.local_model=free (for comparisons; recorded in the JSON)")
    ap.add_argument("--json", default="benchmarks/results/nonuniform.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.set:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from levin import _override  # noqa: E402  (benchmarks/levin.py)
        for item in args.set:
            for preset in ("fast", "default"):
                PRESETS[preset] = _override(PRESETS[preset], item)
    if args.timing512:
        out = timing512()
        path = Path("benchmarks/results/nonuniform_timing512.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        return out
    modes = args.modes.split(",")
    paths = sorted(BSDS_VAL.glob("*.jpg"))[: args.n]
    rows = []
    print(f"{'image':<12}" + "".join(f"{m:>22}" for m in modes) + "   (PSNR / SSIM / s)")
    for i, path in enumerate(paths):
        gt, blurry, field = make_case(path, args.crop, i, args.max_angle, args.noise,
                                      args.field, args.shift, args.roll)
        row = {"image": path.stem}
        for m in modes:
            if m.startswith("oracle"):
                t0 = time.perf_counter()
                est = oracle(m, blurry, args.grid, i, args.max_angle, args.noise,
                             field if args.field == "camera" else None)
                sec = time.perf_counter() - t0
            else:
                est, sec, _ = run_mode(m, blurry, args.grid)
            s = aligned_psnr_ssim(est, gt)
            row[m] = {"psnr": s["psnr"], "ssim": s["ssim"], "seconds": sec}
        blur_score = aligned_psnr_ssim(blurry.astype(np.float64), gt)
        row["blurry"] = {"psnr": blur_score["psnr"], "ssim": blur_score["ssim"]}
        rows.append(row)
        print(f"{path.stem:<12}" + "".join(
            f"{row[m]['psnr']:>9.2f}{row[m]['ssim']:>7.3f}{row[m]['seconds']:>6.0f}" for m in modes),
            flush=True)
    summary = {
        "modes": modes, "n_images": len(rows), "crop": args.crop, "grid": args.grid,
        "max_angle": args.max_angle, "noise_sigma": args.noise, "true_grid": TRUE_GRID,
        "field": args.field, "shift": args.shift, "roll": args.roll, "overrides": args.set,
        "mean": {m: {key: float(np.mean([r[m][key] for r in rows]))
                     for key in ("psnr", "ssim", "seconds")} for m in modes + ["blurry"]
                 if m != "blurry"} | {"blurry": {
                     key: float(np.mean([r["blurry"][key] for r in rows]))
                     for key in ("psnr", "ssim")}},
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads",
        "protocol": "SelfDeblur: one global shift <=10 px (0.25 px steps), 15 px border crop, "
                    "PSNR peak 1, SSIM Gaussian 11 sigma 1.5",
        "rows": rows,
    }
    print(f"{'mean':<12}" + "".join(
        f"{summary['mean'][m]['psnr']:>9.2f}{summary['mean'][m]['ssim']:>7.3f}"
        f"{summary['mean'][m]['seconds']:>6.0f}" for m in modes))
    print(f"blurry input: {summary['mean']['blurry']['psnr']:.2f} dB")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
