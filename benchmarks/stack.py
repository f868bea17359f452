"""Stacks out of core: frames per minute and peak memory, serial vs warm start vs a LocalCluster.

A synthetic stack (default 64 frames of 256 x 256): a window drifting 1 px per frame across
skimage's ``camera`` (a slowly moving scene), blurred by a kernel that changes slowly along
the stack (a blend of the shipped sample kernels 0 and 1, weight i / (N - 1)), + 1% noise. It
is written to a Zarr store first, so no mode ever holds the input in memory. Each mode runs
in a fresh subprocess (its peak RSS is its own) and writes its frames to a Zarr output with
:func:`napari_glkm.deblur_stack`:

* ``serial``: frame by frame, every frame from a cold start (``warm_start=False``);
* ``warm``: frame by frame, each frame starting from the previous frame's kernel;
* ``cluster``: a ``dask.distributed`` LocalCluster of ``--workers`` single-threaded worker
  processes, chunks of N / (2 workers) consecutive frames, warm start inside each chunk.

Reported: seconds, frames per minute, CPU seconds per frame (this process, plus the workers
for the cluster; less sensitive than wall time to other jobs on a shared machine), peak RSS (the main process; for the cluster also the
sum over the main process and its workers, sampled every 0.2 s), mean aligned PSNR against
the sharp frames (SelfDeblur protocol, on at most 8 evenly spaced frames), the warm-start
speed-up (serial / warm time) and the parallel efficiency (warm time / cluster time / workers).

Usage::

    python benchmarks/stack.py [--frames 64] [--side 256] [--preset fast] [--workers 2]
                               [--json benchmarks/results/stack.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("serial", "warm", "cluster")


def make_stack(folder: Path, n: int, side: int) -> Path:
    """Write the blurry stack (``blurry``) and the sharp frames (``sharp``) to a Zarr group."""
    import torch
    import zarr
    from skimage import data

    from napari_glkm._sample_data import sample_kernels
    from napari_glkm.backend.blur import conv_same

    cam = data.camera().astype(np.float32) / 255
    k0, k1 = sample_kernels()[0], sample_kernels()[1]
    rng = np.random.default_rng(0)
    group = zarr.open_group(str(folder / "input.zarr"), mode="w")
    blurry = group.create_array("blurry", shape=(n, side, side), chunks=(1, side, side),
                                dtype="float32")
    sharp = group.create_array("sharp", shape=(n, side, side), chunks=(1, side, side),
                               dtype="float32")
    r0, c0 = (cam.shape[0] - side) // 2, 40
    for i in range(n):
        a = i / max(n - 1, 1)
        k = torch.from_numpy(((1 - a) * k0 + a * k1).astype(np.float32))[None, None]
        col = c0 + i % max(cam.shape[1] - side - c0, 1)
        frame = cam[r0: r0 + side, col: col + side]
        with torch.no_grad():
            y = conv_same(torch.from_numpy(frame)[None, None], k, padding_mode="reflect")[0, 0]
        blurry[i] = np.clip(y.numpy() + rng.normal(0, 0.01, y.shape), 0, 1)
        sharp[i] = frame
    return folder / "input.zarr"


_CHILD = r"""
import json, resource, sys, threading, time
import psutil, torch
from napari_glkm import deblur_stack, open_stack
mode, src, out, preset, workers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
data, _ = open_stack(src)
peak, stop = [0], threading.Event()
def sample():
    me = psutil.Process()
    while not stop.is_set():
        try:
            procs = [me] + me.children(recursive=True)
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs))
        except psutil.Error:
            pass
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
kw = dict(preset=preset, out=out)
if mode == "serial":
    kw["warm_start"] = False
if mode == "cluster":
    from napari_glkm.backend.outofcore import dask_client
    t0 = time.perf_counter()
    with dask_client(workers=workers) as client:
        client.run(lambda: __import__("napari_glkm.backend.solver"))  # workers import torch
        started = time.perf_counter() - t0
        c0 = cpu() + sum(client.run(cpu).values())
        t1 = time.perf_counter()
        res = deblur_stack(data, client=client, **kw)
        seconds = time.perf_counter() - t1
        cpu_seconds = cpu() + sum(client.run(cpu).values()) - c0
else:
    started = 0.0
    c0, t1 = cpu(), time.perf_counter()
    res = deblur_stack(data, **kw)
    seconds = time.perf_counter() - t1
    cpu_seconds = cpu() - c0
stop.set()
print(json.dumps({
    "mode": mode, "frames": len(res.frames), "seconds": seconds, "startup_seconds": started,
    "frames_per_minute": 60 * len(res.frames) / seconds, "cpu_seconds": cpu_seconds,
    "cpu_seconds_per_frame": cpu_seconds / len(res.frames),
    "seconds_per_frame": res.seconds, "warm_start_frames": int(sum(res.warm_start)),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "peak_rss_all_processes_mb": peak[0] / 2**20, "torch_threads": torch.get_num_threads(),
}))
"""


def psnr_of(output: Path, sharp, n: int) -> float:
    from napari_glkm.backend.metrics import aligned_psnr_ssim
    from napari_glkm.backend.stack_io import ZarrStackOutput

    out = ZarrStackOutput.open(output, mode="r")
    picks = np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
    return float(np.mean([aligned_psnr_ssim(np.clip(out.frame(i), 0, 1), np.asarray(sharp[i]),
                                            border=16)["psnr"] for i in picks]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--json", default=str(RESULTS / "stack.json"))
    args = ap.parse_args(argv)
    import zarr

    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    out: dict = {"frames": args.frames, "side": args.side, "preset": args.preset,
                 "workers": args.workers, "cpu_count": os.cpu_count(),
                 "machine": platform.machine(), "omp_num_threads": env["OMP_NUM_THREADS"],
                 "load_average_before": os.getloadavg(), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="glkm-stack-bench-") as tmp:
        src = make_stack(Path(tmp), args.frames, args.side)
        sharp = zarr.open_group(str(src), mode="r")["sharp"]
        for mode in args.modes:
            dest = Path(tmp) / f"{mode}.zarr"
            proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(src / "blurry"),
                                   str(dest), args.preset, str(args.workers)],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            rec["psnr"] = psnr_of(dest, sharp, args.frames)
            out["modes"][mode] = rec
            print(f"{mode:8s} {rec['seconds']:8.1f} s  {rec['frames_per_minute']:6.2f} frames/min  "
                  f"peak RSS {rec['peak_rss_mb']:6.0f} MB (all processes "
                  f"{rec['peak_rss_all_processes_mb']:6.0f} MB)  PSNR {rec['psnr']:.2f} dB",
                  flush=True)
    m = out["modes"]
    if "serial" in m and "warm" in m:
        out["warm_start_speedup"] = m["serial"]["seconds"] / m["warm"]["seconds"]
        out["warm_start_cpu_speedup"] = m["serial"]["cpu_seconds"] / m["warm"]["cpu_seconds"]
    if "warm" in m and "cluster" in m:
        speedup = m["warm"]["seconds"] / m["cluster"]["seconds"]
        out["cluster_speedup_vs_warm"] = speedup
        out["parallel_efficiency"] = speedup / args.workers
    out["load_average_after"] = os.getloadavg()
    print()
    print("| mode | frames | s | frames/min | CPU s/frame | peak RSS (MB) | all processes (MB) "
          "| PSNR (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, rec in m.items():
        print(f"| {mode} | {rec['frames']} | {rec['seconds']:.1f} | {rec['frames_per_minute']:.2f} "
              f"| {rec['cpu_seconds_per_frame']:.1f} | {rec['peak_rss_mb']:.0f} "
              f"| {rec['peak_rss_all_processes_mb']:.0f} | {rec['psnr']:.2f} |")
    for key in ("warm_start_speedup", "warm_start_cpu_speedup", "cluster_speedup_vs_warm",
                "parallel_efficiency"):
        if key in out:
            print(f"{key}: {out[key]:.2f}")
    print(f"load average before {out['load_average_before']}, after {out['load_average_after']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
