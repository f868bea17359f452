"""CLI options for real photographs: --kernel-size auto (default), --noise, --saturation."""

import numpy as np
import pytest
from skimage import io

from napari_glkm.cli import main


@pytest.fixture
def photo(tmp_path):
    from napari_glkm._sample_data import blurred_sample

    path = tmp_path / "in.png"
    io.imsave(path, (blurred_sample("camera").blurry[200:296, 180:276] * 255).astype(np.uint8),
              check_contrast=False)
    return path


def test_auto_size_and_noise_are_reported(tmp_path, capsys, photo):
    code = main(["deblur", str(photo), "-o", str(tmp_path / "out.png"), "--preset", "fast",
                 "--iterations", "1", "--kernel-prior", "free", "--noise", "0.02",
                 "--saturation", "off"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert " auto, noise sigma 2.00% of range" in out.out


@pytest.mark.parametrize("extra, match", [
    (["--kernel-size", "big"], "expected auto or a number"),
    (["--noise", "loud"], "expected auto or off or a number"),
])
def test_bad_photo_options(tmp_path, capsys, extra, match):
    with pytest.raises(SystemExit) as e:
        main(["deblur", "x.png", "-o", str(tmp_path / "o.png"), *extra])
    assert e.value.code == 2 and match in capsys.readouterr().err


def test_bad_noise_value_is_one_line(tmp_path, capsys, photo):
    code = main(["deblur", str(photo), "-o", str(tmp_path / "o.png"), "--noise", "0.9"])
    assert code == 2 and "noise must be" in capsys.readouterr().err
