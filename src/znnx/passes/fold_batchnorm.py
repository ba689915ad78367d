"""Fold BatchNorm and Scale into the conv (or conv_transpose) that produces their input.

Before: x -> conv(W, b) -> c -> batchnorm(mean, var, eps, gamma, beta) -> y
After:  x -> conv(W', b') -> y
with s = gamma / sqrt(var + eps), t = beta - mean * s (a Scale is s = gamma, t = beta) and
W'[o] = W[o] * s[o], b' = b * s + t for output channel o.
Preconditions: the conv's output has no other reader, is not a graph output, and the conv has no
fused epilogue yet. A BatchNorm that cannot be folded becomes the equivalent `scale` node.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from znnx.ir.graph import Graph, Node
from znnx.passes.rewrite import consumers, exhaust, merge, rebuild, sole_consumer

Array = np.ndarray


def batchnorm_affine(mean: Array, var: Array, eps: float, gamma: Array, beta: Array) -> tuple[Array, Array]:
    """Inference BatchNorm as a per-channel affine map x * s + t (computed in float64)."""
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return s, beta.astype(np.float64) - mean.astype(np.float64) * s


def fold_affine(weight: Array, bias: Array | None, s: Array, t: Array, transposed: bool,
                groups: int) -> tuple[Array, Array]:
    """Conv weights and bias that produce conv(x) * s + t per output channel."""
    w = weight.astype(np.float64)
    if transposed:
        c_in, c_out_g = w.shape[:2]
        per_group = s.reshape(groups, 1, c_out_g)
        shape = (groups, c_in // groups, c_out_g, *w.shape[2:])
        w = (w.reshape(shape) * per_group.reshape(groups, 1, c_out_g, 1, 1, 1)).reshape(w.shape)
    else:
        w = w * s.reshape(-1, 1, 1, 1, 1)
    b = np.zeros_like(s) if bias is None else bias.astype(np.float64)
    return w.astype(np.float32), (b * s + t).astype(np.float32)


def _affine(node: Node) -> tuple[Array, Array]:
    p = node.params
    if node.op == "batchnorm":
        return batchnorm_affine(p["mean"], p["var"], float(node.attrs["eps"]), p["gamma"], p["beta"])
    gamma = p["gamma"].astype(np.float64)
    return gamma, p["beta"].astype(np.float64) if "beta" in p else np.zeros_like(gamma)


def _fold_one(graph: Graph) -> Graph | None:
    users = consumers(graph)
    for conv in graph.nodes:
        if conv.op not in ("conv", "conv_transpose") or conv.attrs.get("epilogue"):
            continue
        norm = sole_consumer(graph, users, conv.output)
        if norm is None or norm.op not in ("batchnorm", "scale"):
            continue
        s, t = _affine(norm)
        weight, bias = fold_affine(conv.params["weight"], conv.params.get("bias"), s, t,
                                   conv.op == "conv_transpose", int(conv.attrs["groups"]))
        folded = replace(conv, output=norm.output, params={"weight": weight, "bias": bias})
        return merge(graph, conv, norm, folded)
    return None


def fold_batchnorm(graph: Graph) -> tuple[Graph, int]:
    graph, count = exhaust(graph, _fold_one)
    nodes = []
    for node in graph.nodes:
        if node.op == "batchnorm":
            s, t = _affine(node)
            node = Node(node.name, "scale", node.inputs, node.output, {}, {"gamma": s, "beta": t})
            count += 1
        nodes.append(node)
    return rebuild(graph, nodes), count
