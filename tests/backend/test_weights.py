import pytest
import torch

from napari_glkm import load_weights
from napari_glkm.backend.generator import KernelGenerator
from napari_glkm.backend.weights import (
    WeightsError,
    load_generator,
    load_state_dict,
    sha256_file,
    shipped_entry,
    shipped_weights,
)


def test_shipped_generator_matches_manifest_and_loads():
    entry = shipped_entry("generator", 31)
    assert sha256_file(entry.path) == entry.sha256
    assert entry.path.stat().st_size < 25e6
    gen = load_generator(31)
    k = gen(torch.randn(2, 100, 1, 1))
    assert k.shape == (2, 1, 31, 31)
    assert all(e.training for e in shipped_weights())


def test_corrupt_shipped_file_is_detected(tmp_path):
    entry = shipped_entry("generator", 31)
    bad = tmp_path / "g.safetensors"
    data = bytearray(entry.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match its manifest"):
        load_state_dict(bad, expected_sha256=entry.sha256)


def test_truncated_safetensors(tmp_path):
    entry = shipped_entry("generator", 31)
    bad = tmp_path / "t.safetensors"
    bad.write_bytes(entry.path.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(bad)


def test_missing_size_says_how_to_train():
    with pytest.raises(WeightsError, match="train-generator --size 65"):
        load_generator(65)
    # smaller sizes are served by the 31-pixel generator, cropped
    assert load_generator(15, at_least=True).size == 31
    with pytest.raises(WeightsError):
        load_generator(15)


def _old_layout(state):
    out = {}
    for key, value in state.items():
        if key.startswith("layer1."):
            out["main1.0." + key[len("layer1."):]] = value
        else:
            idx, rest = key[len("layers."):].split(".", 1)
            out[f"main2.{int(idx) + 1}.{rest}"] = value
    return out


@pytest.mark.parametrize("layout", ["new", "old"])
def test_official_pth_both_layouts(tmp_path, layout):
    ref = KernelGenerator(55).eval()
    state = ref.state_dict()
    if layout == "old":
        state = _old_layout(state)
    path = tmp_path / "netG_55.pth"
    torch.save(state, path)
    gen = load_weights(path)
    assert gen.size == 55
    z = torch.randn(2, 100, 1, 1)
    torch.testing.assert_close(gen(z), ref(z))


def test_wrong_shapes_rejected(tmp_path):
    state = KernelGenerator(31).state_dict()
    state["layer1.0.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="do not match any generator"):
        load_weights(path)


@pytest.mark.parametrize("fixture", ["hostile_pth", "hostile_pickle"])
def test_hostile_pickle_is_refused_without_running(request, fixture):
    path, marker = request.getfixturevalue(fixture)
    with pytest.raises(WeightsError, match="refused"):
        load_weights(path)
    assert not marker.exists()


def test_wrong_kernel_size_requested(tmp_path):
    path = tmp_path / "g31.pth"
    torch.save(KernelGenerator(31).state_dict(), path)
    with pytest.raises(WeightsError, match="kernel size 31, not 55"):
        load_weights(path, kernel_size=55)
