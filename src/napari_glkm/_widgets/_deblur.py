"""Deblur widget: runs :func:`~napari_glkm.backend.stack.iter_deblur_stack` (and so the same
:func:`~napari_glkm.iter_deblur` as the API) in a napari ``thread_worker``.

Threading contract (STYLE §4): the layer data is copied on the main thread before the run; the
worker only computes and yields :class:`Update` objects (previews are rendered there, too); all
layer edits and notifications happen in the ``yielded``/``finished`` handlers on the main
thread. Cancel asks the worker to quit, which happens at its next yield — the loop yields after
every iteration, so a cancel takes effect within one iteration.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator

import napari.viewer
import numpy as np
from napari.layers import Image, Shapes
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..backend.solver import PRESETS
from ..backend.stack import StackStep, iter_deblur_stack
from ..backend.outofcore import iter_deblur_frames
from ._layers import check_layer, frames_of, kernel_kwargs, output_kwargs, roi_from_shapes
from ._lazy import LazyResult, is_lazy_stack, lazy_frames_of
from ._overlay import KernelGridOverlay
from ._state import PluginState, state_for
from ._worker import Update, run_stack

__all__ = ["DeblurWidget", "RunState"]

NO_ROI = "(none: automatic window)"
_BLUR_MODELS = (("camera shake (shared motion)", "camera"),
                ("independent per patch", "free"),
                ("camera shake, then per patch", "camera+free"))
_BLUR_MODEL_TIP = ("camera shake: all patch kernels come from one camera motion (translation "
                   "and roll), estimated from the whole image; independent: one kernel per "
                   "patch from that patch alone (depth- or object-dependent blur)")
_NONUNIFORM_TIP = ("estimate a spatially varying blur: one kernel per patch of a grid, blended "
                   "(SVOLA); the kernels are drawn on the image ('<name> kernel grid', "
                   "'<name> patches')")
_NONUNIFORM_STACK_TIP = ("non-uniform mode deblurs single images (gray or RGB) only, not "
                         "stacks: deblur one frame of the stack instead")
_PBAR_TOTAL = 1000
AUTO_SIZE = 1  # the kernel-size spin box's special value, shown as "auto"


class RunState(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"


class DeblurWidget(QWidget):
    """Dock widget: choose an image layer and options, Run / Cancel, watch live previews."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent=None):
        super().__init__(parent)
        # napari hands plugins a public-only proxy; layers are compared by identity below,
        # so keep the viewer itself (only its public API is used).
        viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self.viewer = viewer
        self.state: PluginState = state_for(viewer)
        self.run_state = RunState.IDLE
        self.worker: GeneratorWorker | None = None
        self._run: Iterator[StackStep] | None = None
        self._pbar: progress | None = None
        self._outcome = ""
        self._job: dict = {}
        self._pending: list[Update] = []
        self._busy = False
        self._weights_size = -1

        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(self._layer_changed)
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS))
        self.preset.setCurrentText("default")
        self.kernel_size = QSpinBox()
        self.kernel_size.setRange(AUTO_SIZE, 75)
        self.kernel_size.setSingleStep(2)
        self.kernel_size.setSpecialValueText("auto")
        self.kernel_size.setValue(AUTO_SIZE)
        self.kernel_size.setSuffix(" px")
        self.kernel_size.setToolTip("side of the blur kernel (odd), at most the generator's "
                                    "size; auto: chosen from the image (the choice is shown "
                                    "when the run ends)")
        self.kernel_size.valueChanged.connect(self._keep_odd)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.iterations = QSpinBox()
        self.iterations.setRange(0, 100)
        self.iterations.setSpecialValueText("preset")
        self.iterations.setToolTip("alternations per pyramid scale (preset: the preset's value)")
        self.kernel_prior = QComboBox()
        self.kernel_prior.addItems(["glkm", "free"])
        self.kernel_prior.setToolTip("glkm: the learned kernel generator; free: no learned prior")
        self.image_prior = QComboBox()
        self.image_prior.addItems(["preset", "none", "dip", "vdip", "diffusion"])
        self.image_prior.setToolTip(
            "image prior of the joint image + kernel refinement: the preset's choice (none for "
            "fast/default, dip for quality), none, dip (Deep Image Prior) or vdip (variational "
            "DIP) or diffusion (the shipped diffusion model, luminance only); dip/vdip/diffusion "
            "take minutes on a CPU")
        self.roi_combo = QComboBox()
        self.roi_combo.setToolTip("estimate the kernel inside the first rectangle of this Shapes "
                                  "layer; the whole image is restored")
        self.preview_every = QSpinBox()
        self.preview_every.setRange(1, 1000)
        self.preview_every.setValue(5)
        self.preview_every.setSuffix(" iterations")
        self.shared_kernel = QCheckBox("one kernel for the whole stack")
        self.noise = QComboBox()
        self.noise.addItems(["auto", "off"])
        self.noise.setToolTip("auto: estimate the noise level and adapt the denoising and the "
                              "regularisation to it; off: no denoising and the preset's fixed "
                              "weight (tuned at 1 % noise)")
        self.saturation = QCheckBox("exclude clipped highlights")
        self.saturation.setChecked(True)
        self.saturation.setToolTip("pixels at >= 98 % of the value range (lamps, reflections) "
                                   "and their blur footprint are left out of the estimation")
        self.warm_start = QCheckBox("warm-start each frame from the previous kernel")
        self.warm_start.setChecked(True)
        self.nonuniform = QCheckBox("Non-uniform (SVOLA)")
        self.nonuniform.setToolTip(_NONUNIFORM_TIP)
        self.grid = QSpinBox()
        self.grid.setRange(2, 8)
        self.grid.setValue(3)
        self.grid.setSuffix(" patches per side")
        self.grid.setToolTip("non-uniform mode: the image is split into grid × grid overlapping "
                             "patches, each with its own kernel")
        self.grid.setEnabled(False)
        self.blur_model = QComboBox()
        for label, value in _BLUR_MODELS:
            self.blur_model.addItem(label, value)
        self.blur_model.setToolTip(_BLUR_MODEL_TIP)
        self.blur_model.setEnabled(False)
        self.nonuniform.toggled.connect(self._nonuniform_toggled)
        self.show_grid = QCheckBox("Show kernel grid")
        self.show_grid.setChecked(True)
        self.show_grid.setToolTip("show the per-patch kernels and patch outlines on the image")
        self.show_grid.toggled.connect(self._show_grid_toggled)
        self.run_btn = QPushButton("Run")
        self.run_btn.clicked.connect(lambda: self.start())
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.weights_label = QLabel()
        self.weights_label.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Image:", self.image_combo)
        form.addRow("Preset:", self.preset)
        form.addRow("Kernel size:", self.kernel_size)
        form.addRow("Seed:", self.seed)
        form.addRow("Iterations:", self.iterations)
        form.addRow("Kernel prior:", self.kernel_prior)
        form.addRow("Image prior:", self.image_prior)
        form.addRow("Noise:", self.noise)
        form.addRow("Saturation:", self.saturation)
        form.addRow("ROI (Shapes):", self.roi_combo)
        form.addRow("Preview every:", self.preview_every)
        form.addRow("Stack:", self.shared_kernel)
        form.addRow("", self.warm_start)
        form.addRow("Blur:", self.nonuniform)
        form.addRow("Grid:", self.grid)
        form.addRow("Patch kernels:", self.blur_model)
        form.addRow("", self.show_grid)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_btn)
        buttons.addWidget(self.cancel_btn)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.weights_label)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.state.events.all.connect(self._state_changed)
        self._state_changed()
        self.reset_choices()
        active = viewer.layers.selection.active
        if isinstance(active, Image):
            self.image_combo.setCurrentText(active.name)

    # -- choices ---------------------------------------------------------------------------
    def reset_choices(self, *_args) -> None:
        """Refill the layer combos (napari calls this when layers change)."""
        _refill(self.image_combo, [l.name for l in self.viewer.layers if isinstance(l, Image)])
        _refill(self.roi_combo,
                [NO_ROI] + [l.name for l in self.viewer.layers if isinstance(l, Shapes)])
        self._layer_changed()

    def _layer_changed(self, *_args) -> None:
        layer = self._layer(self.image_combo.currentText())
        is_stack = False
        if isinstance(layer, Image) and not layer.multiscale:
            is_stack = layer.data.ndim > (3 if layer.rgb else 2)
        self.shared_kernel.setEnabled(is_stack)
        self.warm_start.setEnabled(is_stack)
        self.nonuniform.setEnabled(not is_stack)
        self.nonuniform.setToolTip(_NONUNIFORM_STACK_TIP if is_stack else _NONUNIFORM_TIP)
        self.grid.setEnabled(not is_stack and self.nonuniform.isChecked())
        self.blur_model.setEnabled(not is_stack and self.nonuniform.isChecked())

    def _state_changed(self, *_args) -> None:
        self.weights_label.setText(f"Weights: {self.state.weights_label} · device: "
                                   f"{self.state.device}")
        size = self.state.weights_kernel_size
        if size != self._weights_size:  # new weights: offer their size unless auto is chosen
            self._weights_size = size
            self.kernel_size.setMaximum(max(size, 3))
            if self.kernel_size.value() != AUTO_SIZE:
                self.kernel_size.setValue(size)

    def _keep_odd(self, value: int) -> None:
        if value % 2 == 0:
            self.kernel_size.setValue(value + 1 if value + 1 <= self.kernel_size.maximum()
                                      else value - 1)

    def _layer(self, name: str):
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def options(self) -> dict:
        """The :func:`iter_deblur` keyword options currently set in the widget."""
        size = self.kernel_size.value()
        opts = dict(kernel_size="auto" if size == AUTO_SIZE else size,
                    preset=self.preset.currentText(),
                    seed=self.seed.value(), device=self.state.device,
                    kernel_prior=self.kernel_prior.currentText(), preview_every=1,
                    noise=self.noise.currentText(),
                    saturation="auto" if self.saturation.isChecked() else "off")
        if self.iterations.value() > 0:
            opts["iterations"] = self.iterations.value()
        if self.image_prior.currentText() != "preset":
            opts["prior"] = self.image_prior.currentText()
        if opts["kernel_prior"] == "glkm" and self.state.weights:
            opts["weights"] = self.state.weights
        if self.nonuniform.isEnabled() and self.nonuniform.isChecked():
            opts.update(nonuniform=True, grid=self.grid.value(),
                        blur_model=self.blur_model.currentData())
        return opts

    def _nonuniform_toggled(self, on: bool) -> None:
        enabled = on and self.nonuniform.isEnabled()
        self.grid.setEnabled(enabled)
        self.blur_model.setEnabled(enabled)

    # -- run / cancel ----------------------------------------------------------------------
    def start(self, layer=None) -> GeneratorWorker | None:
        """Start deblurring ``layer`` (default: the chosen image layer).

        Returns the started worker, or ``None`` if the input was refused (an error
        notification says why). The input layer is never modified.
        """
        if self.run_state is not RunState.IDLE:
            show_error("napari-glkm is already deblurring; cancel that run first")
            return None
        try:
            if layer is None:
                layer = self._layer(self.image_combo.currentText())
            layer = check_layer(layer)
            lazy = is_lazy_stack(layer)  # dask/Zarr stack: read frame by frame, never copied
            frames, plan = lazy_frames_of(layer) if lazy else frames_of(layer)
            opts = self.options()
            if opts.get("nonuniform") and plan.is_stack:
                raise ValueError(f"'{layer.name}' is a stack; non-uniform mode deblurs single "
                                 f"images only: uncheck Non-uniform, or deblur one frame")
            roi_name = self.roi_combo.currentText()
            if roi_name and roi_name != NO_ROI:
                opts["roi"] = roi_from_shapes(self.viewer.layers[roi_name], layer)
            shared = self.shared_kernel.isChecked() and plan.is_stack
            if lazy:  # results go to a Zarr store, shown through lazy layers
                result = LazyResult(self.viewer, layer, frames, plan, opts, shared,
                                    self.warm_start.isChecked())
                run = iter_deblur_frames(plan=result.plan)
            else:
                run = iter_deblur_stack(frames, shared_kernel=shared,
                                        warm_start=self.warm_start.isChecked(), **opts)
        except (ValueError, ImportError) as exc:  # WeightsError is a ValueError
            show_error(f"Cannot deblur: {exc}")
            return None

        self._job = dict(layer=layer, plan=plan, shared=shared, opts=opts, t0=time.perf_counter(),
                         out=None, kern=None, out_layer=None, kern_layer=None,
                         done=[False] * plan.n_frames, seconds=[None] * plan.n_frames,
                         warm=[False] * plan.n_frames,
                         overlay=KernelGridOverlay(self.viewer, layer, plan.frame_shape[:2],
                                                   self.show_grid.isChecked()),
                         lazy=result if lazy else None)
        if lazy:
            self._job["done"] = result.done()  # frames kept from an interrupted run
            self._job["out_layer"], self._job["kern_layer"] = result.add_layers()
        self._run = run
        self._outcome = ""
        self._pbar = progress(total=_PBAR_TOTAL, desc=f"Deblurring {layer.name}")
        # Connecting `errored` here (not later) stops superqt from also re-raising the error
        # in the main thread: the user gets our notification, not a traceback.
        worker = create_worker(
            run_stack, run, 10**9 if lazy else self.preview_every.value(), _start_thread=False,
            _connect={"yielded": self._on_yielded, "errored": self._on_errored,
                      "returned": lambda _r: self._set_outcome("done"),
                      "aborted": lambda: self._set_outcome("cancelled"),
                      "finished": self._on_finished},
        )
        self.worker = worker
        self._set_running(RunState.RUNNING)
        self.status.setText(f"Deblurring {layer.name}…" +
                            (f" (frames are written to {result.path})" if lazy else ""))
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the run at its next iteration; the last preview is kept, labelled partial."""
        if self.worker is not None and self.run_state is RunState.RUNNING:
            self.run_state = RunState.CANCELLING
            self.cancel_btn.setEnabled(False)
            self.status.setText("Cancelling…")
            self.worker.quit()

    def _set_running(self, state: RunState) -> None:
        self.run_state = state
        running = state is not RunState.IDLE
        self.run_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(state is RunState.RUNNING)

    def _set_outcome(self, outcome: str) -> None:
        self._outcome = self._outcome or outcome

    # -- main-thread handlers --------------------------------------------------------------
    def _on_yielded(self, u: Update) -> None:
        # Layer edits can spin the Qt event loop (napari processes events while it adds a
        # layer), which would deliver the next update or `finished` re-entrantly: queue them.
        self._pending.append(u)
        if self._busy:
            return
        self._busy = True
        try:
            while self._pending:
                self._apply(self._pending.pop(0))
        finally:
            self._busy = False

    def _apply(self, u: Update) -> None:
        if self.run_state is RunState.IDLE:
            return  # a late update of a run that has already finished
        job = self._job
        done = int(round(u.fraction * _PBAR_TOTAL))
        if self._pbar is not None and done > self._pbar.n:
            self._pbar.update(done - self._pbar.n)
        frame_txt = f"frame {u.frame + 1}/{u.n_frames} · " if u.n_frames > 1 else ""
        if self.run_state is RunState.RUNNING:
            self.status.setText(f"{frame_txt}{u.stage} · iteration {u.iteration + 1}/{u.total}")
        if self._pbar is not None:
            self._pbar.set_description(f"Deblurring {job['layer'].name}: {frame_txt}{u.stage}")
        if u.frame_done:
            job["info"] = u.info
            job["done"][u.frame] = True
            job["seconds"][u.frame] = u.frame_seconds
            job["warm"][u.frame] = u.warm_start
        if job.get("lazy") is not None:
            if u.frame_done:
                job["lazy"].refresh(u.kernel)
        elif u.image is not None:
            self._show(u)

    def _show(self, u: Update) -> None:
        """Write the preview/result of frame ``u.frame`` and its kernel into the live layers."""
        job, plan = self._job, self._job["plan"]
        layer: Image = job["layer"]
        if job["out"] is None:
            job["out"] = np.zeros((plan.n_frames,) + plan.frame_shape, np.float32)
        if job.get("kern") is None or job["kern"].shape[1:] != u.kernel.shape:
            # the first kernel, or kernel_size="auto" moving between the two sizes it compares
            kshape = u.kernel.shape if job["shared"] or not plan.lead else plan.lead + u.kernel.shape
            job["kern"] = np.zeros((plan.n_frames,) + u.kernel.shape, np.float32)
            job["kshape"] = kshape
            kern_layer = job.get("kern_layer")
            if kern_layer is not None and kern_layer in self.viewer.layers:
                placed = kernel_kwargs(layer, kshape)
                kern_layer.data = job["kern"][0] if len(kshape) == 2 else \
                    job["kern"].reshape(kshape)
                kern_layer.scale, kern_layer.translate = placed["scale"], placed["translate"]
                kern_layer.metadata.update(placed["metadata"])
        if u.image is not None:
            job["out"][u.frame] = u.image
        job["kern"][u.frame] = u.kernel
        if job["shared"]:
            job["kern"][:] = u.kernel
        out = job["out"].reshape(plan.shape)
        kern = job["kern"][0] if len(job["kshape"]) == 2 else job["kern"].reshape(job["kshape"])
        if job["out_layer"] is None or job["out_layer"] not in self.viewer.layers:
            job["out_layer"] = self.viewer.add_image(
                out, name=f"{layer.name} deblurred (preview)", **output_kwargs(layer))
            job["kern_layer"] = self.viewer.add_image(
                kern, name=f"{layer.name} kernel", **kernel_kwargs(layer, job["kshape"]))
        else:
            job["out_layer"].data = out
            if job["kern_layer"] in self.viewer.layers:
                job["kern_layer"].data = kern
                job["kern_layer"].contrast_limits = (0.0, max(float(kern.max()), 1e-8))
        if u.kernel_grid is not None and u.centres is not None:
            job["overlay"].update(u.kernel_grid, u.centres, u.info)

    def _show_grid_toggled(self, visible: bool) -> None:
        overlay = self._job.get("overlay")
        if overlay is not None:  # the latest run's overlay (running or finished)
            overlay.set_visible(visible)

    def _on_errored(self, exc: BaseException) -> None:
        self._set_outcome("error")
        show_error(f"Deblurring failed: {exc}")

    def _on_finished(self) -> None:
        if self._busy:  # delivered re-entrantly from inside _on_yielded: finish afterwards
            QTimer.singleShot(0, self._on_finished)
            return
        job = self._job
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._run is not None:
            self._run.close()  # releases the solver's tensors; the worker thread has ended
            self._run = None
        outcome = self._outcome or "cancelled"
        name = job["layer"].name
        out_layer, kern_layer = job.get("out_layer"), job.get("kern_layer")
        n_done = sum(job["done"])
        meta = dict(source=name, options={k: v for k, v in job["opts"].items()
                                          if k != "preview_every"},
                    shared_kernel=job["shared"], frames_done=n_done,
                    frame_seconds=job["seconds"], warm_start=job["warm"],
                    partial=outcome != "done")
        if job.get("lazy") is not None:
            meta["zarr"] = job["lazy"].path
        note = ""
        if outcome == "done":
            note = f"{_photo_note(job.get('info', {}))} {self._timing_note()}".strip()
            if out_layer is not None:
                out_layer.name = f"{name} deblurred"
        elif out_layer is not None:
            out_layer.name = f"{name} deblurred (partial)"
            if kern_layer is not None:
                kern_layer.name = f"{name} kernel (partial)"
        if out_layer is not None:
            out_layer.metadata["napari_glkm"] = dict(meta, note=note)
        job["overlay"].finish("" if outcome == "done" else " (partial)", dict(meta, note=note))
        if kern_layer is not None:
            kern_layer.metadata["napari_glkm"] = dict(meta, note=note)
        if outcome == "done":
            self.status.setText(f"Done. {note}")
            show_info(f"napari-glkm: '{name}' deblurred. {note}")
        elif outcome == "cancelled":
            kept = (f"kept the last preview as '{out_layer.name}'" if out_layer is not None
                    else "no preview had been made yet")
            frames = f" ({n_done} of {len(job['done'])} frames finished)" if len(job["done"]) > 1 else ""
            self.status.setText(f"Cancelled: {kept}{frames}.")
            show_info(f"napari-glkm: cancelled; {kept}{frames}")
        else:
            self.status.setText("Failed (see the notification).")
        self.worker = None
        self._set_running(RunState.IDLE)

    def _timing_note(self) -> str:
        """'N frames in T s' plus how much the warm start (or the shared kernel) saved."""
        job = self._job
        total = time.perf_counter() - job["t0"]
        secs = [s for s in job["seconds"] if s is not None]
        n = len(job["done"])
        if n == 1:
            return f"Took {total:.1f} s."
        note = f"{n} frames in {total:.1f} s."
        if job["shared"]:
            rest = [s for i, s in enumerate(job["seconds"]) if i != 0 and s is not None]
            return note + (f" One kernel estimated on frame 1 ({secs[0]:.1f} s); the other frames "
                           f"were restored with it in {np.mean(rest):.1f} s each.")
        warm = [s for s, w in zip(job["seconds"], job["warm"]) if w and s is not None]
        if warm and secs:
            speedup = secs[0] / max(np.mean(warm), 1e-9)
            note += (f" Warm start: frame 1 (cold) {secs[0]:.1f} s, later frames "
                     f"{np.mean(warm):.1f} s each ({speedup:.1f}× faster).")
        return note


def _photo_note(info: dict) -> str:
    """'Kernel 23 px (auto), noise 1.2 %, 0.4 % clipped.' from a run's ``info``."""
    if "kernel_size" not in info:
        return ""
    auto = " (auto)" if info.get("kernel_size_mode") == "auto" else ""
    text = f"Kernel {info['kernel_size']} px{auto}"
    if "noise_sigma" in info:
        text += f", noise {info['noise_sigma']:.1%}"
    if info.get("saturated_fraction", 0) > 0:
        text += f", {info['saturated_fraction']:.1%} clipped"
    notes = [info[key] for key in ("kernel_size_note", "fit_note") if info.get(key)]
    return text + "." + "".join(f" Warning: {note}." for note in notes)


def _refill(combo: QComboBox, names: list[str]) -> None:
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    combo.addItems(names)
    if current in names:
        combo.setCurrentText(current)
    combo.blockSignals(False)
