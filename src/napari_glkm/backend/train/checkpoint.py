"""Training checkpoints shared by the trainers: atomic save, safe resume.

A checkpoint is a plain dict of tensors/numbers written by ``torch.save`` and read back with
``torch.load(weights_only=True)`` (no arbitrary unpickling). It holds the config, the step, the
elapsed seconds, the numpy and torch RNG states and the ``state_dict()`` of every named object
(networks, optimisers, schedulers), so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["save_checkpoint", "resume_checkpoint", "start_run"]


def start_run(out_dir: str | os.PathLike, seed: int, threads: int = 0) -> tuple[Path, Path]:
    """Common start of a training run: torch threads (0 leaves torch's default), the output
    folder (created), the torch seed; returns ``(out_dir, checkpoint_path)``."""
    if threads > 0:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    return out, out / "checkpoint.pt"


def save_checkpoint(path: Path, config: Any, step: int, elapsed: float,
                    rng: np.random.Generator, objects: dict[str, Any]) -> None:
    """Write the checkpoint atomically (temp file + rename): a crash never leaves half a file."""
    payload = {"config": asdict(config), "step": step, "elapsed": elapsed,
               "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
               **{name: obj.state_dict() for name, obj in objects.items()}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resume_checkpoint(path: Path, config: Any, rng: np.random.Generator,
                      objects: dict[str, Any], device: str = "cpu") -> tuple[int, float]:
    """Restore ``objects`` and the RNGs from ``path``; return ``(step, elapsed_seconds)``.

    Refuses a checkpoint made for another kernel size.
    """
    ck = torch.load(path, map_location=device, weights_only=True)
    if ck["config"]["size"] != config.size:
        raise ValueError(f"{path} is for size {ck['config']['size']}, not {config.size}")
    for name, obj in objects.items():
        obj.load_state_dict(ck[name])
    rng.bit_generator.state = ck["numpy_rng"]
    torch.set_rng_state(ck["torch_rng"])
    return ck["step"], ck["elapsed"]
