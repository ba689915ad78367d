"""Volumes on disk behind one small interface: zarr (v2 and v3, the default), HDF5, TIFF, .npy, and
N5 / neuroglancer precomputed through tensorstore (optional extra).

A location names a file or container and a dataset inside it: `vol.zarr/raw` (or `vol.zarr` for
an array at the root), `file.h5:/raw`, `stack.tif`, `slices/` (a folder of 2D TIFFs, one per z,
read only), `vol.npy`, `vol.n5/raw`, `precomputed://path/to/layer` (read only).

Each format is one `Format` record in `FORMATS`: how its spelling is recognised (`parse`), how it is
opened, created and checked for, and its properties (`compressed`: its size on disk is not known up
front; `multiprocess_writes`: several processes may write distinct chunks at once, as Dask workers
do). Adding a format is one record; the runners read the properties, not lists of names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from znnx.errors import StorageError

Index = tuple[slice, ...]
_HDF5 = (".h5", ".hdf5", ".hdf")
_TIFF = (".tif", ".tiff")


@dataclass(frozen=True)
class Location:
    """Where a volume lives; an array in memory (NumPy, zarr, Dask, anything with shape, dtype and
    slicing) is a location of kind `array` that holds the array itself."""

    kind: str
    path: Path
    dataset: str = ""
    array: Any = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.kind == "array":
            return f"<{type(self.array).__module__.split('.')[0]} array {tuple(self.array.shape)} {self.array.dtype}>"
        if self.kind == "hdf5":
            return f"{self.path}:{self.dataset}"
        if self.kind == "precomputed":
            return f"precomputed://{self.path}"
        return str(self.path / self.dataset) if self.dataset else str(self.path)


def _container(path: Path, suffix: str) -> tuple[Path, str] | None:
    for i, part in enumerate(path.parts):
        if part.endswith(suffix):
            return Path(*path.parts[:i + 1]), "/".join(path.parts[i + 1:])
    return None


def _is_zarr_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))


def _parse_precomputed(spec: str) -> Location | None:
    return Location("precomputed", Path(spec[len("precomputed://"):])) if spec.startswith("precomputed://") else None


def _parse_hdf5(spec: str) -> Location | None:
    head, sep, dataset = spec.rpartition(":")
    if sep and head.lower().endswith(_HDF5):
        return Location("hdf5", Path(head), "/" + dataset.strip("/"))
    if Path(spec).suffix.lower() in _HDF5:
        raise StorageError(f"storage: {spec!r} is an HDF5 file without a dataset; name one, e.g. {spec}:/raw")
    return None


def _parse_container(kind: str, suffix: str) -> Callable[[str], Location | None]:
    def parse(spec: str) -> Location | None:
        found = _container(Path(spec), suffix)
        if found:
            return Location(kind, *found)
        if kind == "zarr" and Path(spec).is_dir() and _is_zarr_dir(Path(spec)):
            return Location(kind, Path(spec))
        return None

    return parse


def _parse_suffix(kind: str, suffixes: tuple[str, ...]) -> Callable[[str], Location | None]:
    return lambda spec: Location(kind, Path(spec)) if Path(spec).suffix.lower() in suffixes else None


def _parse_tiff_slices(spec: str) -> Location | None:
    path = Path(spec)
    if path.is_dir() and any(p.suffix.lower() in _TIFF for p in path.iterdir()):
        return Location("tiff-slices", path)
    return None


def spell(index: Index) -> str:
    """An index as NumPy spells it: [:, 0:16, 32:48]."""
    parts = [f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}" for s in index]
    return "[" + ", ".join(parts) + "]"


@dataclass
class Volume:
    """An opened array: shape, dtype, storage chunks (None if unchunked), read and write by slices."""

    location: Location
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...] | None
    _read: Callable[[Index], np.ndarray]
    _write: Callable[[Index, np.ndarray], None] | None = None
    _flush: Callable[[], None] = lambda: None

    def read(self, index: Index) -> np.ndarray:
        try:
            return np.asarray(self._read(index))
        except (OSError, ValueError, RuntimeError) as error:
            raise StorageError(f"storage: reading {spell(index)} of {self.location} failed: {error}") from error

    def write(self, index: Index, data: np.ndarray) -> None:
        if self._write is None:
            raise StorageError(f"storage: {self.location} is open for reading only")
        try:
            self._write(index, data)
        except (OSError, ValueError, RuntimeError) as error:
            raise StorageError(f"storage: writing {spell(index)} of {self.location} failed: {error}; check free space "
                               f"and permissions, then rerun the same command to resume") from error

    def flush(self) -> None:
        try:
            self._flush()
        except (OSError, RuntimeError) as error:
            raise StorageError(f"storage: flushing {self.location} failed: {error}") from error


def _array_volume(location: Location, array: Any, writable: bool, flush: Callable[[], None] = lambda: None) -> Volume:
    chunks = getattr(array, "chunksize", getattr(array, "chunks", None))  # a Dask array's chunks are per block
    write = array.__setitem__ if writable else None
    return Volume(location, tuple(array.shape), np.dtype(array.dtype), tuple(chunks) if chunks else None,
                  array.__getitem__, write, flush)


def _missing(location: Location, detail: str) -> StorageError:
    return StorageError(f"storage: {location} {detail}")


def _open_zarr(location: Location, writable: bool) -> Volume:
    import zarr

    if not location.path.exists():
        raise _missing(location, f"does not exist: no zarr container at {location.path}")
    try:
        node = zarr.open(store=str(location.path), path=location.dataset, mode="r+" if writable else "r")
    except (FileNotFoundError, KeyError, ValueError) as error:
        raise _missing(location, f"is not a zarr array: {error}") from None
    if isinstance(node, zarr.Group):
        names = sorted(name for name, _ in node.arrays())
        raise _missing(location, f"is a zarr group, not an array; arrays in it: {names or 'none'}; "
                                 f"name one as {location.path}/<array>")
    return _array_volume(location, node, writable)


def _open_hdf5(location: Location, writable: bool) -> Volume:
    import h5py

    if not location.path.exists():
        raise _missing(location, f"does not exist: no HDF5 file at {location.path}")
    handle = h5py.File(location.path, "r+" if writable else "r")
    dataset = handle.get(location.dataset)
    if not isinstance(dataset, h5py.Dataset):
        names: list[str] = []
        handle.visititems(lambda name, obj: names.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
        handle.close()
        raise _missing(location, f"names no dataset; datasets in {location.path}: {names or 'none'}")
    return _array_volume(location, dataset, writable, handle.flush)


def _open_tiff(location: Location, writable: bool) -> Volume:
    import tifffile

    if not location.path.exists():
        raise _missing(location, "does not exist")
    array: Any
    try:
        array = tifffile.memmap(location.path, mode="r+" if writable else "r")
    except ValueError:
        if writable:
            raise _missing(location, "is a compressed or tiled TIFF; znnx writes only the TIFFs it creates") from None
        array = tifffile.imread(location.path)
    return _array_volume(location, array, writable, getattr(array, "flush", lambda: None))


def _open_array(location: Location, writable: bool) -> Volume:
    if writable and not hasattr(location.array, "__setitem__"):
        raise StorageError(f"storage: {location} cannot be written (a Dask array is read only); pass a NumPy or "
                           f"zarr array, or a path, as the output")
    return _array_volume(location, location.array, writable)


def as_location(spec: str | Location | Any) -> Location:
    """A location from a spelling (see `parse`), or an array in memory."""
    if isinstance(spec, Location):
        return spec
    if isinstance(spec, str | Path):
        return parse(str(spec))
    if all(hasattr(spec, name) for name in ("shape", "dtype", "__getitem__")):
        return Location("array", Path("<array>"), array=spec)
    raise StorageError(f"storage: cannot read a {type(spec).__name__} as a volume; pass a path (e.g. vol.zarr/raw) "
                       f"or an array with shape, dtype and slicing (NumPy, zarr, Dask)")


def _open_tiff_slices(location: Location, writable: bool) -> Volume:
    import tifffile

    files = sorted(p for p in location.path.iterdir() if p.suffix.lower() in _TIFF)
    first = tifffile.imread(files[0])

    def read(index: Index) -> np.ndarray:
        planes = range(len(files))[index[0]]
        return np.stack([tifffile.imread(files[z])[index[1:]] for z in planes]) if planes else \
            np.zeros((0, *first[index[1:]].shape), first.dtype)

    return Volume(location, (len(files), *first.shape), first.dtype, (1, *first.shape), read)


def _open_npy(location: Location, writable: bool) -> Volume:
    if not location.path.exists():
        raise _missing(location, "does not exist")
    try:
        array = np.load(location.path, mmap_mode="r+" if writable else "r")
    except ValueError as error:
        raise _missing(location, f"is not a readable .npy array: {error}") from None
    return _array_volume(location, array, writable, array.flush if writable else lambda: None)


def _tensorstore_spec(location: Location) -> dict[str, Any]:
    if location.kind == "precomputed":
        return {"driver": "neuroglancer_precomputed", "kvstore": {"driver": "file", "path": str(location.path)}}
    return {"driver": "n5", "kvstore": {"driver": "file", "path": str(location.path)}, "path": location.dataset}


def _tensorstore() -> Any:
    try:
        import tensorstore
    except ImportError:
        raise StorageError("storage: N5 and precomputed volumes need tensorstore; pip install 'znnx[n5]'") from None
    return tensorstore


def _open_tensorstore(location: Location, writable: bool) -> Volume:
    ts = _tensorstore()
    try:
        array = ts.open(_tensorstore_spec(location), read=True, write=writable).result()
    except ValueError as error:
        raise _missing(location, f"cannot be opened: {error}") from None
    if location.kind == "precomputed":
        array = array.T
    return _ts_volume(location, array, writable)


def _ts_volume(location: Location, array: Any, writable: bool) -> Volume:
    shape = tuple(int(s) for s in array.shape)
    origin = tuple(int(o) for o in array.domain.inclusive_min)

    def shifted(index: Index) -> Index:
        return tuple(slice(o + range(n)[s].start, o + range(n)[s].stop) for s, o, n in zip(index, origin, shape))

    def write(index: Index, data: np.ndarray) -> None:
        array[shifted(index)].write(data).result()

    chunks = tuple(int(c) for c in array.chunk_layout.write_chunk.shape)
    return Volume(location, shape, np.dtype(array.dtype.numpy_dtype), chunks,
                  lambda index: array[shifted(index)].read().result(), write if writable else None)


def open_volume(spec: str | Location | Any, writable: bool = False) -> Volume:
    """Open an existing volume (a spelling, a location or an array) for reading (or reading and writing)."""
    location = as_location(spec)
    try:
        return format_of(location).open(location, writable)
    except PermissionError as error:
        raise StorageError(f"storage: no permission to open {location}: {error}") from None


def _hdf5_exists(location: Location) -> bool:
    if not location.path.exists():
        return False
    import h5py

    with h5py.File(location.path, "r") as handle:
        return location.dataset in handle


def _path_exists(location: Location) -> bool:
    return (location.path / location.dataset).exists() if location.dataset else location.path.exists()


def exists(location: Location) -> bool:
    return format_of(location).exists(location)


def _zarr_format(container: Path) -> int:
    return 2 if (container / ".zgroup").exists() or (container / ".zarray").exists() else 3


Shape = tuple[int, ...]


def _create_zarr(location: Location, shape: Shape, dtype: np.dtype, chunks: Shape) -> Volume:
    import zarr

    array = zarr.create_array(store=str(location.path), name=location.dataset or None, shape=shape, chunks=chunks,
                              dtype=dtype, fill_value=0, overwrite=True,
                              zarr_format=_zarr_format(location.path))  # type: ignore[arg-type]
    return _array_volume(location, array, True)


def _create_hdf5(location: Location, shape: Shape, dtype: np.dtype, chunks: Shape) -> Volume:
    import h5py

    location.path.parent.mkdir(parents=True, exist_ok=True)
    handle = h5py.File(location.path, "a")
    if location.dataset in handle:
        del handle[location.dataset]
    dataset = handle.create_dataset(location.dataset, shape=shape, dtype=dtype, chunks=chunks, fillvalue=0)
    return _array_volume(location, dataset, True, handle.flush)


def _create_npy(location: Location, shape: Shape, dtype: np.dtype, chunks: Shape) -> Volume:
    location.path.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(location.path, mode="w+", dtype=dtype, shape=shape)
    return _array_volume(location, array, True, array.flush)


def _create_tiff(location: Location, shape: Shape, dtype: np.dtype, chunks: Shape) -> Volume:
    import tifffile

    location.path.parent.mkdir(parents=True, exist_ok=True)
    array = tifffile.memmap(location.path, shape=shape, dtype=dtype, bigtiff=True)
    return _array_volume(location, array, True, array.flush)


def _create_n5(location: Location, shape: Shape, dtype: np.dtype, chunks: Shape) -> Volume:
    ts = _tensorstore()
    metadata = {"dimensions": list(shape), "blockSize": list(chunks), "dataType": dtype.name,
                "compression": {"type": "gzip"}}
    array = ts.open({**_tensorstore_spec(location), "metadata": metadata}, create=True, delete_existing=True).result()
    return _ts_volume(location, array, True)


@dataclass(frozen=True)
class Format:
    """One storage format: `spelling` (for messages), `parse` (its Location from a spelling, or None
    if the spelling is not this format's), `open`, `create` (None: read only), `exists`; `compressed`
    (its size on disk is not known up front), `multiprocess_writes` (processes may write distinct
    chunks at once)."""

    kind: str
    spelling: str
    parse: Callable[[str], Location | None]
    open: Callable[[Location, bool], Volume]
    create: Callable[[Location, Shape, np.dtype, Shape], Volume] | None
    exists: Callable[[Location], bool]
    compressed: bool
    multiprocess_writes: bool


FORMATS: tuple[Format, ...] = (
    Format("precomputed", "precomputed://path (read, tensorstore extra)", _parse_precomputed, _open_tensorstore,
           None, _path_exists, True, False),
    Format("hdf5", "HDF5 (file.h5:/raw)", _parse_hdf5, _open_hdf5, _create_hdf5, _hdf5_exists, False, False),
    Format("zarr", "zarr (vol.zarr/raw)", _parse_container("zarr", ".zarr"), _open_zarr, _create_zarr, _path_exists,
           True, True),
    Format("n5", "N5 (vol.n5/raw, tensorstore extra)", _parse_container("n5", ".n5"), _open_tensorstore, _create_n5,
           _path_exists, True, True),
    Format("npy", ".npy", _parse_suffix("npy", (".npy",)), _open_npy, _create_npy, _path_exists, False, True),
    Format("tiff", "TIFF (stack.tif)", _parse_suffix("tiff", _TIFF), _open_tiff, _create_tiff, _path_exists, False,
           True),
    Format("array", "an array in memory (NumPy, zarr, Dask)", lambda spec: None, _open_array, None,
           lambda location: True, True, False),
    Format("tiff-slices", "a folder of 2D TIFF slices (read)", _parse_tiff_slices, _open_tiff_slices, None,
           _path_exists, False, False),
)
_BY_KIND = {f.kind: f for f in FORMATS}


def format_of(location: Location) -> Format:
    return _BY_KIND[location.kind]


def spellings(formats: Sequence[Format] = FORMATS) -> str:
    return ", ".join(f.spelling for f in formats)


def parse(spec: str) -> Location:
    """Where a volume lives, from its command-line spelling; refuses unknown formats."""
    for fmt in FORMATS:
        location = fmt.parse(spec)
        if location is not None:
            return location
    raise StorageError(f"storage: cannot tell the format of {spec!r}; znnx reads and writes {spellings()}")


def create_volume(spec: str | Location, shape: Sequence[int], dtype: np.dtype | str,
                  chunks: Sequence[int]) -> Volume:
    """Create (replacing any existing one) a chunked volume of zeros, open for writing."""
    location = spec if isinstance(spec, Location) else parse(spec)
    shape, chunks = tuple(shape), tuple(min(c, s) for c, s in zip(chunks, shape))
    create = format_of(location).create
    if create is None:
        writable = [f.spelling for f in FORMATS if f.create is not None]
        raise StorageError(f"storage: znnx does not write {location.kind} volumes ({location}); write "
                           f"{', '.join(writable)}")
    try:
        return create(location, shape, np.dtype(dtype), chunks)
    except OSError as error:
        raise StorageError(f"storage: cannot create {location}: {error}; choose a writable location with "
                           f"free space") from None


def ledger_path(location: Location) -> Path:
    """Where a run's resume ledger lives: beside the output (for a container, beside the container)."""
    name = f"{location.path.name}{'.' + location.dataset.strip('/').replace('/', '.') if location.dataset else ''}"
    return location.path.with_name(name + ".znnx-ledger")


def lock_path(location: Location) -> Path:
    """Where the lock of the run writing an output lives: beside the output, like the ledger."""
    return ledger_path(location).with_suffix(".znnx-lock")


def network_path(location: Location) -> Path:
    """Where a Dask run keeps the compiled net its workers load: beside the output, like the ledger."""
    return ledger_path(location).with_suffix(".znnx-net")


def free_bytes(location: Location) -> int:
    """Free bytes on the file system that will hold the output."""
    directory = location.path
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize
