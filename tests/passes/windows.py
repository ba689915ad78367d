"""The naive dense oracle: a pooling net run as a patch classifier, one window per output voxel."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import znnx
from znnx.ir.graph import Graph
from znnx.report import geometry


def field_of_view(graph: Graph) -> tuple[int, ...]:
    return geometry(graph).receptive_field


def windows(graph: Graph, inputs: Sequence[np.ndarray], positions: np.ndarray, batch: int = 32) -> np.ndarray:
    """(len(positions), C_out): output voxel 0 of `graph` (the net as it pools, fp32, direct
    convolutions) on the field-of-view window starting at each position (model-rank spatial index)
    of the (C, *spatial) `inputs`."""
    fov = field_of_view(graph)
    net = znnx.compile(graph, patch=fov, algorithm="direct")
    rank = len(fov)
    rows = []
    for start in range(0, len(positions), batch):
        chunk = positions[start:start + batch]
        patches = [np.stack([x[(slice(None), *(slice(p, p + f) for p, f in zip(pos, fov)))] for pos in chunk])
                   for x in inputs]
        out = net(*patches)
        out = out[0] if isinstance(out, tuple) else out
        rows.append(out.reshape(len(chunk), out.shape[1], -1)[:, :, 0])
    assert rank == graph.spatial_rank
    return np.concatenate(rows)
