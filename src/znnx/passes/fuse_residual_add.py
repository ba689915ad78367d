"""Fuse an elementwise add into the conv that produces one of its operands (PZnet's residual fusion).

Before: x -> conv -> c;  r;  add(c, r) -> y
After:  x, r -> conv[epilogue += add] -> y      (the conv adds r to its biased output)
Preconditions: the conv's output has no other reader and is not a graph output; both operands have
the same type (no channel broadcast); the conv's epilogue has no add yet. When both operands are
eligible convs, the later one absorbs the add, so the other operand exists when it runs. The fused
conv runs where the first of its inputs allows: in the conv's place when r is computed before it,
otherwise in the add's place.
"""

from __future__ import annotations

from dataclasses import replace

from znnx.ir.graph import Graph, Node
from znnx.ir.ops import conv_sources, epilogue
from znnx.passes.rewrite import consumers, exhaust, merge, sole_consumer


def _fuse_one(graph: Graph) -> Graph | None:
    users = consumers(graph)
    position = {node.output: i for i, node in enumerate(graph.nodes)}
    for add in graph.nodes:
        if add.op != "add" or len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
            continue
        a, b = (graph.types[v] for v in add.inputs)
        if a != b:
            continue
        candidates: list[tuple[int, Node, str]] = []
        for operand, other in (add.inputs, add.inputs[::-1]):
            conv = graph.producer(operand)
            if (conv is not None and conv.op in ("conv", "conv_transpose") and "add" not in epilogue(conv)
                    and sole_consumer(graph, users, operand) is add):
                candidates.append((position[operand], conv, other))
        if not candidates:
            continue
        _, conv, other = max(candidates, key=lambda c: c[0])
        steps = (*epilogue(conv), "add")
        fused = replace(conv, inputs=(*conv.inputs[:conv_sources(conv)], other), output=add.output,
                        attrs={**conv.attrs, "epilogue": steps})
        return merge(graph, conv, add, fused)
    return None


def fuse_residual_add(graph: Graph) -> tuple[Graph, int]:
    return exhaust(graph, _fuse_one)
