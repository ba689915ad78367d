from __future__ import annotations

import pytest

from tests.passes.graphs import assert_same_numbers, builder, conv, ops
from znnx.ir.graph import Graph
from znnx.passes.eliminate_padding import eliminate_padding
from znnx.passes.remove_dead_nodes import remove_dead_nodes
from znnx.passes.remove_identity import remove_identity


def test_identities_go_including_one_that_is_an_output() -> None:
    b, x = builder()
    y = b.add("identity", [b.add("identity", [conv(b, x, 2)])])
    before = b.finish([b.add("identity", [b.add("relu", [y])])])
    after, count = remove_identity(before)
    assert (ops(after), count) == (["conv", "relu"], 3)
    assert after.outputs == before.outputs
    assert_same_numbers(before, after)


def test_identity_of_a_graph_input_output_stays() -> None:
    b, x = builder()
    before = b.finish([x])
    after, count = remove_identity(before)
    assert (ops(after), count) == (["identity"], 0)


def test_dead_nodes_are_removed() -> None:
    b, x = builder()
    live = b.add("relu", [x])
    graph = b.finish([live])
    dead = conv(b, x, 2)
    nodes = (*graph.nodes, *(n for n in b.nodes if n.output == dead))
    with_dead = Graph(nodes, graph.inputs, graph.outputs, b.types)
    after, count = remove_dead_nodes(with_dead)
    assert (ops(after), count) == (["relu"], 1)


@pytest.mark.parametrize("conv_pads", [(0,) * 6, (1, 0, 1, 0, 1, 1)])
def test_zero_pad_folds_into_each_reading_conv(conv_pads: tuple[int, ...]) -> None:
    b, x = builder()
    p = b.add("pad", [x], {"pads": (1, 2, 0, 0, 1, 2), "mode": "constant", "value": 0.0})
    before = b.finish([conv(b, p, 2, pads=conv_pads), conv(b, p, 3, kernel=(1, 1, 1), pads=(0,) * 6)])
    after, count = eliminate_padding(before)
    assert (ops(after), count) == (["conv", "conv"], 2)
    assert after.nodes[0].attrs["pads"] == tuple(a + c for a, c in zip((1, 2, 0, 0, 1, 2), conv_pads))
    assert_same_numbers(before, after)


def test_pad_read_by_other_ops_or_nonzero_stays() -> None:
    b, x = builder()
    p = b.add("pad", [x], {"pads": (1,) * 6, "mode": "constant", "value": 0.0})
    q = b.add("pad", [x], {"pads": (1,) * 6, "mode": "replicate", "value": 0.0})
    before = b.finish([conv(b, p, 2), b.add("relu", [p]), conv(b, q, 2)])
    after, count = eliminate_padding(before)
    assert count == 1 and ops(after).count("pad") == 2
    assert_same_numbers(before, after)
