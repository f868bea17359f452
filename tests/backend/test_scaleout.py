"""Scale-out: chunks of frames mapped over a dask.distributed LocalCluster (2 single-threaded
worker processes) give the same frames as the serial run with the same chunks."""

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
pytest.importorskip("zarr")

from napari_glkm import deblur_stack  # noqa: E402
from napari_glkm.backend.stack_io import ZarrStackOutput  # noqa: E402

FAST = dict(preset="fast", iterations=1, kernel_size=15, kernel_prior="free")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _stack(n=4, side=64):
    from scipy.ndimage import gaussian_filter

    base = gaussian_filter(np.random.default_rng(5).random((side + 3 * n, side + 3 * n)), 1.5)
    frames = np.stack([base[3 * i: 3 * i + side, i: i + side] for i in range(n)])
    return ((frames - frames.min()) / np.ptp(frames)).astype(np.float32)


def test_cluster_gives_the_serial_frames(client, tmp_path):
    frames = _stack(4)
    serial = deblur_stack(frames, chunk_frames=2, **FAST)
    assert serial.warm_start == [False, True, False, True]  # warm start restarts per chunk
    lazy = da.from_array(frames, chunks=(1, 64, 64))
    with distributed.get_task_stream(client) as ts:
        res = deblur_stack(lazy, chunk_frames=2, client=client, out=tmp_path / "c.zarr", **FAST)
    assert len([t for t in ts.data if "_chunk_task" in str(t["key"])]) == 2  # one per chunk
    assert sorted(res.frames) == [0, 1, 2, 3]
    assert sorted(res.warm_start) == [False, False, True, True]
    np.testing.assert_allclose(np.asarray(res.images), serial.images, atol=1e-5)
    np.testing.assert_allclose(np.asarray(res.kernels), serial.kernels, atol=1e-6)
    # a second cluster run resumes: nothing left to do
    again = deblur_stack(lazy, chunk_frames=2, client=client, out=tmp_path / "c.zarr", **FAST)
    assert again.frames == [] and again.skipped == [0, 1, 2, 3]


def test_cluster_in_memory_and_shared_kernel(client):
    frames = _stack(3)
    serial = deblur_stack(frames, shared_kernel=True, reference=1, **FAST)
    res = deblur_stack(frames, shared_kernel=True, reference=1, client=client, chunk_frames=1,
                       **FAST)
    assert res.frames == [0, 1, 2]
    np.testing.assert_allclose(res.images, serial.images, atol=1e-5)
    assert np.all(res.kernels == res.kernels[1])
    np.testing.assert_allclose(res.kernels[0], serial.kernels[0], atol=1e-6)


def test_cluster_reads_frames_of_an_open_tiff_on_the_client(client, tmp_path):
    """A TIFF held open by this process cannot be sent to the workers: its frames are read
    here, a chunk at a time, and the results match the serial run."""
    import tifffile

    frames = (_stack(2) * 1000).astype(np.uint16)
    src = tmp_path / "in.ome.tif"
    tifffile.imwrite(src, frames, ome=True, metadata={"axes": "TYX"})
    res = deblur_stack(src, client=client, chunk_frames=1, out=tmp_path / "t.zarr", **FAST)
    serial = deblur_stack(frames, chunk_frames=1, **FAST)
    np.testing.assert_allclose(np.asarray(res.images), serial.images, atol=1e-3)
