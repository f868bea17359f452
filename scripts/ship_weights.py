"""Copy a trained weights file into the package and record it in weights/manifest.json.

Usage::

    python scripts/ship_weights.py FILE --role generator --kernel-size 31 \
        --training '{"steps": 8000, ...}' --scores benchmarks/results/x.json [--half]

The file is re-saved as safetensors (optionally float16), its sha256 is computed and the
manifest entry (role, size, sha256, training recipe, scores) replaces any previous one for the
same role and size.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_glkm.backend.weights import read_any_state_dict, save_state_dict

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "napari_glkm" / "weights"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--role", required=True,
                    choices=["generator", "initializer", "bkse", "diffusion"])
    ap.add_argument("--kernel-size", type=int, default=0, help="0 for the diffusion prior")
    ap.add_argument("--training", default="{}", help="JSON object: how it was trained")
    ap.add_argument("--scores", default=None, help="JSON file or object: what it scores")
    ap.add_argument("--half", action="store_true", help="store float16")
    args = ap.parse_args()
    state = read_any_state_dict(args.file)
    name = "diffusion_unet" if args.role == "diffusion" else f"{args.role}_{args.kernel_size}"
    target = WEIGHTS / f"{name}.safetensors"
    sha = save_state_dict(state, target, {"role": args.role, "kernel_size": str(args.kernel_size)},
                          half=args.half)
    scores = {}
    if args.scores:

        text = args.scores.strip()
        scores = json.loads(text) if text.startswith("{") else json.loads(Path(text).read_text())
    manifest_path = WEIGHTS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"weights": []}
    entries = [e for e in manifest["weights"] if e["name"] != name]
    entries.append({
        "name": name, "role": args.role, "kernel_size": args.kernel_size, "file": target.name,
        "sha256": sha, "training": json.loads(args.training), "scores": scores,
    })
    manifest["weights"] = sorted(entries, key=lambda e: e["name"])
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"shipped {target} ({target.stat().st_size / 1e6:.2f} MB, sha256 {sha[:12]}…)")


if __name__ == "__main__":
    main()
