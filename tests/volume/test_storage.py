"""Every format reads back what it wrote; bad locations fail with the location and the fix."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from znnx.errors import StorageError
from znnx.volume import storage

ALL = (slice(None),) * 4
EXAMPLES = {"zarr": "v.zarr/raw", "hdf5": "v.h5:/group/raw", "npy": "v.npy", "tiff": "v.tif", "n5": "v.n5/raw"}
FORMATS = [EXAMPLES[f.kind] for f in storage.FORMATS if f.create is not None and
           (f.kind != "n5" or importlib.util.find_spec("tensorstore"))] + ["v2.zarr/raw"]


def test_every_writable_format_has_an_example_that_parses_to_it() -> None:
    writable = [f.kind for f in storage.FORMATS if f.create is not None]
    assert sorted(writable) == sorted(EXAMPLES), "add an example spelling for the new format to EXAMPLES"
    for kind, spelling in EXAMPLES.items():
        assert storage.parse(spelling).kind == kind


def test_properties_come_from_the_table() -> None:
    assert storage.format_of(storage.parse("v.zarr/raw")).multiprocess_writes
    assert not storage.format_of(storage.parse("v.h5:/raw")).multiprocess_writes
    assert not storage.format_of(storage.parse("v.npy")).compressed
    with pytest.raises(StorageError, match="does not write tiff-slices volumes"):
        storage.create_volume(storage.Location("tiff-slices", Path("slices")), (2, 3, 4), "uint8", (1, 3, 4))


@pytest.mark.parametrize("name", FORMATS)
def test_round_trip(tmp_path: Path, name: str) -> None:
    if name.startswith("v2.zarr"):
        import zarr

        zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    spec = str(tmp_path / name)
    data = np.random.default_rng(0).random((2, 9, 10, 11)).astype(np.float32)
    volume = storage.create_volume(spec, data.shape, "float32", (2, 4, 5, 6))
    volume.write((slice(None), slice(0, 4), slice(5, 10), slice(0, 11)), data[:, :4, 5:])
    volume.flush()
    assert storage.exists(storage.parse(spec))
    back = storage.open_volume(spec)
    assert back.shape == data.shape and back.dtype == np.float32
    assert np.array_equal(back.read(ALL)[:, :4, 5:], data[:, :4, 5:])
    assert not back.read(ALL)[:, 4:].any()
    if name.startswith("v2.zarr"):
        assert (tmp_path / "v2.zarr" / "raw" / ".zarray").exists()


def test_a_folder_of_tiff_slices_reads_as_a_stack(tmp_path: Path) -> None:
    import tifffile

    data = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    for z in range(3):
        tifffile.imwrite(tmp_path / f"slice_{z:03d}.tif", data[z])
    volume = storage.open_volume(str(tmp_path))
    assert volume.shape == (3, 4, 5)
    assert np.array_equal(volume.read((slice(1, 3), slice(0, 2), slice(1, 4))), data[1:3, :2, 1:4])


def test_missing_and_wrong_locations_explain_themselves(tmp_path: Path) -> None:
    import h5py
    import zarr

    with pytest.raises(StorageError, match="does not exist"):
        storage.open_volume(str(tmp_path / "none.zarr/raw"))
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("raw", shape=(2, 2, 2), dtype="uint8")
    with pytest.raises(StorageError, match=r"is a zarr group, not an array; arrays in it: \['raw'\]"):
        storage.open_volume(str(tmp_path / "g.zarr"))
    with pytest.raises(StorageError, match="is not a zarr array"):
        storage.open_volume(str(tmp_path / "g.zarr/nothing"))
    with h5py.File(tmp_path / "f.h5", "w") as handle:
        handle.create_dataset("data/raw", shape=(2, 2, 2), dtype="f4")
    with pytest.raises(StorageError, match=r"names no dataset; datasets in .*\['/data/raw'\]"):
        storage.open_volume(f"{tmp_path / 'f.h5'}:/raw")
    with pytest.raises(StorageError, match="without a dataset; name one"):
        storage.parse(str(tmp_path / "f.h5"))
    with pytest.raises(StorageError, match="cannot tell the format"):
        storage.parse(str(tmp_path / "volume.bin"))


def test_unwritable_locations_fail_at_creation(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="cannot create"):
        storage.create_volume(str(tmp_path / "file" / "out.npy"), (1, 2, 2, 2), "float32", (1, 2, 2, 2))
