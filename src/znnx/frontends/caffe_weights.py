"""Caffe layer weights ("blobs") from a .caffemodel, an .npz or an HDF5 file, keyed by layer name.

A .caffemodel is a binary protobuf NetParameter. We decode the wire format for the few fields
that hold blobs, with this schema (field numbers from Caffe's caffe.proto):

    NetParameter       layer = 100 (LayerParameter), layers = 2 (V1LayerParameter)
    LayerParameter     name = 1, blobs = 7 (BlobProto)
    V1LayerParameter   name = 4, blobs = 6 (BlobProto)
    BlobProto          shape = 7 (BlobShape), data = 5 (float), double_data = 8 (double),
                       legacy num = 1, channels = 2, height = 3, width = 4
    BlobShape          dim = 1 (int64)

NPZ files hold arrays named "<layer>/<index>"; HDF5 files hold datasets "<layer>/<index>" or Caffe's
own snapshot layout "data/<layer>/<index>".
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from znnx.errors import ModelError

COMPONENT = "caffe frontend"
Blobs = dict[str, list[np.ndarray]]


class _Truncated(Exception):
    pass


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= len(data):
            raise _Truncated
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of one encoded message."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
            yield number, wire, value
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if position + size > len(data):
                raise _Truncated
            yield number, wire, data[position:position + size]
            position += size
        elif wire == 2:
            size, position = _varint(data, position)
            if position + size > len(data):
                raise _Truncated
            yield number, wire, data[position:position + size]
            position += size
        else:
            raise ValueError(f"unsupported wire type {wire} (groups) for field {number}")


def _numbers(wire: int, value: int | bytes, fmt: str) -> list[float]:
    """Values of a repeated float/double field, packed (wire type 2) or not."""
    if wire == 2:
        assert isinstance(value, bytes)
        size = struct.calcsize(fmt)
        if len(value) % size:
            raise ValueError(f"packed field of {len(value)} bytes is not a multiple of {size}")
        return list(struct.unpack(f"<{len(value) // size}{fmt}", value))
    assert isinstance(value, bytes)
    return list(struct.unpack(f"<{fmt}", value))


def _blob(data: bytes) -> np.ndarray:
    dims: list[int] = []
    legacy = {1: 1, 2: 1, 3: 1, 4: 1}
    has_legacy = False
    floats: list[float] = []
    doubles: list[float] = []
    for number, wire, value in _fields(data):
        if number == 7 and isinstance(value, bytes):
            for dim_number, dim_wire, dim in _fields(value):
                if dim_number != 1:
                    continue
                if dim_wire == 2 and isinstance(dim, bytes):
                    position = 0
                    while position < len(dim):
                        item, position = _varint(dim, position)
                        dims.append(item)
                elif isinstance(dim, int):
                    dims.append(dim)
        elif number == 5:
            floats += _numbers(wire, value, "f")
        elif number == 8:
            doubles += _numbers(wire, value, "d")
        elif number in legacy and isinstance(value, int):
            legacy[number], has_legacy = value, True
    values = np.asarray(floats if floats else doubles, dtype=np.float64)
    shape = dims or ([legacy[i] for i in (1, 2, 3, 4)] if has_legacy else [values.size])
    if int(np.prod(shape)) != values.size:
        raise ValueError(f"blob shape {shape} holds {int(np.prod(shape))} values, but {values.size} are stored")
    return values.reshape(shape)


def read_caffemodel(path: Path) -> Blobs:
    data = path.read_bytes()
    blobs: Blobs = {}
    try:
        for number, _, value in _fields(data):
            if number not in (100, 2) or not isinstance(value, bytes):
                continue
            name_field, blob_field = (1, 7) if number == 100 else (4, 6)
            name, layer_blobs = "", []
            for field, _, item in _fields(value):
                if field == name_field and isinstance(item, bytes):
                    name = item.decode("utf-8", "replace")
                elif field == blob_field and isinstance(item, bytes):
                    layer_blobs.append(_blob(item))
            if layer_blobs:
                blobs[name] = layer_blobs
    except _Truncated:
        raise ModelError(f"{COMPONENT}: {str(path)!r} is truncated (a field runs past the end of the file)") from None
    except (ValueError, UnicodeDecodeError, struct.error) as error:
        raise ModelError(f"{COMPONENT}: {str(path)!r} is not a valid .caffemodel: {error}") from None
    if not blobs and data:
        raise ModelError(f"{COMPONENT}: {str(path)!r} holds no layer blobs; is it a .caffemodel?")
    return blobs


def _by_layer(named: Mapping[str, np.ndarray], where: str) -> Blobs:
    blobs: dict[str, dict[int, np.ndarray]] = {}
    for key, array in named.items():
        layer, _, index = key.removeprefix("data/").rpartition("/")
        if not layer or not index.isdigit():
            raise ModelError(f"{COMPONENT}: {where} entry {key!r} is not named '<layer>/<blob index>'")
        blobs.setdefault(layer, {})[int(index)] = np.asarray(array, dtype=np.float64)
    out: Blobs = {}
    for layer, indexed in blobs.items():
        if sorted(indexed) != list(range(len(indexed))):
            raise ModelError(f"{COMPONENT}: {where} layer {layer!r} has blobs {sorted(indexed)}; expected 0..n-1")
        out[layer] = [indexed[i] for i in range(len(indexed))]
    return out


def _read_hdf5(path: Path) -> Blobs:
    try:
        import h5py
    except ImportError:
        raise ModelError(f"{COMPONENT}: reading {str(path)!r} needs h5py: pip install h5py") from None
    named: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda key, item: named.__setitem__(key, item[()]) if isinstance(item, h5py.Dataset) else None)
    return _by_layer(named, repr(str(path)))


def read_weights(source: str | Path | Mapping[str, Sequence[np.ndarray]]) -> Blobs:
    """Blobs per layer from a path (.caffemodel, .npz, .h5/.hdf5) or an in-memory mapping."""
    if isinstance(source, Mapping):
        return {name: [np.asarray(b, dtype=np.float64) for b in blobs] for name, blobs in source.items()}
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"{COMPONENT}: weights file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".caffemodel":
        return read_caffemodel(path)
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return _by_layer({k: archive[k] for k in archive.files}, repr(str(path)))
        except (OSError, ValueError) as error:
            raise ModelError(f"{COMPONENT}: {str(path)!r} is not a readable .npz file: {error}") from None
    if suffix in (".h5", ".hdf5"):
        return _read_hdf5(path)
    raise ModelError(f"{COMPONENT}: weights file {str(path)!r} must be .caffemodel, .npz, .h5 or .hdf5")
