"""Shared set-up of the deblur-widget tests: a small, fast widget and waiting for a run."""

from __future__ import annotations

from napari_glkm._widgets._deblur import DeblurWidget, RunState

TIMEOUT_MS = 240_000  # generous: the CI machine may be shared


def deblur_widget(viewer, *, preset: str = "fast", kernel_size: int = 15, iterations: int = 1,
                  kernel_prior: str = "free", preview_every: int | None = 1,
                  grid: int | None = None) -> DeblurWidget:
    """A docked deblur widget set for short runs; ``grid`` switches on non-uniform mode."""
    w = DeblurWidget(viewer)
    viewer.window.add_dock_widget(w, name="deblur")
    w.reset_choices()
    w.preset.setCurrentText(preset)
    w.kernel_size.setValue(kernel_size)
    w.iterations.setValue(iterations)
    w.kernel_prior.setCurrentText(kernel_prior)
    if preview_every is not None:
        w.preview_every.setValue(preview_every)
    if grid is not None:
        w.nonuniform.setChecked(True)
        w.grid.setValue(grid)
    return w


def wait_done(qtbot, w: DeblurWidget, worker) -> None:
    """Wait for the worker to finish and for the widget to have handled it."""
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: w.run_state is RunState.IDLE, timeout=60_000)  # loaded CI
