"""Shipped weights: registry, safetensors I/O with sha256 checks, official ``.pth`` import.

Shipped files live in ``napari_glkm/weights/`` next to ``manifest.json``, which records for
each file its role (``generator`` / ``initializer`` / ``diffusion``), kernel size (0 for the
diffusion image prior), sha256, how it was trained
and what it scores. Files are verified against the manifest before they are used.

Only safetensors are shipped. Foreign PyTorch checkpoints (official GLKM/GKPILE ``netG_*.pth``)
are read with ``torch.load(..., weights_only=True)``, which refuses pickles that would run
code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .generator import SUPPORTED_SIZES, KernelGenerator
from .initializer import KernelInitializer, convert_official_initializer_keys
from .priors.diffusion import DiffusionUNet

__all__ = [
    "WeightsError",
    "WeightsEntry",
    "shipped_weights",
    "shipped_entry",
    "sha256_file",
    "save_state_dict",
    "load_state_dict",
    "load_generator",
    "generator_from_state_dict",
    "convert_official_generator_keys",
    "read_any_state_dict",
    "load_initializer",
    "initializer_from_state_dict",
    "load_any",
    "load_diffusion_unet",
    "has_shipped",
    "freeze",
]


class WeightsError(ValueError):
    """A weights file is missing, corrupt, of the wrong kind, or does not match its manifest."""


@dataclass(frozen=True)
class WeightsEntry:
    """One shipped weights file as described in ``manifest.json``."""

    name: str
    role: str
    kernel_size: int
    file: str
    sha256: str
    training: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return _weights_dir() / self.file


def _weights_dir() -> Path:
    return Path(str(resources.files("napari_glkm") / "weights"))


@lru_cache(maxsize=1)
def _manifest() -> dict[str, Any]:
    path = _weights_dir() / "manifest.json"
    if not path.exists():
        return {"weights": []}
    return json.loads(path.read_text())


def shipped_weights() -> list[WeightsEntry]:
    """All weights shipped in the package, as listed in the manifest."""
    return [WeightsEntry(**entry) for entry in _manifest()["weights"]]


def shipped_entry(role: str, kernel_size: int, *, at_least: bool = False) -> WeightsEntry:
    """The shipped entry for ``role`` and ``kernel_size``, or a clear error naming the fix.

    With ``at_least=True`` the smallest shipped size ``>= kernel_size`` is returned (a 31-pixel
    generator serves all smaller kernels by cropping).
    """
    entries = sorted((e for e in shipped_weights() if e.role == role), key=lambda e: e.kernel_size)
    for entry in entries:
        if entry.kernel_size == kernel_size or (at_least and entry.kernel_size > kernel_size):
            return entry
    available = [e.kernel_size for e in entries]
    hint = "or smaller " if at_least else ""
    train = (f"`napari-glkm train-generator --size {kernel_size}`" if role == "generator"
             else f"`napari-glkm train-{role} --kernel-size {kernel_size}`")
    raise WeightsError(
        f"no shipped {role} weights for kernel size {kernel_size} (shipped sizes: {available}). "
        f"Choose one of those sizes {hint}or train weights with {train} and pass the file "
        f"with --weights (API: weights=...)"
    )


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Put ``module`` in eval mode with gradients off for its parameters; return it."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@lru_cache(maxsize=8)
def _verified_state(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """A shipped file's tensors, verified against the manifest once per process (reading and
    hashing the 22 MB initializer costs ~0.3 s, which every deblur() call would repeat).
    Callers only copy from it (``load_state_dict``), never modify it."""
    return load_state_dict(path, expected_sha256=sha256)


def _shipped_state(entry: WeightsEntry) -> dict[str, torch.Tensor]:
    return _verified_state(entry.path, entry.sha256)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_state_dict(
    state: dict[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
    *,
    half: bool = False,
) -> str:
    """Write a state dict as safetensors atomically (temp file + rename); return its sha256.

    ``half=True`` stores floating tensors as float16 (loading converts back to float32).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in state.items():
        value = value.detach().cpu().contiguous()
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha256_file(path)


def load_state_dict(path: str | os.PathLike, *, expected_sha256: str | None = None) -> dict:
    """Read a safetensors file into float32 tensors, verifying its sha256 when given."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if expected_sha256 is not None:
        actual = sha256_file(path)
        if actual != expected_sha256:
            raise WeightsError(
                f"{path.name} does not match its manifest (sha256 {actual[:12]}… expected "
                f"{expected_sha256[:12]}…); the file is corrupt or was replaced — reinstall "
                f"napari-glkm"
            )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path.name} is not a readable safetensors file: {exc}") from exc
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def convert_official_generator_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the older official key layout (``main1.0.X``, ``main2.{1,2,3}``) to ours.

    Ours (and the newer official one) is ``layer1.X`` and ``layers.{0,1,2}``. Keys already in
    our layout pass through unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key.startswith("main1.0."):
            key = "layer1." + key[len("main1.0."):]
        elif key.startswith("main2."):
            idx, rest = key[len("main2."):].split(".", 1)
            key = f"layers.{int(idx) - 1}.{rest}"
        out[key] = value
    return out


def _infer_generator_size(state: dict[str, torch.Tensor]) -> int:
    for size in SUPPORTED_SIZES:
        ref = KernelGenerator(size).state_dict()
        if set(ref) == set(state) and all(ref[k].shape == state[k].shape for k in ref):
            return size
    raise WeightsError(
        "these weights do not match any generator architecture "
        f"(sizes {list(SUPPORTED_SIZES)}): keys or shapes differ"
    )


def generator_from_state_dict(
    state: dict[str, torch.Tensor], kernel_size: int | None = None
) -> KernelGenerator:
    """Build an eval-mode :class:`KernelGenerator` from a state dict, checking keys and shapes."""
    state = convert_official_generator_keys(state)
    size = _infer_generator_size(state)
    if kernel_size is not None and size != kernel_size:
        raise WeightsError(
            f"these generator weights are for kernel size {size}, not {kernel_size}"
        )
    gen = KernelGenerator(size)
    gen.load_state_dict(state)
    return freeze(gen)


def load_generator(
    kernel_size: int = 31, path: str | os.PathLike | None = None, *, at_least: bool = False
) -> KernelGenerator:
    """Load the shipped generator for ``kernel_size``, or the generator stored at ``path``.

    ``path`` may be one of our safetensors files or an official ``.pth`` state dict. With
    ``at_least=True`` a generator of a larger size is accepted (to be centre-cropped).
    """
    if path is None:
        entry = shipped_entry("generator", kernel_size, at_least=at_least)
        state = _shipped_state(entry)
        return generator_from_state_dict(state, entry.kernel_size)
    gen = generator_from_state_dict(read_any_state_dict(path))
    if gen.size < kernel_size or (gen.size != kernel_size and not at_least):
        raise WeightsError(
            f"these generator weights are for kernel size {gen.size}, not {kernel_size}"
        )
    return gen


def read_any_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a safetensors file, or a PyTorch ``.pth``/``.pt`` state dict without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_state_dict(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        # torch's own message is many lines of advice; the reason is in the first ones.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln),
                   lines[0] if lines else type(exc).__name__)
        raise WeightsError(
            f"refused to load {path.name}: it is not a plain PyTorch state dict "
            f"(only tensors are accepted; nothing in it was executed). Reason: {why[:200]}"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path.name} does not contain a state dict of tensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in obj.items()}


def has_shipped(role: str, kernel_size: int, *, at_least: bool = False) -> bool:
    """Whether weights for ``role`` and ``kernel_size`` ship with the package."""
    try:
        shipped_entry(role, kernel_size, at_least=at_least)
    except WeightsError:
        return False
    return True


def initializer_from_state_dict(
    state: dict[str, torch.Tensor], kernel_size: int | None = None
) -> KernelInitializer:
    """Build an eval-mode :class:`KernelInitializer` from our or an official ``netE`` state dict."""
    state = convert_official_initializer_keys(state)
    net = KernelInitializer(kernel_size=kernel_size or 31)
    ref = net.state_dict()
    missing = sorted(set(ref) - set(state))
    unexpected = sorted(set(state) - set(ref))
    if missing or unexpected:
        raise WeightsError(
            "these weights are not a kernel initializer (ResNet-18): "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:2]})"
        )
    bad = [k for k in ref if ref[k].shape != state[k].shape]
    if bad:
        raise WeightsError(
            f"initializer weights have wrong shapes, e.g. {bad[0]}: "
            f"{tuple(state[bad[0]].shape)} instead of {tuple(ref[bad[0]].shape)}"
        )
    net.load_state_dict(state)
    return freeze(net)


def load_initializer(
    kernel_size: int = 31, path: str | os.PathLike | None = None
) -> KernelInitializer:
    """Load the shipped initializer for generator size ``kernel_size``, or the one at ``path``
    (our safetensors or an official ``netE_{k}.pth``)."""
    if path is None:
        entry = shipped_entry("initializer", kernel_size)
        state = _shipped_state(entry)
        return initializer_from_state_dict(state, entry.kernel_size)
    return initializer_from_state_dict(read_any_state_dict(path), kernel_size)


def load_any(path: str | os.PathLike) -> KernelGenerator | KernelInitializer:
    """Load a generator or an initializer from ``path``, whichever its keys describe."""
    state = read_any_state_dict(path)
    keys = set(convert_official_initializer_keys(state))
    if "fc.weight" in keys and "conv1.weight" in keys:
        return initializer_from_state_dict(state)
    return generator_from_state_dict(state)


def diffusion_from_state_dict(state: dict[str, torch.Tensor]) -> DiffusionUNet:
    """Build an eval-mode, frozen :class:`DiffusionUNet` whose widths are read off ``state``."""
    try:
        n_levels = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("down."))
        channels = [int(state[f"down.{i}.conv1.weight"].shape[0]) for i in range(n_levels)]
        emb_dim = int(state["time_mlp.0.weight"].shape[1])
        net = DiffusionUNet(channels, emb_dim=emb_dim)
        net.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"these weights are not a napari-glkm diffusion UNet: {exc}"[:300]) \
            from exc
    return freeze(net)


def load_diffusion_unet(path: str | os.PathLike | None = None) -> DiffusionUNet:
    """The shipped diffusion image prior (``path=None``) or one written by ``train-diffusion``
    (a ``.safetensors`` file)."""
    if path is None:
        entries = [e for e in shipped_weights() if e.role == "diffusion"]
        if not entries:
            raise WeightsError("no diffusion model is shipped with this installation; train one "
                               "with `napari-glkm train-diffusion` and pass it with "
                               "--diffusion-model (API: diffusion_model=...)")
        return diffusion_from_state_dict(_shipped_state(entries[0]))
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path.name}: a diffusion model must be a .safetensors file from "
                           "`napari-glkm train-diffusion` or a diffusers UNet2DModel folder")
    return diffusion_from_state_dict(load_state_dict(path))
