"""BKSE subcommands: transfer-blur, synthesize-blur (GoPro layout that train-bkse reads back),
deblur-bkse, train-bkse with resume, and clear errors."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from skimage import data as skdata

from napari_glkm._io import read_image
from napari_glkm.backend.bkse.data import load_pair_folder
from napari_glkm.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def files(tmp_path):
    cam = skdata.camera()
    paths = {"a": tmp_path / "a.png", "b": tmp_path / "b.png", "c": tmp_path / "c.png"}
    iio.imwrite(paths["a"], cam[100:164, 100:164])
    iio.imwrite(paths["b"], cam[100:164, 100:164] // 2 + 60)
    iio.imwrite(paths["c"], skdata.astronaut()[50:95, 60:113])
    return paths


def test_transfer_blur_writes_target_shaped_output(files, tmp_path, capsys):
    out = tmp_path / "t.png"
    before = files["c"].read_bytes()
    code, stdout, err = _run(capsys, "transfer-blur", files["a"], files["b"], files["c"], "-o", out)
    assert code == 0, err
    assert read_image(out).data.shape == (45, 53, 3) and "blurred like b.png" in stdout
    assert files["c"].read_bytes() == before
    code, _, err = _run(capsys, "transfer-blur", files["a"], files["b"], files["c"], "-o", out)
    assert code == 2 and "--overwrite" in err


def test_transfer_blur_mismatched_source_sizes_is_a_clear_error(files, tmp_path, capsys):
    code, _, err = _run(capsys, "transfer-blur", files["a"], files["c"], files["b"],
                        "-o", tmp_path / "x.png")
    assert code == 2 and "same height and width" in err and "Traceback" not in err


def test_synthesize_blur_writes_pairs_that_train_bkse_reads(files, tmp_path, capsys):
    out = tmp_path / "syn"
    code, stdout, err = _run(capsys, "synthesize-blur", files["a"], files["c"], "-n", 2,
                             "-o", out, "-q")
    assert code == 0, err
    names = sorted(p.name for p in (out / "blur").iterdir())
    assert names == ["a_000.png", "a_001.png", "c_000.png", "c_001.png"]
    pairs = load_pair_folder(out)
    assert len(pairs) == 4
    sharp, blurry = pairs[0]
    assert sharp.shape == blurry.shape == (64, 64) and not np.allclose(sharp, blurry)


def test_deblur_bkse_and_refusals(files, tmp_path, capsys):
    out, re = tmp_path / "d.png", tmp_path / "r.png"
    code, stdout, err = _run(capsys, "deblur-bkse", files["a"], "-o", out, "--iterations", 3,
                             "--reblurred-out", re, "-q")
    assert code == 0, err
    assert read_image(out).data.shape == read_image(re).data.shape == (64, 64)
    code, _, err = _run(capsys, "deblur-bkse", files["a"], "-o", files["a"], "--overwrite")
    assert code == 2 and "input file" in err
    code, _, err = _run(capsys, "deblur-bkse", tmp_path / "missing.png", "-o", tmp_path / "m.png")
    assert code == 2


def test_train_bkse_short_run_and_resume(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cam = skdata.camera()
    for i in range(2):
        iio.imwrite(imgs / f"{i}.png", cam[i * 200:i * 200 + 100, 150:250])
    args = ["train-bkse", "--images", imgs, "--steps", 4, "--batch-size", 2, "--crop", 32,
            "--kernel-size", 7, "--width", 4, "--code-channels", 4, "--val-every", 2,
            "--checkpoint-every", 2, "--out", tmp_path / "run"]
    code, stdout, err = _run(capsys, *args)
    assert code == 0, err
    assert (tmp_path / "run" / "bkse.safetensors").is_file() and "wrote" in stdout
    code, _, err = _run(capsys, *args[:-2], "--steps", 6, "--out", tmp_path / "run")
    assert code == 0, err  # resumed from step 4
    code, _, err = _run(capsys, "train-bkse", "--images", tmp_path / "nope", "--out", tmp_path / "r")
    assert code == 2 and "does not exist" in err
