"""Weights panel: which kernel generator and which device the deblur widget uses.

Lists the weights shipped in the package (kernel size and how they were trained), loads a user
file (our safetensors or an official GLKM ``netG_*.pth``; the file is checked by building the
generator from it), shows what is loaded, and offers the devices present on this machine. The
last device and user file are remembered (see :mod:`._state`).
"""

from __future__ import annotations

from pathlib import Path

import napari.viewer
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..backend.weights import (
    WeightsEntry,
    WeightsError,
    generator_from_state_dict,
    read_any_state_dict,
    shipped_weights,
)
from ._state import PluginState, available_devices, load_settings, save_settings, state_for

__all__ = ["WeightsWidget", "describe_entry"]


def describe_entry(entry: WeightsEntry) -> str:
    """One line for a shipped entry: name, kernel size and what it was trained on."""
    t = entry.training
    seen = t.get("kernels_seen")
    trained = f"{seen:,} synthetic camera-shake kernels" if seen else "synthetic kernels"
    return f"{entry.name}: {entry.kernel_size} px kernels, DCGAN trained on {trained}"


class WeightsWidget(QWidget):
    """Dock widget editing the viewer's :class:`PluginState` (weights and device)."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        # napari hands plugins a public-only proxy; layers are compared by identity below,
        # so keep the viewer itself (only its public API is used).
        viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.viewer = viewer
        self.state: PluginState = state_for(viewer)
        self._entries = [e for e in shipped_weights() if e.role == "generator"]

        self.shipped = QListWidget()
        for entry in self._entries:
            item = QListWidgetItem(describe_entry(entry))
            item.setToolTip(entry.training.get("recipe", ""))
            self.shipped.addItem(item)
        self.shipped.setMaximumHeight(80)
        self.shipped.itemDoubleClicked.connect(lambda _item: self.use_shipped())
        self.use_shipped_btn = QPushButton("Use shipped")
        self.use_shipped_btn.clicked.connect(lambda: self.use_shipped())
        self.load_btn = QPushButton("Load file…")
        self.load_btn.setToolTip("our .safetensors or an official GLKM netG_*.pth state dict")
        self.load_btn.clicked.connect(self._choose_file)
        self.loaded = QLabel()
        self.loaded.setWordWrap(True)
        self.device = QComboBox()
        self.device.addItems(available_devices())
        self.device.currentTextChanged.connect(self._device_changed)

        buttons = QHBoxLayout()
        buttons.addWidget(self.use_shipped_btn)
        buttons.addWidget(self.load_btn)
        form = QFormLayout()
        form.addRow("Loaded:", self.loaded)
        form.addRow("Device:", self.device)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Shipped kernel generators:"))
        layout.addWidget(self.shipped)
        layout.addLayout(buttons)
        layout.addLayout(form)
        layout.addStretch(1)

        self.state.events.all.connect(self._refresh)
        self._restore_settings()
        self._refresh()

    # -- actions -------------------------------------------------------------------------
    def use_shipped(self, name: str | None = None) -> None:
        """Use a shipped generator (the selected one, or ``name``)."""
        if name is None:
            row = max(self.shipped.currentRow(), 0)
            entry = self._entries[row] if self._entries else None
        else:
            entry = next((e for e in self._entries if e.name == name), None)
        if entry is None:
            show_error(f"no shipped weights named {name!r}")
            return
        self.state.weights = None
        self.state.weights_kernel_size = entry.kernel_size
        self.state.weights_label = f"{entry.name} (shipped)"
        save_settings(self.state)

    def load_file(self, path: str | Path, *, quiet: bool = False) -> bool:
        """Check and select a generator file; a bad file gives an error notification.

        Returns True if the file was loaded.
        """
        path = Path(path)
        try:
            gen = generator_from_state_dict(read_any_state_dict(path))
        except WeightsError as exc:
            if not quiet:
                show_error(f"Could not load weights: {exc}")
            return False
        self.state.weights = str(path)
        self.state.weights_kernel_size = gen.size
        self.state.weights_label = f"{path.name} (user file, {gen.size} px kernels)"
        save_settings(self.state)
        if not quiet:
            show_info(f"Loaded kernel generator {path.name} ({gen.size} px kernels)")
        return True

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Kernel generator weights", "", "Weights (*.safetensors *.pth *.pt)"
        )
        if path:
            self.load_file(path)

    def _device_changed(self, device: str) -> None:
        if device and device != self.state.device:
            self.state.device = device
            save_settings(self.state)

    def _restore_settings(self) -> None:
        settings = load_settings()
        device = settings.get("device")
        if device in available_devices():
            self.state.device = device
        weights = settings.get("weights")
        if isinstance(weights, str) and Path(weights).is_file():
            self.load_file(weights, quiet=True)

    def _refresh(self, *_args) -> None:
        self.loaded.setText(self.state.weights_label)
        self.loaded.setToolTip(self.state.weights or "weights shipped in the package")
        if self.device.currentText() != self.state.device:
            self.device.setCurrentText(self.state.device)
