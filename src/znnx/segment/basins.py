"""Watershed basins of an affinity graph, block by block, the same as over the whole volume.

The definition (Zlateski and Seung's steepest-ascent watershed, with a plateau rule that a block
can decide alone): every voxel's edges are its six affinities (`aff[0]` joins a voxel to the one
before it in z, `aff[1]` in y, `aff[2]` in x). A voxel whose largest affinity `m` is at most `low`
is background (label 0). Otherwise it points to one neighbour along an edge of affinity `m`: the
first (in the order -z, -y, -x, +z, +y, +x) whose own largest affinity exceeds `m` (the way off a
plateau), else the first of affinity `m`. Basins are the connected components of these pointers
together with every edge of affinity >= `high`. A basin's id is 1 + the smallest linear index
(z * H * W + y * W + x) of its voxels, so ids do not depend on how the volume was cut.

Every decision for a voxel reads affinities at most two voxels away, so a block read with a halo of
`HALO` voxels labels its core exactly; edges that leave the core come back as links (pairs of
global linear indices) that join basins across blocks.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from znnx.errors import InputError
from znnx.kernels import native

HALO = 2


@dataclass(frozen=True)
class Basins:
    """One block's basins: labels of its core and the watershed edges that leave the core."""

    labels: np.ndarray  # int64, the core's shape; 0 background, else 1 + smallest index within the core
    links: np.ndarray  # int64 (n, 2): global linear index of a core voxel, of the voxel outside it joins


@functools.cache
def library() -> ctypes.CDLL:
    """The segmentation kernels (watershed.c): basins, and single linkage and agglomeration for
    segment/merging.py."""
    from importlib.resources import files

    lib = native.load("watershed", files("znnx.segment").joinpath("watershed.c").read_text())
    p, i, f = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.basins.argtypes = [p, i, i, i, p, p, p, p, f, f, p, p]
    lib.basins.restype = i
    lib.single_linkage.argtypes = [i, p, i, *[p] * 10, i, *[p] * 6]
    lib.single_linkage.restype = i
    lib.agglomerate.argtypes = [i, i, *[p] * 7, ctypes.c_int, ctypes.c_double, p, p, p, p]
    lib.agglomerate.restype = i
    return lib


def check_thresholds(low: float, high: float) -> None:
    if not 0.0 <= low < high:
        raise InputError(f"segment: watershed thresholds must satisfy 0 <= low < high, got low={low}, high={high}; "
                         f"typical values are low=0.0001, high=0.9999")


def basins(aff: np.ndarray, core: Sequence[slice], origin: Sequence[int], volume: Sequence[int],
           low: float, high: float) -> Basins:
    """Basins of the voxels `core` (slices of `aff`'s spatial axes) of a block read at `origin` of a
    volume of spatial shape `volume`; `aff` must reach `HALO` voxels past the core wherever the
    volume goes on."""
    check_thresholds(low, high)
    aff = np.ascontiguousarray(aff, dtype=np.float32)
    c0 = np.array([s.start for s in core], np.int64)
    c1 = np.array([s.stop for s in core], np.int64)
    shape = tuple(int(n) for n in c1 - c0)
    labels = np.empty(shape, np.int64)
    links = np.empty((6 * labels.size, 2), np.int64)
    origin_ = np.array(origin, np.int64)
    volume_ = np.array(volume, np.int64)
    count = library().basins(aff.ctypes.data, *aff.shape[1:], c0.ctypes.data, c1.ctypes.data, origin_.ctypes.data,
                              volume_.ctypes.data, float(low), float(high), labels.ctypes.data, links.ctypes.data)
    return Basins(labels, links[:count].copy())
