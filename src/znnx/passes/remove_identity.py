"""Drop identity nodes (the frontends map Dropout, Flatten of a kept shape, etc. to identity).

Before: x -> identity -> y -> f      After: x -> f
Precondition: an identity that is itself a graph output is removed only when its input's producer
can write that output directly (the input is not a graph input or another output).
"""

from __future__ import annotations

from znnx.ir.graph import Graph
from znnx.passes.rewrite import bypass


def remove_identity(graph: Graph) -> tuple[Graph, int]:
    count, kept = 0, set()
    while True:
        node = next((n for n in graph.nodes if n.op == "identity" and n.name not in kept), None)
        if node is None:
            return graph, count
        rewritten = bypass(graph, node)
        if rewritten is None:
            kept.add(node.name)
        else:
            graph, count = rewritten, count + 1
