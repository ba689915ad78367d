"""Helpers shared by the passes: who consumes a value, and rebuilding a graph from edited nodes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from znnx.ir.graph import Graph, Node


def consumers(graph: Graph) -> dict[str, list[Node]]:
    """Every value of `graph` mapped to the nodes that read it, in graph order."""
    users: dict[str, list[Node]] = {name: [] for name in graph.inputs}
    for node in graph.nodes:
        users.setdefault(node.output, [])
        for value in dict.fromkeys(node.inputs):
            users[value].append(node)
    return users


def sole_consumer(graph: Graph, users: Mapping[str, Sequence[Node]], value: str) -> Node | None:
    """The one node reading `value`, or None when several read it or it is a graph output."""
    readers = users.get(value, [])
    if len(readers) != 1 or value in graph.outputs:
        return None
    return readers[0]


def rebuild(graph: Graph, nodes: Sequence[Node]) -> Graph:
    """`graph` with new `nodes` (kept in the given order); types are those of the values still defined."""
    defined = [*graph.inputs, *(node.output for node in nodes)]
    types = {name: graph.types[name] for name in defined}
    return Graph(tuple(nodes), graph.inputs, graph.outputs, types, graph.spatial_rank, graph.name)


def rename_inputs(node: Node, mapping: Mapping[str, str]) -> Node:
    """`node` reading mapping[v] wherever it read a value v in `mapping`."""
    if not any(value in mapping for value in node.inputs):
        return node
    return replace(node, inputs=tuple(mapping.get(value, value) for value in node.inputs))


def merge(graph: Graph, first: Node, second: Node, merged: Node) -> Graph:
    """Replace `first` and its sole consumer `second` by `merged`, which writes `second`'s output.

    `merged` takes `first`'s place when all its inputs are defined by then, else `second`'s place
    (always valid: `first`'s output had no other reader).
    """
    position = {node.output: i for i, node in enumerate(graph.nodes)}
    first_at = position[first.output]
    early = all(position.get(value, -1) < first_at for value in merged.inputs)
    nodes: list[Node] = []
    for node in graph.nodes:
        if node is first:
            nodes.extend([merged] if early else [])
        elif node is second:
            nodes.extend([] if early else [merged])
        else:
            nodes.append(node)
    return rebuild(graph, nodes)


def bypass(graph: Graph, node: Node) -> Graph | None:
    """Remove a node whose output equals its first input; None when that cannot be expressed.

    Readers of the output read the input instead. When the output is a graph output, the input's
    producer writes it under the output's name, which needs a producer whose value has no other role.
    """
    source, target = node.inputs[0], node.output
    if target not in graph.outputs:
        nodes = [rename_inputs(n, {target: source}) for n in graph.nodes if n is not node]
        return rebuild(graph, nodes)
    producer = graph.producer(source)
    if producer is None or source in graph.outputs:
        return None
    nodes = []
    for n in graph.nodes:
        if n is node:
            continue
        n = rename_inputs(n, {source: target})
        nodes.append(replace(n, output=target) if n is producer else n)
    return rebuild(graph, nodes)


def exhaust(graph: Graph, rewrite_one: Callable[[Graph], Graph | None]) -> tuple[Graph, int]:
    """Apply `rewrite_one` (a single rewrite, or None when nothing matches) until nothing matches."""
    count = 0
    while (rewritten := rewrite_one(graph)) is not None:
        graph, count = rewritten, count + 1
    return graph, count
