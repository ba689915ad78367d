"""Fold constant arithmetic into per-channel scales, and chains of scales into one.

Before: x -> add(c) -> y       After: x -> scale(gamma=1, beta=c) -> y
        x -> mul(c) -> y              x -> scale(gamma=c) -> y
        x -> div(c) -> y              x -> scale(gamma=1/c) -> y
        x -> scale(g1, b1) -> scale(g2, b2) -> y      x -> scale(g1*g2, b1*g2 + b2) -> y
A scale that follows a conv is then folded into its weights by fold_batchnorm. `max` with a
constant is not affine and stays.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from znnx.ir.graph import Graph, Node
from znnx.passes.rewrite import consumers, exhaust, merge, rebuild, sole_consumer


def _as_scale(node: Node, channels: int) -> Node:
    c = np.broadcast_to(node.params["constant"].astype(np.float64), (channels,))
    ones = np.ones(channels)
    gamma, beta = {"add": (ones, c), "mul": (c, 0 * c), "div": (1.0 / c, 0 * c)}[node.op]
    return Node(node.name, "scale", node.inputs, node.output, {}, {"gamma": gamma, "beta": beta})


def _merge_one(graph: Graph) -> Graph | None:
    users = consumers(graph)
    for first in graph.nodes:
        second = sole_consumer(graph, users, first.output) if first.op == "scale" else None
        if second is None or second.op != "scale":
            continue
        g1, g2 = (n.params["gamma"].astype(np.float64) for n in (first, second))
        b1, b2 = (n.params["beta"].astype(np.float64) if "beta" in n.params else 0 * g1 for n in (first, second))
        merged = replace(first, output=second.output, params={"gamma": g1 * g2, "beta": b1 * g2 + b2})
        return merge(graph, first, second, merged)
    return None


def fold_constants(graph: Graph) -> tuple[Graph, int]:
    count, nodes = 0, []
    for node in graph.nodes:
        if node.op in ("add", "mul", "div") and len(node.inputs) == 1:
            node = _as_scale(node, graph.types[node.output].channels)
            count += 1
        nodes.append(node)
    graph, merges = exhaust(rebuild(graph, nodes) if count else graph, _merge_one)
    return graph, count + merges
