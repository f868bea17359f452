"""Network vs random initialisation on a held-out synthetic set.

BSDS500 *val* photos (never used for training), gray, centre crop ``--crop`` px, each blurred
(reflect borders) by a seeded trajectory kernel from one of three motion-length classes
(short: 10–35 %, medium: 35–65 %, long: 65–100 % of the 31 px support) plus 1 % Gaussian noise.
For every image the script reports

* the kernel L1 of the *starting* kernel: ``G(E(y))`` for the initializer vs ``G(z)`` for a random
  latent (what the optimisation starts from);
* the kernel L1 and PSNR after deblurring with ``init="network"`` and ``init="random"`` for each
  number of alternations per pyramid scale in ``--iterations`` (to see how many each needs to
  reach the same PSNR).

Kernel L1 is measured after the best shift within ±8 px (0 exact, 2 disjoint); PSNR after the
SelfDeblur alignment (≤ 10 px shift, 15 px crop).

Usage::

    python benchmarks/initializer.py --initializer runs/init31/initializer_31.safetensors \
        [--n 50] [--iterations 2 5] [--preset fast]
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

from napari_glkm import deblur
from napari_glkm.backend.blur import conv_same
from napari_glkm.backend.metrics import aligned_psnr_ssim
from napari_glkm.backend.train.initializer import load_image_folder
from napari_glkm.backend.trajectories import TrajectoryParams, motion_kernels
from napari_glkm.backend.weights import load_generator, load_initializer

VAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "bsds500" / "val"
CLASSES = {"short": (0.10, 0.35), "medium": (0.35, 0.65), "long": (0.65, 1.0)}


def kernel_l1(est: np.ndarray, truth: np.ndarray, max_shift: int = 8) -> float:
    best = np.inf
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            best = min(best, float(np.abs(np.roll(est, (dy, dx), (0, 1)) - truth).sum()))
    return best


def make_set(n: int, crop: int, seed: int = 7) -> list[dict]:
    images = load_image_folder([VAL], crop)
    rng = np.random.default_rng(seed)
    out = []
    names = list(CLASSES)
    for i in range(n):
        img = images[i % len(images)]
        r, c = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
        sharp = img[r : r + crop, c : c + crop]
        cls = names[i % 3]
        k = motion_kernels(1, 31, rng=rng, params=TrajectoryParams(extent=CLASSES[cls]))[0]
        blurry = conv_same(torch.from_numpy(sharp)[None, None].double(),
                           torch.from_numpy(k)[None, None].double())[0, 0].numpy()
        blurry = np.clip(blurry + 0.01 * rng.standard_normal(blurry.shape), 0, 1).astype(np.float32)
        out.append({"sharp": sharp, "blurry": blurry, "kernel": k, "class": cls})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--initializer", default=None, help="initializer file (default: shipped)")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--iterations", type=int, nargs="+", default=[5])
    p.add_argument("--preset", default="fast")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default="benchmarks/results/initializer.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = load_generator(31)
    enc = load_initializer(31, args.initializer)
    data = make_set(args.n, args.crop)
    rows = []
    g = torch.Generator().manual_seed(0)
    for idx, d in enumerate(data):
        with torch.no_grad():
            k_net = gen(enc(torch.from_numpy(d["blurry"])[None, None]))[0, 0].numpy()
            k_rnd = gen(torch.randn(1, 100, 1, 1, generator=g))[0, 0].numpy()
        row = {"index": idx, "class": d["class"],
               "start_l1_network": kernel_l1(k_net, d["kernel"]),
               "start_l1_random": kernel_l1(k_rnd, d["kernel"])}
        for iters in args.iterations:
            for init in ("network", "random"):
                t0 = time.perf_counter()
                res = deblur(d["blurry"], preset=args.preset, iterations=iters, init=init,
                             initializer=args.initializer if init == "network" else None)
                row[f"{init}_it{iters}"] = {
                    "psnr": aligned_psnr_ssim(np.clip(res.image, 0, 1), d["sharp"])["psnr"],
                    "kernel_l1": kernel_l1(res.kernel, d["kernel"]),
                    "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(f"{idx:3d} {d['class']:<7} start L1 net {row['start_l1_network']:.3f} "
              f"rnd {row['start_l1_random']:.3f} | " + " ".join(
                  f"it{it} {row[f'network_it{it}']['psnr']:.2f}/{row[f'random_it{it}']['psnr']:.2f}"
                  for it in args.iterations), flush=True)
    summary: dict = {"n": len(rows), "preset": args.preset, "crop": args.crop,
                     "initializer": args.initializer or "shipped",
                     "start_l1_network": float(np.mean([r["start_l1_network"] for r in rows])),
                     "start_l1_random": float(np.mean([r["start_l1_random"] for r in rows]))}
    for iters in args.iterations:
        for init in ("network", "random"):
            key = f"{init}_it{iters}"
            summary[key] = {m: float(np.mean([r[key][m] for r in rows]))
                            for m in ("psnr", "kernel_l1", "seconds")}
    print(json.dumps(summary, indent=1))
    summary.update(rows=rows, machine=f"{platform.machine()}, {os.cpu_count()} cores",
                   load_average_at_end=os.getloadavg()[0])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
