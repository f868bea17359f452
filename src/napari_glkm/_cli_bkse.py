"""BKSE subcommands of the CLI: ``train-bkse``, ``transfer-blur``, ``synthesize-blur`` and
``deblur-bkse`` (added to the parser by :func:`add_bkse_commands`).

Errors follow ``cli.py``: ``ValueError``/``CLIError`` print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._io import read_image, write_image

__all__ = ["add_bkse_commands"]


class BKSECommandError(ValueError):
    """A user-facing error of these commands (``cli.main`` prints it, exit status 2)."""


def _cli():
    from . import cli

    return cli


def _check_output(src_paths: list[Path], out: Path, overwrite: bool) -> None:
    cli = _cli()
    for src in src_paths:
        if cli._same_file(src, out):
            raise BKSECommandError(f"refusing to write over the input file {src}; choose another output")
    if out.exists() and not overwrite:
        raise BKSECommandError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise BKSECommandError(f"output folder does not exist: {out.parent}")


def _cmd_train_bkse(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backend.bkse.data import load_pair_folder
    from .backend.bkse.networks import BKSEConfig
    from .backend.train.bkse import BKSETrainConfig, train_bkse
    from .backend.train.initializer import load_image_folder

    folders = args.images or [_cli()._default_training_folder()]
    net = BKSEConfig(width=args.width, code_channels=args.code_channels)
    cfg = BKSETrainConfig(size=args.kernel_size, steps=args.steps, batch_size=args.batch_size,
                          crop=args.crop, lr=args.lr, seed=args.seed,
                          checkpoint_every=args.checkpoint_every, val_every=args.val_every,
                          threads=args.threads, net=net)
    images = load_image_folder(folders, max(cfg.crop, cfg.val_crop))
    pairs = [p for folder in (args.pairs or []) for p in load_pair_folder(folder)]
    val = load_image_folder(args.val_images, cfg.val_crop) if args.val_images else None
    with tqdm(total=cfg.steps, desc="BKSE", unit="step") as bar:
        def progress(step: int, total: int, m: dict) -> None:
            bar.n = step
            post = {"loss": f"{m['loss']:.4f}"}
            if "best_psnr" in m:
                post["val"] = f"{m['val_psnr']:.2f}dB"
            bar.set_postfix(post, refresh=False)
            bar.refresh()
        path = train_bkse(cfg, images, args.out, val_images=val, real_pairs=pairs,
                          resume=not args.no_resume, device=args.device, on_progress=progress)
    print(f"wrote {path} (best by held-out PSNR: {Path(args.out) / 'best.safetensors'}; "
          f"{len(images)} sharp images, {len(pairs)} real pairs)")
    return 0


def _save_like(out: Path, result, source, overwrite: bool) -> None:
    write_image(out, _cli()._output_pixels(result, source, out, "input"), overwrite=overwrite)


def _cmd_transfer(args: argparse.Namespace) -> int:
    from .backend.bkse.api import transfer_blur

    paths = [Path(args.source_sharp), Path(args.source_blurry), Path(args.target)]
    out = Path(args.output)
    _check_output(paths, out, args.overwrite)
    src_x, src_y, tgt = (read_image(p).data for p in paths)
    result = transfer_blur(src_x, src_y, tgt, weights=args.weights, spatial=args.spatial,
                           device=args.device)
    _save_like(out, result, tgt, args.overwrite)
    print(f"wrote {out} ({paths[2].name} blurred like {paths[1].name})")
    return 0


def _cmd_synthesize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backend.bkse.api import synthesize_blur

    out = Path(args.output)
    if not out.parent.is_dir():
        raise BKSECommandError(f"output folder does not exist: {out.parent}")
    (out / "sharp").mkdir(parents=True, exist_ok=True)
    (out / "blur").mkdir(exist_ok=True)
    refs = None
    if args.reference:
        from .backend.bkse.data import load_pair_folder

        refs = load_pair_folder(args.reference)
    written = 0
    for i, name in enumerate(tqdm(args.inputs, desc="synthesize", unit="image",
                                  disable=args.quiet)):
        src = Path(name)
        img = read_image(src).data
        variants = synthesize_blur(img, args.n, seed=args.seed + i, weights=args.weights,
                                   mix=not args.no_mix, reference_pairs=refs, device=args.device)
        for j, v in enumerate(variants):
            fname = f"{src.stem}_{j:03d}.png"
            for folder, pixels in (("sharp", img.astype("float32")), ("blur", v)):
                target = out / folder / fname
                if target.exists() and not args.overwrite:
                    raise BKSECommandError(f"{target} exists; pass --overwrite to replace it")
                _save_like(target, pixels, img, args.overwrite)
            written += 1
    if not args.quiet:
        print(f"wrote {written} sharp/blurry pairs to {out}/sharp and {out}/blur")
    return 0


def _cmd_deblur_bkse(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backend.bkse.deblur import iter_deblur_bkse

    src, out = Path(args.input), Path(args.output)
    _check_output([src], out, args.overwrite)
    if args.reblurred_out:
        _check_output([src], Path(args.reblurred_out), args.overwrite)
    img = read_image(src).data
    steps = iter_deblur_bkse(img, iterations=args.iterations, seed=args.seed,
                             weights=args.weights, device=args.device, preview_every=1)
    last = next(steps)  # validates the image before any progress bar shows
    with tqdm(total=last.total, desc=f"deblur-bkse {src.name}", unit="it",
              disable=args.quiet) as bar:
        for last in steps:
            bar.n = last.iteration + 1
            bar.set_postfix(loss=f"{last.loss:.4g}", refresh=False)
            bar.refresh()
    _save_like(out, last.image, img, args.overwrite)
    if args.reblurred_out:
        _save_like(Path(args.reblurred_out), last.reblurred, img, args.overwrite)
    if not args.quiet:
        print(f"wrote {out} ({last.total} iterations, {last.elapsed:.1f} s)")
    return 0


def add_bkse_commands(sub) -> None:
    """Add the BKSE subcommands to the ``add_subparsers()`` object of ``cli.build_parser``."""
    t = sub.add_parser("train-bkse", help="train the BKSE networks (kernel extractor G and blur "
                                          "operator F) on synthetic and real pairs")
    t.add_argument("--images", nargs="+", default=None,
                   help="folders of sharp images for synthetic pairs "
                        "(default: ../shared/datasets/bsds500/train)")
    t.add_argument("--pairs", nargs="+", default=None,
                   help="folders of real pairs: ROOT/sharp/NAME + ROOT/blur/NAME (GoPro layout; "
                        "sequence sub-folders allowed)")
    t.add_argument("--val-images", nargs="+", default=None,
                   help="folders of sharp images for the held-out pairs (default: --images)")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--crop", type=int, default=64, help="training crop side in pixels")
    t.add_argument("--kernel-size", type=int, default=19, help="synthetic kernel size (odd)")
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--width", type=int, default=16, help="channels of F's first level")
    t.add_argument("--code-channels", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    t.add_argument("--checkpoint-every", type=int, default=100)
    t.add_argument("--val-every", type=int, default=250)
    t.add_argument("--device", default="cpu")
    t.add_argument("--out", required=True, help="folder for checkpoint.pt and the weights")
    t.add_argument("--no-resume", action="store_true")
    t.set_defaults(func=_cmd_train_bkse)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights", default=None, help="BKSE weights (default: shipped)")
    common.add_argument("--device", default="cpu")
    common.add_argument("--overwrite", action="store_true")

    r = sub.add_parser("transfer-blur", parents=[common],
                       help="blur TARGET like SOURCE_BLURRY is blurred relative to SOURCE_SHARP")
    r.add_argument("source_sharp")
    r.add_argument("source_blurry")
    r.add_argument("target", help="sharp image to blur")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--spatial", default="mean", choices=["mean", "resize"],
                   help="mean: the source's average blur everywhere (default); resize: stretch "
                        "the source's blur layout onto the target (spatially varying blur)")
    r.set_defaults(func=_cmd_transfer)

    s = sub.add_parser("synthesize-blur", parents=[common],
                       help="write N blurry variants of each sharp image as sharp/ and blur/ pairs")
    s.add_argument("inputs", nargs="+", help="sharp image files")
    s.add_argument("-n", type=int, default=4, help="variants per image")
    s.add_argument("-o", "--output", required=True, help="folder (gets sharp/ and blur/)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--reference", default=None,
                   help="folder of real pairs (sharp/ + blur/) whose blur codes are used")
    s.add_argument("--no-mix", action="store_true", help="no interpolation between two codes")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=_cmd_synthesize)

    d = sub.add_parser("deblur-bkse", parents=[common],
                       help="blind deblurring in the BKSE code space (experimental)")
    d.add_argument("input")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--iterations", type=int, default=300)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--reblurred-out", default=None, help="also write F(x, c)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=_cmd_deblur_bkse)
