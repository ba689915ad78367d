"""Validation scores: connected components of thresholded affinities, boundary F1."""

from __future__ import annotations

import numpy as np

from znnx.segment.synthetic import affinities, cells
from znnx.training.data import Volumes, Window, boundary
from znnx.training.validate import components, score


def _naive_components(aff: np.ndarray) -> np.ndarray:
    """Union-find over every edge, one at a time."""
    shape = aff.shape[1:]
    parent = list(range(int(np.prod(shape))))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for axis in range(3):
        for index in zip(*np.nonzero(aff[axis] > 0.5)):
            before = list(index)
            before[axis] -= 1
            if before[axis] >= 0:
                a, b = root(int(np.ravel_multi_index(index, shape))), root(int(np.ravel_multi_index(before, shape)))
                parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(len(parent))]).reshape(shape)


def test_components_match_union_find() -> None:
    labels = cells((12, 14, 13), 5, seed=2)
    aff = np.clip(affinities(labels) + np.random.default_rng(0).uniform(-0.6, 0.6, (3, *labels.shape)), 0, 1)
    found, naive = components(aff), _naive_components(aff)
    pairs = np.unique(np.stack([found.reshape(-1), naive.reshape(-1)]), axis=1)
    assert pairs.shape[1] == len(np.unique(found)) == len(np.unique(naive))
    truth = components(affinities(labels))
    assert len(np.unique(np.stack([truth.reshape(-1), labels.reshape(-1)]), axis=1)[0]) == len(np.unique(truth))


def test_scores_of_a_perfect_prediction() -> None:
    labels = cells((10, 12, 12), 5, seed=3).astype(np.int64)
    volumes = Volumes(np.zeros((1, *labels.shape), np.float32), labels)
    window = Window((10, 12, 12), (10, 12, 12), (0, 0, 0))
    assert score("boundary", boundary(labels), volumes, window).value == 1.0
    assert score("affinity", affinities(labels), volumes, window).value < 1e-4  # a discrete cell may fall apart
    wrong = score("boundary", 1 - boundary(labels), volumes, window)
    assert wrong.value == 0.0 and dict(wrong.values)["pixel_error"] == 1.0
