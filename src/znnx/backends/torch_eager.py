"""Node-by-node execution with PyTorch operators on any torch device.

The first backend: correct for every IR op and as fast as PyTorch's eager kernels. Parameters are
moved to the device once; values are freed after their last use. Asymmetric padding and ceil-mode
pooling are expressed as an explicit pad so PyTorch's own conventions never leak into the result.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from znnx.errors import UnsupportedError
from znnx.ir.graph import Graph, Node, TensorType
from znnx.ir.ops import (
    ACTIVATIONS,
    BINARY,
    center_crop_begin,
    conv_sources,
    fragment_window,
    pool_dilation,
    pool_output,
)
from znnx.kernels.epilogue import Kernel, Scale, activation, prelu, with_epilogue

Tensor = torch.Tensor
OPS = frozenset({*ACTIVATIONS, *BINARY, "prelu", "softmax", "concat", "identity", "max_pool", "avg_pool", "conv",
                 "conv_transpose", "center_crop", "crop", "pad", "upsample", "batchnorm", "scale", "fragment",
                 "defragment"})


def _torch_pad(pads: Sequence[int]) -> list[int]:
    """IR pads (begin d,h,w, end d,h,w) in torch's last-axis-first order."""
    return [pads[2], pads[5], pads[1], pads[4], pads[0], pads[3]]


def _symmetric(pads: Sequence[int]) -> bool:
    return tuple(pads[:3]) == tuple(pads[3:])


def _channels_last(x: Tensor) -> bool:
    return x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last_3d)


def fragment(x: Tensor, block: Sequence[int]) -> Tensor:
    """ir/ops.py's `fragment`: (N, C, D, H, W) split into the prod(block) offsets of the block grid,
    offset-major; a channels-last input gives a channels-last output."""
    n, c, *sizes = x.shape
    (wd, wh, ww), (bd, bh, bw) = [s // b for s, b in zip(sizes, block)], block
    if _channels_last(x):
        parts = x.permute(0, 2, 3, 4, 1).reshape(n, wd, bd, wh, bh, ww, bw, c).permute(2, 4, 6, 0, 1, 3, 5, 7)
        return parts.reshape(-1, wd, wh, ww, c).permute(0, 4, 1, 2, 3)
    parts = x.reshape(n, c, wd, bd, wh, bh, ww, bw).permute(3, 5, 7, 0, 1, 2, 4, 6)
    return parts.reshape(-1, c, wd, wh, ww)


def defragment(x: Tensor, block: Sequence[int]) -> Tensor:
    """ir/ops.py's `defragment`: the fragments interleaved back (the inverse of `fragment`); keeps a
    channels-last layout."""
    (bd, bh, bw), (wd, wh, ww), c = block, x.shape[2:], x.shape[1]
    n = x.shape[0] // (bd * bh * bw)
    if _channels_last(x):
        parts = x.permute(0, 2, 3, 4, 1).reshape(bd, bh, bw, n, wd, wh, ww, c).permute(3, 4, 0, 5, 1, 6, 2, 7)
        return parts.reshape(n, wd * bd, wh * bh, ww * bw, c).permute(0, 4, 1, 2, 3)
    parts = x.reshape(bd, bh, bw, n, c, wd, wh, ww).permute(3, 4, 5, 0, 6, 1, 7, 2)
    return parts.reshape(n, c, wd * bd, wh * bh, ww * bw)


class Builder:
    """Kernels of single nodes on `device`, parameters held in `dtype`."""

    def __init__(self, graph: Graph, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.graph = graph
        self.device = device
        self.dtype = dtype

    def param(self, node: Node, key: str, channel_view: bool = False) -> Tensor | None:
        if key not in node.params:
            return None
        tensor = torch.from_numpy(node.params[key].copy()).to(self.device, self.dtype)
        return tensor.reshape(1, -1, 1, 1, 1) if channel_view else tensor

    def need(self, node: Node, key: str, channel_view: bool = False) -> Tensor:
        tensor = self.param(node, key, channel_view)
        assert tensor is not None, f"verify() guarantees parameter {key!r} of node {node.name!r}"
        return tensor

    def in_type(self, node: Node, index: int = 0) -> TensorType:
        return self.graph.types[node.inputs[index]]

    def scale_of(self, node: Node) -> Scale | None:
        """A conv's fused "scale" step's gamma and beta as channel views, None without one."""
        if "scale" not in node.attrs.get("epilogue", ()):
            return None
        return self.need(node, "scale_gamma", channel_view=True), self.need(node, "scale_beta", channel_view=True)

    def slope_of(self, node: Node) -> Tensor | None:
        """A conv's fused PReLU slopes ((C,)), None without one."""
        return self.need(node, "prelu_slope") if "prelu" in node.attrs.get("epilogue", ()) else None

    def conv(self, node: Node) -> Kernel:
        w, b = self.need(node, "weight"), self.param(node, "bias")
        a = node.attrs
        pads = a["pads"]
        if _symmetric(pads):
            return with_epilogue(node, lambda x: F.conv3d(x[0], w, b, a["stride"], pads[:3], a["dilation"],
                                                          a["groups"]), self.scale_of(node), self.slope_of(node))
        explicit = _torch_pad(pads)
        return with_epilogue(node, lambda x: F.conv3d(F.pad(x[0], explicit), w, b, a["stride"], 0, a["dilation"],
                                                      a["groups"]), self.scale_of(node), self.slope_of(node))

    def conv_transpose(self, node: Node) -> Kernel:
        """A transposed conv; trainable parameters are reshaped per call, not at build (as in
        `scale`), so a builder over live tensors (training/module.py) differentiates them."""
        w, b = self.need(node, "weight"), self.param(node, "bias")
        a = node.attrs
        out = self.graph.types[node.output].spatial
        pads = a["pads"]
        full_size = [(i - 1) * s + d * (k - 1) + 1 for i, s, d, k in zip(self.in_type(node).spatial, a["stride"],
                                                                        a["dilation"], a["kernel"])]
        if not any(pads) and tuple(full_size) == tuple(out):
            return with_epilogue(node, lambda x: F.conv_transpose3d(x[0], w, b, a["stride"], 0, 0, a["groups"],
                                                                    a["dilation"]),
                                 self.scale_of(node), self.slope_of(node))

        def run(x: Sequence[Tensor]) -> Tensor:
            full = F.conv_transpose3d(x[0], w, None, a["stride"], 0, 0, a["groups"], a["dilation"])
            window = full[..., pads[0]:pads[0] + out[0], pads[1]:pads[1] + out[1], pads[2]:pads[2] + out[2]]
            short = [o - s for o, s in zip(out, window.shape[2:])]
            if any(short):
                window = F.pad(window, [0, short[2], 0, short[1], 0, short[0]])
            return window if b is None else window + b.reshape(1, -1, 1, 1, 1)

        return with_epilogue(node, run, self.scale_of(node), self.slope_of(node))

    def pool(self, node: Node) -> Kernel:
        a = node.attrs
        if node.op == "avg_pool" and self.device.type == "cpu" and self.dtype != torch.float32:
            fp32 = Builder(self.graph, self.device).pool(node)  # PyTorch's CPU avg_pool3d is fp32 / fp64 only
            return lambda x: fp32([x[0].float()]).to(self.dtype)
        in_sp = self.in_type(node).spatial
        kernel, stride, pads, dilation = a["kernel"], a["stride"], a["pads"], pool_dilation(node)
        out = pool_output(in_sp, kernel, stride, pads, a["ceil_mode"], dilation)
        span = [(kernel[i] - 1) * dilation[i] + 1 for i in range(3)]
        extra = [max(0, (out[i] - 1) * stride[i] + span[i] - (in_sp[i] + pads[i] + pads[3 + i])) for i in range(3)]
        full = _torch_pad([*pads[:3], *(pads[3 + i] + extra[i] for i in range(3))])
        if node.op == "max_pool":
            if not any(full):
                return lambda x: F.max_pool3d(x[0], kernel, stride, dilation=dilation)
            return lambda x: F.max_pool3d(F.pad(x[0], full, value=-torch.inf), kernel, stride, dilation=dilation)
        average = self._average(kernel, stride, dilation)
        if not any(full):
            return lambda x: average(x[0])
        counted = torch.ones((1, 1, *in_sp), device=self.device, dtype=self.dtype)
        counted = F.pad(counted, _torch_pad(pads), value=1.0 if a["count_include_pad"] else 0.0)
        counted = F.pad(counted, _torch_pad([0, 0, 0, *extra]))
        divisor = average(counted)
        return lambda x: average(F.pad(x[0], full)) / divisor

    def _average(self, kernel: Sequence[int], stride: Sequence[int],
                 dilation: Sequence[int]) -> Callable[[Tensor], Tensor]:
        """Unpadded window means; with dilation (which avg_pool3d lacks) a depthwise conv of 1/size."""
        if tuple(dilation) == (1, 1, 1):
            return lambda x: F.avg_pool3d(x, list(kernel), list(stride))
        ones = torch.full((1, 1, *kernel), 1.0 / math.prod(kernel), device=self.device, dtype=self.dtype)
        return lambda x: F.conv3d(x, ones.expand(x.shape[1], 1, *kernel), None, stride, 0, dilation, x.shape[1])

    def fragment(self, node: Node) -> Kernel:
        block, window = node.attrs["block"], fragment_window(node)
        if window == (1, 1, 1):
            return lambda x: fragment(x[0], block)
        return lambda x: fragment(F.max_pool3d(x[0], window, 1), block)

    def binary(self, node: Node) -> Kernel:
        fns: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"add": torch.add, "mul": torch.mul, "div": torch.div,
                                                              "max": torch.maximum}
        fn = fns[node.op]
        constant = self.param(node, "constant", channel_view=True)
        if constant is None:
            return lambda x: fn(x[0], x[1])
        return lambda x: fn(x[0], constant)

    def center_crop(self, node: Node) -> Kernel:
        target = self.graph.types[node.output].spatial
        d, h, w = center_crop_begin(self.in_type(node).spatial, target)
        return lambda x: x[0][..., d:d + target[0], h:h + target[1], w:w + target[2]]

    def crop(self, node: Node) -> Kernel:
        (d, h, w), size = node.attrs["begin"], self.graph.types[node.output].spatial
        return lambda x: x[0][..., d:d + size[0], h:h + size[1], w:w + size[2]]

    def pad(self, node: Node) -> Kernel:
        pads, mode = _torch_pad(node.attrs["pads"]), node.attrs["mode"]
        if mode == "constant":
            value = float(node.attrs["value"])
            return lambda x: F.pad(x[0], pads, value=value)
        return lambda x: F.pad(x[0], pads, mode=mode)

    def upsample(self, node: Node) -> Kernel:
        a = node.attrs
        scales = list(a["scales"])
        if a["mode"] == "nearest":
            return lambda x: F.interpolate(x[0], scale_factor=scales, mode="nearest")
        return lambda x: F.interpolate(x[0], scale_factor=scales, mode="trilinear", align_corners=a["align_corners"])

    def batchnorm(self, node: Node) -> Kernel:
        mean, var, gamma, beta = (self.param(node, k) for k in ("mean", "var", "gamma", "beta"))
        eps = float(node.attrs["eps"])
        return lambda x: F.batch_norm(x[0], mean, var, gamma, beta, False, 0.0, eps)

    def scale(self, node: Node) -> Kernel:
        gamma, beta = self.need(node, "gamma"), self.param(node, "beta")
        if beta is None:
            return lambda x: x[0] * gamma.reshape(1, -1, 1, 1, 1)
        return lambda x: torch.addcmul(beta.reshape(1, -1, 1, 1, 1), x[0], gamma.reshape(1, -1, 1, 1, 1))

    def kernel(self, node: Node) -> Kernel:
        if node.op not in OPS:
            raise UnsupportedError(f"torch_eager backend: op {node.op!r} of node {node.name!r} has no kernel here; "
                                   f"it runs {sorted(OPS)}")
        a = node.attrs
        if node.op in ACTIVATIONS:
            fn = activation(node.op, float(a.get("alpha", 0.0)))
            return lambda x: fn(x[0])
        if node.op == "prelu":
            slope = prelu(self.need(node, "slope"))
            return lambda x: slope(x[0])
        simple: dict[str, Kernel] = {
            "softmax": lambda x: torch.softmax(x[0], dim=1),
            "concat": lambda x: torch.cat(list(x), dim=1),
            "identity": lambda x: x[0],
            "defragment": lambda x: defragment(x[0], a["block"]),
        }
        if node.op in simple:
            return simple[node.op]
        if node.op in ("max_pool", "avg_pool"):
            return self.pool(node)
        if node.op == "fragment":
            return self.fragment(node)
        if node.op in BINARY:
            return self.binary(node)
        builder: Callable[[Node], Kernel] = getattr(self, node.op)
        return joined(node, builder(node))


def joined(node: Node, kernel: Kernel) -> Kernel:
    """`kernel` of a conv whose input is its sources (a fused concat) called with them joined first."""
    sources = conv_sources(node) if node.op == "conv" else 1
    if sources == 1:
        return kernel
    return lambda x: kernel([torch.cat(list(x[:sources]), dim=1), *x[sources:]])


def program(graph: Graph, builder: Builder) -> Callable[[Sequence[Tensor]], list[Tensor]]:
    """The graph's nodes built by `builder`, run in order; each value is freed after its last reader."""
    steps = [(node, builder.kernel(node)) for node in graph.nodes]
    last_use = {value: i for i, node in enumerate(graph.nodes) for value in node.inputs}
    keep = set(graph.outputs)

    def execute(inputs: Sequence[Tensor]) -> list[Tensor]:
        values = dict(zip(graph.inputs, inputs))
        for i, (node, fn) in enumerate(steps):
            values[node.output] = fn([values[v] for v in node.inputs])
            for value in set(node.inputs):
                if last_use[value] == i and value not in keep:
                    del values[value]
        return [values[name] for name in graph.outputs]

    return execute


def build(graph: Graph, device: torch.device) -> Callable[[Sequence[Tensor]], list[Tensor]]:
    """A function from input tensors (graph input order, each (N, C, D, H, W)) to output tensors."""
    execute = program(graph, Builder(graph, device))

    def run(inputs: Sequence[Tensor]) -> list[Tensor]:
        with _fp32(device):
            return execute(inputs)

    return run


def _fp32(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """cuDNN convolutions default to TF32 (about 1e-4 relative error); znnx's fp32 means fp32.

    Scoped to znnx's own calls: the user's global cuDNN settings stay as they are. CUDA only: on
    the CPU the flags mean nothing, and torch.compile cannot trace through them.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                       allow_tf32=False)
