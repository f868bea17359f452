"""Batch form of ``napari-glkm deblur``: several files, folders or glob patterns into an output
folder.

* outputs that already exist are skipped (so a rerun resumes an interrupted batch) unless
  ``--overwrite``;
* a file that fails (unreadable, too small, …) does not stop the others; failures are listed
  at the end and the exit status is 1;
* an overall progress bar, and a per-file summary (status, seconds, kernel size, final loss,
  error) written as CSV and JSON;
* ``--workers N`` (local cluster) or ``--dask-scheduler ADDRESS`` deblur files in parallel with
  ``dask.distributed``; each file is one task.

Every output is written atomically (:func:`napari_glkm._io.write_image`), so an interrupted
batch never leaves a half-written image that a rerun would mistake for a finished one.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import sys
import time
from pathlib import Path

from ._io import KNOWN_SUFFIXES, atomic_path, read_image, write_image

__all__ = ["is_batch", "collect_inputs", "run_batch", "deblur_file"]

_GLOB_CHARS = set("*?[")
_FIELDS = ("input", "output", "status", "seconds", "kernel_size", "final_loss", "error")
SUMMARY_NAME = "napari-glkm-summary"


def is_batch(args: argparse.Namespace) -> bool:
    """True unless the command is the single-file form ``deblur IN -o OUT``.

    One input with an image file name after ``-o`` is always the single-file form (a folder
    or a pattern there is refused with a hint to give an output folder instead).
    """
    from .cli import CLIError

    if len(args.input) != 1 or args.workers is not None or args.dask_scheduler is not None:
        return True
    src, out = Path(args.input[0]), Path(args.output)
    pattern = not src.exists() and bool(_GLOB_CHARS & set(args.input[0]))
    if out.suffix.lower() in KNOWN_SUFFIXES + (".npy",) and not out.is_dir():
        hint = "to deblur several images, give an output folder: -o FOLDER"
        if src.is_dir():
            raise CLIError(f"input is not a file: {src} is a folder; {hint}")
        if pattern:
            raise CLIError(f"input not found: {src} (a pattern); {hint}")
        return False
    return src.is_dir() or pattern or out.is_dir() or args.output.endswith(("/", os.sep))


def collect_inputs(patterns: list[str]) -> list[Path]:
    """Files named, the image files in folders named (not recursive), and glob matches that
    are image files; sorted within each argument, without duplicates."""
    from .cli import CLIError

    found: list[Path] = []
    for pattern in patterns:
        p = Path(pattern)
        if p.is_dir():
            matches = sorted(f for f in p.iterdir()
                             if f.is_file() and f.suffix.lower() in KNOWN_SUFFIXES)
        elif p.exists():
            matches = [p]
        elif _GLOB_CHARS & set(pattern):
            matches = sorted(Path(f) for f in glob.glob(pattern)
                             if Path(f).is_file() and Path(f).suffix.lower() in KNOWN_SUFFIXES)
        else:
            raise CLIError(f"input not found: {pattern}")
        if not matches:
            raise CLIError(f"no image files ({', '.join(KNOWN_SUFFIXES)}) in {pattern}")
        found.extend(m for m in matches if m not in found)
    return found


def deblur_file(src: str, out: str, kernel_out: str | None, options: dict, dtype: str,
                overwrite: bool) -> dict:
    """Deblur one file; never raises for a bad file: returns its summary row."""
    from . import iter_deblur
    from .cli import _kernel_out, _output_pixels

    row = dict(input=src, output=out, status="done", seconds=None, kernel_size=None,
               final_loss=None, error="")
    t0 = time.perf_counter()
    try:
        img = read_image(src)
        last = None
        for last in iter_deblur(img.data, **dict(options, preview_every=10**9)):
            pass
        write_image(out, _output_pixels(last.image, img.data, Path(out), dtype), tiff=img.tiff,
                    overwrite=overwrite)
        if kernel_out:
            write_image(kernel_out, _kernel_out(last, Path(kernel_out)), overwrite=True)
        row.update(kernel_size=int(last.kernel.shape[0]), final_loss=float(last.loss))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bad file must not stop the batch: report it instead
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _plan(args: argparse.Namespace) -> tuple[list[tuple[Path, Path, Path | None]], Path]:
    from .cli import CLIError, _same_file

    inputs = collect_inputs(args.input)
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise CLIError(f"-o {outdir} is a file; with several inputs -o must be a folder")
    if not outdir.exists() and outdir.suffix.lower() in KNOWN_SUFFIXES:
        raise CLIError(f"-o {outdir} looks like an image file; with several inputs (or a "
                       f"folder or glob) -o must be a folder")
    if not outdir.parent.is_dir():
        raise CLIError(f"output folder does not exist: {outdir.parent}")
    outdir.mkdir(exist_ok=True)
    kdir = Path(args.kernel_out) if args.kernel_out else None
    if kdir is not None:
        if kdir.exists() and not kdir.is_dir():
            raise CLIError("with several inputs --kernel-out must be a folder")
        kdir.mkdir(parents=True, exist_ok=True)
    jobs, seen = [], {}
    for src in inputs:
        out = outdir / src.name
        if out in seen:
            raise CLIError(f"{seen[out]} and {src} would both write {out}; "
                           f"deblur them into different folders")
        if _same_file(src, out):
            raise CLIError(f"refusing to write over the input file {src}; choose another "
                           f"output folder")
        seen[out] = src
        kout = kdir / f"{src.stem}_kernel.png" if kdir is not None else None
        jobs.append((src, out, kout))
    return jobs, outdir


def _previous_rows(outdir: Path, summary: str | None) -> dict[str, dict]:
    """Rows of an earlier run's JSON summary (to keep the numbers of skipped files)."""
    path = Path(summary) if summary else outdir / f"{SUMMARY_NAME}.json"
    if path.suffix.lower() != ".json":
        path = path.with_suffix(".json")
    try:
        return {r["output"]: r for r in json.loads(path.read_text())["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_summary(rows: list[dict], outdir: Path, summary: str | None, options: dict) -> list[Path]:
    targets = ([Path(summary)] if summary else
               [outdir / f"{SUMMARY_NAME}.csv", outdir / f"{SUMMARY_NAME}.json"])
    for path in targets:
        with atomic_path(path, overwrite=True) as tmp:
            if path.suffix.lower() == ".json":
                text = json.dumps({"options": {k: v for k, v in options.items()
                                               if k != "preview_every"}, "files": rows},
                                  indent=1, default=str)
            else:
                buf = io.StringIO()
                writer = csv.DictWriter(buf, fieldnames=_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
                text = buf.getvalue()
            Path(tmp).write_text(text, encoding="utf-8")
    return targets


def run_batch(args: argparse.Namespace) -> int:
    """The batch command; returns the exit status (0, or 1 if any file failed)."""
    from tqdm import tqdm

    from .backend.outofcore import dask_client
    from .cli import CLIError, _deblur_options

    if args.summary and Path(args.summary).suffix.lower() not in (".csv", ".json"):
        raise CLIError("--summary must end in .csv or .json")
    if args.workers is not None and args.dask_scheduler is not None:
        raise CLIError("use either --workers or --dask-scheduler, not both")
    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers must be at least 1, got {args.workers}")
    options = _deblur_options(args)
    jobs, outdir = _plan(args)
    earlier = _previous_rows(outdir, args.summary)
    rows: dict[Path, dict] = {}
    todo = []
    for src, out, kout in jobs:
        if out.exists() and not args.overwrite:  # resume: keep what the earlier run measured
            prev = earlier.get(str(out), {})
            rows[out] = dict({f: prev.get(f) for f in _FIELDS}, input=str(src),
                             output=str(out), status="skipped (exists)", error="")
        else:
            todo.append((src, out, kout))
    call = [(str(s), str(o), str(k) if k else None, options, args.dtype, args.overwrite)
            for s, o, k in todo]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="deblur", unit="file",
               disable=args.quiet)
    interrupted = False
    try:
        try:
            with dask_client(args.dask_scheduler, args.workers) as client:
                if client is None:
                    for a in call:
                        bar.set_postfix_str(Path(a[0]).name)
                        rows[Path(a[1])] = deblur_file(*a)
                        bar.update()
                else:
                    from distributed import as_completed

                    futures = [client.submit(deblur_file, *a, pure=False) for a in call]
                    for fut in as_completed(futures):
                        row = fut.result()
                        rows[Path(row["output"])] = row
                        bar.set_postfix_str(Path(row["input"]).name)
                        bar.update()
        except ImportError as exc:
            raise CLIError(str(exc)) from exc
        except OSError as exc:  # e.g. no scheduler at the address
            raise CLIError(f"cannot use the dask cluster: {exc}") from exc
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    ordered = [rows[out] for _, out, _ in jobs if out in rows]
    written = _write_summary(ordered, outdir, args.summary, options)
    failed = [r for r in ordered if r["status"] == "failed"]
    done = sum(r["status"] == "done" for r in ordered)
    if not args.quiet:
        print(f"{done} deblurred, {len(jobs) - len(todo)} skipped (already in {outdir}), "
              f"{len(failed)} failed; summary: {', '.join(map(str, written))}")
    if interrupted:
        print("napari-glkm: interrupted; finished files are kept, run the same command again "
              "to resume", file=sys.stderr)
        return 130
    if failed:
        print(f"napari-glkm: {len(failed)} of {len(jobs)} files failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r['input']}: {r['error']}", file=sys.stderr)
        return 1
    return 0
