"""Batch CLI: folders, globs and file lists into an output folder; a corrupt file is reported
and does not stop the others; reruns skip finished outputs; per-file CSV/JSON summary."""

import csv
import json

import numpy as np
import pytest

import napari_glkm
from napari_glkm._io import read_image, write_image
from napari_glkm._sample_data import blurred_sample
from napari_glkm.cli import main

FAST = ["--preset", "fast", "--iterations", "1", "--kernel-size", "15", "--kernel-prior", "free",
        "-q"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def folder(tmp_path):
    """Three 80 x 80 blurry PNGs and one corrupt 'PNG'."""
    src = tmp_path / "in"
    src.mkdir()
    blurry = (blurred_sample("camera").blurry * 255).astype(np.uint8)
    for i in range(3):
        write_image(src / f"img{i}.png", blurry[150 + 40 * i: 230 + 40 * i, 200:280])
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (src / "notes.txt").write_text("not an image, not an input")
    return src


@pytest.fixture
def count_runs(monkeypatch):
    """Counts the images the solver is started on."""
    calls = []
    real = napari_glkm.iter_deblur

    def spy(image, **kw):
        calls.append(image.shape)
        return real(image, **kw)

    monkeypatch.setattr(napari_glkm, "iter_deblur", spy)
    return calls


def test_folder_with_a_corrupt_file_finishes_the_others(folder, tmp_path, capsys, count_runs):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "deblur", folder, "-o", out, *FAST)
    assert code == 1
    assert "1 of 4 files failed" in err and "broken.png" in err and "Traceback" not in err
    assert sorted(p.name for p in out.glob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    for i in range(3):
        img = read_image(out / f"img{i}.png").data
        assert img.shape == (80, 80) and img.dtype == np.uint8
        assert not np.array_equal(img, read_image(folder / f"img{i}.png").data)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # inputs untouched
    assert len(count_runs) == 3

    with open(out / "napari-glkm-summary.csv", newline="") as fh:
        rows = {r["input"].rsplit("/", 1)[-1]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"img0.png", "img1.png", "img2.png", "broken.png"}
    assert rows["broken.png"]["status"] == "failed" and "not a valid image" in rows["broken.png"]["error"]
    for name in ("img0.png", "img1.png", "img2.png"):
        assert rows[name]["status"] == "done" and rows[name]["kernel_size"] == "15"
        assert float(rows[name]["seconds"]) > 0 and np.isfinite(float(rows[name]["final_loss"]))
    summary = json.loads((out / "napari-glkm-summary.json").read_text())
    assert summary["options"]["preset"] == "fast" and len(summary["files"]) == 4

    # rerun: finished outputs are skipped, only the broken file is tried (and fails) again
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    code, _, err = _run(capsys, "deblur", folder, "-o", out, *FAST)
    assert code == 1 and len(count_runs) == 3
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    rows2 = json.loads((out / "napari-glkm-summary.json").read_text())["files"]
    kept = [r for r in rows2 if r["input"].endswith("img1.png")][0]
    assert kept["status"] == "skipped (exists)" and kept["kernel_size"] == 15  # earlier numbers

    # fix the broken file: the third run computes only it and succeeds
    write_image(folder / "broken.png", read_image(folder / "img0.png").data, overwrite=True)
    code, _, err = _run(capsys, "deblur", folder, "-o", out, *FAST)
    assert code == 0, err
    assert len(count_runs) == 4 and (out / "broken.png").exists()


def test_glob_and_file_list_with_kernels_and_json_summary(folder, tmp_path, capsys):
    out = tmp_path / "globbed"
    code, _, err = _run(capsys, "deblur", str(folder / "img[01].png"), folder / "img2.png",
                        folder / "img0.png", "-o", out, "--kernel-out", tmp_path / "kernels",
                        "--summary", tmp_path / "s.json", *FAST)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png", "img2.png"]
    k = read_image(tmp_path / "kernels" / "img1_kernel.png").data
    assert k.shape == (15, 15) and k.max() == 255
    rows = json.loads((tmp_path / "s.json").read_text())["files"]
    assert [r["input"].rsplit("/", 1)[-1] for r in rows] == ["img0.png", "img1.png", "img2.png"]


def test_overwrite_recomputes(folder, tmp_path, capsys, count_runs):
    out = tmp_path / "out"
    _run(capsys, "deblur", folder / "img0.png", folder / "img1.png", "-o", out, *FAST)
    assert len(count_runs) == 2
    _run(capsys, "deblur", folder / "img0.png", folder / "img1.png", "-o", out, "--overwrite",
         *FAST)
    assert len(count_runs) == 4


@pytest.mark.parametrize("argv, match", [
    (["{folder}/img0.png", "{folder}/img1.png", "-o", "{folder}/img2.png"], "must be a folder"),
    (["{folder}/nothing*.png", "-o", "{tmp}/o"], "no image files"),
    (["{folder}/img*.png", "-o", "{tmp}/o.png"], "give an output folder"),
    (["{folder}", "-o", "{tmp}/o.png"], "input is not a file"),
    (["{folder}/img0.png", "{folder}/img1.png", "-o", "{tmp}/o.png"], "must be a folder"),
    (["{folder}/missing.png", "{folder}/img0.png", "-o", "{tmp}/o"], "not found"),
    (["{folder}", "-o", "{tmp}/o", "--summary", "{tmp}/s.txt"], "--summary"),
    (["{folder}", "-o", "{tmp}/o", "--workers", "0"], "--workers"),
    (["{folder}", "-o", "{tmp}/no/such/dir"], "does not exist"),
    (["{folder}", "-o", "{folder}"], "refusing to write over the input"),
])
def test_batch_errors_are_one_line(folder, tmp_path, capsys, argv, match):
    argv = [a.format(folder=folder, tmp=tmp_path) for a in argv]
    code, _, err = _run(capsys, "deblur", *argv, *FAST)
    assert code == 2 and match in err and "Traceback" not in err, err
    assert err.count("\n") == 1


def test_workers_run_on_a_local_cluster(folder, tmp_path, capsys):
    pytest.importorskip("distributed")
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    files = [folder / "img0.png", folder / "img1.png"]
    assert _run(capsys, "deblur", *files, "-o", serial, *FAST)[0] == 0
    code, _, err = _run(capsys, "deblur", *files, "-o", parallel, "--workers", "2", *FAST)
    assert code == 0, err
    for f in files:
        np.testing.assert_array_equal(read_image(parallel / f.name).data,
                                      read_image(serial / f.name).data)


def test_deblur_stack_command_resumes_and_exports_ome_tiff(tmp_path, capsys):
    import tifffile

    from napari_glkm.backend.stack_io import ZarrStackOutput

    blurry = blurred_sample("camera").blurry
    stack = (np.stack([blurry[200 + 8 * i: 272 + 8 * i, 180:252] for i in range(3)])
             * 60000).astype(np.uint16)
    src = tmp_path / "movie.ome.tif"
    tifffile.imwrite(src, stack, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.4,
                                                      "PhysicalSizeY": 0.4})
    out = tmp_path / "movie.zarr"
    argv = ["deblur-stack", src, "-o", out, "--axis", "t", *FAST]
    code, stdout, err = _run(capsys, *argv, "--frames", "0:2")
    assert code == 0, err
    assert ZarrStackOutput.open(out, mode="r").done().tolist() == [True, True, False]
    code, stdout, err = _run(capsys, *argv[:-1], "--ome-tiff", tmp_path / "movie_sharp.ome.tif")
    assert code == 0, err
    assert "1 frames computed, 2 already there" in stdout
    with tifffile.TiffFile(tmp_path / "movie_sharp.ome.tif") as tif:
        assert tif.series[0].axes == "TYX" and tif.series[0].shape == (3, 72, 72)
        assert tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]["PhysicalSizeX"] == 0.4
    code, _, err = _run(capsys, *argv, "--seed", "5")
    assert code == 2 and "other settings" in err and "Traceback" not in err
    code, _, err = _run(capsys, "deblur-stack", src, "-o", out, "--frames", "1-2", *FAST)
    assert code == 2 and "--frames" in err
