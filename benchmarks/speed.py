"""Speed and memory vs image size and kernel size.

Each configuration runs in a fresh subprocess (so its peak resident memory is its own): a
synthetic image (the shipped ``camera`` sample tiled/cropped to the size, blurred by a shipped
kernel, 1% noise) is deblurred with a preset; the script records seconds per stage, seconds
per iteration of the loop, the total and the peak RSS. Kernel sizes other than 31 use the
``free`` kernel prior when no generator of that size ships (stated in the table).

Usage::

    python benchmarks/speed.py [--preset fast] [--sizes 128 256 512 1024 2048]
                               [--kernel-sizes 31 55 75] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from napari_glkm import iter_deblur
from napari_glkm._sample_data import blurred_sample
from napari_glkm.backend.weights import has_shipped
size, ksize, preset, device, threads, rgb = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == "1"
if threads > 0:
    torch.set_num_threads(threads)
img = blurred_sample("astronaut" if rgb else "camera").blurry
reps = -(-size // img.shape[0])
img = np.tile(img, (reps, reps) + ((1,) if rgb else ()))[:size, :size].copy()
prior = "glkm" if has_shipped("generator", ksize, at_least=True) else "free"
t0 = time.perf_counter()
n = 0
for step in iter_deblur(img, kernel_size=ksize, preset=preset, device=device, kernel_prior=prior,
                        preview_every=1):
    n += 1
    last = step
total = time.perf_counter() - t0
if device.startswith("cuda"):
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20
else:
    gpu_peak = None
print(json.dumps({
    "image": size, "rgb": rgb, "kernel": ksize, "prior": prior, "iterations": n, "seconds": total,
    "seconds_per_iteration": total / max(n, 1), "timings": last.timings,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "gpu_peak_mb": gpu_peak,
}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="fast")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    p.add_argument("--kernel-sizes", type=int, nargs="+", default=[31, 55, 75])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--rgb", action="store_true", help="colour (H, W, 3) images")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    rows = []
    print(f"{'image':>6} {'kernel':>6} {'prior':>5} {'iters':>5} {'s/it':>7} {'total s':>8} "
          f"{'kernel s':>8} {'final s':>7} {'RSS MB':>7}")
    for ksize in args.kernel_sizes:
        for size in args.sizes:
            if size < 2 * ksize + 1:
                continue
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(size), str(ksize), args.preset, args.device,
                 str(args.threads), "1" if args.rgb else "0"],
                capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{size:>6} {ksize:>6} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            t = r["timings"]
            print(f"{size:>6} {ksize:>6} {r['prior']:>5} {r['iterations']:>5} "
                  f"{r['seconds_per_iteration']:>7.3f} {r['seconds']:>8.1f} "
                  f"{t.get('kernel', 0):>8.1f} {t.get('final', 0):>7.1f} {r['peak_rss_mb']:>7.0f}",
                  flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report = {"preset": args.preset, "device": args.device, "rgb": args.rgb, "rows": rows,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_average_at_end": load}
    path = Path(args.json) if args.json else RESULTS / f"speed_{args.preset}_{args.device}{'_rgb' if args.rgb else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
