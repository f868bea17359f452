import pytest
import torch

from napari_glkm.backend.generator import (
    SUPPORTED_SIZES,
    KernelDiscriminator,
    KernelGenerator,
    invert_kernels,
)
from napari_glkm.backend.trajectories import motion_kernels
from napari_glkm.backend.weights import load_generator


@pytest.mark.parametrize("size", SUPPORTED_SIZES)
def test_shapes_and_softmax(size):
    g = KernelGenerator(size).eval()
    z = torch.randn(3, 100, 1, 1)
    k = g(z)
    assert k.shape == (3, 1, size, size)
    assert (k >= 0).all()
    torch.testing.assert_close(k.sum((2, 3)), torch.ones(3, 1))
    f = g.features(z)
    assert f.shape == (3, *g.feature_shape)
    torch.testing.assert_close(g.decode(f), k)
    d = KernelDiscriminator(size)
    assert d(k).shape == (3,)


def test_batchnorm_eps_kept_for_official_checkpoints():
    g = KernelGenerator(31)
    assert g.layer1[1].eps == 0.8
    assert [k for k in g.state_dict() if k.endswith("weight")][:3] == [
        "layer1.0.weight", "layer1.1.weight", "layers.0.0.weight"]


def test_unknown_size():
    with pytest.raises(ValueError, match="supported sizes"):
        KernelGenerator(33)


def test_feature_inversion_of_shipped_generator_fits_motion_kernels():
    g = load_generator(31)
    target = torch.from_numpy(motion_kernels(4, 31, rng=0))[:, None]
    _, k0 = invert_kernels(g, target, steps=0)
    _, k1 = invert_kernels(g, target, steps=100)
    err0 = (k0 - target).abs().sum((1, 2, 3))
    err1 = (k1 - target).abs().sum((1, 2, 3))
    assert (err1 < 0.7 * err0).all()
    assert float(err1.mean()) < 1.0
