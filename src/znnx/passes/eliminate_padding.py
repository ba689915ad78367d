"""Fold explicit zero padding into the convolutions that read it.

Before: x -> pad(p, constant 0) -> xp -> conv(pads q) -> y
After:  x -> conv(pads p + q) -> y
A pad with other readers keeps serving them (and disappears when none remain). Why no
"padded buffer" rewrite: the direct convolutions (oneDNN, cuDNN) pad implicitly inside the kernel,
so a conv-read tensor never needs a padded copy; only pads in other modes or values, or read by
other ops, remain as explicit nodes.
"""

from __future__ import annotations

from dataclasses import replace

from znnx.ir.graph import Graph, Node
from znnx.ir.ops import conv_sources
from znnx.passes.remove_dead_nodes import remove_dead_nodes
from znnx.passes.rewrite import rebuild


def _zero_pad(node: Node | None) -> bool:
    return node is not None and node.op == "pad" and node.attrs["mode"] == "constant" and node.attrs["value"] == 0


def eliminate_padding(graph: Graph) -> tuple[Graph, int]:
    pads = {node.output: node for node in graph.nodes if _zero_pad(node)}
    count, nodes = 0, []
    for node in graph.nodes:
        pad = pads.get(node.inputs[0]) if node.op == "conv" and conv_sources(node) == 1 else None
        if pad is not None:
            total = tuple(int(p) + int(q) for p, q in zip(pad.attrs["pads"], node.attrs["pads"]))
            node = replace(node, inputs=(pad.inputs[0], *node.inputs[1:]), attrs={**node.attrs, "pads": total})
            count += 1
        nodes.append(node)
    if not count:
        return graph, 0
    return remove_dead_nodes(rebuild(graph, nodes))[0], count
