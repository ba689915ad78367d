"""Tiny hand-built graphs for pass tests, and the check every pass must pass: same numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from znnx import reference
from znnx.frontends.builder import GraphBuilder
from znnx.ir.graph import Graph
from znnx.ir.verify import verify

RNG = np.random.default_rng(7)


def conv(b: GraphBuilder, x: str, c_out: int, kernel: Sequence[int] = (3, 3, 3), pads: Sequence[int] = (1,) * 6,
         transposed: bool = False, stride: Sequence[int] = (1, 1, 1), groups: int = 1) -> str:
    c_in = b.type(x).channels
    shape = (c_in, c_out // groups, *kernel) if transposed else (c_out, c_in // groups, *kernel)
    attrs = {"kernel": tuple(kernel), "stride": tuple(stride), "dilation": (1, 1, 1), "pads": tuple(pads),
             "groups": groups}
    if transposed:
        attrs["output_padding"] = (0, 0, 0)
    params = {"weight": RNG.standard_normal(shape) * 0.3, "bias": RNG.standard_normal(c_out)}
    return b.add("conv_transpose" if transposed else "conv", [x], attrs, params)


def batchnorm(b: GraphBuilder, x: str) -> str:
    c = b.type(x).channels
    params = {"mean": RNG.standard_normal(c), "var": RNG.random(c) + 0.5, "gamma": RNG.random(c) + 0.5,
              "beta": RNG.standard_normal(c)}
    return b.add("batchnorm", [x], {"eps": 1e-3}, params)


def scale(b: GraphBuilder, x: str) -> str:
    c = b.type(x).channels
    return b.add("scale", [x], {}, {"gamma": RNG.random(c) + 0.5, "beta": RNG.standard_normal(c)})


def builder(channels: int = 3, spatial: Sequence[int] = (5, 7, 6)) -> tuple[GraphBuilder, str]:
    b = GraphBuilder("test", 3)
    return b, b.add_input("x", channels, spatial)


def ops(graph: Graph) -> list[str]:
    return [node.op for node in graph.nodes]


def assert_same_numbers(before: Graph, after: Graph, tolerance: float = 1e-5) -> None:
    """`after` verifies and computes what `before` computes (reference executor, relative error)."""
    verify(after)
    inputs = {name: RNG.standard_normal((2, before.types[name].channels, *before.types[name].spatial))
              for name in before.inputs}
    expected = reference.run(before, inputs)
    actual = reference.run(after, inputs)
    for name in before.outputs:
        scale_ = max(float(np.abs(expected[name]).max()), 1e-12)
        assert float(np.abs(actual[name] - expected[name]).max()) / scale_ < tolerance, name
