"""Fused CPU execution: oneDNN convolutions with prepacked weights, channels-last throughout.

- Every activation tensor is channels-last (NDHWC); inputs are converted on entry and outputs back
  to NCDHW on exit, nowhere else.
- Convolutions call the fused oneDNN primitives PyTorch exposes (`mkldnn._convolution_pointwise`):
  weights are reordered into oneDNN's blocked layout once, at build time; bias, relu / sigmoid /
  tanh / leaky_relu and the residual add run as oneDNN post-ops. A residual add whose operand dies
  at the conv accumulates in place into that operand's buffer. ELU has no oneDNN post-op in
  PyTorch, so it runs in place on the conv's output while it is still the freshest tensor.
- Activations, scales and binary ops write in place where the memory plan says so.
- Every other op runs through the eager kernels, which accept channels-last tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from znnx.backends import torch_eager
from znnx.ir.graph import Graph, Node
from znnx.ir.ops import ACTIVATIONS, BINARY, epilogue
from znnx.plan.memory import MemoryPlan, Step

Tensor = torch.Tensor
Kernel = Callable[[Sequence[Tensor]], Tensor]
CHANNELS_LAST = torch.channels_last_3d
ONEDNN_UNARY = frozenset({"relu", "sigmoid", "tanh", "leaky_relu"})


def inplace_activation(op: str, alpha: float) -> Callable[[Tensor], Tensor]:
    """The in-place torch function of an IR activation."""
    table: dict[str, Callable[[Tensor], Tensor]] = {
        "relu": torch.relu_,
        "leaky_relu": lambda t: F.leaky_relu_(t, alpha),
        "elu": lambda t: F.elu_(t, alpha),
        "sigmoid": torch.sigmoid_,
        "tanh": torch.tanh_,
    }
    return table[op]


def available() -> bool:
    return bool(torch.backends.mkldnn.is_available())


class _Builder:
    def __init__(self, graph: Graph, plan: MemoryPlan) -> None:
        self.graph = graph
        self.plan = plan
        self.eager = torch_eager.Builder(graph, torch.device("cpu"))

    def param(self, node: Node, key: str) -> Tensor | None:
        return self.eager.param(node, key)

    def conv(self, node: Node, step: Step) -> Kernel:
        a = node.attrs
        pads = tuple(a["pads"])
        if pads[:3] != pads[3:] or not available():
            return self.eager.kernel(node)
        padding, stride, dilation, groups = list(pads[:3]), list(a["stride"]), list(a["dilation"]), int(a["groups"])
        x = self.graph.types[node.inputs[0]]
        w = torch.ops.mkldnn._reorder_convolution_weight(
            self.eager.need(node, "weight"), padding, stride, dilation, groups, [1, x.channels, *x.spatial])
        b = self.param(node, "bias")
        steps = epilogue(node)
        act = next((s for s in steps if s != "add"), None)
        alpha = float(a.get("alpha", 0.0))
        add_first = bool(steps) and steps[0] == "add"
        fused = act if act in ONEDNN_UNARY and (not add_first or act == "relu") else None
        scalars = [alpha] if fused == "leaky_relu" else []
        later = inplace_activation(act, alpha) if act is not None and fused is None else None
        conv_args = (padding, stride, dilation, groups)

        if "add" not in steps:
            def plain(xs: Sequence[Tensor]) -> Tensor:
                y = torch.ops.mkldnn._convolution_pointwise(xs[0], w, b, *conv_args, fused or "none", scalars, "")
                return y if later is None else later(y)
            return plain

        if add_first and step.inplace == 1:
            def accumulate(xs: Sequence[Tensor]) -> Tensor:
                r = xs[1]
                torch.ops.mkldnn._convolution_pointwise_(r, xs[0], w, b, *conv_args, "add", 1.0, fused, [], "")
                return r if later is None else later(r)
            return accumulate

        if add_first:
            def binary(xs: Sequence[Tensor]) -> Tensor:
                r = xs[1].contiguous(memory_format=CHANNELS_LAST)
                y = torch.ops.mkldnn._convolution_pointwise(xs[0], r, w, b, *conv_args, "add", 1.0, fused, [], "")
                return y if later is None else later(y)
            return binary

        def activate_then_add(xs: Sequence[Tensor]) -> Tensor:
            y = torch.ops.mkldnn._convolution_pointwise(xs[0], w, b, *conv_args, fused or "none", scalars, "")
            y = y if later is None else later(y)
            return xs[1].add_(y) if step.inplace == 1 else y.add_(xs[1])
        return activate_then_add

    def conv_transpose(self, node: Node) -> Kernel:
        a = node.attrs
        pads = tuple(a["pads"])
        if pads[:3] != pads[3:] or not available():
            return self.eager.kernel(node)
        padding, out_pad, stride = list(pads[:3]), list(a["output_padding"]), list(a["stride"])
        dilation, groups = list(a["dilation"]), int(a["groups"])
        x = self.graph.types[node.inputs[0]]
        w = torch.ops.mkldnn._reorder_convolution_transpose_weight(
            self.eager.need(node, "weight"), padding, out_pad, stride, dilation, groups, [1, x.channels, *x.spatial])
        b = self.param(node, "bias")
        alpha = float(a.get("alpha", 0.0))
        actions: list[Callable[[Tensor, Sequence[Tensor]], Tensor]] = [
            (lambda y, xs: y.add_(xs[1])) if s == "add" else (lambda y, xs, f=inplace_activation(s, alpha): f(y))
            for s in epilogue(node)
        ]
        args = (padding, out_pad, stride, dilation, groups)

        def run(xs: Sequence[Tensor]) -> Tensor:
            y = torch.ops.mkldnn._convolution_transpose_pointwise(xs[0], w, b, *args, "none", [], "")
            for action in actions:
                y = action(y, xs)
            return y

        return run

    def elementwise(self, node: Node, step: Step) -> Kernel:
        k = step.inplace
        if node.op in ACTIVATIONS:
            fn = inplace_activation(node.op, float(node.attrs.get("alpha", 0.0)))
            return lambda xs: fn(xs[0])
        if node.op == "scale":
            gamma = self.eager.need(node, "gamma", channel_view=True)
            beta = self.eager.param(node, "beta", channel_view=True)
            if beta is None:
                return lambda xs: xs[0].mul_(gamma)
            return lambda xs: torch.addcmul(beta, xs[0], gamma, out=xs[0])
        ops: dict[str, Callable[..., Tensor]] = {"add": torch.add, "mul": torch.mul, "div": torch.div,
                                                 "max": torch.maximum}
        fn = ops[node.op]
        constant = self.eager.param(node, "constant", channel_view=True)
        if constant is not None:
            return lambda xs: fn(xs[0], constant, out=xs[0])
        return lambda xs: fn(xs[0], xs[1], out=xs[k])

    def kernel(self, node: Node, step: Step) -> Kernel:
        if node.op == "conv":
            return self.conv(node, step)
        if node.op == "conv_transpose":
            return self.conv_transpose(node)
        if step.inplace is not None and (node.op in ACTIVATIONS or node.op in BINARY or node.op == "scale"):
            return self.elementwise(node, step)
        return self.eager.kernel(node)


def build(graph: Graph, plan: MemoryPlan) -> Callable[[Sequence[Tensor]], list[Tensor]]:
    """A function from NCDHW input tensors (graph input order) to NCDHW output tensors."""
    builder = _Builder(graph, plan)
    steps = [(node, builder.kernel(node, plan.step(node.name))) for node in graph.nodes]
    last_use = {value: i for i, node in enumerate(graph.nodes) for value in node.inputs}
    keep = set(graph.outputs)
    frees = [[v for v in dict.fromkeys(node.inputs) if last_use[v] == i and v not in keep]
             for i, node in enumerate(graph.nodes)]

    def execute(inputs: Sequence[Tensor]) -> list[Tensor]:
        values = dict(zip(graph.inputs, map(_enter, inputs)))
        for (node, fn), dead in zip(steps, frees):
            values[node.output] = fn([values[v] for v in node.inputs])
            for value in dead:
                del values[value]
        return [values[name].contiguous() for name in graph.outputs]

    return execute


def _enter(tensor: Tensor) -> Tensor:
    """A channels-last copy the net owns (the plan may overwrite it); one channel needs no copy and
    is never written, since channels-last and NCDHW coincide and the plan treats it as the caller's."""
    if tensor.shape[1] == 1:
        return tensor.contiguous(memory_format=CHANNELS_LAST)
    return torch.empty_like(tensor, memory_format=CHANNELS_LAST).copy_(tensor)
