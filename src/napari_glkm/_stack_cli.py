"""``napari-glkm deblur-stack``: one big stack (Zarr, OME-Zarr, (OME-)TIFF or .npy) deblurred
frame by frame into a resumable Zarr output, serially or on a dask cluster; optionally
exported to OME-TIFF at the end. A thin front-end of :func:`napari_glkm.deblur_stack`."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def _frames(text: str | None):
    """``"10:20"``/``"::2"`` -> slice, ``"1,5,7"`` -> list, ``None`` -> all."""
    from .cli import CLIError

    if text is None:
        return None
    try:
        if ":" in text:
            parts = [int(p) if p.strip() else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError
            return slice(*parts)
        return [int(p) for p in text.split(",")]
    except ValueError:
        raise CLIError(f"--frames must look like 10:20, ::2 or 1,5,7; got {text!r}") from None


def _axis(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def _cmd(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .backend.outofcore import deblur_stack
    from .backend.stack_io import StackMeta, ZarrStackOutput, open_stack, write_ome_tiff
    from .cli import CLIError

    if args.workers is not None and args.dask_scheduler is not None:
        raise CLIError("use either --workers or --dask-scheduler, not both")
    if args.ome_tiff and Path(args.ome_tiff).exists() and not args.overwrite:
        raise CLIError(f"{args.ome_tiff} exists; pass --overwrite to replace it")
    try:
        data, meta = open_stack(args.input)
        bar = tqdm(desc=f"deblur {Path(args.input).name}", unit="frame", disable=args.quiet)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        res = deblur_stack(data, _axis(args.axis), meta=meta, out=args.output,
                           frames=_frames(args.frames), shared_kernel=args.shared_kernel,
                           warm_start=not args.no_warm_start, reference=args.reference,
                           chunk_frames=args.chunk_frames, client=args.dask_scheduler,
                           workers=args.workers, overwrite=args.overwrite, progress=progress,
                           kernel_size=args.kernel_size, preset=args.preset,
                           iterations=args.iterations, seed=args.seed, device=args.device,
                           kernel_prior=args.kernel_prior, weights=args.weights)
        bar.close()
        if args.ome_tiff:
            write_ome_tiff(args.ome_tiff, ZarrStackOutput.open(args.output, mode="r"),
                           meta or StackMeta(), overwrite=args.overwrite)
    except ImportError as exc:
        raise CLIError(str(exc)) from exc
    if not args.quiet:
        extra = f" and {args.ome_tiff}" if args.ome_tiff else ""
        print(f"wrote {args.output}{extra}: {len(res.frames)} frames computed, "
              f"{len(res.skipped)} already there")
    return 0


def add_parser(sub, presets) -> None:
    """Register ``deblur-stack`` on the CLI's subparsers."""
    p = sub.add_parser("deblur-stack",
                       help="deblur a big stack frame by frame into a resumable Zarr output")
    p.add_argument("input", help="Zarr array, OME-Zarr image, (OME-)TIFF or .npy stack")
    p.add_argument("-o", "--output", required=True, help="output Zarr folder (e.g. out.zarr)")
    p.add_argument("--axis", default="0", help="frame axis: an index or a letter (t, z)")
    p.add_argument("--frames", default=None, help="frames to compute: 10:20, ::2 or 1,5,7")
    p.add_argument("--shared-kernel", action="store_true",
                   help="estimate one kernel on --reference and restore every frame with it")
    p.add_argument("--reference", type=int, default=0)
    p.add_argument("--no-warm-start", action="store_true",
                   help="start every frame's estimation from scratch")
    p.add_argument("--chunk-frames", type=int, default=None,
                   help="frames per chunk (one cluster task; the warm start restarts per chunk)")
    p.add_argument("--workers", type=int, default=None,
                   help="run on a local dask cluster of N single-threaded processes")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="run on a running dask.distributed cluster (e.g. tcp://10.0.0.5:8786)")
    p.add_argument("--ome-tiff", default=None, help="also export the result to this OME-TIFF")
    p.add_argument("--preset", default="default", choices=sorted(presets))
    p.add_argument("--kernel-size", type=int, default=31)
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--kernel-prior", default="glkm", choices=["glkm", "free"])
    p.add_argument("--weights", default=None)
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output started with other settings")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd)
