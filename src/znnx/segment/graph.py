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
    """Rows of regions: id, voxel count, bounding box (inclusive corners; lo > hi when empty) and
    the smallest basin id among the region's voxels seen so far (`least`; a region's final label)."""

    ids: np.ndarray
    size: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    least: np.ndarray

    @staticmethod
    def empty() -> Regions:
        z = np.zeros(0, np.int64)
        return Regions(z, z, np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64), z)

    def take(self, rows: np.ndarray) -> Regions:
        return Regions(self.ids[rows], self.size[rows], self.lo[rows], self.hi[rows], self.least[rows])


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


def _pair_groups(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct pairs (lo, hi), the order that sorts the input pairs and where each group starts in
    it; pairs are sorted as one int64 key (ids made dense first where they are too large for it)."""
    top = int(hi.max()) + 1 if len(hi) else 1
    if top < 3_000_000_000:
        key = lo * top + hi
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
        return sorted_key[starts] // top, sorted_key[starts] % top, order, starts
    ids, inverse = np.unique(np.concatenate([lo, hi]), return_inverse=True)
    dense_lo, dense_hi, order, starts = _pair_groups(inverse[:len(lo)], inverse[len(lo):])
    return ids[dense_lo], ids[dense_hi], order, starts


def _groups(group: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(group, kind="stable")
    return order, np.searchsorted(group[order], np.arange(n))


def combine_regions(parts: Sequence[Regions]) -> Regions:
    """One row per id: sizes added, boxes joined, the smallest `least`."""
    ids = np.concatenate([p.ids for p in parts])
    unique, inverse = np.unique(ids, return_inverse=True)
    if len(unique) == 0:
        return Regions.empty()
    order, starts = _groups(inverse.reshape(-1), len(unique))
    return Regions(unique, np.add.reduceat(np.concatenate([p.size for p in parts])[order], starts),
                   np.minimum.reduceat(np.concatenate([p.lo for p in parts])[order], starts),
                   np.maximum.reduceat(np.concatenate([p.hi for p in parts])[order], starts),
                   np.minimum.reduceat(np.concatenate([p.least for p in parts])[order], starts))


def combine_edges(parts: Sequence[Edges], histogram: bool) -> Edges:
    """One row per region pair: counts, sums and histograms added, maxima taken; self-edges dropped."""
    def joined(field: str) -> np.ndarray:
        return np.concatenate([getattr(p, field) for p in parts] or [np.zeros(0, np.int64)])[keep]

    a = np.concatenate([p.a for p in parts] or [np.zeros(0, np.int64)])
    b = np.concatenate([p.b for p in parts] or [np.zeros(0, np.int64)])
    keep = a != b
    if not keep.any():
        return Edges.empty(histogram)
    lo, hi, order, starts = _pair_groups(np.minimum(a, b)[keep], np.maximum(a, b)[keep])
    hist = None
    if histogram:
        rows = np.concatenate([p.hist for p in parts if p.hist is not None])[keep]
        hist = np.add.reduceat(rows[order], starts)
    return Edges(lo, hi, np.add.reduceat(joined("count")[order], starts),
                 np.add.reduceat(joined("total")[order], starts), np.maximum.reduceat(joined("peak")[order], starts),
                 hist)


def relabel_edges(edges: Edges, ids: np.ndarray, roots: np.ndarray) -> Edges:
    """`edges` with each region id found in `ids` replaced by its root, then combined."""
    return combine_edges([Edges(remap(edges.a, ids, roots), remap(edges.b, ids, roots), edges.count, edges.total,
                                edges.peak, edges.hist)], edges.hist is not None)


def relabel_regions(regions: Regions, ids: np.ndarray, roots: np.ndarray) -> Regions:
    """`regions` with each id found in `ids` replaced by its root (which is also its `least`), combined."""
    named = remap(regions.ids, ids, roots)
    return combine_regions([Regions(named, regions.size, regions.lo, regions.hi, named)])


def remap(values: np.ndarray, ids: np.ndarray, roots: np.ndarray) -> np.ndarray:
    """`values` with every element found in the sorted `ids` replaced by the matching `roots`."""
    if len(ids) == 0:
        return values.copy()
    where = np.clip(np.searchsorted(ids, values), 0, len(ids) - 1)
    return np.where(ids[where] == values, roots[where], values)


def block_graph(labels: np.ndarray, aff: np.ndarray, origin: Sequence[int], lower: Sequence[bool],
                histogram: bool) -> tuple[Regions, Edges]:
    """Regions and edges of one block. `labels` (region ids) covers the block plus, on each axis
    where `lower` is true, one voxel before it; `aff` (3, ...) covers the block. A block owns the
    voxel edges from each of its voxels to the voxel before it on each axis."""
    start = tuple(int(flag) for flag in lower)
    core = labels[start[0]:, start[1]:, start[2]:]
    ends: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for axis in range(3):
        here_index = [slice(s, None) for s in start]
        there_index = [slice(s, None) for s in start]
        values = aff[axis]
        if start[axis] == 0:
            here_index[axis] = slice(1, None)
            there_index[axis] = slice(0, labels.shape[axis] - 1)
            values = values[tuple(slice(1, None) if i == axis else slice(None) for i in range(3))]
        else:
            there_index[axis] = slice(0, labels.shape[axis] - 1)
        here, there = labels[tuple(here_index)].reshape(-1), labels[tuple(there_index)].reshape(-1)
        keep = (here != there) & (here != 0) & (there != 0)
        ends.append((here[keep], there[keep], values.reshape(-1)[keep]))
    a, b, values = (np.concatenate(parts) for parts in zip(*ends))
    return _block_regions(core, origin), _edges(a, b, values, histogram)


def _edges(a: np.ndarray, b: np.ndarray, values: np.ndarray, histogram: bool) -> Edges:
    """The edges between regions from their voxel edges (ends a, b with affinity `values`)."""
    if len(a) == 0:
        return Edges.empty(histogram)
    lo, hi, order, starts = _pair_groups(np.minimum(a, b), np.maximum(a, b))
    clipped = np.clip(values, 0.0, 1.0)[order]
    level = np.rint(clipped * LEVELS).astype(np.int64)
    count = np.diff(np.r_[starts, len(a)])
    hist = None
    if histogram:
        bins = np.minimum((clipped * BINS).astype(np.int64), BINS - 1)
        group = np.repeat(np.arange(len(lo)), count)
        hist = np.bincount(group * BINS + bins, minlength=len(lo) * BINS).reshape(len(lo), BINS)
    return Edges(lo, hi, count.astype(np.int64), np.add.reduceat(level, starts), np.maximum.reduceat(level, starts),
                 hist)


def _block_regions(core: np.ndarray, origin: Sequence[int]) -> Regions:
    flat = core.reshape(-1)
    nonzero = np.flatnonzero(flat)
    if len(nonzero) == 0:
        return Regions.empty()
    order = np.argsort(flat[nonzero], kind="stable")
    labels = flat[nonzero][order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    coords = np.stack(np.unravel_index(nonzero[order], core.shape), axis=1) + np.asarray(origin, np.int64)
    size = np.diff(np.r_[starts, len(labels)])
    return Regions(labels[starts], size.astype(np.int64), np.minimum.reduceat(coords, starts),
                   np.maximum.reduceat(coords, starts), labels[starts])


def score(kind: str, count: int, total: int, peak: int, hist: np.ndarray | None) -> float:
    """The affinity score of an edge: mean, median (histogram bin centre) or max of its affinities."""
    if kind == "mean":
        return total / count / LEVELS
    if kind == "max":
        return peak / LEVELS
    assert hist is not None
    median_bin = int(np.searchsorted(np.cumsum(hist), (count + 1) // 2))
    return (median_bin + 0.5) / BINS
