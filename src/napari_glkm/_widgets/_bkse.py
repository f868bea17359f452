"""BKSE dock widgets (thin): blur transfer, blur synthesis and code-space deblurring.

Each widget copies the chosen layers' data on the main thread, runs the backend function
(:func:`~napari_glkm.transfer_blur`, :func:`~napari_glkm.synthesize_blur`,
:func:`~napari_glkm.iter_deblur_bkse`) in a napari worker and adds/updates layers in the
``returned``/``yielded`` handlers. Errors become notifications; the inputs are never changed.
"""

from __future__ import annotations

import napari.viewer
import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (QComboBox, QFormLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout,
                            QWidget)

from ..backend.bkse.api import synthesize_blur, transfer_blur
from ..backend.bkse.deblur import iter_deblur_bkse
from ._deblur import _refill
from ._layers import check_layer, output_kwargs

__all__ = ["BlurTransferWidget", "BlurSynthesisWidget", "CodeSpaceDeblurWidget"]


def _single_image(layer) -> np.ndarray:
    """A copy of a single (not stacked) image layer's data, or a ``ValueError``."""
    layer = check_layer(layer)
    data = np.asarray(layer.data)
    if data.ndim != (3 if layer.rgb else 2):
        raise ValueError(f"'{layer.name}' is a stack of shape {data.shape}; BKSE tools take a "
                         f"single 2-D gray or RGB image (pick one frame)")
    return data.copy()


class _BKSEWidget(QWidget):
    """Shared parts: image-layer combos, a Run button, a status line, a worker."""

    combos: tuple[str, ...] = ()

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.worker = None
        self.layer_combos = {name: QComboBox() for name in self.combos}
        self.form = QFormLayout()
        for name, combo in self.layer_combos.items():
            self.form.addRow(f"{name}:", combo)
        self.run_btn = QPushButton("Run")
        self.run_btn.clicked.connect(lambda: self.start())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        layout.addWidget(self.run_btn)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self.reset_choices)
        self.viewer.layers.events.removed.connect(self.reset_choices)
        self.reset_choices()

    def reset_choices(self, *_args) -> None:
        names = [l.name for l in self.viewer.layers if isinstance(l, Image)]
        for i, combo in enumerate(self.layer_combos.values()):
            kept = combo.currentText() in names
            _refill(combo, names)
            if not kept and names:  # a fresh combo: the i-th layer, so three differ by default
                combo.setCurrentIndex(min(i, len(names) - 1))

    def chosen(self, name: str):
        text = self.layer_combos[name].currentText()
        return self.viewer.layers[text] if text in self.viewer.layers else None

    def start(self):
        """Validate on the main thread, then start the worker; returns it (or ``None``)."""
        try:
            func, on_done = self.prepare()
        except ValueError as exc:
            show_error(str(exc))
            self.status.setText(f"error: {exc}")
            return None
        self.run_btn.setEnabled(False)
        self.status.setText("running…")
        self.worker = create_worker(func, _start_thread=False)
        self.worker.returned.connect(on_done)
        if hasattr(self, "on_yield"):
            self.worker.yielded.connect(self.on_yield)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(lambda: self.run_btn.setEnabled(True))
        self.worker.start()
        return self.worker

    def _failed(self, exc: Exception) -> None:
        show_error(f"{type(self).__name__}: {exc}")
        self.status.setText(f"error: {exc}")

    def _add(self, data: np.ndarray, like, name: str) -> Image:
        kwargs = output_kwargs(like)
        kwargs.pop("contrast_limits", None)
        if data.ndim == like.data.ndim + 1:  # a stack of variants: one more leading axis
            for key in ("scale", "translate"):
                kwargs[key] = np.concatenate([[1.0 if key == "scale" else 0.0], kwargs[key]])
            for key in ("rotate", "shear", "units", "axis_labels"):
                kwargs.pop(key, None)
        if name in self.viewer.layers:
            self.viewer.layers[name].data = data
            return self.viewer.layers[name]
        return self.viewer.add_image(data, name=name, **kwargs)


class BlurTransferWidget(_BKSEWidget):
    """Blur a sharp target like an example pair: pick the source sharp, source blurry and
    target layers; the result is '<target> blurred like <source blurry>'."""

    combos = ("Source sharp", "Source blurry", "Target sharp")

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.spatial = QComboBox()
        self.spatial.addItems(["mean", "resize"])
        self.spatial.setToolTip("mean: the source's average blur everywhere; resize: keep the "
                                "source blur's spatial layout (non-uniform blur)")
        self.form.addRow("Layout:", self.spatial)

    def prepare(self):
        src_x, src_y, tgt = (self.chosen(n) for n in self.combos)
        xs, ys, xt = _single_image(src_x), _single_image(src_y), _single_image(tgt)
        if xs.shape[:2] != ys.shape[:2]:
            raise ValueError(f"source sharp '{src_x.name}' {xs.shape[:2]} and source blurry "
                             f"'{src_y.name}' {ys.shape[:2]} must have the same height and width")
        spatial = self.spatial.currentText()
        name = f"{tgt.name} blurred like {src_y.name}"

        def done(result):
            self._add(result, tgt, name)
            self.status.setText(f"added '{name}'")
            show_info(f"added '{name}'")
        return (lambda: transfer_blur(xs, ys, xt, spatial=spatial)), done


class BlurSynthesisWidget(_BKSEWidget):
    """N blurry variants of a sharp layer from random codes of the learned blur space."""

    combos = ("Sharp image",)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.n = QSpinBox()
        self.n.setRange(1, 64)
        self.n.setValue(4)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.form.addRow("Variants:", self.n)
        self.form.addRow("Seed:", self.seed)

    def prepare(self):
        layer = self.chosen("Sharp image")
        data = _single_image(layer)
        n, seed = self.n.value(), self.seed.value()
        name = f"{layer.name} synthetic blur"

        def done(result):
            self._add(result, layer, name)
            self.status.setText(f"added '{name}' ({n} variants along the first axis)")
        return (lambda: synthesize_blur(data, n, seed)), done


class CodeSpaceDeblurWidget(_BKSEWidget):
    """Blind deblurring in the BKSE code space (experimental); the estimate updates live."""

    combos = ("Blurry image",)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent=None):
        super().__init__(napari_viewer, parent)
        self.iterations = QSpinBox()
        self.iterations.setRange(1, 5000)
        self.iterations.setValue(300)
        self.form.addRow("Iterations:", self.iterations)
        self._target = None
        self._name = ""

    def prepare(self):
        layer = self.chosen("Blurry image")
        data = _single_image(layer)
        iterations = self.iterations.value()
        self._target, self._name = layer, f"{layer.name} deblurred (BKSE)"

        def run():
            yield from iter_deblur_bkse(data, iterations=iterations, preview_every=10)

        def done(_result):
            self.status.setText(f"finished: '{self._name}'")
        return run, done

    def on_yield(self, step) -> None:
        self._add(step.image, self._target, self._name)
        self.status.setText(f"iteration {step.iteration + 1}/{step.total}, loss {step.loss:.4g}")
