"""passes/fuse_concat: a concat read only by a conv becomes the conv's sources; the numbers stay."""

from __future__ import annotations

import pytest

from tests.passes.graphs import assert_same_numbers, builder, conv, ops
from znnx.ir.ops import conv_sources
from znnx.passes import optimize
from znnx.passes.fuse_concat import fuse_concat


def test_a_decoder_concat_becomes_the_convs_sources() -> None:
    b, x = builder(channels=3, spatial=(4, 6, 5))
    skip = conv(b, x, 5)
    up = conv(b, skip, 2, kernel=(1, 1, 1), pads=(0,) * 6)
    before = b.finish([conv(b, b.add("concat", [up, skip, x]), 4)])
    after, count = fuse_concat(before)
    assert (count, ops(after)) == (1, ["conv", "conv", "conv"])
    fused = after.nodes[-1]
    assert conv_sources(fused) == 3 and fused.inputs == before.nodes[2].inputs
    assert_same_numbers(before, after)


def test_with_a_residual_add_and_an_activation_through_the_whole_pipeline() -> None:
    b, x = builder(channels=4, spatial=(3, 5, 6))
    a, c = conv(b, x, 3), conv(b, x, 5)
    y = b.add("relu", [b.add("add", [conv(b, b.add("concat", [a, c]), 4), x])])
    before = b.finish([y])
    after = optimize(before).graph
    fused = after.nodes[-1]
    assert ops(after) == ["conv", "conv", "conv"] and conv_sources(fused) == 2
    assert fused.attrs["epilogue"] == ("add", "relu") and fused.inputs[2] == "x"
    assert_same_numbers(before, after)


def test_a_padded_source_is_not_folded_into_the_fused_conv() -> None:
    """A zero pad feeding one source pads that source only: it must stay an explicit node."""
    b, x = builder(channels=2, spatial=(3, 4, 5))
    padded = b.add("pad", [x], {"pads": (0, 1, 1, 0, 1, 1), "mode": "constant", "value": 0.0})
    other = conv(b, x, 3, pads=(0, 1, 1, 0, 1, 1), kernel=(1, 1, 1))
    before = b.finish([conv(b, b.add("concat", [padded, other]), 4, pads=(0,) * 6)])
    after = optimize(before).graph
    assert "pad" in ops(after) and conv_sources(after.nodes[-1]) == 2
    assert_same_numbers(before, after)


@pytest.mark.parametrize("case", ["second reader", "graph output", "also the residual", "one input", "pool"])
def test_stays_where_the_concat_is_needed_as_it_is(case: str) -> None:
    b, x = builder(channels=3, spatial=(4, 4, 4))
    h = conv(b, x, 3)
    joined = b.add("concat", [h, x] if case != "one input" else [h])
    outputs = [conv(b, joined, 3)]
    if case == "second reader":
        outputs.append(b.add("relu", [joined]))
    elif case == "graph output":
        outputs.append(joined)
    elif case == "also the residual":
        outputs = [b.add("add", [conv(b, joined, 6), joined])]
    elif case == "pool":
        outputs = [b.add("max_pool", [joined], {"kernel": (2, 2, 2), "stride": (2, 2, 2), "pads": (0,) * 6,
                                                "ceil_mode": False})]
    graph = b.finish(outputs)
    after, count = fuse_concat(optimize(graph).graph if case == "also the residual" else graph)
    assert count == 0 and "concat" in ops(after)
