"""Shared fixtures: a seeded rng, odd-sized random images, the shipped sample."""

from __future__ import annotations

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
