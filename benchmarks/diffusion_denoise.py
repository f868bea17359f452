"""Held-out denoising score of a diffusion prior: one-step (Tweedie) denoising of BSDS500 *val*
luminance crops (never seen in training) at a few noise levels.

Prints and writes the PSNR of the noisy and of the denoised crops, per noise level (noise std
on [0, 1] images). Usage::

    python benchmarks/diffusion_denoise.py [--model FILE_OR_FOLDER] [--n 50] [--crop 64]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from napari_glkm.backend.priors.diffusion import NoiseSchedule, load_diffusion_model, predict_x0
from napari_glkm.backend.train.diffusion import random_crops
from napari_glkm.backend.train.initializer import load_image_folder

VAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "bsds500" / "val"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the shipped model")
    ap.add_argument("--n", type=int, default=50, help="number of val crops")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--sigmas", default="0.05,0.1,0.2")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_diffusion_model(args.model)
    schedule = NoiseSchedule()
    x0 = random_crops(load_image_folder([VAL], args.crop), args.n, args.crop,
                      np.random.default_rng(0))
    g = torch.Generator().manual_seed(0)
    rows = []
    for sigma in map(float, args.sigmas.split(",")):
        t = schedule.step_for_sigma(2 * sigma)
        x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=g), torch.tensor([t]))
        with torch.no_grad():
            den = torch.cat([predict_x0(model, schedule, x_t[i : i + 1], t)[0]
                             for i in range(args.n)]).clamp(-1, 1)
        noisy = x_t / schedule.alpha_bar[t].sqrt()

        def psnr(a: torch.Tensor) -> float:  # on [0, 1]: differences halve, MSE / 4
            mse = ((a.clamp(-1, 1) - x0) ** 2).mean(dim=(1, 2, 3)) / 4
            return float((-10 * torch.log10(mse)).mean())

        rows.append({"sigma": sigma, "t": t, "psnr_noisy": psnr(noisy),
                     "psnr_denoised": psnr(den)})
        print(f"sigma {sigma:.3f} (t={t}): noisy {rows[-1]['psnr_noisy']:.2f} dB -> "
              f"denoised {rows[-1]['psnr_denoised']:.2f} dB", flush=True)
    summary = {"model": args.model or "shipped", "n": args.n, "crop": args.crop,
               "data": "BSDS500 val luminance crops (seed 0)", "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
