"""Shared fixtures: a seeded rng, odd-sized random images, the shipped sample."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
LEVIN = SHARED / "benchmarks" / "levin"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def odd_image(rng) -> torch.Tensor:
    """(2, 3, 37, 31) float64 random images."""
    return torch.from_numpy(rng.random((2, 3, 37, 31)))


def levin_available() -> bool:
    return (LEVIN / "gt" / "kernel1.png").exists()


class _Payload:
    """Unpickling this creates a file: proof that code from a weights file ran."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.fixture
def hostile_pth(tmp_path) -> tuple[Path, Path]:
    """``(path, marker)``: a ``.pth`` whose pickle would create ``marker`` if it were run, in
    both of torch's formats (this one is the zip format of ``torch.save``)."""
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    import torch

    torch.save({"layer1.0.weight": _Payload(marker)}, path)
    assert not marker.exists()
    return path, marker


@pytest.fixture
def hostile_pickle(tmp_path) -> tuple[Path, Path]:
    """``(path, marker)``: the same payload as a bare pickle (the legacy ``.pth`` format)."""
    marker = tmp_path / "pwned_legacy.txt"
    path = tmp_path / "evil_legacy.pth"
    path.write_bytes(pickle.dumps({"layer1.0.weight": _Payload(marker)}))
    return path, marker
