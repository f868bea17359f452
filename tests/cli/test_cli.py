"""CLI: the sample -> deblur round trip, metadata, and clear errors without tracebacks."""

import numpy as np
import pytest
import tifffile

from napari_glkm._io import read_image
from napari_glkm.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sample_then_deblur_png(tmp_path, capsys):
    blurry = tmp_path / "blurry image ü.png"
    code, out, _ = _run(capsys, "sample", "camera", "-o", str(blurry))
    assert code == 0 and blurry.exists()
    before = blurry.read_bytes()
    res = tmp_path / "sharp.png"
    kern = tmp_path / "k.png"
    code, out, err = _run(capsys, "deblur", str(blurry), "-o", str(res), "--kernel-out", str(kern),
                          "--preset", "fast", "--iterations", "1", "--quiet")
    assert code == 0, err
    assert blurry.read_bytes() == before
    img = read_image(res).data
    assert img.shape == (512, 512) and img.dtype == np.uint8
    k = read_image(kern).data
    assert k.shape[0] == k.shape[1] in (15, 23, 31) and k.max() == 255  # kernel size auto


def test_tiff_keeps_dtype_and_metadata(tmp_path, capsys, rng):
    src = tmp_path / "in.tif"
    data = (rng.random((70, 80)) * 60000).astype(np.uint16)
    tifffile.imwrite(src, data, resolution=(4.0, 4.0), description="stage 3", metadata=None)
    out = tmp_path / "out.tif"
    code, _, err = _run(capsys, "deblur", str(src), "-o", str(out), "--preset", "fast",
                        "--iterations", "1", "--kernel-size", "15", "-q")
    assert code == 0, err
    img = read_image(out)
    assert img.data.dtype == np.uint16 and img.data.shape == (70, 80)
    assert img.tiff["description"] == "stage 3"
    assert img.tiff["resolution"] == read_image(src).tiff["resolution"]


@pytest.mark.parametrize("extra, match", [
    (["--preset", "turbo"], "invalid choice"),
])
def test_argparse_errors(tmp_path, capsys, extra, match):
    with pytest.raises(SystemExit) as e:
        main(["deblur", "x.png", "-o", str(tmp_path / "o.png"), *extra])
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_expected_errors_are_one_line(tmp_path, capsys):
    src = tmp_path / "in.png"
    _run(capsys, "sample", "camera", "-o", str(src))
    cases = [
        (["deblur", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png")], "not found"),
        (["deblur", str(src), "-o", str(src)], "refusing to write over the input"),
        (["deblur", str(src), "-o", str(tmp_path / "o.png"), "--kernel-size", "30"], "odd"),
        (["deblur", str(src), "-o", str(tmp_path / "o.png"), "--iterations", "-2"], "positive"),
        (["deblur", str(src), "-o", str(tmp_path / "o.png"), "--kernel-size", "55"],
         "no shipped generator weights"),
        (["deblur", str(src), "-o", str(tmp_path / "nodir" / "o.png"), "--iterations", "1",
          "--preset", "fast"], "does not exist"),
    ]
    for argv, match in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 2, argv
        assert match in err and "Traceback" not in err, err
        assert err.count("\n") == 1


def test_existing_output_needs_overwrite(tmp_path, capsys):
    src = tmp_path / "in.png"
    _run(capsys, "sample", "camera", "-o", str(src))
    out = tmp_path / "o.png"
    out.write_bytes(b"keep me")
    code, _, err = _run(capsys, "deblur", str(src), "-o", str(out))
    assert code == 2 and "--overwrite" in err
    assert out.read_bytes() == b"keep me"


def test_convert_official_weights(tmp_path, capsys):
    import pickle

    import torch

    from napari_glkm.backend.generator import KernelGenerator
    from napari_glkm.backend.initializer import KernelInitializer
    from napari_glkm.backend.weights import load_generator, load_initializer

    ref = KernelGenerator(31).eval()
    old = {}
    for key, value in ref.state_dict().items():  # the older official layout main1/main2
        if key.startswith("layer1."):
            old["main1.0." + key[len("layer1."):]] = value
        else:
            idx, rest = key[len("layers."):].split(".", 1)
            old[f"main2.{int(idx) + 1}.{rest}"] = value
    torch.save(old, tmp_path / "netG_31.pth")
    code, out, _ = _run(capsys, "convert-weights", str(tmp_path / "netG_31.pth"),
                        "-o", str(tmp_path / "g.safetensors"))
    assert code == 0 and "generator, kernel size 31" in out
    z = torch.randn(2, 100, 1, 1)
    torch.testing.assert_close(load_generator(31, tmp_path / "g.safetensors")(z), ref(z))

    enc = KernelInitializer().eval()
    torch.save({f"model.{k}": v for k, v in enc.state_dict().items()}, tmp_path / "netE_31.pth")
    code, out, _ = _run(capsys, "convert-weights", str(tmp_path / "netE_31.pth"),
                        "-o", str(tmp_path / "e.safetensors"))
    assert code == 0 and "initializer" in out
    y = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(load_initializer(31, tmp_path / "e.safetensors")(y), enc(y))

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned.txt"), "w"))

    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"fc.weight": Payload()}, fh)
    code, _, err = _run(capsys, "convert-weights", str(tmp_path / "evil.pth"),
                        "-o", str(tmp_path / "evil.safetensors"))
    assert code == 2 and "refused" in err and "Traceback" not in err
    assert not (tmp_path / "pwned.txt").exists() and not (tmp_path / "evil.safetensors").exists()


@pytest.mark.slow
def test_nonuniform_writes_kernel_grid_png(tmp_path, capsys, rng):
    src = tmp_path / "in.png"
    _run(capsys, "sample", "camera", "-o", str(src))
    small = read_image(src).data[100:228, 100:292]
    from napari_glkm._io import write_image
    write_image(tmp_path / "small.png", small)
    out, kern = tmp_path / "out.png", tmp_path / "grid.png"
    code, stdout, err = _run(capsys, "deblur", str(tmp_path / "small.png"), "-o", str(out),
                             "--kernel-out", str(kern), "--preset", "fast", "--iterations", "1",
                             "--kernel-size", "15", "--nonuniform", "--grid", "1x2",
                             "--overlap", "0.25", "--blur-model", "free")
    assert code == 0, err
    assert "1x2 patches" in stdout
    mosaic = read_image(kern).data
    assert mosaic.shape == (17, 34) and mosaic.dtype == np.uint8 and mosaic.max() == 255
    assert read_image(out).data.shape == (128, 192)


def test_grid_options_need_nonuniform(tmp_path, capsys):
    src = tmp_path / "in.png"
    _run(capsys, "sample", "camera", "-o", str(src))
    code, _, err = _run(capsys, "deblur", str(src), "-o", str(tmp_path / "o.png"), "--grid", "3")
    assert code == 2 and "--nonuniform" in err and "Traceback" not in err
    code, _, err = _run(capsys, "deblur", str(src), "-o", str(tmp_path / "o.png"),
                        "--nonuniform", "--grid", "3y")
    assert code == 2 and "--grid" in err
    code, _, err = _run(capsys, "deblur", str(src), "-o", str(tmp_path / "o.png"),
                        "--blur-model", "camera")
    assert code == 2 and "--blur-model" in err and "--nonuniform" in err


def test_train_diffusion_and_deblur_with_it(tmp_path, capsys, monkeypatch):
    import imageio.v3 as iio

    from napari_glkm._sample_data import blurred_sample
    from napari_glkm.backend import solver

    monkeypatch.setitem(solver.DIFFUSION_ITERS, "fast", 3)  # the command, not the quality

    sharp = blurred_sample("camera").sharp
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        iio.imwrite(folder / f"{i}.png", (sharp[i * 60 : i * 60 + 80, :80] * 255).astype(np.uint8))
    out = tmp_path / "run"
    code, stdout, err = _run(capsys, "train-diffusion", "--images", str(folder), "--steps", "3",
                             "--batch-size", "2", "--crop", "32", "--out", str(out))
    assert code == 0, err
    model = out / "diffusion_unet.safetensors"
    assert model.is_file() and (out / "checkpoint.pt").is_file() and "wrote" in stdout
    src = tmp_path / "in.png"
    iio.imwrite(src, (blurred_sample("camera").blurry[180:244, 160:224] * 255).astype(np.uint8))
    code, _, err = _run(capsys, "deblur", str(src), "-o", str(tmp_path / "bad.png"), "--prior",
                        "diffusion", "--diffusion-model", str(folder), "--kernel-size", "9")
    assert code == 2 and "not a diffusers UNet2DModel folder" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "deblur", str(src), "-o", str(tmp_path / "o.png"), "--prior",
                        "diffusion", "--diffusion-model", str(model), "--kernel-size", "9",
                        "--preset", "fast", "--iterations", "1", "--kernel-prior", "free",
                        "--init", "random", "-q")
    assert code == 0, err
    assert read_image(tmp_path / "o.png").data.shape == (64, 64)
