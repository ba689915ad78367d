"""Blend-mode window weights: how much each overlapping window's output counts at each voxel.

Every weight is strictly positive, so a voxel covered by any window gets a defined blend
(sum of weight * output over windows, divided by the sum of weights).
- `gaussian`: MONAI's importance map, sigma = 0.125 of the window per axis, peak 1;
- `bump`: the smooth compactly supported bump exp(1 - 1 / (1 - r^2)) per axis, r in (-1, 1);
- `constant`: plain averaging.
Weights are floored at 1e-3 of the peak (as MONAI floors its importance map), so window edges
still count where no other window covers them and blends near window edges match MONAI's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from znnx.errors import InputError
from znnx.volume.block import Box

WEIGHTINGS = ("gaussian", "bump", "constant")
SIGMA_SCALE = 0.125
FLOOR = 1e-3


def _axis_weights(kind: str, size: int) -> np.ndarray:
    centre = (size - 1) / 2
    position = np.arange(size, dtype=np.float64) - centre
    if kind == "gaussian":
        return np.exp(-0.5 * (position / max(SIGMA_SCALE * size, 1e-6)) ** 2)
    if kind == "bump":
        r = position / (centre + 1)
        return np.exp(1 - 1 / (1 - r**2))
    return np.ones(size)


def window_weights(kind: str, shape: Sequence[int]) -> np.ndarray:
    """The (D, H, W) float32 weight of one window of `shape`, strictly positive, peak 1."""
    if kind not in WEIGHTINGS:
        raise InputError(f"volume: unknown blend weighting {kind!r}; use one of {', '.join(WEIGHTINGS)}")
    weights = np.ones((), np.float64)
    for size in shape:
        weights = np.multiply.outer(weights, _axis_weights(kind, size))
    return np.maximum(weights / weights.max(), FLOOR).astype(np.float32)


def blend(write: Box, boxes: Sequence[Box], outputs: Iterable[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The weighted average over `write` of window outputs (C, *window shape) placed at `boxes`.

    `outputs` is consumed one window at a time (it may compute them lazily). Where the windows tile
    `write` without overlapping (their parts inside it add up to its size), each voxel's average is
    its one window's value: the parts are copied, not weighted."""
    parts = [box.intersect(write) for box in boxes]
    tiled = sum(part.size for part in parts if part is not None) == write.size
    total: np.ndarray | None = None
    weight_sum: np.ndarray = np.zeros(write.shape, np.bool_ if tiled else np.float32)  # tiled: coverage
    for box, part, values in zip(boxes, parts, outputs):
        if part is None:
            continue
        inside, there = part.slices(box.start), part.slices(write.start)
        if total is None:
            total = np.zeros((values.shape[0], *write.shape), np.float32)
        if tiled:
            total[(slice(None), *there)] = values[(slice(None), *inside)]
            weight_sum[there] = True
        else:
            total[(slice(None), *there)] += values[(slice(None), *inside)] * weights[inside]
            weight_sum[there] += weights[inside]
    if total is None or not weight_sum.all():
        raise InputError(f"volume: blend windows leave voxels of {write} uncovered")
    return total if tiled else total / weight_sum
