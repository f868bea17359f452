"""The bad-input corpus: every way a user can hand us something odd, through the API, the CLI
and (in tests/widgets) the napari widget.

Each case checks the same contract: a clear message that names the problem (a ``ValueError`` from
the API, exit status 2 and one line without a traceback from the CLI), and the user's array or
file left exactly as it was. Cases that are odd but legitimate (int64, full-range uint16, floats
outside [0, 1], RGBA, ...) must run and give a finite result in the input's layout instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from napari_glkm import iter_deblur
from napari_glkm.cli import main

FAST = dict(kernel_size=15, preset="fast", iterations=1, kernel_prior="free", init="random")


def _structured(shape=(64, 64), seed=0) -> np.ndarray:
    """A float image in [0, 1] with edges (a blur needs something to blur)."""
    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    for _ in range(12):
        r, c = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        img[r : r + rng.integers(4, 20), c : c + rng.integers(4, 20)] = rng.random()
    return img


def _nan_image() -> np.ndarray:
    img = _structured()
    img[5, 7] = np.nan
    return img


def _inf_image() -> np.ndarray:
    img = _structured()
    img[9, 3] = -np.inf
    return img


# (id, array factory, extra options, substring the message must contain)
REFUSED = [
    ("empty", lambda: np.zeros((0, 0), np.float32), {}, "empty"),
    ("one-pixel", lambda: np.ones((1, 1), np.float32), {}, "too small"),
    ("1-D", lambda: np.linspace(0, 1, 100, dtype=np.float32), {}, "1-D"),
    ("5-D", lambda: np.zeros((2, 2, 2, 64, 64), np.float32), {}, "shape"),
    ("4-D stack", lambda: np.zeros((2, 3, 64, 64), np.float32), {}, "stack"),
    ("two channels", lambda: np.zeros((64, 64, 2), np.float32), {}, "(H, W, 3)"),
    ("NaN", _nan_image, {}, "NaN"),
    ("Inf", _inf_image, {}, "infinite"),
    ("constant", lambda: np.full((64, 64), 0.3, np.float32), {}, "constant"),
    ("bool", lambda: _structured() > 0.5, {}, "boolean"),
    ("complex", lambda: _structured().astype(np.complex64), {}, "dtype"),
    ("strings", lambda: np.full((64, 64), "a"), {}, "dtype"),
    ("ragged list", lambda: [[0.0, 1.0], [0.5]], {}, "cannot turn"),
    ("object", lambda: np.empty((64, 64), object), {}, "dtype"),
    ("channel-first RGB", lambda: np.stack([_structured()] * 3), {}, "channel-first"),
    ("smaller than kernel", lambda: _structured((20, 20)), {}, "too small"),
    ("even kernel size", _structured, {"kernel_size": 16}, "odd"),
    ("kernel size text", _structured, {"kernel_size": "big"}, "kernel_size"),
    ("kernel size 1", _structured, {"kernel_size": 1}, ">= 3"),
    ("unknown preset", _structured, {"preset": "turbo"}, "unknown preset"),
    ("negative iterations", _structured, {"iterations": -3}, "iterations"),
    ("zero iterations", _structured, {"iterations": 0}, "iterations"),
    ("float iterations", _structured, {"iterations": 2.5}, "iterations"),
    ("unknown device", _structured, {"device": "tpu"}, "device"),
    ("seed text", _structured, {"seed": "one"}, "seed"),
    ("unknown kernel prior", _structured, {"kernel_prior": "magic"}, "kernel_prior"),
    ("unknown init", _structured, {"init": "guess"}, "init"),
    ("unknown image prior", _structured, {"prior": "diffusionz"}, "unknown prior"),
    ("roi outside", _structured, {"roi": (400, 400, 500, 500)}, "region of interest"),
    ("beyond float32", lambda: _structured().astype(np.float64) * 1e300, {}, "float32 range"),
    ("alpha beyond float32", lambda: np.dstack([_structured()] * 3 + [np.full((64, 64), 3.5e38)]),
     {}, "float32 range"),  # found by the hypothesis fuzz test: alpha came back as inf
    ("NaN alpha", lambda: np.dstack([_structured()] * 3 + [np.full((64, 64), np.nan)]), {},
     "NaN"),
    ("huge image", lambda: np.broadcast_to(np.zeros((1, 1), np.uint8), (200_000, 200_000)),
     {}, "memory"),
]


def _digest(a) -> str:
    if not isinstance(a, np.ndarray):
        return repr(a)
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).tobytes()).hexdigest() \
        if a.dtype != object and a.size < 10**8 else repr(a.shape)


@pytest.mark.parametrize("name,make,extra,match", REFUSED, ids=[c[0] for c in REFUSED])
def test_api_refuses_with_a_clear_message(name, make, extra, match):
    img = make()
    before = _digest(img)
    opts = {**FAST, **extra}
    with pytest.raises(ValueError, match=None) as info:
        iter_deblur(img, **opts)  # errors surface at the call, before the first step
    assert match.lower() in str(info.value).lower(), str(info.value)
    assert _digest(img) == before


ACCEPTED = [
    ("int64", lambda: (_structured() * 5000 - 1000).astype(np.int64)),
    ("uint16 full range", lambda: (_structured() * 65535).astype(np.uint16)),
    ("uint8", lambda: (_structured() * 255).astype(np.uint8)),
    ("int8", lambda: (_structured() * 200 - 100).astype(np.int8)),
    ("float16", lambda: _structured().astype(np.float16)),
    ("float outside [0,1]", lambda: _structured() * 40.0 - 7.0),
    ("float64", lambda: _structured().astype(np.float64)),
    ("RGBA", lambda: np.dstack([_structured(seed=s) for s in range(3)]
                               + [np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)])),
    ("non-contiguous view", lambda: np.ascontiguousarray(_structured((128, 128)))[::2, ::2]),
    ("nested list", lambda: _structured().tolist()),
    ("float32 extremes", lambda: (_structured() - 0.5) * 2 * 3e38),
]


@pytest.mark.parametrize("name,make", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_api_accepts_odd_but_valid_images(name, make):
    img = make()
    arr = np.asarray(img)
    before = arr.copy()
    *_, last = iter_deblur(img, **FAST)
    out = last.image
    assert out.shape == arr.shape
    assert np.all(np.isfinite(out))
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize <= 2 and arr.dtype.kind == "u":
        lo, hi = 0.0, float(np.iinfo(arr.dtype).max)  # uint8/uint16: the dtype's full range
    else:
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if arr.dtype.kind == "f" and lo >= 0 and hi <= 1:
            lo, hi = 0.0, 1.0  # floats in [0, 1] keep that range
    span = hi - lo
    assert out.min() >= lo - 0.01 * span and out.max() <= hi + 0.01 * span
    np.testing.assert_array_equal(np.asarray(img), before)
    if name == "RGBA":
        np.testing.assert_array_equal(out[..., 3], arr[..., 3])


# --- the command line --------------------------------------------------------------------------

def _png_bytes(tmp_path: Path) -> bytes:
    from napari_glkm._io import write_image

    p = write_image(tmp_path / "ok.png", (_structured() * 255).astype(np.uint8))
    data = p.read_bytes()
    p.unlink()
    return data


def _cli_case(tmp_path: Path, case: str, request) -> tuple[list[str], str]:
    """Build the files for one CLI case; return (argv, substring the message must contain)."""
    good = tmp_path / "good image.png"
    good.write_bytes(_png_bytes(tmp_path))
    out = str(tmp_path / "out.png")
    if case == "missing file":
        return ["deblur", str(tmp_path / "nope.png"), "-o", out], "not found"
    if case == "folder as input":
        (tmp_path / "adir.png").mkdir()
        return ["deblur", str(tmp_path / "adir.png"), "-o", out], "not a file"
    if case == "corrupt png":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
        return ["deblur", str(tmp_path / "bad.png"), "-o", out], "cannot read"
    if case == "truncated png":
        data = good.read_bytes()
        (tmp_path / "half.png").write_bytes(data[: len(data) // 2])
        return ["deblur", str(tmp_path / "half.png"), "-o", out], "cannot read"
    if case == "truncated tiff":
        from napari_glkm._io import write_image

        t = write_image(tmp_path / "full.tif", (_structured() * 65535).astype(np.uint16))
        (tmp_path / "cut.tif").write_bytes(t.read_bytes()[:300])
        return ["deblur", str(tmp_path / "cut.tif"), "-o", out], "cannot read"
    if case == "text file":
        (tmp_path / "notes.txt").write_text("hello")
        return ["deblur", str(tmp_path / "notes.txt"), "-o", out], "unsupported"
    if case == "text named png":
        (tmp_path / "fake.png").write_text("not an image at all")
        return ["deblur", str(tmp_path / "fake.png"), "-o", out], "cannot read"
    if case == "empty file":
        (tmp_path / "zero.tif").write_bytes(b"")
        return ["deblur", str(tmp_path / "zero.tif"), "-o", out], "cannot read"
    if case == "output is input":
        return ["deblur", str(good), "-o", str(good)], "input"
    if case == "output exists":
        Path(out).write_bytes(b"precious")
        return ["deblur", str(good), "-o", out], "--overwrite"
    if case == "output folder missing":
        return ["deblur", str(good), "-o", str(tmp_path / "no" / "out.png")], "folder"
    if case == "output type unknown":
        return ["deblur", str(good), "-o", str(tmp_path / "out.xyz")], "unsupported"
    if case == "constant image":
        from napari_glkm._io import write_image

        write_image(tmp_path / "flat.png", np.full((64, 64), 77, np.uint8))
        return ["deblur", str(tmp_path / "flat.png"), "-o", out], "constant"
    if case == "tiny image":
        from napari_glkm._io import write_image

        write_image(tmp_path / "tiny.png", np.arange(16, dtype=np.uint8).reshape(4, 4))
        return ["deblur", str(tmp_path / "tiny.png"), "-o", out], "too small"
    if case == "weights not found":
        return ["deblur", str(good), "-o", out, "--weights", str(tmp_path / "w.safetensors"),
                "--kernel-prior", "glkm"], "not found"
    if case == "hostile weights":
        evil, _marker = request.getfixturevalue("hostile_pth")  # same tmp_path: checked below
        return ["deblur", str(good), "-o", out, "--weights", str(evil), "--kernel-prior", "glkm"], \
            "refused"
    if case == "truncated safetensors":
        from napari_glkm.backend.weights import shipped_entry

        cut = tmp_path / "cut.safetensors"
        cut.write_bytes(shipped_entry("generator", 31).path.read_bytes()[:5000])
        return ["deblur", str(good), "-o", out, "--weights", str(cut), "--kernel-prior", "glkm"], \
            "safetensors"
    raise AssertionError(case)


CLI_CASES = ["missing file", "folder as input", "corrupt png", "truncated png", "truncated tiff",
             "text file", "text named png", "empty file", "output is input", "output exists",
             "output folder missing", "output type unknown", "constant image", "tiny image",
             "weights not found", "hostile weights", "truncated safetensors"]


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_with_one_line_and_touches_nothing(tmp_path, capsys, case, request):
    argv, match = _cli_case(tmp_path, case, request)
    before = _tree_digest(tmp_path)
    # Case options come last so that they win (argparse keeps the last value).
    code = main(argv[:1] + ["--kernel-size", "15", "--preset", "fast", "--iterations", "1",
                            "--kernel-prior", "free", "--init", "random", "--quiet"] + argv[1:])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("napari-glkm: error:"), err
    assert match.lower() in err.lower(), err
    assert _tree_digest(tmp_path) == before  # nothing written, nothing changed


def test_cli_unicode_and_spaces_in_paths(tmp_path, capsys):
    folder = tmp_path / "données d'essai ✓"
    folder.mkdir()
    src = folder / "flou 图像.png"
    src.write_bytes(_png_bytes(tmp_path))
    before = src.read_bytes()
    out = folder / "net 图像.tif"
    code = main(["deblur", str(src), "-o", str(out), "--kernel-size", "15", "--preset", "fast",
                 "--iterations", "1", "--kernel-prior", "free", "--init", "random", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert out.exists() and src.read_bytes() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_ctrl_c_leaves_no_output(tmp_path, capsys, monkeypatch):
    import napari_glkm

    src = tmp_path / "in.png"
    src.write_bytes(_png_bytes(tmp_path))
    real = napari_glkm.iter_deblur

    def interrupted(*a, **k):
        steps = real(*a, **k)
        yield next(steps)
        raise KeyboardInterrupt

    monkeypatch.setattr(napari_glkm, "iter_deblur", interrupted)
    code = main(["deblur", str(src), "-o", str(tmp_path / "out.png"), "--kernel-size", "15",
                 "--kernel-prior", "free", "--quiet"])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_write_interrupted_midway_leaves_old_file_intact(tmp_path, monkeypatch):
    """An output being replaced (--overwrite) keeps its old bytes if the write dies halfway."""
    import tifffile

    from napari_glkm._io import write_image

    target = tmp_path / "result.tif"
    target.write_bytes(b"old result")

    def dies(path, *a, **k):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", dies)
    with pytest.raises(KeyboardInterrupt):
        write_image(target, np.zeros((8, 8), np.uint16), overwrite=True)
    assert target.read_bytes() == b"old result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.tif"]

