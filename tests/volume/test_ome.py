"""OME-Zarr outputs: level 0 is the prediction, each further level the 2x2x2 mean of the one
before, and the group carries OME-NGFF 0.4 multiscales metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

import znnx
from tests.volume.test_runner import small_model
from znnx.volume import VolumeOptions, infer_volume
from znnx.volume.ome import _downsample


def test_prediction_written_as_an_ome_zarr_pyramid(tmp_path: Path) -> None:
    net = znnx.compile(znnx.load(small_model(), input_shape=(1, 28, 28, 28)))
    volume = np.random.default_rng(0).random((37, 30, 41)).astype(np.float32)
    infer_volume(net, volume, str(tmp_path / "plain.npy"), quiet=True)
    summary = infer_volume(net, volume, str(tmp_path / "pred.ome.zarr"), options=VolumeOptions(ome_zarr_levels=3),
                           quiet=True)
    assert any("ome-zarr" in note for note in summary.notes)
    group = zarr.open_group(str(tmp_path / "pred.ome.zarr"), mode="r")
    multiscales = group.attrs["multiscales"][0]
    assert multiscales["version"] == "0.4"
    assert [a["name"] for a in multiscales["axes"]] == ["c", "z", "y", "x"]
    assert [d["path"] for d in multiscales["datasets"]] == ["0", "1", "2"]
    assert multiscales["datasets"][2]["coordinateTransformations"][0]["scale"] == [1.0, 4.0, 4.0, 4.0]
    level0, level1, level2 = (np.asarray(group[str(i)]) for i in range(3))
    np.testing.assert_array_equal(level0, np.load(tmp_path / "plain.npy"))
    assert level1.shape == (3, 19, 15, 21) and level2.shape == (3, 10, 8, 11)
    np.testing.assert_allclose(level1, _downsample(level0), rtol=1e-6)
    np.testing.assert_allclose(level2, _downsample(level1), rtol=1e-6)
    assert (tmp_path / "pred.ome.zarr" / "0" / ".zarray").exists()  # zarr v2, as OME-NGFF 0.4 reads
