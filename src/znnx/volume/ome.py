"""OME-Zarr outputs (OME-NGFF 0.4 on zarr v2), which napari and neuroglancer open directly.

The prediction is written as array `0` of a zarr group (`pred.ome.zarr/0`); when the run has
finished, `finish` adds `levels - 1` downsampled copies (`1`, `2`, ...: each the 2x2x2 mean of the
one before, computed chunk by chunk, so memory stays bounded) and the group's `multiscales`
metadata: axes c, z, y, x (channel and space; fewer space axes for 2D and 1D nets) and each level's
scale.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from znnx.errors import StorageError
from znnx.volume import storage

VERSION = "0.4"
SPACE_AXES = ("z", "y", "x")


def prepare(output: str) -> str:
    """The spelling of level 0 inside the OME-Zarr group `output` (`pred.ome.zarr`), the group
    created as zarr v2 so that level 0 is written in the format OME-NGFF 0.4 reads."""
    import zarr

    location = storage.parse(output)
    if location.kind != "zarr":
        raise StorageError(f"ome-zarr: {output!r} is not a zarr location; name the group, e.g. pred.ome.zarr")
    group = location.path / location.dataset if location.dataset else location.path
    zarr.open_group(store=str(location.path), path=location.dataset or None, mode="a", zarr_format=2)
    return str(group / "0")


def _downsample(source: np.ndarray) -> np.ndarray:
    """The 2x2x2 (2x2, 2) mean over the spatial axes of a (C, *spatial) block; odd edges keep their
    last voxel's share."""
    spatial = source.shape[1:]
    padded = [math.ceil(s / 2) * 2 for s in spatial]
    work = np.pad(source.astype(np.float32), [(0, 0), *((0, p - s) for p, s in zip(padded, spatial))], mode="edge")
    shape = [source.shape[0]]
    for p in padded:
        shape += [p // 2, 2]
    return work.reshape(shape).mean(axis=tuple(range(2, 2 + 2 * len(spatial), 2)))


def _write_level(group_path: Path, level: int, dtype: np.dtype) -> tuple[int, ...]:
    """Level `level` from level `level - 1`, one chunk-aligned slab of the source at a time."""
    import zarr

    source = zarr.open_array(store=str(group_path / str(level - 1)), mode="r")
    spatial = source.shape[1:]
    shape = (source.shape[0], *(math.ceil(s / 2) for s in spatial))
    chunks = (source.shape[0], *(min(64, s) for s in shape[1:]))
    target = zarr.create_array(store=str(group_path / str(level)), shape=shape, chunks=chunks, dtype=dtype,
                               fill_value=0, overwrite=True, zarr_format=2)
    step = 2 * chunks[1]
    for start in range(0, spatial[0], step):
        block = np.asarray(source[:, start:start + step])
        mean = _downsample(block)
        values = np.rint(mean).astype(dtype) if np.dtype(dtype).kind in "iu" else mean.astype(dtype)
        target[:, start // 2:start // 2 + values.shape[1]] = values
    return shape


def finish(output: str, levels: int, name: str) -> None:
    """Write the downsampled levels and the multiscales metadata of the OME-Zarr group `output`."""
    import zarr

    if levels < 1:
        raise StorageError(f"ome-zarr: levels must be at least 1, got {levels}")
    location = storage.parse(output)
    group_path = location.path / location.dataset if location.dataset else location.path
    level0 = zarr.open_array(store=str(group_path / "0"), mode="r")
    rank = len(level0.shape) - 1
    for level in range(1, levels):
        _write_level(group_path, level, level0.dtype)
    axes: list[Any] = [{"name": "c", "type": "channel"}, *({"name": a, "type": "space"} for a in SPACE_AXES[3 - rank:])]
    datasets: list[Any] = [{"path": str(level), "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, *([float(2**level)] * rank)]}]} for level in range(levels)]
    group = zarr.open_group(store=str(location.path), path=location.dataset or None, mode="a", zarr_format=2)
    group.attrs["multiscales"] = [{"version": VERSION, "name": name, "axes": axes, "datasets": datasets}]
