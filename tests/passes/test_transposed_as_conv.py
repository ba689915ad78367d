"""passes/transposed_as_conv: a stride-1 transposed conv becomes the conv with the flipped kernel,
in and out channels swapped; strided ones and pads a conv cannot express stay."""

from __future__ import annotations

import pytest

from tests.passes.graphs import RNG, assert_same_numbers, builder, conv, ops
from znnx.passes import optimize
from znnx.passes.transposed_as_conv import transposed_as_conv


@pytest.mark.parametrize("kernel, pads, groups", [((1, 5, 5), (0, 2, 2, 0, 2, 2), 1), ((3, 3, 3), (0,) * 6, 1),
                                                  ((3, 2, 4), (1, 0, 2, 2, 1, 3), 1), ((3, 3, 3), (1,) * 6, 2)])
def test_stride_one_transposed_conv_is_a_conv(kernel: tuple[int, ...], pads: tuple[int, ...], groups: int) -> None:
    b, x = builder(channels=4, spatial=(5, 7, 6))
    before = b.finish([conv(b, x, 6, kernel=kernel, pads=pads, transposed=True, groups=groups)])
    after, count = transposed_as_conv(before)
    assert (count, ops(after)) == (1, ["conv"])
    assert after.types[after.outputs[0]] == before.types[before.outputs[0]]
    assert_same_numbers(before, after)


def test_dilated_with_its_epilogue_through_the_pipeline() -> None:
    b, x = builder(channels=3, spatial=(6, 6, 5))
    attrs = {"kernel": (3, 3, 3), "stride": (1, 1, 1), "dilation": (2, 1, 1), "pads": (2, 1, 0, 2, 1, 2),
             "groups": 1, "output_padding": (0, 0, 0)}
    y = b.add("conv_transpose", [x], attrs, {"weight": RNG.standard_normal((3, 3, 3, 3, 3)), "bias": RNG.random(3)})
    before = b.finish([b.add("sigmoid", [b.add("add", [y, x])])])
    after = optimize(before).graph
    assert ops(after) == ["conv"] and after.nodes[0].attrs["epilogue"] == ("add", "sigmoid")
    assert after.nodes[0].attrs["pads"] == (2, 1, 2, 2, 1, 0)
    assert_same_numbers(before, after)


@pytest.mark.parametrize("case", ["strided", "pad beyond the kernel", "output padding"])
def test_stays_where_it_is_no_plain_conv(case: str) -> None:
    b, x = builder(channels=4, spatial=(5, 7, 6))
    if case == "strided":
        y = conv(b, x, 6, kernel=(2, 2, 2), pads=(0,) * 6, transposed=True, stride=(2, 2, 2))
    elif case == "pad beyond the kernel":
        y = conv(b, x, 6, kernel=(3, 3, 3), pads=(3, 0, 0, 0, 0, 0), transposed=True)
    else:
        y = conv(b, x, 6, kernel=(3, 3, 3), pads=(1,) * 6, transposed=True, stride=(2, 2, 2))
        graph = b.finish([y])
        node = graph.nodes[0]
        assert transposed_as_conv(graph)[1] == 0 and node.attrs["output_padding"] == (0, 0, 0)
        return
    graph = b.finish([y])
    assert transposed_as_conv(graph) == (graph, 0)
