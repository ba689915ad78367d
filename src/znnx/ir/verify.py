"""Whole-graph checks: edges, order, names and the type recorded for every value."""

from __future__ import annotations

from collections.abc import Mapping

from znnx.errors import GraphError
from znnx.ir.graph import Graph, TensorType
from znnx.ir.ops import infer_node


def verify(graph: Graph) -> Graph:
    """Check every IR rule of `graph` and return it unchanged; raise GraphError on the first break.

    Rules: at least one input and output; values are defined exactly once (by an input or a node)
    before use; every node passes its op's attribute, parameter and shape rules; the recorded type
    of every value equals the inferred one; no node is unreachable from the outputs.
    """
    if not graph.inputs or not graph.outputs:
        raise GraphError(f"ir: graph {graph.name!r} needs at least one input and one output")
    if graph.spatial_rank not in (0, 1, 2, 3):
        raise GraphError(f"ir: spatial_rank must be 0..3, got {graph.spatial_rank}")
    defined: dict[str, TensorType] = {}
    for name in graph.inputs:
        if name in defined:
            raise GraphError(f"ir: graph input {name!r} is listed twice")
        if name not in graph.types:
            raise GraphError(f"ir: graph input {name!r} has no recorded type")
        defined[name] = graph.types[name]
    names: set[str] = set()
    for node in graph.nodes:
        if node.name in names:
            raise GraphError(f"ir: node name {node.name!r} is used twice")
        names.add(node.name)
        missing = [value for value in node.inputs if value not in defined]
        if missing:
            raise GraphError(
                f"ir: node {node.name!r} ({node.op}) reads {missing}, which no earlier node or "
                f"graph input defines (dangling edge or nodes out of topological order)"
            )
        if node.output in defined:
            raise GraphError(f"ir: value {node.output!r} is defined twice (again by node {node.name!r})")
        inferred = infer_node(node, [defined[value] for value in node.inputs])
        recorded = graph.types.get(node.output)
        if recorded != inferred:
            raise GraphError(
                f"ir: node {node.name!r} ({node.op}) output {node.output!r} is recorded as "
                f"{recorded}, but its inputs give {inferred}"
            )
        defined[node.output] = inferred
    for name in graph.outputs:
        if name not in defined:
            raise GraphError(f"ir: graph output {name!r} is not produced by any node or input")
    _check_reachable(graph)
    return graph


def _check_reachable(graph: Graph) -> None:
    needed = set(graph.outputs)
    for node in reversed(graph.nodes):
        if node.output in needed:
            needed.update(node.inputs)
    dead = [node.name for node in graph.nodes if node.output not in needed]
    if dead:
        raise GraphError(f"ir: nodes {dead} do not contribute to any graph output")


def infer_types(graph: Graph, input_types: Mapping[str, TensorType]) -> Graph:
    """`graph` re-typed for new input types (a new patch shape); raises GraphError where invalid."""
    unknown = set(input_types) - set(graph.inputs)
    if unknown:
        raise GraphError(f"ir: {sorted(unknown)} are not inputs of graph {graph.name!r}")
    types: dict[str, TensorType] = {name: input_types.get(name, graph.types[name]) for name in graph.inputs}
    for node in graph.nodes:
        types[node.output] = infer_node(node, [types[value] for value in node.inputs])
    return Graph(graph.nodes, graph.inputs, graph.outputs, types, graph.spatial_rank, graph.name)
