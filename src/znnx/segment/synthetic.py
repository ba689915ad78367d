"""Synthetic ground truth for segmentation tests and benchmarks: cells of a jittered-grid Voronoi
diagram, their true affinities, and those affinities with noise like a net's prediction."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np


def cells(shape: Sequence[int], spacing: int, seed: int = 0) -> np.ndarray:
    """uint64 labels 1..n: each voxel belongs to the nearest of one random point per `spacing`^3
    cube of a grid."""
    rng = np.random.default_rng(seed)
    grid = [-(-n // spacing) + 2 for n in shape]
    points = (np.stack(np.meshgrid(*[np.arange(g) - 1 for g in grid], indexing="ij"), -1) + rng.random((*grid, 3))) \
        * spacing
    labels = np.zeros(tuple(shape), np.uint64)
    for z in range(shape[0]):
        yy, xx = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
        here = np.stack([np.full_like(yy, z), yy, xx], -1).astype(np.float64)
        cell = (here // spacing).astype(np.int64) + 1
        best = np.full(yy.shape, np.inf)
        for offset in itertools.product((-1, 0, 1), repeat=3):
            c = cell + np.array(offset)
            p = points[c[..., 0], c[..., 1], c[..., 2]]
            d = ((p - here) ** 2).sum(-1)
            better = d < best
            best[better] = d[better]
            labels[z][better] = np.ravel_multi_index(tuple(np.moveaxis(c[better], -1, 0)), grid) + 1
    _, dense = np.unique(labels, return_inverse=True)
    return (dense.reshape(labels.shape) + 1).astype(np.uint64)


def affinities(labels: np.ndarray) -> np.ndarray:
    """(3, D, H, W) float32: 1 between two voxels of the same non-zero label, else 0; aff[0] joins a
    voxel to the one before it in z (y, x: channels 1, 2), 0 on the first plane."""
    aff = np.zeros((3, *labels.shape), np.float32)
    for axis in range(3):
        here = [slice(None)] * 3
        before = [slice(None)] * 3
        here[axis], before[axis] = slice(1, None), slice(None, -1)
        same = (labels[tuple(here)] == labels[tuple(before)]) & (labels[tuple(here)] != 0)
        aff[axis][tuple(here)] = same
    return aff


def noisy(aff: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    """`aff` pulled towards 0.5 and blurred by uniform noise of amplitude `noise`, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    out = 0.15 + 0.7 * aff + rng.uniform(-noise, noise, aff.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
