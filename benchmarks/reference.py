"""Side-by-side reference: the paper's DIP-GLKM loop on the same machine.

A faithful re-implementation of the reference optimisation (GLKM's DIP script, itself
SelfDeblur's loop with the generator as kernel prior): skip network 128 channels × 5 scales with
16 skip channels and non-local blocks, 8-channel noise input of (H+k−1)×(W+k−1), Adam lr 0.01
(network) / 5e-4 (generator feature map), halved at 2000/3000/4000 of 5000 iterations, MSE for
the first 500 iterations then 1 − SSIM, valid cross-correlation, random starting latent. It
runs the first ``--iters`` iterations of that 5000-iteration schedule on Levin images, measures
seconds per iteration and the PSNR of the DIP image every ``--eval-every`` iterations (SelfDeblur
protocol), and extrapolates the time of the full 5000. Our solver's numbers on the same images
come from ``benchmarks/levin.py``; the JSON records both so the speed-up is a ratio from one run
of each on this machine.

Usage::

    python benchmarks/reference.py [--images im1_kernel2 ...] [--iters 100] [--eval-every 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage import io

from napari_glkm.backend.kernel_prior import GeneratorKernelPrior
from napari_glkm.backend.metrics import aligned_psnr_ssim
from napari_glkm.backend.stages import DIPConfig, dip_stage
from napari_glkm.backend.weights import load_generator

LEVIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "levin"
REFERENCE = DIPConfig(iters=5000, channels=128, scales=5, skip=16, nonlocal_blocks=True,
                      image_lr=0.01, kernel_lr=5e-4, mse_iters=500)


def run_reference(name: str, iters: int, eval_every: int, seed: int = 0) -> dict:
    i, j = name[2], name.split("kernel")[1]
    gt = io.imread(LEVIN / "gt" / f"im{i}.png").astype(np.float64) / 255
    y = io.imread(LEVIN / f"{name}_img.png").astype(np.float32) / 255
    prior = GeneratorKernelPrior(load_generator(31), seed=seed)
    yt = torch.from_numpy(y)[None, None]
    curve, times = [], []
    t_prev = time.perf_counter()
    for it, (loss, x) in enumerate(dip_stage(yt, prior, REFERENCE, seed=seed), start=1):
        now = time.perf_counter()
        times.append(now - t_prev)
        if it % eval_every == 0 or it == iters:
            img = x[0, 0].clamp(0, 1).numpy()
            curve.append({"iteration": it, "loss": loss,
                          "psnr": aligned_psnr_ssim(img, gt)["psnr"]})
            print(f"  {name} it {it:5d} loss {loss:.4f} PSNR {curve[-1]['psnr']:.2f}", flush=True)
        if it >= iters:
            break
        t_prev = time.perf_counter()  # evaluation time is not counted
    per_it = float(np.median(times[1:] if len(times) > 1 else times))
    return {"image": name, "iterations_run": len(times), "seconds_per_iteration": per_it,
            "extrapolated_5000_seconds": per_it * REFERENCE.iters, "curve": curve}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", nargs="+", default=["im1_kernel2", "im3_kernel6"])
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--ours", default="benchmarks/results/levin_default_glkm.json",
                   help="our Levin results to compare with (same images)")
    p.add_argument("--json", default="benchmarks/results/reference_dip_glkm.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [run_reference(name, args.iters, args.eval_every) for name in args.images]
    ours = {}
    if Path(args.ours).exists():
        ours = {r["image"]: r for r in json.loads(Path(args.ours).read_text())["rows"]}
    print(f"{'image':<14}{'ref s/it':>9}{'ref 5000 it (s)':>17}{'ref PSNR@' + str(args.iters):>14}"
          f"{'ours PSNR':>11}{'ours s':>8}{'speed-up':>10}")
    for r in rows:
        o = ours.get(r["image"])
        last = r["curve"][-1]["psnr"] if r["curve"] else float("nan")
        if o:
            r["ours"] = {"psnr": o["psnr"], "seconds": o["seconds"]}
            r["speedup_vs_full_reference"] = r["extrapolated_5000_seconds"] / o["seconds"]
        print(f"{r['image']:<14}{r['seconds_per_iteration']:>9.3f}"
              f"{r['extrapolated_5000_seconds']:>17.0f}{last:>14.2f}"
              f"{(o or {}).get('psnr', float('nan')):>11.2f}{(o or {}).get('seconds', float('nan')):>8.1f}"
              f"{r.get('speedup_vs_full_reference', float('nan')):>10.0f}", flush=True)
    report = {"reference": {k: getattr(REFERENCE, k) for k in REFERENCE.__dataclass_fields__},
              "rows": rows, "torch_threads": torch.get_num_threads(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_average_at_end": os.getloadavg()[0]}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
