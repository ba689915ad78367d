"""A labelled EM-like dataset for training demos and tests: the cells of segment/synthetic.py
(a jittered-grid Voronoi diagram) drawn as electron microscopy shows them: bright cytoplasm with
texture, dark membranes of varying thickness between cells, blur, shot-like noise, uint8."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from znnx.segment.synthetic import cells
from znnx.training.data import boundary


def _blur(volume: np.ndarray, passes: int) -> np.ndarray:
    """A small separable box blur repeated `passes` times (about a Gaussian)."""
    out = volume
    for _ in range(passes):
        for axis in range(out.ndim):
            out = (np.roll(out, 1, axis) + out + np.roll(out, -1, axis)) / 3.0
    return out


def em_volume(shape: Sequence[int], spacing: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (D, H, W), labels uint64 (D, H, W)): cells about `spacing` voxels across."""
    rng = np.random.default_rng(seed)
    labels = cells(shape, spacing, seed)
    membrane = boundary(labels.astype(np.int64))[0]
    brightness = rng.uniform(0.55, 0.85, int(labels.max()) + 1)[labels]
    texture = _blur(rng.normal(0, 1, tuple(shape)), 2) * 0.15
    image = brightness + texture - 0.5 * _blur(membrane, 1) * 1.8
    image = _blur(image, 1) + rng.normal(0, 0.08, tuple(shape))
    return np.clip(image * 255, 0, 255).astype(np.uint8), labels
