"""Greedy merging of regions, exact on part of a volume: the watershed's size-dependent single
linkage and the agglomeration by mean, median or max affinity.

Both run on the regions and edges of a box of the volume. A region whose bounding box reaches a face
of the box that is not a face of the volume may have voxels, edges and merges outside it: it is
*frozen*. An edge that reaches the front of the merge order with a frozen end is not decided: both
its ends freeze and the edge waits for a larger box (Lu, Zlateski and Seung's delayed decisions).
Every decision that is made is the one processing the whole volume at once would make, so boxes
that double each round end with the whole-volume result:

- single linkage visits the edges by decreasing maximum affinity; a region's size when an edge is
  visited depends only on the edges visited before it, all of which a non-frozen region has seen;
- agglomeration merges the best edge while its score exceeds the threshold; the scores are
  reducible (the score of a merged region to a third lies between the two old ones), so merging an
  edge that is the best of both its ends, in any order, gives the greedy result.

Ties are broken by the regions' ids (a region's id is its smallest basin id): the order is by
(score, smaller id, larger id), largest first, and a merge never raises an edge in it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np

from znnx.segment.basins import library
from znnx.segment.graph import LEVELS, Edges, Regions, combine_edges, combine_regions, remap, score
from znnx.segment.hierarchy import roots


@dataclass(frozen=True)
class Box:
    """Voxels [start, stop) of a volume of shape `volume`."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    volume: tuple[int, int, int]


@dataclass(frozen=True)
class Outcome:
    """What merging in a box decided: merges (a, b, score; the merged region keeps the smaller id),
    and the frozen regions and their edges, left for a larger box (with `aliases`, pairs of an id
    in those edges and the region it is now part of, and, for single linkage, `events`: voxels that
    joined frozen regions and from which point of the order). Single linkage's merges are (surviving
    name, merged name) and `finals` pairs the name of each region finished here with its label (its
    smallest basin id) where the two differ."""

    merges: np.ndarray
    scores: np.ndarray
    regions: Regions
    edges: Edges
    aliases: np.ndarray
    events: np.ndarray
    finals: np.ndarray


def frozen(regions: Regions, box: Box) -> np.ndarray:
    """Which regions may reach outside `box`: an empty box, or one that reaches an inner face."""
    start, stop, volume = (np.asarray(v, np.int64) for v in (box.start, box.stop, box.volume))
    empty = (regions.lo > regions.hi).any(axis=1)
    low_face = ((regions.lo <= start) & (start > 0)).any(axis=1)
    high_face = ((regions.hi >= stop - 1) & (stop < volume)).any(axis=1)
    outside = ((regions.lo < start) | (regions.hi >= stop)).any(axis=1)
    return np.asarray(empty | low_face | high_face | outside)


def _dense(regions: Regions, box: Box, *more: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every id in the rows and `more`, sorted (a region's dense index is its place here), the rows'
    places, and which ids are frozen at the start: regions that may reach outside the box and ids
    with no row here."""
    ids = np.unique(np.concatenate([regions.ids, *more]))
    rows = np.searchsorted(ids, regions.ids)
    cold = np.ones(len(ids), np.uint8)
    cold[rows[~frozen(regions, box)]] = 0
    return ids, rows, cold


def _frozen_rows(regions: Regions, names: np.ndarray, frozen_names: np.ndarray) -> Regions:
    """The rows of the regions named `frozen_names` once each row's region is renamed `names`."""
    named = combine_regions([Regions(names, regions.size, regions.lo, regions.hi, names)])
    return named.take(np.flatnonzero(np.isin(named.ids, frozen_names)))


NO_ALIASES = np.zeros((0, 2), np.int64)
NO_EVENTS = np.zeros((0, 5), np.int64)
NO_FINALS = NO_ALIASES


def single_linkage(regions: Regions, edges: Edges, aliases: np.ndarray, events: np.ndarray, box: Box, low: float,
                   size: int) -> Outcome:
    """Size-dependent single linkage: visit the edges between basins by decreasing maximum affinity
    (above `low`; ties by the basins' ids) and merge the two regions an edge joins when either has
    fewer than `size` voxels. `aliases` maps basins of `edges` to the regions they are part of;
    `events` (peak, basin, basin, region, voxels) are voxels that joined frozen regions elsewhere,
    at that point of the order.

    A frozen region's size is a lower bound, so more is certain than "no frozen end": a region of
    known size below `size` merges with whatever it meets, and two regions of at least `size`
    never merge; only the rest waits."""
    ids, rows, cold = _dense(regions, box, edges.a, edges.b, aliases.reshape(-1), events[:, 3])
    up = np.arange(len(ids), dtype=np.int64)
    up[np.searchsorted(ids, aliases[:, 0])] = np.searchsorted(ids, aliases[:, 1])
    sizes = np.zeros(len(ids), np.int64)
    sizes[rows] = regions.size
    usable = edges.peak > low * LEVELS
    kept = np.flatnonzero(usable)
    peak = np.concatenate([edges.peak[kept], events[:, 0]])
    first = np.concatenate([edges.a[kept], events[:, 1]])
    second = np.concatenate([edges.b[kept], events[:, 2]])
    order = np.lexsort((second, first, peak))[::-1]
    items = np.where(order < len(kept), kept[np.minimum(order, len(kept) - 1)] if len(kept) else 0,
                     order - len(kept) + len(edges))
    items = np.ascontiguousarray(items, np.int64)
    a, b = np.searchsorted(ids, edges.a), np.searchsorted(ids, edges.b)
    ev_region = np.ascontiguousarray(np.searchsorted(ids, events[:, 3]), np.int64)
    ev_size = np.ascontiguousarray(events[:, 4], np.int64)
    base = sizes.copy()
    least = ids.copy()
    least[rows] = regions.least
    n = len(items)
    merges, merged = np.empty((n, 2), np.int64), np.empty(n, np.int64)
    waiting, found = np.empty(n, np.int64), np.empty((n, 3), np.int64)
    counts = np.zeros(2, np.int64)
    count = library().single_linkage(
        n, items.ctypes.data, len(edges), a.ctypes.data, b.ctypes.data, ev_region.ctypes.data, ev_size.ctypes.data,
        ids.ctypes.data, up.ctypes.data, sizes.ctypes.data, base.ctypes.data, least.ctypes.data, cold.ctypes.data,
        size,
        merges.ctypes.data, merged.ctypes.data, waiting.ctypes.data, counts[0:].ctypes.data, found.ctypes.data,
        counts[1:].ctypes.data)
    root = _flatten(up)
    hot = ~cold.astype(bool) | (root != np.arange(len(ids)))
    kept_edges = waiting[:counts[0]]
    left = Edges(edges.a[kept_edges], edges.b[kept_edges], edges.count[kept_edges], edges.total[kept_edges],
                 edges.peak[kept_edges], None)
    ends = np.searchsorted(ids, np.union1d(left.a, left.b))
    moved = ends[root[ends] != ends]
    named = combine_regions([Regions(ids[root[rows]], regions.size, regions.lo, regions.hi, regions.least)])
    at = np.searchsorted(ids, named.ids)
    keep_rows = ~hot[at]
    cold_rows = Regions(named.ids[keep_rows], base[at[keep_rows]], named.lo[keep_rows], named.hi[keep_rows],
                        least[at[keep_rows]])
    warm = np.flatnonzero(~cold.astype(bool) & (root == np.arange(len(ids))) & (least != ids))
    found = found[:counts[1]]
    key = _item_keys(edges, events, found[:, 0])
    out_events = np.concatenate([key, ids[root[found[:, 1]]][:, None], found[:, 2:3]], axis=1)
    peaks = np.where(merged[:count] < len(edges), edges.peak[np.minimum(merged[:count], len(edges) - 1)], 0)
    return Outcome(ids[merges[:count]], peaks / LEVELS, cold_rows, left, np.stack([ids[moved], ids[root[moved]]], 1),
                   out_events, np.stack([ids[warm], least[warm]], 1))


def _item_keys(edges: Edges, events: np.ndarray, items: np.ndarray) -> np.ndarray:
    """(peak, basin, basin) of items: edges first, then events."""
    is_edge = items < len(edges)
    e = np.minimum(items, max(len(edges) - 1, 0))
    v = np.clip(items - len(edges), 0, max(len(events) - 1, 0))
    columns = [(edges.peak, 0), (edges.a, 1), (edges.b, 2)]
    return np.stack([np.where(is_edge, col[e] if len(col) else 0, events[v, j] if len(events) else 0)
                     for col, j in columns], axis=1).reshape(-1, 3)


def _flatten(up: np.ndarray) -> np.ndarray:
    """Every element's root in a union-find array."""
    while True:
        following = up[up]
        if np.array_equal(following, up):
            return up
        up = following


def agglomerate(regions: Regions, edges: Edges, box: Box, kind: str, threshold: float) -> Outcome:
    """Merge the pair of regions with the best score (`kind` of their interface affinities) while
    it exceeds `threshold`: in C for the mean and the max, here for the median (its histograms)."""
    if kind == "median":
        return _agglomerate_median(regions, edges, box, threshold)
    ids, rows, cold = _dense(regions, box, edges.a, edges.b)
    a = np.ascontiguousarray(np.searchsorted(ids, edges.a), np.int64)
    b = np.ascontiguousarray(np.searchsorted(ids, edges.b), np.int64)
    count, total, peak = (np.ascontiguousarray(x, np.int64).copy() for x in (edges.count, edges.total, edges.peak))
    up = np.empty(len(ids), np.int64)
    alive = np.empty(len(edges), np.uint8)
    merges = np.empty((len(ids), 2), np.int64)
    scores = np.empty(len(ids), np.float64)
    made = library().agglomerate(len(ids), len(edges), a.ctypes.data, b.ctypes.data, count.ctypes.data,
                                 total.ctypes.data, peak.ctypes.data, ids.ctypes.data, cold.ctypes.data,
                                 0 if kind == "mean" else 1, float(threshold), up.ctypes.data, alive.ctypes.data,
                                 merges.ctypes.data, scores.ctypes.data)
    root = _flatten(up)
    left = alive.astype(bool) & (cold[a] | cold[b]).astype(bool)
    pending = Edges(ids[a[left]], ids[b[left]], count[left], total[left], peak[left], None)
    return Outcome(merges[:made], scores[:made], _frozen_rows(regions, ids[root[rows]], ids[cold.astype(bool)]),
                   combine_edges([pending], False), NO_ALIASES, NO_EVENTS, NO_FINALS)


def _agglomerate_median(regions: Regions, edges: Edges, box: Box, threshold: float) -> Outcome:
    ids, _, flags = _dense(regions, box, edges.a, edges.b)
    cold = set(ids[flags.astype(bool)].tolist())
    near: dict[int, dict[int, list[Any]]] = {}
    heap: list[tuple[float, int, int, int]] = []
    for i, (a, b) in enumerate(zip(edges.a.tolist(), edges.b.tolist())):
        stats: list[Any] = [int(edges.count[i]), int(edges.total[i]), int(edges.peak[i]),
                            edges.hist[i].copy() if edges.hist is not None else None, 0]
        near.setdefault(a, {})[b] = stats
        near.setdefault(b, {})[a] = stats
        heap.append((-score("median", *stats[:4]), -a, -b, 0))
    heapq.heapify(heap)
    merges: list[tuple[int, int, float]] = []
    while heap:
        value, a, b, stamp = heap[0]
        if -value <= threshold:
            break
        heapq.heappop(heap)
        a, b = -a, -b
        current = near.get(a, {}).get(b)
        if current is None or current[4] != stamp:
            continue
        if a in cold or b in cold:
            cold.update((a, b))
            continue
        merges.append((a, b, -value))
        _merge(near, heap, min(a, b), max(a, b))
    left = [(a, b, s) for a in sorted(cold) for b, s in near.get(a, {}).items() if b not in cold or a < b]
    pending = Edges(np.array([min(a, b) for a, b, _ in left], np.int64),
                    np.array([max(a, b) for a, b, _ in left], np.int64),
                    np.array([s[0] for _, _, s in left], np.int64), np.array([s[1] for _, _, s in left], np.int64),
                    np.array([s[2] for _, _, s in left], np.int64),
                    np.array([s[3] for _, _, s in left], np.int64).reshape(-1, edges.hist.shape[1])
                    if edges.hist is not None else None)
    pairs = np.array([m[:2] for m in merges], np.int64).reshape(-1, 2)
    names = remap(regions.ids, *roots(pairs))
    return Outcome(pairs, np.array([m[2] for m in merges], np.float64),
                   _frozen_rows(regions, names, np.array(sorted(cold), np.int64)),
                   combine_edges([pending], edges.hist is not None), NO_ALIASES, NO_EVENTS, NO_FINALS)


def _merge(near: dict[int, dict[int, list[Any]]], heap: list, keep: int, gone: int) -> None:
    """Merge region `gone` into `keep`: its edges move to `keep` or add to `keep`'s edge to the same region."""
    near[keep].pop(gone)
    moved = near.pop(gone)
    moved.pop(keep)
    mine = near[keep]
    for c, stats in moved.items():
        theirs = near[c]
        theirs.pop(gone)
        old = mine.get(c)
        if old is None:
            stats[4] += 1
            mine[c] = theirs[keep] = stats
        else:
            old[0] += stats[0]
            old[1] += stats[1]
            old[2] = max(old[2], stats[2])
            if old[3] is not None:
                old[3] = old[3] + stats[3]
            old[4] += 1
            stats = old
        heapq.heappush(heap, (-score("median", *stats[:4]), -min(keep, c), -max(keep, c), stats[4]))
