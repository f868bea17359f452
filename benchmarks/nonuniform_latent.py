"""Which latent the camera model needs: the non-uniform run with other latents (diagnostic).

The camera model (``svola.camera_kernel_stage``) alternates a sharp latent of every patch with
the camera-motion density. By default the latent is an L0 deconvolution of the patch with its
current kernel. This script runs the whole non-uniform solver (``fast`` preset, grid 3,
``nonuniform.py``'s camera-shake cases) with the latent replaced through the stage's
``latent=`` hook, so that the gap between the L0 latent and better ones is measured rather
than guessed:

``uniform``       uniform mode (``fast``), the reference of the issue's target;
``l0``            the camera model as shipped (its own L0 latent);
``truth``         the true sharp patches;
``truth-l0``      the true sharp patches L0-smoothed (weight 3e-3: piecewise constant, no
                  texture), i.e. the best that a sparse (L0) latent could be;
``truth-edges``   the same with weight 3e-2 (only the strongest edges are left);
``truth-blur``    the true sharp patches blurred by a Gaussian of sigma 1.5 pixels.

Everything else (global kernel, density fit, restoration, scoring) is the shipped pipeline;
only the camera stage's latent changes. The ``truth*`` latents need the truth, so they are a
diagnostic, not a method: they bound what a better image prior inside the camera model can
give (docs/benchmarks.md, "Which latent the camera model needs").

Usage::

    python benchmarks/nonuniform_latent.py [--n 4] [--roll 8] [--noise 0.01] \\
        [--latents uniform,l0,truth,truth-l0,truth-edges,truth-blur] [--threads 1]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nonuniform import BSDS_VAL, K, load_sharp, make_case  # noqa: E402  (benchmarks/)

import napari_glkm.backend.solver as solver  # noqa: E402
from napari_glkm import deblur  # noqa: E402
from napari_glkm.backend.metrics import aligned_psnr_ssim  # noqa: E402
from napari_glkm.backend.nonblind import l0_deconv  # noqa: E402
from napari_glkm.backend.svola import PatchGrid, camera_kernel_stage  # noqa: E402

LATENTS = ("uniform", "l0", "truth", "truth-l0", "truth-edges", "truth-blur")


def true_latent(sharp: np.ndarray, grid: PatchGrid, kind: str):
    """A ``latent(patches, kernels, lam)`` for the camera stage that returns the true sharp
    patches of ``sharp`` (the truth plus ``K // 2`` margin pixels), transformed per ``kind``;
    computed once per kernel size."""
    cache: dict[int, torch.Tensor] = {}
    m = K // 2

    def latent(patches: torch.Tensor, kernels: torch.Tensor, lam: float) -> torch.Tensor:
        s = kernels.shape[-1]
        if tuple(patches.shape[-2:]) != grid.patch_shape or s // 2 > m:
            raise ValueError("the true latent needs full-resolution patches (camera_levels=1) "
                             f"and a kernel of at most {K} pixels")
        if s not in cache:
            c = s // 2
            x = np.stack([sharp[None, r0 + m - c : r1 + m + c, c0 + m - c : c1 + m + c]
                          for r0, c0, r1, c1 in grid.boxes.tolist()])
            if kind == "truth-blur":
                x = ndimage.gaussian_filter(x, (0, 0, 1.5, 1.5))
            t = torch.from_numpy(np.ascontiguousarray(x))
            if kind in ("truth-l0", "truth-edges"):
                one = torch.ones(len(t), 1, 1, 1, dtype=t.dtype)
                t = l0_deconv(t, one, 3e-3 if kind == "truth-l0" else 3e-2)
            cache[s] = t
        return cache[s].to(patches)

    return latent


def run(kind: str, blurry: np.ndarray, sharp: np.ndarray) -> np.ndarray:
    """The ``fast`` run of ``blurry`` in mode ``kind`` (see the module docstring)."""
    if kind == "uniform":
        return deblur(blurry, preset="fast").image
    if kind == "l0":
        return deblur(blurry, preset="fast", nonuniform=True, grid=3).image

    def stage(lum, grid, k_global, pyramid, cfg, noise=None):
        return camera_kernel_stage(lum, grid, k_global, pyramid, cfg, noise=noise,
                                   latent=true_latent(sharp, grid, kind))

    shipped = solver.camera_kernel_stage
    solver.camera_kernel_stage = stage
    try:
        return deblur(blurry, preset="fast", nonuniform=True, grid=3).image
    finally:
        solver.camera_kernel_stage = shipped


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--roll", type=float, default=8.0)
    ap.add_argument("--shift", type=float, default=18.0)
    ap.add_argument("--noise", type=float, default=0.01)
    ap.add_argument("--latents", default=",".join(LATENTS))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default="benchmarks/results/nonuniform_latent.json")
    args = ap.parse_args(argv)
    kinds = args.latents.split(",")
    bad = [k for k in kinds if k not in LATENTS]
    if bad:
        ap.error(f"unknown latent(s) {', '.join(bad)}; choose from {', '.join(LATENTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    print(f"{'image':<10}" + "".join(f"{k:>13}" for k in kinds) + "   (PSNR, dB)")
    for i, path in enumerate(sorted(BSDS_VAL.glob("*.jpg"))[: args.n]):
        gt, blurry, _ = make_case(path, 256, i, 40.0, args.noise, "camera", args.shift,
                                  args.roll)
        sharp = load_sharp(path, 256)
        row = {"image": path.stem}
        for kind in kinds:
            t0 = time.perf_counter()
            est = np.clip(run(kind, blurry, sharp), 0, 1)
            row[kind] = {"psnr": aligned_psnr_ssim(est, gt)["psnr"],
                         "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"{path.stem:<10}" + "".join(f"{row[k]['psnr']:>13.2f}" for k in kinds),
              flush=True)
    mean = {k: float(np.mean([r[k]["psnr"] for r in rows])) for k in kinds}
    print(f"{'mean':<10}" + "".join(f"{mean[k]:>13.2f}" for k in kinds))
    summary = {
        "latents": kinds, "n_images": len(rows), "crop": 256, "grid": 3, "preset": "fast",
        "field": "camera", "shift": args.shift, "roll": args.roll, "noise_sigma": args.noise,
        "mean_psnr": mean, "rows": rows,
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{torch.get_num_threads()} torch threads",
        "protocol": "SelfDeblur: one global shift <=10 px (0.25 px steps), 15 px border crop",
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
