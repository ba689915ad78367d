"""The region graph: regions (size, bounding box) and the edges between them (statistics of the
affinities on their interface), as arrays that blocks compute in part and that add up exactly.

Affinities enter as integers: `LEVELS` steps for sums and maxima, `BINS` bins for the median's
histogram, so the statistics of an edge are the same whichever blocks computed which part of it,
and a score is the same float64 however it was reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVELS = 65535
BINS = 256
SCORES = ("mean", "median", "max")


@dataclass(frozen=True)
class Regions:
    """Rows of regions: id, voxel count and bounding box (inclusive corners; lo > hi when empty)."""

    ids: np.ndarray
    size: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    @staticmethod
    def empty() -> Regions:
        return Regions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64),
                       np.zeros((0, 3), np.int64))


@dataclass(frozen=True)
class Edges:
    """Rows of edges between regions a < b: voxel edges on the interface (count), the sum and the
    maximum of their affinities in `LEVELS` steps, and their histogram (`BINS` bins) if kept."""

    a: np.ndarray
    b: np.ndarray
    count: np.ndarray
    total: np.ndarray
    peak: np.ndarray
    hist: np.ndarray | None

    @staticmethod
    def empty(histogram: bool) -> Edges:
        z = np.zeros(0, np.int64)
        return Edges(z, z, z, z, z, np.zeros((0, BINS), np.int64) if histogram else None)

    def __len__(self) -> int:
        return len(self.a)


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows of `keys` (n, k) and the index of each row's group."""
    if len(keys) == 0:
        return keys, np.zeros(0, np.int64)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)


def combine_regions(parts: Sequence[Regions]) -> Regions:
    """One row per id: sizes added, boxes joined."""
    ids = np.concatenate([p.ids for p in parts])
    unique, inverse = np.unique(ids, return_inverse=True)
    size = np.bincount(inverse, weights=np.concatenate([p.size for p in parts]), minlength=len(unique))
    lo = np.full((len(unique), 3), np.iinfo(np.int64).max, np.int64)
    hi = np.full((len(unique), 3), -1, np.int64)
    np.minimum.at(lo, inverse, np.concatenate([p.lo for p in parts]))
    np.maximum.at(hi, inverse, np.concatenate([p.hi for p in parts]))
    return Regions(unique, size.astype(np.int64), lo, hi)


def combine_edges(parts: Sequence[Edges], histogram: bool) -> Edges:
    """One row per region pair: counts, sums and histograms added, maxima taken; self-edges dropped."""
    a = np.concatenate([p.a for p in parts] or [np.zeros(0, np.int64)])
    b = np.concatenate([p.b for p in parts] or [np.zeros(0, np.int64)])
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    pairs, inverse = _group(np.stack([lo[keep], hi[keep]], axis=1))
    n = len(pairs)

    def added(values: np.ndarray) -> np.ndarray:
        out = np.zeros(n, np.int64)
        np.add.at(out, inverse, values[keep])
        return out

    count = added(np.concatenate([p.count for p in parts] or [np.zeros(0, np.int64)]))
    total = added(np.concatenate([p.total for p in parts] or [np.zeros(0, np.int64)]))
    peak = np.zeros(n, np.int64)
    np.maximum.at(peak, inverse, np.concatenate([p.peak for p in parts] or [np.zeros(0, np.int64)])[keep])
    hist = None
    if histogram:
        hist = np.zeros((n, BINS), np.int64)
        np.add.at(hist, inverse, np.concatenate([p.hist for p in parts if p.hist is not None]
                                                or [np.zeros((0, BINS), np.int64)])[keep])
    if n == 0:
        return Edges.empty(histogram)
    return Edges(pairs[:, 0].copy(), pairs[:, 1].copy(), count, total, peak, hist)


def relabel_edges(edges: Edges, ids: np.ndarray, roots: np.ndarray, histogram: bool) -> Edges:
    """`edges` with each region id found in `ids` replaced by its root, then combined."""
    return combine_edges([Edges(remap(edges.a, ids, roots), remap(edges.b, ids, roots), edges.count, edges.total,
                                edges.peak, edges.hist)], histogram)


def relabel_regions(regions: Regions, ids: np.ndarray, roots: np.ndarray) -> Regions:
    return combine_regions([Regions(remap(regions.ids, ids, roots), regions.size, regions.lo, regions.hi)])


def remap(values: np.ndarray, ids: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """`values` with every element found in the sorted `ids` replaced by the matching `roots`."""
    if len(ids) == 0:
        return values.copy()
    where = np.clip(np.searchsorted(ids, values), 0, len(ids) - 1)
    return np.where(ids[where] == values, roots[where], values)


def block_graph(labels: np.ndarray, aff: np.ndarray, origin: Sequence[int], lower: Sequence[bool],
                histogram: bool) -> tuple[Regions, Edges]:
    """Regions and edges of one block. `labels` (basin ids) covers the block plus, on each axis
    where `lower` is true, one voxel before it; `aff` (3, ...) covers the block. A block owns the
    voxel edges from each of its voxels to the voxel before it on each axis."""
    start = tuple(int(flag) for flag in lower)
    core = labels[start[0]:, start[1]:, start[2]:]
    regions = _block_regions(core, origin)
    parts = []
    for axis in range(3):
        if core.shape[axis] == 0:
            continue
        index = [slice(s, None) for s in start]
        before = [slice(s, None) for s in start]
        before[axis] = slice(start[axis] - 1, labels.shape[axis] - 1)
        if start[axis] == 0:
            index[axis] = slice(1, None)
            before[axis] = slice(0, labels.shape[axis] - 1)
            values = aff[axis][tuple(slice(1, None) if i == axis else slice(None) for i in range(3))]
        else:
            values = aff[axis]
        here, there = labels[tuple(index)].reshape(-1), labels[tuple(before)].reshape(-1)
        values = values.reshape(-1)
        keep = (here != there) & (here != 0) & (there != 0)
        parts.append(_edges(here[keep], there[keep], values[keep], histogram))
    return regions, combine_edges(parts, histogram)


def _edges(a: np.ndarray, b: np.ndarray, values: np.ndarray, histogram: bool) -> Edges:
    level = np.rint(np.clip(values, 0.0, 1.0) * LEVELS).astype(np.int64)
    ones = np.ones(len(a), np.int64)
    hist = None
    if histogram:
        hist = np.zeros((len(a), BINS), np.int64)
        hist[np.arange(len(a)), np.minimum((np.clip(values, 0.0, 1.0) * BINS).astype(np.int64), BINS - 1)] = 1
    return Edges(np.minimum(a, b), np.maximum(a, b), ones, level, level, hist)


def _block_regions(core: np.ndarray, origin: Sequence[int]) -> Regions:
    flat = core.reshape(-1)
    nonzero = np.flatnonzero(flat)
    if len(nonzero) == 0:
        return Regions.empty()
    ids, inverse, size = np.unique(flat[nonzero], return_inverse=True, return_counts=True)
    coords = np.stack(np.unravel_index(nonzero, core.shape), axis=1) + np.asarray(origin, np.int64)
    lo = np.full((len(ids), 3), np.iinfo(np.int64).max, np.int64)
    hi = np.full((len(ids), 3), -1, np.int64)
    np.minimum.at(lo, inverse, coords)
    np.maximum.at(hi, inverse, coords)
    return Regions(ids, size.astype(np.int64), lo, hi)


def score(kind: str, count: int, total: int, peak: int, hist: np.ndarray | None) -> float:
    """The affinity score of an edge: mean, median (histogram bin centre) or max of its affinities."""
    if kind == "mean":
        return total / count / LEVELS
    if kind == "max":
        return peak / LEVELS
    assert hist is not None
    median_bin = int(np.searchsorted(np.cumsum(hist), (count + 1) // 2))
    return (median_bin + 0.5) / BINS
