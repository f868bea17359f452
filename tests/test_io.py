import numpy as np
import pytest
import tifffile

from napari_glkm._io import ImageFileError, read_image, to_dtype, write_image


def test_tiff_metadata_round_trip(tmp_path, rng):
    src = tmp_path / "in.tif"
    data = (rng.random((40, 30)) * 4000).astype(np.uint16)
    tifffile.imwrite(src, data, resolution=(2.5, 2.5), resolutionunit="CENTIMETER",
                     description="sample 42", metadata=None)
    img = read_image(src)
    np.testing.assert_array_equal(img.data, data)
    out = write_image(tmp_path / "out.tif", img.data, tiff=img.tiff)
    back = read_image(out)
    assert back.tiff["description"] == "sample 42"
    assert back.tiff["resolution"] == img.tiff["resolution"]
    assert back.tiff["resolutionunit"] == img.tiff["resolutionunit"]


def test_write_refuses_existing_and_is_atomic(tmp_path):
    target = tmp_path / "x.png"
    write_image(target, np.zeros((8, 8), np.uint8))
    with pytest.raises(ImageFileError, match="--overwrite"):
        write_image(target, np.zeros((8, 8), np.uint8))
    write_image(target, np.full((8, 8), 7, np.uint8), overwrite=True)
    assert read_image(target).data.max() == 7
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp files left


@pytest.mark.parametrize("content, name, match", [
    (b"", "empty.png", "cannot read"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "trunc.png", "cannot read"),
    (b"hello", "notes.txt", "unsupported file type"),
])
def test_bad_files(tmp_path, content, name, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ImageFileError, match=match):
        read_image(p)


def test_missing_file(tmp_path):
    with pytest.raises(ImageFileError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_to_dtype_rounds_and_clips():
    out = to_dtype(np.array([-3.0, 0.4, 0.6, 300.0]), np.uint8)
    np.testing.assert_array_equal(out, [0, 0, 1, 255])
