"""Fuse a per-channel scale that follows a conv's (or conv_transpose's) residual add into its epilogue.

Before: x, r -> conv[epilogue = (add,)] -> c -> scale(gamma, beta) -> y
After:  x, r -> conv[epilogue = (add, scale), scale_gamma, scale_beta] -> y

A BatchNorm (or Caffe Scale) after a residual add cannot fold into the conv's weights, as it scales
the residual too: PZnet's U-Net has one per level (conv -> add -> BatchNorm -> Scale -> ELU), which
otherwise runs as a pass over memory of its own, the ELU after it another; its decoder levels add the
skip to a transposed conv's output, then the same (at 18x192x192: 12.4 ms of scale and ELU after a
12 ms up-convolution). Preconditions: the conv's
output has no other reader and is not a graph output; its epilogue has the add and no activation
yet (fuse_activation then appends the ELU after the scale). A scale after a fused scale (Caffe's
BatchNorm layer, then its Scale layer) composes with it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from znnx.ir.graph import Graph
from znnx.ir.ops import EPILOGUE_ACTIVATIONS, epilogue
from znnx.passes.rewrite import consumers, exhaust, merge, sole_consumer


def _fuse_one(graph: Graph) -> Graph | None:
    users = consumers(graph)
    for conv in graph.nodes:
        steps = epilogue(conv)
        if conv.op not in ("conv", "conv_transpose") or "add" not in steps or EPILOGUE_ACTIVATIONS & set(steps):
            continue
        scale = sole_consumer(graph, users, conv.output)
        if scale is None or scale.op != "scale":
            continue
        gamma = scale.params["gamma"]
        beta = scale.params.get("beta", np.zeros_like(gamma))
        if "scale" in steps:  # a second scale (Caffe's BatchNorm, then its Scale): one composed affine map
            gamma, beta = conv.params["scale_gamma"] * gamma, conv.params["scale_beta"] * gamma + beta
        else:
            steps = (*steps, "scale")
        fused = replace(conv, output=scale.output, attrs={**conv.attrs, "epilogue": steps},
                        params={**conv.params, "scale_gamma": gamma, "scale_beta": beta})
        return merge(graph, conv, scale, fused)
    return None


def fuse_scale(graph: Graph) -> tuple[Graph, int]:
    return exhaust(graph, _fuse_one)
