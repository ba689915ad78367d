"""Fuse an activation into the conv (or conv_transpose) that produces its input.

Before: x -> conv -> c -> elu(alpha) -> y
After:  x -> conv[epilogue += elu, alpha] -> y
Preconditions: the conv's output has no other reader and is not a graph output; the conv's
epilogue has no activation yet (a residual add already in it stays first). For training,
`fuse_output_derivative_activation` fuses only the activations whose derivative follows from their output.
"""

from __future__ import annotations

import functools
from collections.abc import Set
from dataclasses import replace

from znnx.ir.graph import Graph
from znnx.ir.ops import ACTIVATIONS, OUTPUT_DERIVATIVE_ACTIVATIONS, epilogue
from znnx.passes.rewrite import consumers, exhaust, merge, sole_consumer


def _fuse_one(graph: Graph, fusable: Set[str]) -> Graph | None:
    users = consumers(graph)
    for conv in graph.nodes:
        if conv.op not in ("conv", "conv_transpose") or ACTIVATIONS & set(epilogue(conv)):
            continue
        act = sole_consumer(graph, users, conv.output)
        if act is None or act.op not in fusable:
            continue
        attrs = {**conv.attrs, "epilogue": (*epilogue(conv), act.op)}
        if "alpha" in act.attrs:
            attrs["alpha"] = float(act.attrs["alpha"])
        return merge(graph, conv, act, replace(conv, output=act.output, attrs=attrs))
    return None


def fuse_activation(graph: Graph) -> tuple[Graph, int]:
    return exhaust(graph, functools.partial(_fuse_one, fusable=ACTIVATIONS))


def fuse_output_derivative_activation(graph: Graph) -> tuple[Graph, int]:
    return exhaust(graph, functools.partial(_fuse_one, fusable=OUTPUT_DERIVATIVE_ACTIVATIONS))
