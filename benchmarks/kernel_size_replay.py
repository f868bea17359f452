"""Replay the automatic kernel-size choice on blurs whose per-size results are known.

Deblurring is deterministic, so ``kernel_size="auto"`` on an image gives exactly the result of
the fixed size it chooses. This script measures the quick estimate's support on every image of

* the BSDS tuning set and the held-out set of ``kernel_size.py`` (fixed-size PSNRs from
  ``results/kernel_size_fast.json`` and ``results/kernel_size_fast_heldout.json``),
* Levin SUBSET8 (fixed 15 / 23 / 31 from ``results/levin_fast_glkm_k15_subset8.json``,
  ``..._k23_subset8.json`` and ``levin_fast_glkm_init.json``),

and scores the quick support rule (``AutoSizeConfig`` defaults with ``compare=False``) against
always-23, always-31 and the best size per image. Only the cheap size choice runs (about a
second per image). The shipped rule then checks the quick choice by comparing the data fits of
two full estimates; that cannot be replayed from the fixed results and is measured by
``kernel_size.py`` and ``levin.py --kernel-size auto`` instead.

Usage::

    python benchmarks/kernel_size_replay.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from skimage import io

from napari_glkm.backend.kernel_size import AutoSizeConfig, candidate_sizes, choose_kernel_size
from napari_glkm.backend.solver import _estimation_input, _RunSettings
from napari_glkm.backend.validation import prepare_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_size import make_set  # noqa: E402
from levin import LEVIN, SUBSET8  # noqa: E402

RES = Path(__file__).resolve().parent / "results"


def _rows(name: str) -> list[dict]:
    return json.loads((RES / name).read_text())["rows"]


def main() -> dict:
    torch.set_num_threads(1)
    cases = []
    tune = [r for r in _rows("kernel_size_fast.json") if r["group"] == "in_range"]
    for c, r in zip(make_set([15, 19, 23, 27, 31], 2, 256), tune):
        cases.append(("bsds", f"box{r['box']}", c["blurry"], {int(k): v for k, v in r["fixed"].items()}))
    held = _rows("kernel_size_fast_heldout.json")
    for c, r in zip(make_set([15, 19, 23, 27, 31], 1, 256, seed=21, offset=3), held):
        cases.append(("held", f"box{r['box']}", c["blurry"], {int(k): v for k, v in r["fixed"].items()}))
    lev = {s: {r["image"]: r["psnr"] for r in _rows(f)} for s, f in
           ((15, "levin_fast_glkm_k15_subset8.json"), (23, "levin_fast_glkm_k23_subset8.json"),
            (31, "levin_fast_glkm_init.json"))}
    for i, j in SUBSET8:
        name = f"im{i}_kernel{j}"
        img = io.imread(LEVIN / f"{name}_img.png")
        cases.append(("levin", name, img, {s: lev[s][name] for s in (15, 23, 31)}))
    cands = candidate_sizes(31)
    rows = []
    print(f"{'set':<6}{'image':<14}{'support':>8}{'auto':>6}{'PSNR':>8}{'best':>8}")
    for src, name, img, fixed in cases:
        prep = prepare_image(img, 15)
        lum, w, _ = _estimation_input(prep, _RunSettings(noise="auto", saturation=0.98), cands[-1])
        ch = choose_kernel_size(lum, cands, AutoSizeConfig(), weight=w)
        rows.append({"set": src, "image": name, "support": ch.support, "auto_size": ch.size,
                     "auto_psnr": fixed[ch.size], "fixed": fixed, "best": max(fixed.values())})
        print(f"{src:<6}{name:<14}{ch.support:>8.1f}{ch.size:>6}{fixed[ch.size]:>8.2f}"
              f"{max(fixed.values()):>8.2f}", flush=True)
    summary = {"candidates": list(cands), "sets": {}}
    for src in ("bsds", "held", "levin", "all"):
        sel = [r for r in rows if src in ("all", r["set"])]
        summary["sets"][src] = {
            "n": len(sel),
            "auto": float(np.mean([r["auto_psnr"] for r in sel])),
            "best": float(np.mean([r["best"] for r in sel])),
            "gap": float(np.mean([r["best"] - r["auto_psnr"] for r in sel])),
            "max_gap": float(np.max([r["best"] - r["auto_psnr"] for r in sel])),
            **{f"always_{s}": float(np.mean([r["fixed"][s] for r in sel])) for s in (15, 23, 31)},
        }
        m = summary["sets"][src]
        print(f"{src:<6} n={m['n']:<3} auto {m['auto']:.2f}  best {m['best']:.2f}  gap "
              f"{m['gap']:.2f} (max {m['max_gap']:.2f})  always 15/23/31 {m['always_15']:.2f} / "
              f"{m['always_23']:.2f} / {m['always_31']:.2f}")
    summary["rows"] = [{k: v for k, v in r.items()} for r in rows]
    (RES / "kernel_size_replay.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
