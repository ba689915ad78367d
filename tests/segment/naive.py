"""Slow, obviously correct segmentation by the definitions (segment/basins.py, segment/merging.py),
voxel by voxel and merge by merge: the oracle the fast kernels and the chunked rounds are checked on."""

from __future__ import annotations

import itertools

import numpy as np

from znnx.segment.graph import BINS, LEVELS

STEPS = ((-1, 0, 0), (0, -1, 0), (0, 0, -1), (1, 0, 0), (0, 1, 0), (0, 0, 1))


def _edge(aff: np.ndarray, v: tuple[int, int, int], d: int) -> float | None:
    step = STEPS[d]
    u = tuple(a + b for a, b in zip(v, step))
    if not all(0 <= x < n for x, n in zip(u, aff.shape[1:])):
        return None
    axis = d % 3
    return float(aff[axis][v if d < 3 else u])


def _steepest(aff: np.ndarray, v: tuple[int, int, int]) -> float:
    values = [e for d in range(6) if (e := _edge(aff, v, d)) is not None]
    return max(values) if values else -1.0


def basins(aff: np.ndarray, low: float, high: float) -> np.ndarray:
    shape = aff.shape[1:]
    up = {v: v for v in itertools.product(*map(range, shape))}

    def find(v: tuple) -> tuple:
        while up[v] != v:
            v = up[v]
        return v

    def join(a: tuple, b: tuple) -> None:
        a, b = find(a), find(b)
        up[max(a, b)] = min(a, b)

    background = set()
    for v in up:
        m = _steepest(aff, v)
        if not m > low:
            background.add(v)
            continue
        ties = [d for d in range(6) if _edge(aff, v, d) == m]
        exits = [d for d in ties if _steepest(aff, tuple(a + b for a, b in zip(v, STEPS[d]))) > m]
        d = (exits or ties)[0]
        join(v, tuple(a + b for a, b in zip(v, STEPS[d])))
        for d in range(6):
            e = _edge(aff, v, d)
            if e is not None and e >= high:
                join(v, tuple(a + b for a, b in zip(v, STEPS[d])))
    labels = np.zeros(shape, np.int64)
    for v in up:
        if v not in background:
            labels[v] = np.ravel_multi_index(find(v), shape) + 1
    return labels


def _voxel_edges(labels: np.ndarray, aff: np.ndarray) -> dict[tuple[int, int], list[float]]:
    pairs: dict[tuple[int, int], list[float]] = {}
    for v in itertools.product(*map(range, labels.shape)):
        for axis in range(3):
            if v[axis] == 0:
                continue
            u = tuple(x - (i == axis) for i, x in enumerate(v))
            a, b = int(labels[v]), int(labels[u])
            if a and b and a != b:
                pairs.setdefault((min(a, b), max(a, b)), []).append(float(aff[axis][v]))
    return pairs


def single_linkage(labels: np.ndarray, aff: np.ndarray, low: float, size: int) -> np.ndarray:
    sizes = dict(zip(*np.unique(labels[labels > 0], return_counts=True)))
    peaks = {k: round(min(max(max(v), 0.0), 1.0) * LEVELS) for k, v in _voxel_edges(labels, aff).items()}
    up = {int(k): int(k) for k in sizes}

    def find(a: int) -> int:
        while up[a] != a:
            a = up[a]
        return a

    for (a, b), peak in sorted(peaks.items(), key=lambda item: (item[1], item[0]), reverse=True):
        if not peak > low * LEVELS:
            break
        ra, rb = find(a), find(b)
        if ra != rb and (sizes[ra] < size or sizes[rb] < size):
            up[max(ra, rb)] = min(ra, rb)
            sizes[min(ra, rb)] += sizes[max(ra, rb)]
    out = labels.copy()
    for k in up:
        out[labels == k] = find(k)
    return out


def _score(kind: str, values: list[float]) -> float:
    clipped = [min(max(v, 0.0), 1.0) for v in values]
    levels = [round(v * LEVELS) for v in clipped]
    if kind == "mean":
        return sum(levels) / len(levels) / LEVELS
    if kind == "max":
        return max(levels) / LEVELS
    bins = sorted(min(int(v * BINS), BINS - 1) for v in np.float32(clipped))
    return (bins[(len(bins) + 1) // 2 - 1] + 0.5) / BINS


def agglomerate(labels: np.ndarray, aff: np.ndarray, kind: str, threshold: float) -> np.ndarray:
    """Merge the best pair (score, then the smaller ids) while its score exceeds `threshold`,
    recomputing every score from the voxels after each merge."""
    labels = labels.copy()
    while True:
        scored = [(_score(kind, v), a, b) for (a, b), v in _voxel_edges(labels, aff).items()]
        if not scored:
            return labels
        best, a, b = max(scored)
        if not best > threshold:
            return labels
        labels[labels == b] = a
