"""How much does warm-starting each frame from the previous frame's kernel save on a stack?

A 3-frame synthetic stack (three overlapping crops of skimage's `camera`, each blurred by the
shipped sample kernel 0 with 1% noise) is deblurred frame by frame twice: cold (every frame
from scratch) and warm (frames 2 and 3 start from the previous kernel, running only the two
finest pyramid levels). Prints seconds per frame and writes them as JSON. Each mode is run
``--repeats`` times and the per-frame minimum is reported (the machine may be shared).

Usage::

    python benchmarks/stack_warm_start.py [--side 256] [--preset fast] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from skimage import data

from napari_glkm._sample_data import sample_kernels
from napari_glkm.backend.blur import conv_same
from napari_glkm.backend.metrics import aligned_psnr_ssim
from napari_glkm.backend.stack import iter_deblur_stack


def make_stack(side: int, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    sharp = data.camera().astype(np.float32) / 255
    crops = np.stack([sharp[100 + 8 * i: 100 + 8 * i + side, 120: 120 + side] for i in range(n)])
    k = torch.from_numpy(sample_kernels()[0])[None, None]
    with torch.no_grad():
        y = conv_same(torch.from_numpy(crops)[:, None], k, padding_mode="reflect")[:, 0].numpy()
    y = y + np.random.default_rng(0).normal(0, 0.01, y.shape)
    return np.clip(y, 0, 1).astype(np.float32), crops


def time_frames(frames: np.ndarray, warm: bool, preset: str) -> tuple[list[float], list[np.ndarray]]:
    seconds, images = [], []
    t0 = time.perf_counter()
    for s in iter_deblur_stack(frames, warm_start=warm, preset=preset, preview_every=10**9):
        if s.step.final:
            now = time.perf_counter()
            seconds.append(now - t0)
            images.append(s.step.image)
            t0 = now
    return seconds, images


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    frames, sharp = make_stack(args.side)
    out = {"side": args.side, "preset": args.preset, "torch_threads": torch.get_num_threads()}
    for mode in ("cold", "warm"):
        runs = [time_frames(frames, mode == "warm", args.preset) for _ in range(args.repeats)]
        secs = np.min([r[0] for r in runs], axis=0)
        psnr = [aligned_psnr_ssim(np.clip(img, 0, 1), sharp[i], border=16)["psnr"]
                for i, img in enumerate(runs[-1][1])]
        out[mode] = {"seconds_per_frame": [round(float(s), 2) for s in secs],
                     "psnr": [round(float(p), 2) for p in psnr]}
        print(f"{mode}: seconds per frame {out[mode]['seconds_per_frame']}, "
              f"PSNR {out[mode]['psnr']} dB")
    cold_later = float(np.mean(out["cold"]["seconds_per_frame"][1:]))
    warm_later = float(np.mean(out["warm"]["seconds_per_frame"][1:]))
    out["speedup_frames_2_3"] = round(cold_later / warm_later, 2)
    print(f"frames 2-3: cold {cold_later:.2f} s, warm {warm_later:.2f} s per frame "
          f"-> {out['speedup_frames_2_3']}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
