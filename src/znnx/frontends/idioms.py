"""Rewrite traced crop idioms into the shape-independent form the IR prefers.

A traced slice records fixed margins, which are right only for the patch it was traced at. A
U-Net skip is cropped to the centre so it matches the tensor it meets in a concat or add; written
as `center_crop(x, ref)` it stays right for every patch size.
"""

from __future__ import annotations

from znnx.ir.graph import Graph, Node
from znnx.ir.ops import center_crop_begin
from znnx.ir.verify import verify

_JOINS = frozenset({"concat", "add", "mul"})


def _merge_chained_crops(graph: Graph) -> Graph:
    """crop(crop(x)) -> crop(x) with summed margins, when the inner crop has no other consumer."""
    nodes = list(graph.nodes)
    index = {node.output: i for i, node in enumerate(nodes)}
    for i, node in enumerate(nodes):
        j = index.get(node.inputs[0]) if node.op == "crop" else None
        if j is None or nodes[j].op != "crop" or nodes[j].output in graph.outputs:
            continue
        inner = nodes[j]
        if len(graph.consumers(inner.output)) != 1:
            continue
        begin = tuple(a + b for a, b in zip(inner.attrs["begin"], node.attrs["begin"]))
        end = tuple(a + b for a, b in zip(inner.attrs["end"], node.attrs["end"]))
        nodes[i] = Node(node.name, "crop", inner.inputs, node.output, {"begin": begin, "end": end})
    needed = set(graph.outputs)
    for node in reversed(nodes):
        if node.output in needed:
            needed.update(node.inputs)
    return Graph(tuple(n for n in nodes if n.output in needed), graph.inputs, graph.outputs,
                 {k: v for k, v in graph.types.items() if k in needed or k in graph.inputs},
                 graph.spatial_rank, graph.name)


def _reference_for(graph: Graph, crop: Node) -> str | None:
    """The tensor a centred crop is matched to, if every consumer joins it with such a tensor.

    The reference is never another crop: two crops joined together keep their fixed margins.
    """
    source = graph.types[crop.inputs[0]].spatial
    target = graph.types[crop.output].spatial
    if tuple(crop.attrs["begin"]) != center_crop_begin(source, target) or crop.output in graph.outputs:
        return None
    crops = {node.output for node in graph.nodes if node.op == "crop"}

    def candidates(consumer: Node) -> list[str]:
        return [v for v in consumer.inputs if v not in crops and graph.types[v].spatial == target]

    consumers = graph.consumers(crop.output)
    if not all(consumer.op in _JOINS and candidates(consumer) for consumer in consumers):
        return None
    return candidates(consumers[0])[0]


def normalize_crops(graph: Graph) -> Graph:
    """Merge chained crops, then turn centred crops that meet a same-shaped tensor into center_crop."""
    graph = _merge_chained_crops(graph)
    rewrites = {node.output: ref for node in graph.nodes if node.op == "crop"
                and (ref := _reference_for(graph, node)) is not None}
    if not rewrites:
        return verify(graph)
    nodes: list[Node] = []
    pending = {node.output: node for node in graph.nodes if node.output in rewrites}
    for node in graph.nodes:
        if node.output in pending:
            continue
        for value in node.inputs:
            crop = pending.pop(value, None)
            if crop is not None:
                nodes.append(Node(crop.name, "center_crop", (crop.inputs[0], rewrites[value]), crop.output))
        nodes.append(node)
    return verify(Graph(tuple(nodes), graph.inputs, graph.outputs, graph.types, graph.spatial_rank, graph.name))
