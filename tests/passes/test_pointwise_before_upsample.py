"""passes/pointwise_before_upsample: a 1x1x1 conv moves ahead of the upsampling that feeds it where
the two commute, and stays where they do not."""

from __future__ import annotations

import pytest

from tests.passes.graphs import assert_same_numbers, builder, conv, ops
from znnx.passes import optimize
from znnx.passes.pointwise_before_upsample import pointwise_before_upsample

POINTWISE = {"kernel": (1, 1, 1), "pads": (0,) * 6}


def _up(b: object, x: str, mode: str, align_corners: bool = False) -> str:
    return b.add("upsample", [x], {"scales": (1.0, 2.0, 3.0), "mode": mode,  # type: ignore[attr-defined]
                                   "align_corners": align_corners})


@pytest.mark.parametrize("mode, align_corners", [("nearest", False), ("trilinear", False), ("trilinear", True)])
def test_linear_pointwise_conv_moves_to_the_coarse_grid(mode: str, align_corners: bool) -> None:
    b, x = builder(channels=6, spatial=(3, 4, 5))
    before = b.finish([conv(b, _up(b, x, mode, align_corners), 4, **POINTWISE)])
    after, count = pointwise_before_upsample(before)
    assert (count, ops(after)) == (1, ["conv", "upsample"])
    assert after.types[after.nodes[0].output].spatial == (3, 4, 5)
    assert after.outputs == before.outputs and after.nodes[0].name == before.nodes[1].name
    assert_same_numbers(before, after)


def test_activation_commutes_with_nearest_only() -> None:
    for mode, moved in (("nearest", True), ("trilinear", False)):
        b, x = builder(channels=6, spatial=(3, 4, 5))
        before = optimize(b.finish([b.add("elu", [conv(b, _up(b, x, mode), 4, **POINTWISE)], {"alpha": 1.0})])).graph
        assert ops(before)[0] == ("conv" if moved else "upsample")
        assert before.nodes[0 if moved else 1].attrs["epilogue"] == ("elu",)


@pytest.mark.parametrize("case", ["widens", "3x3x3", "second reader", "residual"])
def test_stays_where_moving_it_would_not_pay_or_not_commute(case: str) -> None:
    b, x = builder(channels=6, spatial=(3, 4, 5))
    u = _up(b, x, "nearest")
    if case == "widens":
        y = conv(b, u, 8, **POINTWISE)
    elif case == "3x3x3":
        y = conv(b, u, 4)
    elif case == "second reader":
        y = b.add("add", [conv(b, u, 6, **POINTWISE), u])
    else:
        y = b.add("add", [conv(b, u, 6, **POINTWISE), conv(b, u, 6)])
    graph = b.finish([y]) if case != "residual" else optimize(b.finish([y])).graph
    after, count = pointwise_before_upsample(graph)
    assert count == 0 and ops(after) == ops(graph)


def test_whole_pipeline_keeps_the_numbers() -> None:
    b, x = builder(channels=8, spatial=(2, 3, 3))
    skip = conv(b, _up(b, conv(b, x, 8), "trilinear"), 4, **POINTWISE)
    before = b.finish([b.add("relu", [b.add("add", [skip, conv(b, _up(b, x, "nearest"), 4)])])])
    after = optimize(before).graph
    assert "upsample" in ops(after)
    assert_same_numbers(before, after)
