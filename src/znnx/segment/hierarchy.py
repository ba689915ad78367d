"""The merge hierarchy of a segmentation: which regions merged, at what score, so that a user can
cut it at another threshold without segmenting again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from znnx.errors import InputError
from znnx.segment.files import replace
from znnx.segment.graph import remap

WATERSHED, AGGLOMERATION = 0, 1


def roots(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the ids joined by `pairs` (n, 2): sorted ids and the smallest id of each one's component."""
    if len(pairs) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    ids, inverse = np.unique(pairs, return_inverse=True)
    up = np.arange(len(ids))
    a, b = inverse.reshape(-1, 2).T
    while True:
        low = np.minimum(up[a], up[b])
        before = up.copy()
        np.minimum.at(up, a, low)
        np.minimum.at(up, b, low)
        up = up[up]
        while not np.array_equal(up, up[up]):
            up = up[up]
        if np.array_equal(up, before):
            return ids, ids[up]


@dataclass(frozen=True)
class Hierarchy:
    """Merges in the order of their stages: region a, region b (each named by its smallest basin
    id), the score they merged at (watershed merges: their maximum affinity) and the stage
    (`WATERSHED` or `AGGLOMERATION`); the segmentation's threshold is `threshold`."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    stage: np.ndarray
    threshold: float

    def save(self, path: str | Path) -> None:
        replace(Path(path), lambda handle: np.savez(handle, a=self.a, b=self.b, score=self.score, stage=self.stage,
                                                    threshold=self.threshold))

    @staticmethod
    def load(path: str | Path) -> Hierarchy:
        with np.load(path) as data:
            return Hierarchy(data["a"], data["b"], data["score"], data["stage"], float(data["threshold"]))

    def cut(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Basin ids and their region at `threshold` (>= the segmentation's own: agglomeration merges
        are only recorded down to it)."""
        if threshold < self.threshold:
            raise InputError(f"segment: the hierarchy holds merges down to {self.threshold}, not {threshold}; cut "
                             f"at a threshold >= {self.threshold} or segment again with a lower --threshold")
        keep = (self.stage == WATERSHED) | (self.score > threshold)
        return roots(np.stack([self.a[keep], self.b[keep]], axis=1))

    def relabel(self, fragments: np.ndarray, threshold: float) -> np.ndarray:
        """A segmentation at `threshold` from the basins (`fragments`) the hierarchy was built on."""
        return remap(fragments, *self.cut(threshold))
