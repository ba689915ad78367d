"""Run a stride-1 transposed convolution as the convolution it is.

Before: x -> conv_transpose(w, stride 1, pads p, dilation d) -> y
After:  x -> conv(w', pads d * (k - 1) - p) -> y
        w'[o, i] = w[i, o] flipped along every spatial axis (per group)

With stride 1 a transposed convolution scatters each input voxel through the kernel, which is the
convolution of the input with the flipped kernel, input and output channels swapped, padded so the
output keeps its size. As a convolution it gets the fast kernels (Winograd, implicit GEMM) and
oneDNN's convolution, where oneDNN's stride-1 deconvolution ran at 58 GFLOP/s (PZnet's `score`
layer, 28 -> 3 channels, (1,5,5), 48 ms of a 440 ms net). Preconditions: stride 1, no output
padding, pads at most d * (k - 1) on every side (a larger pad crops the output: not a conv's pad).
The epilogue (bias, residual add, scale, activation) carries over unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from znnx.ir.graph import Graph, Node
from znnx.passes.rewrite import rebuild


def _reach(node: Node) -> list[int]:
    """How far the (dilated) kernel reaches beyond its first tap, per axis: d * (k - 1)."""
    return [d * (k - 1) for d, k in zip(node.attrs["dilation"], node.attrs["kernel"])]


def _convertible(node: Node) -> bool:
    if node.op != "conv_transpose":
        return False
    a, reach = node.attrs, _reach(node)
    return (tuple(a["stride"]) == (1, 1, 1) and not any(a["output_padding"])
            and all(p <= reach[i % 3] for i, p in enumerate(a["pads"])))


def _as_conv(node: Node) -> Node:
    a = node.attrs
    groups = int(a["groups"])
    weight = np.asarray(node.params["weight"])
    c_in, per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    grouped = weight.reshape(groups, c_in // groups, per_group, *kernel).swapaxes(1, 2)
    flipped = np.ascontiguousarray(grouped.reshape(groups * per_group, c_in // groups, *kernel)[..., ::-1, ::-1, ::-1])
    reach = _reach(node)
    pads = tuple(reach[i % 3] - int(p) for i, p in enumerate(a["pads"]))
    attrs = {key: value for key, value in a.items() if key != "output_padding"}
    return replace(node, op="conv", attrs={**attrs, "pads": pads}, params={**node.params, "weight": flipped})


def transposed_as_conv(graph: Graph) -> tuple[Graph, int]:
    count = sum(_convertible(node) for node in graph.nodes)
    if not count:
        return graph, 0
    return rebuild(graph, [_as_conv(node) if _convertible(node) else node for node in graph.nodes]), count
