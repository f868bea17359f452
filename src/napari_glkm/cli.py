"""Command line: ``napari-glkm deblur``, ``sample``, ``train-generator``, ``train-initializer``,
``train-diffusion`` and ``convert-weights``; the BKSE subcommands live in ``_cli_bkse.py``.

Expected problems (bad files, bad options, missing weights) print one clear line to stderr and
exit with status 2; inputs are never overwritten and outputs are written atomically.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

from ._io import ImageFileError, read_image, to_dtype, write_image

__all__ = ["main"]


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def _kernel_image(kernel: np.ndarray, path: Path) -> np.ndarray:
    """Kernels go to PNG/JPEG scaled to 0..255 (max = 255), to TIFF/NPY as raw float32."""
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
        return to_dtype(kernel / max(float(kernel.max()), 1e-12) * 255.0, np.uint8)
    return kernel.astype(np.float32)


def _kernel_out(step, path: Path) -> np.ndarray:
    """The uniform kernel, or in non-uniform mode the kernel grid: a PNG/JPEG mosaic (each
    kernel scaled to its maximum, 2-px gaps) or the raw ``(gy, gx, k, k)`` float32 array."""
    if step.kernel_grid is None:
        return _kernel_image(step.kernel, path)
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
        from .backend.kernel_grid import kernel_tiles

        return to_dtype(kernel_tiles(step.kernel_grid) * 255.0, np.uint8)
    return step.kernel_grid.astype(np.float32)


def _parse_grid(text: str | None):
    """``"4"`` -> 4, ``"3x4"`` -> (3, 4)."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise CLIError(f"--grid must look like 4 or 3x4, got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _output_pixels(result: np.ndarray, source: np.ndarray, out: Path, dtype: str) -> np.ndarray:
    """Convert the float32 result (input's value range) to what ``out`` can hold."""
    raw = out.suffix.lower() in (".tif", ".tiff", ".npy")
    if dtype == "float32":
        if not raw:
            raise CLIError("--dtype float32 needs a .tif or .npy output")
        return result.astype(np.float32)
    if np.issubdtype(source.dtype, np.integer):
        return to_dtype(result, source.dtype)
    if raw:
        return result.astype(np.float32)
    lo, hi = float(source.min()), float(source.max())
    return to_dtype((result - lo) / max(hi - lo, 1e-12) * 255.0, np.uint8)


def _auto_or(cast, *words: str):
    """argparse type: ``"auto"`` (and the other ``words``) or a value of type ``cast``."""
    def parse(text: str):
        if text in ("auto", *words):
            return text
        try:
            return cast(text)
        except ValueError:
            choices = " or ".join(("auto",) + words)
            raise argparse.ArgumentTypeError(f"expected {choices} or a number, got {text!r}") \
                from None
    parse.__name__ = cast.__name__
    return parse


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.samefile(b))
    except OSError:
        return False


def _deblur_options(args: argparse.Namespace) -> dict:
    """The :func:`iter_deblur` options of a ``deblur`` command line."""
    options = dict(kernel_size=args.kernel_size, preset=args.preset, device=args.device,
                   seed=args.seed, iterations=args.iterations, weights=args.weights,
                   kernel_prior=args.kernel_prior, preview_every=1, init=args.init,
                   initializer=args.initializer, noise=args.noise, saturation=args.saturation,
                   prior=args.prior, diffusion_model=args.diffusion_model)
    grid_opts = dict(grid=_parse_grid(args.grid), patch_size=args.patch_size,
                     overlap=args.overlap, smoothness=args.smoothness,
                     blur_model=args.blur_model)
    if args.nonuniform:
        options.update(nonuniform=True, **grid_opts)
    elif any(v is not None for v in grid_opts.values()):
        raise CLIError("--grid, --patch-size, --overlap, --smoothness and --blur-model need "
                       "--nonuniform")
    return options


def _cmd_deblur(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import iter_deblur
    from ._batch import is_batch, run_batch

    if is_batch(args):  # several files, a folder or a glob: see _batch.py
        return run_batch(args)
    src = Path(args.input[0])
    out = Path(args.output)
    for target in [out] + ([Path(args.kernel_out)] if args.kernel_out else []):
        if _same_file(src, target):
            raise CLIError(f"refusing to write over the input file {src}; choose another output")
        if target.exists() and not args.overwrite:
            raise CLIError(f"{target} exists; pass --overwrite to replace it")
        if not target.parent.is_dir():
            raise CLIError(f"output folder does not exist: {target.parent}")
    img = read_image(src)
    steps = iter_deblur(img.data, **_deblur_options(args))
    last = next(steps)  # validates the image and the options before any progress bar shows
    with tqdm(total=last.total, desc=f"deblur {src.name}", unit="it", disable=args.quiet) as bar:
        for step in itertools.chain([last], steps):
            bar.n = step.iteration + 1
            bar.set_postfix(stage=step.stage, loss=f"{step.loss:.3g}", refresh=False)
            bar.refresh()
            last = step
    write_image(out, _output_pixels(last.image, img.data, out, args.dtype), tiff=img.tiff,
                overwrite=args.overwrite)
    if args.kernel_out:
        kpath = Path(args.kernel_out)
        write_image(kpath, _kernel_out(last, kpath), overwrite=args.overwrite)
    if not args.quiet:
        t = last.timings.get("total", float("nan"))
        grid = "" if last.kernel_grid is None else " x {}x{} patches".format(
            *last.kernel_grid.shape[:2])
        size_mode = " auto" if last.info.get("kernel_size_mode") == "auto" else ""
        sigma = last.info.get("noise_sigma", float("nan"))
        sat = last.info.get("saturated_fraction", 0.0)
        sat_txt = f", {sat:.2%} clipped pixels" if sat > 0 else ""
        print(f"wrote {out} (kernel {last.kernel.shape[0]} px{size_mode}{grid}, noise sigma "
              f"{sigma:.2%} of range{sat_txt}, {t:.1f} s)")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from ._sample_data import NOISE_SIGMA, PHOTO_SAMPLES, blurred_sample

    s = blurred_sample(args.name)
    out = Path(args.output)
    write_image(out, to_dtype(s.blurry * 255.0, np.uint8) if out.suffix.lower() != ".tif"
                else s.blurry, overwrite=args.overwrite)
    if args.kernel_out:
        kpath = Path(args.kernel_out)
        write_image(kpath, _kernel_image(s.kernel, kpath), overwrite=args.overwrite)
    sigma = PHOTO_SAMPLES[args.name][3] if args.name in PHOTO_SAMPLES else NOISE_SIGMA
    print(f"wrote {out} (sample {args.name!r}, 31 px motion blur + {sigma:.0%} noise)")
    return 0


def _cmd_train_generator(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backend.train.gan import GANConfig, train_generator

    cfg = GANConfig(size=args.size, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, checkpoint_every=args.checkpoint_every)
    with tqdm(total=cfg.steps, desc=f"GAN size {cfg.size}", unit="step") as bar:
        def progress(step: int, total: int, m: dict) -> None:
            bar.n = step
            bar.set_postfix(d=f"{m['loss_d']:.3f}", g=f"{m['loss_g']:.3f}", refresh=False)
            bar.refresh()
        path = train_generator(cfg, args.out, resume=not args.no_resume, device=args.device,
                               on_progress=progress)
    print(f"wrote {path}")
    return 0


def _cmd_train_initializer(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backend.train.initializer import InitializerConfig, load_image_folder, train_initializer
    from .backend.weights import load_generator

    folders = args.images or [_default_training_folder()]
    cfg = InitializerConfig(size=args.kernel_size, steps=args.steps, batch_size=args.batch_size,
                            crop=args.crop, lr=args.lr, inner_steps=args.inner_steps,
                            seed=args.seed, checkpoint_every=args.checkpoint_every)
    gen = load_generator(args.kernel_size, args.weights)
    images = load_image_folder(folders, cfg.crop)
    with tqdm(total=cfg.steps, desc=f"initializer size {cfg.size}", unit="step") as bar:
        def progress(step: int, total: int, m: dict) -> None:
            bar.n = step
            bar.set_postfix(l1=f"{m['kernel_l1']:.3f}", refined=f"{m['refined_l1']:.3f}",
                            refresh=False)
            bar.refresh()
        path = train_initializer(cfg, gen, images, args.out, resume=not args.no_resume,
                                 device=args.device, on_progress=progress)
    print(f"wrote {path} (trained on {len(images)} images from {', '.join(map(str, folders))})")
    return 0


def _cmd_train_diffusion(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backend.train.diffusion import DiffusionConfig, train_diffusion
    from .backend.train.initializer import load_image_folder

    folders = args.images or [_default_training_folder()]
    cfg = DiffusionConfig(size=args.crop, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, checkpoint_every=args.checkpoint_every,
                          threads=args.threads)
    images = load_image_folder(folders, cfg.size)
    with tqdm(total=cfg.steps, desc="diffusion prior", unit="step") as bar:
        def progress(step: int, total: int, m: dict) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{m['loss_avg']:.4f}", refresh=False)
            bar.refresh()
        path = train_diffusion(cfg, images, args.out, resume=not args.no_resume,
                               on_progress=progress)
    print(f"wrote {path} (trained on {len(images)} images from {', '.join(map(str, folders))})")
    return 0


def _default_training_folder() -> Path:
    here = Path.cwd() / ".." / "shared" / "datasets" / "bsds500" / "train"
    if here.is_dir():
        return here
    raise CLIError("no training images given: pass one or more folders with --images")


def _cmd_convert_weights(args: argparse.Namespace) -> int:
    from .backend.weights import load_any, save_state_dict

    src, out = Path(args.input), Path(args.output)
    if out.suffix != ".safetensors":
        raise CLIError("the output must be a .safetensors file")
    if _same_file(src, out):
        raise CLIError("refusing to write over the input file")
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    net = load_any(src)
    role = "generator" if hasattr(net, "decode") else "initializer"
    size = getattr(net, "size", None) or net.kernel_size
    digest = save_state_dict(net.state_dict(), out, {"role": role, "kernel_size": str(size),
                                                     "converted_from": src.name})
    print(f"wrote {out} ({role}, kernel size {size}, sha256 {digest[:12]}…)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .backend.solver import PRESETS

    p = argparse.ArgumentParser(prog="napari-glkm", description="Blind motion deblurring (GLKM).")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("deblur", help="deblur image files (PNG, JPEG, TIFF): one, several, a "
                                      "folder or a glob")
    d.add_argument("input", nargs="+",
                   help="blurry image file; or several files, folders or glob patterns")
    d.add_argument("-o", "--output", required=True,
                   help="restored image file; an output folder for several inputs")
    d.add_argument("--kernel-out", help="also write the estimated kernel (PNG scaled, TIFF/NPY raw)")
    d.add_argument("--preset", default="default", choices=sorted(PRESETS))
    d.add_argument("--kernel-size", type=_auto_or(int), default="auto",
                   help="kernel side in pixels (odd), or auto (default: chosen from the image)")
    d.add_argument("--noise", type=_auto_or(float, "off"), default="auto",
                   help="auto (estimate and adapt, default), off, or the noise standard "
                        "deviation as a fraction of the value range (e.g. 0.02)")
    d.add_argument("--saturation", type=_auto_or(float, "off"), default="auto",
                   help="auto (pixels >= 98%% of the range are clipped highlights: left out "
                        "of the data terms, default), off, or the threshold in (0, 1]")
    d.add_argument("--iterations", type=int, default=None,
                   help="alternations per pyramid scale (overrides the preset)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    d.add_argument("--weights", default=None, help="generator weights file (safetensors or .pth)")
    d.add_argument("--kernel-prior", default="glkm", choices=["glkm", "free"])
    d.add_argument("--prior", default=None, choices=["none", "dip", "vdip", "diffusion"],
                   help="image prior of the joint refinement stage (default: the preset's: none "
                        "for fast/default, dip for quality); dip/vdip/diffusion take minutes on "
                        "a CPU; diffusion works on the luminance")
    d.add_argument("--diffusion-model", default=None,
                   help="with --prior diffusion: a .safetensors file from train-diffusion or a "
                        "diffusers UNet2DModel folder (default: the shipped model)")
    d.add_argument("--init", default="network", choices=["network", "random"],
                   help="starting kernel: predicted by the initializer network (default) or random")
    d.add_argument("--initializer", default=None,
                   help="initializer weights file (safetensors or official netE .pth)")
    d.add_argument("--nonuniform", action="store_true",
                   help="spatially varying blur (SVOLA): one kernel per patch of a grid; "
                        "--kernel-out then writes the kernel grid (PNG mosaic or raw array)")
    d.add_argument("--grid", default=None, help="patches per side, e.g. 4 or 3x4 (default 3)")
    d.add_argument("--patch-size", type=int, default=None, help="patch side in pixels (instead of --grid)")
    d.add_argument("--overlap", type=float, default=None, help="patch overlap fraction (default 0.5)")
    d.add_argument("--smoothness", type=float, default=None,
                   help="penalty between neighbouring patches' kernels (default 1.0)")
    d.add_argument("--blur-model", default=None, choices=["camera", "free", "camera+free"],
                   help="patch kernels from one shared camera motion (translation + roll; "
                        "default), independent per patch (free: depth or object blur), or "
                        "free ones started from the camera model's")
    d.add_argument("--dtype", default="input", choices=["input", "float32"],
                   help="output pixel type: the input's (default) or float32 (TIFF/NPY only)")
    d.add_argument("--overwrite", action="store_true", help="replace existing output files")
    d.add_argument("-q", "--quiet", action="store_true")
    b = d.add_argument_group("batches (several inputs, a folder or a glob; -o is a folder)")
    b.add_argument("--summary", default=None,
                   help="per-file summary .csv or .json (default: napari-glkm-summary.csv "
                        "and .json in the output folder)")
    b.add_argument("--workers", type=int, default=None,
                   help="deblur N files at a time on a local dask cluster (N processes)")
    b.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="deblur the files on a running dask.distributed cluster "
                        "(e.g. tcp://10.0.0.5:8786)")
    d.set_defaults(func=_cmd_deblur)

    s = sub.add_parser("sample", help="write a shipped blurred sample image")
    s.add_argument("name", nargs="?", default="camera",
                   choices=["camera", "astronaut", "cell", "lights", "lowlight", "coffee"])
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--kernel-out", help="also write the true kernel")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_cmd_sample)

    t = sub.add_parser("train-generator", help="train a kernel generator (GAN) on synthetic kernels")
    t.add_argument("--size", type=int, default=31, choices=[31, 55, 65, 75])
    t.add_argument("--steps", type=int, default=15600)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=250)
    t.add_argument("--device", default="cpu")
    t.add_argument("--out", required=True, help="folder for checkpoint.pt and the final weights")
    t.add_argument("--no-resume", action="store_true", help="start again even if a checkpoint exists")
    t.set_defaults(func=_cmd_train_generator)

    i = sub.add_parser("train-initializer",
                       help="train the kernel initializer (ResNet-18) by collaborative learning")
    i.add_argument("--kernel-size", type=int, default=31, help="generator size (shipped or --weights)")
    i.add_argument("--weights", default=None, help="generator weights (default: the shipped one)")
    i.add_argument("--images", nargs="+", default=None,
                   help="folders of sharp training images (default: ../shared/datasets/bsds500/train)")
    i.add_argument("--steps", type=int, default=3000)
    i.add_argument("--batch-size", type=int, default=32)
    i.add_argument("--crop", type=int, default=128, help="training crop side in pixels")
    i.add_argument("--lr", type=float, default=1e-4)
    i.add_argument("--inner-steps", type=int, default=20, help="GAN-inversion steps per batch")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--checkpoint-every", type=int, default=100)
    i.add_argument("--device", default="cpu")
    i.add_argument("--out", required=True, help="folder for checkpoint.pt and the final weights")
    i.add_argument("--no-resume", action="store_true")
    i.set_defaults(func=_cmd_train_initializer)

    f = sub.add_parser("train-diffusion",
                       help="train the diffusion image prior (DDPM) on grayscale image crops")
    f.add_argument("--images", nargs="+", default=None,
                   help="folders of sharp training images (default: ../shared/datasets/bsds500/train)")
    f.add_argument("--steps", type=int, default=20000)
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--crop", type=int, default=64, help="training crop side in pixels")
    f.add_argument("--lr", type=float, default=5e-4)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    f.add_argument("--checkpoint-every", type=int, default=100)
    f.add_argument("--out", required=True, help="folder for checkpoint.pt and the final weights")
    f.add_argument("--no-resume", action="store_true")
    f.set_defaults(func=_cmd_train_diffusion)

    c = sub.add_parser("convert-weights",
                       help="convert an official GLKM/GKPILE .pth (netG/netE) to safetensors")
    c.add_argument("input", help="official .pth state dict (read without running any code)")
    c.add_argument("-o", "--output", required=True, help="output .safetensors file")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=_cmd_convert_weights)

    from ._stack_cli import add_parser as add_stack_parser

    add_stack_parser(sub, PRESETS)  # deblur-stack: big stacks out of core (_stack_cli.py)

    from ._cli_bkse import add_bkse_commands

    add_bkse_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .backend.weights import WeightsError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ImageFileError, WeightsError, ValueError) as exc:
        print(f"napari-glkm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-glkm: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
