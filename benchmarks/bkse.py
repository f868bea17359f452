"""BKSE benchmark: how well the encoded blur-kernel space reproduces, transfers and removes blur.

Data: BSDS500 *val* photos 50–99 (sorted by name; never used for training, and 0–49 only served
for choosing the checkpoint), gray, crops of ``--crop`` px, blurred by seeded trajectory kernels
of 19 px (the shipped networks' training size) with reflect borders, no noise unless stated.

1. **reproduction** — PSNR of ``F(x, G(x, y))`` against ``y`` (uniform and 2×2 SVOLA blurs),
   next to the identity baseline ``PSNR(x, y)``;
2. **transfer** — code from ``(A, A⋆k)`` applied to another image ``B``, PSNR against the true
   ``B⋆k`` (uniform ``k``, and the same 2×2 SVOLA field on both); ``resize`` and ``mean`` code
   layouts; the oracle ``F(B, G(B, B⋆k))`` and the
   identity ``PSNR(B, B⋆k)`` for scale;
3. **deblurring** — ``--n-deblur`` images with 1 % noise: code-space deblurring
   (:func:`napari_glkm.deblur_bkse`) vs GLKM ``iter_deblur`` (preset ``fast``, kernel size 19),
   and, as a diagnostic, the same with the *true* code ``G(x, y)`` held fixed (non-blind
   deconvolution through ``F``); PSNR after the SelfDeblur alignment (≤ 10 px shift, 15 px border), seconds per image.

Usage::

    python benchmarks/bkse.py [--weights FILE] [--n 50] [--n-deblur 4] [--out NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from napari_glkm import deblur, deblur_bkse, transfer_blur
from napari_glkm.backend.bkse.api import SHIPPED_KERNEL_SIZE, load_bkse, resize_code
from napari_glkm.backend.bkse.data import blur_svola, blur_uniform
from napari_glkm.backend.metrics import aligned_psnr_ssim, psnr
from napari_glkm.backend.train.initializer import load_image_folder
from napari_glkm.backend.trajectories import motion_kernels

VAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "bsds500" / "val"
RESULTS = Path(__file__).resolve().parent / "results"


def centre_crops(images: list[np.ndarray], crop: int) -> list[np.ndarray]:
    out = []
    for im in images:
        r, c = (im.shape[0] - crop) // 2, (im.shape[1] - crop) // 2
        out.append(np.ascontiguousarray(im[r:r + crop, c:c + crop]))
    return out


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)[None, None]


def reproduction(net, crops, rng) -> dict:
    rows = {"uniform": [], "svola": []}
    for i, x in enumerate(crops):
        kind = "uniform" if i % 2 == 0 else "svola"
        xt = _t(x)
        if kind == "uniform":
            k = torch.from_numpy(motion_kernels(1, SHIPPED_KERNEL_SIZE, rng=rng))[:, None]
            y = blur_uniform(xt, k)
        else:
            k = torch.from_numpy(motion_kernels(4, SHIPPED_KERNEL_SIZE, rng=rng))[:, None]
            y = blur_svola(xt, k, (2, 2))
        with torch.no_grad():
            rep = net(xt, y).clamp(0, 1)
        yn = y[0, 0].numpy()
        rows[kind].append({"bkse": psnr(rep[0, 0].numpy(), yn), "identity": psnr(x, yn)})
    return {kind: {"n": len(r), "bkse_psnr": float(np.mean([v["bkse"] for v in r])),
                   "identity_psnr": float(np.mean([v["identity"] for v in r]))}
            for kind, r in rows.items()}


def transfer(net, crops, rng, weights) -> dict:
    """Uniform kernels (``k``) and 2×2 SVOLA fields (same field on both images, same size)."""
    out = {}
    for kind in ("uniform", "svola"):
        res = {"resize": [], "mean": [], "oracle": [], "identity": []}
        for i in range(len(crops)):
            a, b = crops[i], crops[(i + 1) % len(crops)]
            n_k = 1 if kind == "uniform" else 4
            k = torch.from_numpy(motion_kernels(n_k, SHIPPED_KERNEL_SIZE, rng=rng))[:, None]
            blur = (lambda im: blur_uniform(_t(im), k)) if kind == "uniform" else (
                lambda im: blur_svola(_t(im), k, (2, 2)))
            ya, yb = blur(a)[0, 0].numpy(), blur(b)[0, 0].numpy()
            for mode in ("resize", "mean"):
                res[mode].append(psnr(transfer_blur(a, ya, b, spatial=mode, weights=weights), yb))
            with torch.no_grad():
                res["oracle"].append(psnr(net(_t(b), _t(yb))[0, 0].clamp(0, 1).numpy(), yb))
            res["identity"].append(psnr(b, yb))
        out[kind] = {"n": len(crops), **{f"{k}_psnr": float(np.mean(v)) for k, v in res.items()}}
    return out


def deblurring(net, crops, rng, iterations: int, weights) -> dict:
    rows = []
    for i, x in enumerate(crops):
        k = motion_kernels(1, SHIPPED_KERNEL_SIZE, rng=rng)
        y = blur_uniform(_t(x), torch.from_numpy(k)[:, None])[0, 0].numpy()
        y = np.clip(y + 0.01 * rng.standard_normal(y.shape), 0, 1).astype(np.float32)
        t = time.perf_counter()
        b = deblur_bkse(y, iterations=iterations, weights=weights)
        tb = time.perf_counter() - t
        with torch.no_grad():  # diagnostic: the true code (G of the true pair), kept fixed
            oracle = net.extract(_t(x), _t(y))[0].numpy()
        o = deblur_bkse(y, iterations=iterations, weights=weights, code=oracle, learn_code=False)
        t = time.perf_counter()
        g = deblur(y, preset="fast", kernel_size=SHIPPED_KERNEL_SIZE)
        tg = time.perf_counter() - t
        row = {"image": i, "blurry": aligned_psnr_ssim(y, x)["psnr"],
               "bkse": aligned_psnr_ssim(b.image, x)["psnr"], "bkse_s": tb,
               "bkse_oracle_code": aligned_psnr_ssim(o.image, x)["psnr"],
               "glkm_fast": aligned_psnr_ssim(g.image, x)["psnr"], "glkm_fast_s": tg}
        print(f"  deblur {i}: blurry {row['blurry']:.2f}  bkse {row['bkse']:.2f} ({tb:.0f} s)  "
              f"oracle code {row['bkse_oracle_code']:.2f}  "
              f"glkm fast {row['glkm_fast']:.2f} ({tg:.0f} s)", flush=True)
        rows.append(row)
    summary = {key: float(np.mean([r[key] for r in rows]))
               for key in ("blurry", "bkse", "bkse_s", "bkse_oracle_code", "glkm_fast",
                           "glkm_fast_s")}
    return {"n": len(rows), "iterations": iterations, **summary, "per_image": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=None, help="BKSE weights (default: shipped)")
    ap.add_argument("--n", type=int, default=50, help="pairs for reproduction and transfer")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--n-deblur", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=300, help="code-space deblur iterations")
    ap.add_argument("--out", default="bkse")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    images = load_image_folder([VAL], args.crop)[50:]
    crops = centre_crops(images, args.crop)[: args.n]
    net = load_bkse(args.weights)
    t0 = time.perf_counter()
    rep = reproduction(net, crops, np.random.default_rng(1))
    tra = transfer(net, crops, np.random.default_rng(2), args.weights)
    deb = deblurring(net, crops[: args.n_deblur], np.random.default_rng(3), args.iterations,
                     args.weights) if args.n_deblur else None
    result = {"data": f"BSDS500 val images 50-99 (sorted), centre crops {args.crop}px, gray; "
                      f"trajectory kernels {SHIPPED_KERNEL_SIZE}px, reflect borders",
              "weights": args.weights or "shipped bkse_19",
              "reproduction": rep, "transfer": tra, "deblurring": deb,
              "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s), "
                         f"shared; torch {torch.__version__}",
              "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{'measure':32s} {'BKSE':>8s} {'baseline':>9s}  (PSNR dB)")
    for kind, r in rep.items():
        label = f"reproduction {kind} (n={r['n']})"
        print(f"{label:32s} {r['bkse_psnr']:8.2f} "
              f"{r['identity_psnr']:9.2f}  identity F(x)=x")
    for kind, r in tra.items():
        label = f"transfer {kind} (n={r['n']})"
        print(f"{label:32s} {r['resize_psnr']:8.2f} {r['identity_psnr']:9.2f}  identity; "
              f"layout 'resize' (shown), 'mean' {r['mean_psnr']:.2f}, oracle G(B, yB) "
              f"{r['oracle_psnr']:.2f}")
    if deb:
        label = f"deblur (n={deb['n']}, 1% noise)"
        print(f"{label:32s} {deb['bkse']:8.2f} "
              f"{deb['glkm_fast']:9.2f}  GLKM fast; blurry {deb['blurry']:.2f}; "
              f"{deb['bkse_s']:.0f} s vs {deb['glkm_fast_s']:.0f} s per image")
        print(f"{'  same, true code fixed':32s} {deb['bkse_oracle_code']:8.2f}  (diagnostic)")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{args.out}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
