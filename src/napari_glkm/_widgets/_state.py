"""State shared by the plugin's widgets of one viewer, and the settings remembered between
sessions. No Qt here: the state is a psygnal-evented dataclass, settings are a small JSON file.

The weights panel edits a :class:`PluginState`; the deblur widget reads it when Run is pressed
and shows it in a label. Settings live in ``$NAPARI_GLKM_CONFIG_DIR/settings.json`` (default:
the platform's user config dir, e.g. ``~/.config/napari-glkm``).
"""

from __future__ import annotations

import json
import os
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs
import torch
from psygnal import evented

__all__ = ["PluginState", "state_for", "available_devices", "settings_path", "load_settings",
           "save_settings"]


@evented
@dataclass
class PluginState:
    """What the deblur widget runs with.

    Attributes
    ----------
    weights:
        Path of a user generator file, or ``None`` for the shipped weights.
    weights_label:
        Human-readable description of the loaded weights (shown in both widgets).
    weights_kernel_size:
        Kernel size (pixels) of the loaded generator; the largest kernel it can model.
    device:
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    """

    weights: str | None = None
    weights_label: str = "generator_31 (shipped)"
    weights_kernel_size: int = 31
    device: str = "auto"


_STATES: dict[int, PluginState] = {}


def state_for(viewer) -> PluginState:
    """The one :class:`PluginState` of ``viewer`` (created on first use, dropped with it)."""
    viewer = getattr(viewer, "__wrapped__", viewer)  # napari's PublicOnlyProxy
    key = id(viewer)
    if key not in _STATES:
        _STATES[key] = PluginState()
        weakref.finalize(viewer, _STATES.pop, key, None)
    return _STATES[key]


def available_devices() -> list[str]:
    """``"auto"`` and the torch devices present on this machine (cpu always; cuda, mps if so)."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def settings_path() -> Path:
    """Where the remembered choices are stored."""
    base = os.environ.get("NAPARI_GLKM_CONFIG_DIR") or platformdirs.user_config_dir("napari-glkm")
    return Path(base) / "settings.json"


def load_settings() -> dict:
    """The remembered choices (``device``, ``weights``); an unreadable file counts as empty."""
    try:
        data = json.loads(settings_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_settings(state: PluginState) -> None:
    """Remember the device and the user weights file of ``state`` (best effort)."""
    data = {k: v for k, v in asdict(state).items() if k in ("device", "weights")}
    path = settings_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass  # settings are a convenience; a read-only home must not break deblurring
