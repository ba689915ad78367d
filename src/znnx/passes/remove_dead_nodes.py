"""Remove nodes whose output reaches no graph output (left behind by other rewrites)."""

from __future__ import annotations

from znnx.ir.graph import Graph
from znnx.passes.rewrite import rebuild


def remove_dead_nodes(graph: Graph) -> tuple[Graph, int]:
    needed = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.output in needed:
            needed.update(node.inputs)
            kept.append(node)
    removed = len(graph.nodes) - len(kept)
    return (rebuild(graph, kept[::-1]) if removed else graph), removed
