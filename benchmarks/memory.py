"""Peak memory of real runs against the memory model that guards ``deblur()`` before it allocates.

For each image size (gray and colour) a fresh subprocess runs the ``fast`` preset end to end
(the same child as ``benchmarks/speed.py``: the shipped ``camera``/``astronaut`` sample tiled to
the size) and reports its peak resident memory; the table puts it next to
:func:`napari_glkm.backend.resources.estimate_peak_bytes`, which must stay above it (the model
is used to refuse images that would not fit). Images above ``TILE_PIXELS`` exercise the tiled
final deconvolution.

Usage::

    python benchmarks/memory.py [--sizes 512 1024 2048 3072] [--rgb-sizes 1024 2048] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import _CHILD  # noqa: E402

from napari_glkm.backend.resources import TILE_PIXELS, estimate_peak_bytes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 3072])
    p.add_argument("--rgb-sizes", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--preset", default="fast")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = []
    print(f"{'image':>6} {'ch':>2} {'tiled':>5} {'peak MB':>8} {'model MB':>9} {'ratio':>6} "
          f"{'total s':>8} {'final s':>8}")
    for rgb, sizes in ((False, args.sizes), (True, args.rgb_sizes)):
        for size in sizes:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(size), "31", args.preset, "cpu",
                 str(args.threads), "1" if rgb else "0"],
                capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{size:>6} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            ch = 3 if rgb else 1
            model = estimate_peak_bytes(size, size, ch, 31) / 2**20
            r.update(channels=ch, model_mb=model, tiled=size * size > TILE_PIXELS,
                     ratio=r["peak_rss_mb"] / model)
            rows.append(r)
            print(f"{size:>6} {ch:>2} {str(r['tiled']):>5} {r['peak_rss_mb']:>8.0f} {model:>9.0f} "
                  f"{r['ratio']:>6.2f} {r['seconds']:>8.1f} {r['timings'].get('final', 0):>8.1f}",
                  flush=True)
    report = {"preset": args.preset, "threads": args.threads, "rows": rows,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_average_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    path = Path(args.json) if args.json else RESULTS / "memory.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
