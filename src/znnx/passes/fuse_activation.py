"""Fuse an activation into the conv (or conv_transpose) that produces its input.

Before: x -> conv -> c -> elu(alpha) -> y
After:  x -> conv[epilogue += elu, alpha] -> y
A PReLU moves its slopes (one per channel) to the conv's `prelu_slope`.
Preconditions: the conv's output has no other reader and is not a graph output; the conv's
epilogue has no activation yet (a residual add already in it stays first), and no scale where the
activation is a PReLU. For training, `fuse_output_derivative_activation` fuses only the activations
whose derivative follows from their output.
"""

from __future__ import annotations

import functools
from collections.abc import Set
from dataclasses import replace

import numpy as np

from znnx.ir.graph import Graph
from znnx.ir.ops import EPILOGUE_ACTIVATIONS, OUTPUT_DERIVATIVE_ACTIVATIONS, epilogue
from znnx.passes.rewrite import consumers, exhaust, merge, sole_consumer


def _fuse_one(graph: Graph, fusable: Set[str]) -> Graph | None:
    users = consumers(graph)
    for conv in graph.nodes:
        if conv.op not in ("conv", "conv_transpose") or EPILOGUE_ACTIVATIONS & set(epilogue(conv)):
            continue
        act = sole_consumer(graph, users, conv.output)
        if act is None or act.op not in fusable or (act.op == "prelu" and "scale" in epilogue(conv)):
            continue
        attrs = {**conv.attrs, "epilogue": (*epilogue(conv), act.op)}
        if "alpha" in act.attrs:
            attrs["alpha"] = float(act.attrs["alpha"])
        params = conv.params
        if act.op == "prelu":
            channels = graph.types[conv.output].channels
            params = {**params, "prelu_slope": np.broadcast_to(act.params["slope"], (channels,)).copy()}
        return merge(graph, conv, act, replace(conv, output=act.output, attrs=attrs, params=params))
    return None


def fuse_activation(graph: Graph) -> tuple[Graph, int]:
    return exhaust(graph, functools.partial(_fuse_one, fusable=EPILOGUE_ACTIVATIONS))


def fuse_output_derivative_activation(graph: Graph) -> tuple[Graph, int]:
    return exhaust(graph, functools.partial(_fuse_one, fusable=OUTPUT_DERIVATIVE_ACTIVATIONS))
