"""Graph optimizations: pure `Graph -> (Graph, rewrites)` passes and the driver that runs them.

The pipeline repeats until no pass rewrites anything, because one fusion can enable another
(folding a BatchNorm exposes the conv -> add of a residual block; fusing that add exposes the
activation after it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from znnx.ir.graph import Graph
from znnx.ir.verify import verify
from znnx.passes.eliminate_padding import eliminate_padding
from znnx.passes.fold_batchnorm import fold_batchnorm
from znnx.passes.fold_constants import fold_constants
from znnx.passes.fuse_activation import fuse_activation
from znnx.passes.fuse_concat import fuse_concat
from znnx.passes.fuse_residual_add import fuse_residual_add
from znnx.passes.fuse_scale import fuse_scale
from znnx.passes.pointwise_before_upsample import pointwise_before_upsample
from znnx.passes.remove_dead_nodes import remove_dead_nodes
from znnx.passes.remove_identity import remove_identity
from znnx.passes.transposed_as_conv import transposed_as_conv

Pass = Callable[[Graph], tuple[Graph, int]]

PIPELINE: tuple[Pass, ...] = (
    remove_identity,
    fold_constants,
    transposed_as_conv,
    fold_batchnorm,
    eliminate_padding,
    fuse_residual_add,
    fuse_scale,
    fuse_activation,
    pointwise_before_upsample,
    remove_dead_nodes,
    fuse_concat,
)


@dataclass(frozen=True)
class Optimized:
    """The optimized graph and how many rewrites each pass made (summed over rounds)."""

    graph: Graph
    rewrites: tuple[tuple[str, int], ...]

    def report(self) -> str:
        return ", ".join(f"{name}: {count}" for name, count in self.rewrites)


def optimize(graph: Graph, pipeline: tuple[Pass, ...] = PIPELINE, max_rounds: int = 8) -> Optimized:
    """Run `pipeline` over `graph` until a round rewrites nothing; every result is verified."""
    totals = {p.__name__: 0 for p in pipeline}
    for _ in range(max_rounds):
        changed = 0
        for p in pipeline:
            graph, count = p(graph)
            verify(graph)
            totals[p.__name__] += count
            changed += count
        if not changed:
            break
    return Optimized(graph, tuple(totals.items()))
