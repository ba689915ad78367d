"""verify() accepts well-formed graphs and names the first broken rule of bad ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from znnx.errors import GraphError
from znnx.ir import Graph, Node, TensorType, infer_types, verify


def conv_node(name: str = "c", source: str = "x", c_in: int = 2, c_out: int = 4, **attrs: object) -> Node:
    base = {"kernel": (1, 3, 3), "stride": (1, 1, 1), "dilation": (1, 1, 1), "pads": (0, 1, 1, 0, 1, 1),
            "groups": 1}
    base.update(attrs)
    weight = np.ones((c_out, c_in // int(base["groups"]), *base["kernel"]))  # type: ignore[misc]
    return Node(name, "conv", (source,), name, base, {"weight": weight, "bias": np.zeros(c_out)})


def small_graph() -> Graph:
    nodes = (conv_node(), Node("r", "relu", ("c",), "r"), Node("s", "add", ("r", "c"), "s"))
    types = {"x": TensorType(2, (3, 8, 8)), "c": TensorType(4, (3, 8, 8)), "r": TensorType(4, (3, 8, 8)),
             "s": TensorType(4, (3, 8, 8))}
    return Graph(nodes, ("x",), ("s",), types)


def test_valid_graph_passes() -> None:
    graph = small_graph()
    assert verify(graph) is graph


def test_dangling_edge() -> None:
    graph = small_graph()
    nodes = (graph.nodes[0], Node("r", "relu", ("ghost",), "r"), graph.nodes[2])
    with pytest.raises(GraphError, match=r"node 'r' \(relu\) reads \['ghost'\].*dangling edge"):
        verify(dataclasses.replace(graph, nodes=nodes))


def test_out_of_order_nodes() -> None:
    graph = small_graph()
    nodes = (graph.nodes[1], graph.nodes[0], graph.nodes[2])
    with pytest.raises(GraphError, match="topological order"):
        verify(dataclasses.replace(graph, nodes=nodes))


def test_value_defined_twice() -> None:
    graph = small_graph()
    nodes = (*graph.nodes[:2], Node("s", "relu", ("r",), "r"))
    with pytest.raises(GraphError, match="value 'r' is defined twice"):
        verify(dataclasses.replace(graph, nodes=nodes))


def test_wrong_recorded_type() -> None:
    graph = small_graph()
    types = dict(graph.types, r=TensorType(4, (3, 8, 9)))
    with pytest.raises(GraphError, match=r"output 'r' is recorded as 4x3x8x9, but its inputs give 4x3x8x8"):
        verify(dataclasses.replace(graph, types=types))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (conv_node(kernel=(3, 3)), r"attribute 'kernel' must be 3 ints >= 1, got \(3, 3\)"),
        (conv_node(groups=3), "groups=3 must divide C_in=2 and C_out=4"),
        (conv_node(c_in=3), r"parameter 'weight' has shape \(4, 3, 1, 3, 3\), expected \(4, 2, 1, 3, 3\)"),
        (conv_node(pads=(0, 0, 0, 0, 0, 0), kernel=(5, 1, 1)), r"empty output of spatial shape \(-1, 8, 8\)"),
        (Node("c", "swish", ("x",), "c"), "unknown op"),
        (Node("c", "add", ("x",), "c"), "needs a 1D parameter 'constant'"),
        (Node("c", "pad", ("x",), "c", {"pads": (0,) * 6, "mode": "wrap", "value": 0.0}), "'mode' must be one of"),
    ],
)
def test_node_rules(node: Node, message: str) -> None:
    graph = Graph((node,), ("x",), ("c",), {"x": TensorType(2, (3, 8, 8)), "c": TensorType(4, (3, 8, 8))})
    with pytest.raises(GraphError, match=message):
        verify(graph)


def test_unreachable_node() -> None:
    graph = small_graph()
    nodes = (*graph.nodes, Node("dead", "sigmoid", ("s",), "dead"))
    types = dict(graph.types, dead=TensorType(4, (3, 8, 8)))
    with pytest.raises(GraphError, match=r"nodes \['dead'\] do not contribute"):
        verify(dataclasses.replace(graph, nodes=nodes, types=types))


def test_params_are_read_only() -> None:
    node = conv_node()
    with pytest.raises(ValueError, match="read-only"):
        node.params["weight"][0] = 2.0


def test_infer_types_reshapes_and_rejects() -> None:
    graph = infer_types(small_graph(), {"x": TensorType(2, (5, 4, 6))})
    assert graph.types["s"] == TensorType(4, (5, 4, 6))
    verify(graph)
    pooled = Graph(
        (Node("p", "max_pool", ("x",), "p", {"kernel": (2, 2, 2), "stride": (2, 2, 2), "pads": (0,) * 6,
                                                "ceil_mode": False}),),
        ("x",), ("p",), {"x": TensorType(1, (4, 4, 4)), "p": TensorType(1, (2, 2, 2))})
    with pytest.raises(GraphError, match=r"node 'p' \(max_pool\).*empty output"):
        infer_types(pooled, {"x": TensorType(1, (1, 4, 4))})
