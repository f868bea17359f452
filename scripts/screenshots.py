"""Real screenshots of the plugin for docs/napari.md (run headless under Xvfb).

Usage::

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py [--out docs/images]

Opens napari with the plugin's widgets, loads the shipped samples, runs the deblur widget
exactly as a user would (Run, then wait for the worker) and saves PNGs with
``viewer.screenshot(canvas_only=False)``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication
from skimage.transform import resize

from napari_glkm._widgets._deblur import RunState

MAX_WIDTH = 1280


def wait(widget, timeout: float = 1200.0) -> None:
    t0 = time.time()
    while widget.run_state is not RunState.IDLE and time.time() - t0 < timeout:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()


def save(viewer, path: Path) -> None:
    for _ in range(10):
        QApplication.processEvents()
    viewer.reset_view()
    for _ in range(10):
        QApplication.processEvents()
    img = viewer.screenshot(canvas_only=False, flash=False)
    if img.shape[1] > MAX_WIDTH:
        h = int(round(img.shape[0] * MAX_WIDTH / img.shape[1]))
        img = (resize(img, (h, MAX_WIDTH), anti_aliasing=True) * 255).astype(np.uint8)
    # a 256-colour palette keeps each PNG well under 300 KB with no visible loss on screenshots
    Image.fromarray(np.ascontiguousarray(img[..., :3])).quantize(256).save(path, optimize=True)
    print(f"{path}: {img.shape[1]}x{img.shape[0]}, {path.stat().st_size // 1024} KiB")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--only", choices=["all", "nonuniform"], default="all",
                    help="nonuniform: only the kernel-grid overlay picture")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # the PyQt5 deprecation toast would cover the canvas in every screenshot
    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    _, weights = viewer.window.add_plugin_dock_widget("napari-glkm", "Weights and device")
    _, deblur = viewer.window.add_plugin_dock_widget("napari-glkm", "Blind deblur")

    if args.only == "nonuniform":
        nonuniform_shot(viewer, deblur, out)
        viewer.close()
        return

    # 1. the blurred photo sample, its true kernel and the two widgets
    viewer.open_sample("napari-glkm", "camera")
    viewer.layers["camera true kernel"].visible = True
    viewer.layers["camera true kernel"].translate = (0, 530)
    viewer.layers["camera true kernel"].scale = (4, 4)
    deblur.reset_choices()
    deblur.image_combo.setCurrentText("camera (blurred)")
    deblur.preset.setCurrentText("fast")
    save(viewer, out / "napari_widgets.png")

    # 2. after Run: the deblurred image with the estimated kernel beside it
    deblur.start()
    wait(deblur)
    viewer.layers["camera (blurred)"].visible = False
    viewer.layers["camera true kernel"].visible = False
    viewer.reset_view()
    save(viewer, out / "napari_result.png")

    # 3. microscopy sample: kernel estimated inside a rectangle (ROI), whole image restored
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    viewer.open_sample("napari-glkm", "cell")
    viewer.add_shapes([np.array([[250, 300], [250, 545], [510, 545], [510, 300]])],
                      shape_type="rectangle", edge_color="cyan", face_color="transparent",
                      edge_width=4, name="ROI")
    deblur.reset_choices()
    deblur.image_combo.setCurrentText("cell (blurred)")
    deblur.roi_combo.setCurrentText("ROI")
    deblur.start()
    wait(deblur)
    viewer.layers["cell (blurred)"].visible = False
    viewer.layers.move(viewer.layers.index("ROI"), len(viewer.layers))
    viewer.reset_view()
    save(viewer, out / "napari_roi.png")

    # 4. non-uniform mode: the kernel-grid overlay on the restored image
    nonuniform_shot(viewer, deblur, out)
    viewer.close()


def nonuniform_shot(viewer, deblur, out: Path) -> None:
    """The camera sample deblurred in non-uniform mode (3 x 3 grid) with its overlay."""
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    viewer.open_sample("napari-glkm", "camera")
    deblur.reset_choices()
    deblur.image_combo.setCurrentText("camera (blurred)")
    deblur.preset.setCurrentText("fast")
    deblur.nonuniform.setChecked(True)
    deblur.grid.setValue(3)
    deblur.start()
    wait(deblur)
    viewer.layers["camera (blurred)"].visible = False
    viewer.reset_view()
    save(viewer, out / "napari_nonuniform.png")


if __name__ == "__main__":
    main()
