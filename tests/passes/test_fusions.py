from __future__ import annotations

import dataclasses

import pytest

from tests.passes.graphs import RNG, assert_same_numbers, builder, conv, ops
from znnx.errors import GraphError
from znnx.ir.ops import ACTIVATIONS
from znnx.ir.verify import verify
from znnx.passes import optimize
from znnx.passes.fuse_activation import fuse_activation
from znnx.passes.fuse_residual_add import fuse_residual_add
from znnx.passes.fuse_scale import fuse_scale


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("transposed", [False, True])
def test_activation_fuses_into_the_conv(act: str, transposed: bool) -> None:
    b, x = builder()
    attrs = {"alpha": 0.3} if act in ("elu", "leaky_relu") else {}
    before = b.finish([b.add(act, [conv(b, x, 4, transposed=transposed)], attrs)])
    after, count = fuse_activation(before)
    assert count == 1 and len(after.nodes) == 1
    assert after.nodes[0].attrs["epilogue"] == (act,)
    assert after.outputs == before.outputs
    assert_same_numbers(before, after)


def test_second_activation_is_not_fused() -> None:
    b, x = builder()
    before = b.finish([b.add("sigmoid", [b.add("relu", [conv(b, x, 4)])])])
    after, count = fuse_activation(before)
    assert (ops(after), count) == (["conv", "sigmoid"], 1)
    assert_same_numbers(before, after)


def test_residual_block_fuses_add_then_activation() -> None:
    """conv -> add(block input) -> elu: the add goes into the conv, then the elu after it."""
    b, x = builder(channels=4)
    h = b.add("elu", [conv(b, x, 4)], {"alpha": 1.0})
    before = b.finish([b.add("elu", [b.add("add", [conv(b, h, 4), x])], {"alpha": 1.0})])
    fused, adds = fuse_residual_add(before)
    after, acts = fuse_activation(fused)
    assert (adds, acts) == (1, 2)
    assert [n.attrs.get("epilogue") for n in after.nodes] == [("elu",), ("add", "elu")]
    assert after.nodes[1].inputs == (after.nodes[0].output, x)
    assert_same_numbers(before, after)


def test_activation_then_add_keeps_the_order() -> None:
    b, x = builder(channels=4)
    y = b.add("relu", [conv(b, x, 4)])
    before = b.finish([b.add("add", [x, y])])
    after, _ = fuse_activation(before)
    after, count = fuse_residual_add(after)
    assert count == 1 and after.nodes[0].attrs["epilogue"] == ("relu", "add")
    assert_same_numbers(before, after)


def test_later_conv_absorbs_the_add_and_runs_in_its_place() -> None:
    b, x = builder(channels=4)
    first = conv(b, x, 4)
    second = conv(b, x, 4)
    before = b.finish([b.add("add", [first, second])])
    after, count = fuse_residual_add(before)
    assert count == 1 and ops(after) == ["conv", "conv"]
    assert after.nodes[1].inputs == (x, after.nodes[0].output)
    assert_same_numbers(before, after)


def test_add_with_a_residual_computed_after_the_conv_moves_the_conv() -> None:
    b, x = builder(channels=4)
    c = conv(b, x, 4)
    r = b.add("tanh", [x])
    before = b.finish([b.add("add", [c, r])])
    after, count = fuse_residual_add(before)
    assert count == 1 and ops(after) == ["tanh", "conv"]
    assert_same_numbers(before, after)


def test_broadcast_add_and_shared_conv_are_not_fused() -> None:
    b, x = builder(channels=4)
    c = conv(b, x, 4)
    one = conv(b, x, 1)
    before = b.finish([b.add("add", [c, one]), b.add("add", [c, x])])
    after, count = fuse_residual_add(before)
    assert count == 0 and ops(after) == ops(before)


def test_verify_rejects_a_broken_epilogue() -> None:
    b, x = builder(channels=4)
    before = b.finish([b.add("elu", [conv(b, x, 4)], {"alpha": 1.0})])
    good = fuse_activation(before)[0]
    node = good.nodes[0]
    bad_attrs = {**node.attrs, "epilogue": ("elu", "relu")}
    bad = dataclasses.replace(good, nodes=(dataclasses.replace(node, attrs=bad_attrs),))
    with pytest.raises(GraphError, match="one 'add', one 'scale' and one activation at most"):
        verify(bad)
    missing = dataclasses.replace(good, nodes=(dataclasses.replace(node, attrs={**node.attrs, "epilogue": ("add",)}),))
    with pytest.raises(GraphError, match=r"needs 2 input\(s\), got 1"):
        verify(missing)


@pytest.mark.parametrize("beta, scales", [(True, 1), (False, 1), (True, 2)])
def test_scale_after_a_residual_add_fuses_between_the_add_and_the_activation(beta: bool, scales: int) -> None:
    """conv -> add -> scale (a BatchNorm after the add; twice: Caffe's BatchNorm and Scale layers) -> elu:
    one conv, epilogue (add, scale, elu)."""
    b, x = builder(channels=4)
    s = b.add("add", [conv(b, x, 4), x])
    for _ in range(scales):
        params = {"gamma": RNG.random(4) + 0.5, **({"beta": RNG.standard_normal(4)} if beta else {})}
        s = b.add("scale", [s], {}, params)
    before = b.finish([b.add("elu", [s], {"alpha": 1.0})])
    after = optimize(before).graph
    assert ops(after) == ["conv"] and after.nodes[0].attrs["epilogue"] == ("add", "scale", "elu")
    assert_same_numbers(before, after)


@pytest.mark.parametrize("kernel, pads, output_padding", [((2, 2, 2), (0,) * 6, (0, 0, 0)),
                                                          ((3, 3, 3), (1,) * 6, (1, 1, 1))])
def test_scale_after_a_transposed_conv_and_its_skip_fuses_into_it(kernel: tuple[int, ...], pads: tuple[int, ...],
                                                                 output_padding: tuple[int, ...]) -> None:
    """PZnet's decoder level: up-convolution -> add the skip -> BatchNorm -> ELU as one conv_transpose."""
    b, x = builder(channels=4, spatial=(4, 6, 8))
    down = b.add("max_pool", [x], {"kernel": (2, 2, 2), "stride": (2, 2, 2), "pads": (0,) * 6, "ceil_mode": False})
    up = b.add("conv_transpose", [down], {"kernel": kernel, "stride": (2, 2, 2), "dilation": (1, 1, 1), "pads": pads,
                                          "groups": 1, "output_padding": output_padding},
               {"weight": RNG.standard_normal((4, 4, *kernel)) * 0.3, "bias": RNG.standard_normal(4)})
    scaled = b.add("scale", [b.add("add", [up, x])], {}, {"gamma": RNG.random(4) + 0.5, "beta": RNG.standard_normal(4)})
    before = b.finish([b.add("elu", [scaled], {"alpha": 1.0})])
    after = optimize(before).graph
    assert ops(after) == ["max_pool", "conv_transpose"]
    assert after.nodes[-1].attrs["epilogue"] == ("add", "scale", "elu")
    assert_same_numbers(before, after)


def test_scale_stays_where_the_conv_has_no_add_or_another_reader() -> None:
    b, x = builder(channels=4)
    c = conv(b, x, 4)
    s = b.add("add", [c, x])
    scaled = b.add("scale", [s], {}, {"gamma": RNG.random(4) + 0.5})
    graph = fuse_residual_add(b.finish([scaled, s]))[0]
    after, count = fuse_scale(graph)
    assert count == 0 and ops(after) == ops(graph)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_prelu_fuses_with_its_slopes(shared: bool, transposed: bool) -> None:
    b, x = builder(channels=3)
    slope = RNG.standard_normal(1 if shared else 4) * 0.3
    before = b.finish([b.add("prelu", [conv(b, x, 4, transposed=transposed)], {}, {"slope": slope})])
    after, count = fuse_activation(before)
    assert count == 1 and after.nodes[0].attrs["epilogue"] == ("prelu",)
    assert after.nodes[0].params["prelu_slope"].shape == (4,)
    assert_same_numbers(before, after)


def test_prelu_stays_apart_from_a_scaled_epilogue() -> None:
    """A residual add then a BatchNorm (a scale step) then PReLU: the kernels carry one channel vector
    for the scale's gamma or PReLU's slopes, so the PReLU runs on its own."""
    b, x = builder(channels=4)
    y = b.add("scale", [b.add("add", [conv(b, x, 4), x])], {}, {"gamma": RNG.random(4) + 0.5,
                                                                  "beta": RNG.standard_normal(4)})
    before = b.finish([b.add("prelu", [y], {}, {"slope": RNG.standard_normal(4)})])
    after = optimize(before).graph
    assert ops(after) == ["conv", "prelu"] and after.nodes[0].attrs["epilogue"] == ("add", "scale")
    assert_same_numbers(before, after)
