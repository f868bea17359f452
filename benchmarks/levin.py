"""Levin et al. (CVPR 2009) benchmark: 4 images x 8 kernels, 255x255 gray.

Runs ``napari_glkm.deblur`` with a preset on each blurry image and scores the result with the
SelfDeblur protocol (shift search within ±10 px at 0.25 px steps, 15 px border crop, PSNR with
peak 1 on [0, 1], SSIM with an 11x11 Gaussian window, sigma 1.5). Also reports the kernel
error (L1 to the ground truth, best of the two 180° orientations since the Levin files are
not consistent about it) and seconds per image.

Usage::

    python benchmarks/levin.py --preset fast [--subset 8] [--json out.json]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage import io

from napari_glkm import PRESETS, deblur
from napari_glkm.backend.metrics import aligned_psnr_ssim

LEVIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "levin"
# A fixed 8-image subset covering every kernel and every image once or twice.
SUBSET8 = [(1, 2), (2, 4), (3, 6), (4, 8), (1, 5), (2, 7), (3, 1), (4, 3)]


def kernel_error(est: np.ndarray, truth: np.ndarray) -> float:
    """L1 between the kernels (the smaller zero-padded to the larger's size, centred), best
    over shifts of the estimate by up to 8 px and over the 180° rotation of the truth."""
    size = max(est.shape[0], truth.shape[0])
    est = np.pad(est, (size - est.shape[0]) // 2)
    t = np.pad(truth, (size - truth.shape[0]) // 2)
    best = np.inf
    for cand in (t, t[::-1, ::-1]):
        for dy in range(-8, 9):
            for dx in range(-8, 9):
                best = min(best, float(np.abs(np.roll(est, (dy, dx), (0, 1)) - cand).sum()))
    return best


def _override(opts, item: str):
    """Return ``opts`` with the dotted field in ``item`` (``a.b=value``) replaced."""
    key, value = item.split("=", 1)
    head, _, rest = key.partition(".")
    current = getattr(opts, head)
    if rest:
        return replace(opts, **{head: _override(current, f"{rest}={value}")})
    cast = type(current)
    if cast is bool:  # bool("False") is True: parse the word
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} needs true or false, got {value!r}")
        return replace(opts, **{head: value.lower() in ("true", "1")})
    if current is None:  # an optional field: a number, or none
        return replace(opts, **{head: None if value.lower() == "none" else float(value)})
    return replace(opts, **{head: value if cast is str else cast(float(value)) if cast is int else cast(value)})


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--kernel-size", type=lambda v: v if v == "auto" else int(v), default=31,
                    help="odd size in pixels, or auto (the API default since issue 11)")
    ap.add_argument("--kernel-prior", default="glkm")
    ap.add_argument("--subset", type=int, default=32, choices=[4, 8, 32],
                    help="4: one blur per image (the first half of the 8-image subset)")
    ap.add_argument("--prior", default=None, choices=["none", "dip", "vdip", "diffusion"],
                    help="image prior of the refinement stage (default: the preset's)")
    ap.add_argument("--diffusion-model", default=None,
                    help="with --prior diffusion: model file or diffusers folder (default: shipped)")
    ap.add_argument("--images", default=None,
                    help="comma-separated Levin pairs I-K to run instead of the subset, e.g. 1-2")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--save", default=None, metavar="DIR",
                    help="also write each image's restoration and kernel to DIR/<image>.npz")
    ap.add_argument("--nonuniform", action="store_true", help="SVOLA mode (checks uniform blur)")
    ap.add_argument("--grid", type=int, default=2, help="patches per side with --nonuniform")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a preset field for this run, e.g. dip.iters=300 or "
                         "final_kernel=prior (for tuning; recorded in the JSON)")
    args = ap.parse_args(argv)
    for item in args.set:
        PRESETS[args.preset] = _override(PRESETS[args.preset], item)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = {4: SUBSET8[:4], 8: SUBSET8}.get(args.subset,
                                            [(i, j) for i in range(1, 5) for j in range(1, 9)])
    if args.images:
        pairs = [tuple(int(v) for v in p.split("-")) for p in args.images.split(",")]
    rows = []
    print(f"{'image':<16}{'PSNR':>8}{'SSIM':>8}{'k-L1':>8}{'sec':>8}")
    for i, j in pairs:
        gt = io.imread(LEVIN / "gt" / f"im{i}.png").astype(np.float64) / 255
        blurry = io.imread(LEVIN / f"im{i}_kernel{j}_img.png")
        k_true = io.imread(LEVIN / "gt" / f"kernel{j}.png").astype(np.float64)
        k_true /= k_true.sum()
        t0 = time.perf_counter()
        extra = dict(nonuniform=True, grid=args.grid) if args.nonuniform else {}
        if args.prior is not None:
            extra["prior"] = args.prior
        if args.diffusion_model is not None:
            extra["diffusion_model"] = args.diffusion_model
        res = deblur(blurry, preset=args.preset, kernel_size=args.kernel_size,
                     kernel_prior=args.kernel_prior, **extra)
        sec = time.perf_counter() - t0
        score = aligned_psnr_ssim(np.clip(res.image / 255.0, 0, 1), gt)
        row = {"image": f"im{i}_kernel{j}", "psnr": score["psnr"], "ssim": score["ssim"],
               "kernel_l1": kernel_error(res.kernel, k_true), "seconds": sec,
               "kernel_size": res.kernel_size,
               "timings": res.timings}
        rows.append(row)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(Path(args.save) / f"{row['image']}.npz", image=res.image,
                                kernel=res.kernel, psnr=row["psnr"])
        print(f"{row['image']:<16}{row['psnr']:>8.2f}{row['ssim']:>8.4f}"
              f"{row['kernel_l1']:>8.3f}{sec:>8.1f}", flush=True)
    summary = {
        "preset": args.preset, "overrides": args.set, "kernel_prior": args.kernel_prior,
        "kernel_size": args.kernel_size, "prior": args.prior, "subset": args.subset,
        "diffusion_model": args.diffusion_model, "images": args.images,
        "nonuniform": args.nonuniform, "grid": args.grid if args.nonuniform else None,
        "n_images": len(rows),
        "psnr_mean": float(np.mean([r["psnr"] for r in rows])),
        "ssim_mean": float(np.mean([r["ssim"] for r in rows])),
        "kernel_l1_mean": float(np.mean([r["kernel_l1"] for r in rows])),
        "seconds_mean": float(np.mean([r["seconds"] for r in rows])),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "protocol": "SelfDeblur: shift <=10 px (0.25 px steps), 15 px border crop, PSNR peak 1",
        "rows": rows,
    }
    print(f"{'mean':<16}{summary['psnr_mean']:>8.2f}{summary['ssim_mean']:>8.4f}"
          f"{summary['kernel_l1_mean']:>8.3f}{summary['seconds_mean']:>8.1f}")
    mode = f"_nonuniform{args.grid}" if args.nonuniform else ""
    mode += f"_{args.prior}" if args.prior else ""
    mode += f"_subset{args.subset}" if args.subset != 32 else ""
    mode += "_autosize" if args.kernel_size == "auto" else ""
    out = Path(args.json or f"benchmarks/results/levin_{args.preset}_{args.kernel_prior}{mode}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
