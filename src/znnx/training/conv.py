"""Convolutions for training: forward, backward-data and backward-weights, each by its own algorithm.

A conv of the training graph (bias, residual add and activation fused, as the inference passes fuse
them) is one `torch.autograd.Function`:
- forward: oneDNN's direct convolution, or znnx's Winograd / FFT kernels with the epilogue fused
  into their output transform;
- backward-data: the gradient of the input is the convolution of the output's gradient with the
  kernel flipped and its channels swapped, padded by k - 1 - p (stride 1, no dilation, one group);
  that is a forward convolution, so Winograd and FFT run it too; other convs run oneDNN's own
  backward;
- backward-weights: oneDNN's (direct), or Winograd (kernels/winograd.py `weight_gradient`: the
  forward input transform, the output gradient transformed by A, one GEMM per point summed over the
  tiles, G^T . G back to the kernel) for the convs Winograd runs forward; the bias gradient is a sum.
The activation's derivative comes from the saved output (relu: y > 0; sigmoid: y(1 - y); tanh:
1 - y^2; elu: y + alpha below 0; leaky relu: alpha below 0), so no pre-activation tensor is kept.

Which algorithm runs is measured (`choose`): the forward convs and the backward-data convs (as the
convolutions of `data_graph`) go through the inference autotuner, so they are timed on the real
shape, checked against direct within each algorithm's tolerance and cached like any other layer;
the weight gradients are timed here (median of 3 after a warm-up, same tolerances, not cached).
The kernels are rebuilt every call from the current weights (the Winograd / FFT weight transforms
cost a fraction of a percent of a layer).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from znnx.ir.graph import Graph, Node, TensorType
from znnx.ir.ops import conv_spatial, epilogue
from znnx.kernels.epilogue import epilogue_step
from znnx.plan.algorithm import DIRECT, Algorithm
from znnx.plan.autotune import Forced, LayerChoice

Tensor = torch.Tensor


@dataclass(frozen=True)
class ConvSpec:
    """One conv node's geometry and fused epilogue; `pads` symmetric (begin d, h, w)."""

    stride: tuple[int, int, int]
    pads: tuple[int, int, int]
    dilation: tuple[int, int, int]
    groups: int
    steps: tuple[str, ...]
    alpha: float

    @classmethod
    def of(cls, node: Node) -> ConvSpec:
        a = node.attrs
        return cls(tuple(a["stride"]), tuple(a["pads"][:3]), tuple(a["dilation"]), int(a["groups"]),
                   epilogue(node), float(a.get("alpha", 0.0)))

    @property
    def activation(self) -> str | None:
        return next((s for s in self.steps if s != "add"), None)

    def flippable(self, kernel: Sequence[int]) -> bool:
        """Whether the input gradient is a plain forward convolution (see the module docstring)."""
        return (self.stride == (1, 1, 1) and self.dilation == (1, 1, 1) and self.groups == 1
                and all(p <= k - 1 for p, k in zip(self.pads, kernel)))


@dataclass(frozen=True)
class ConvAlgorithms:
    """The algorithm of each pass of one conv."""

    forward: Algorithm = DIRECT
    data: Algorithm = DIRECT
    weight: Algorithm = DIRECT


def _fast(algorithm: Algorithm, weight: Tensor, bias: Tensor | None, pads: Sequence[int], steps: Sequence[str],
          alpha: float, spatial: Sequence[int], stride: Sequence[int]) -> Any:
    from znnx.kernels import fft, implicit, scatter, winograd

    if algorithm.kind == "implicit":
        return implicit.ImplicitConv(weight, bias, (*pads, *pads), steps, alpha, spatial, stride=stride)
    if algorithm.kind == "scatter":
        out = conv_spatial(spatial, weight.shape[2:], (*pads, *pads))
        return scatter.forward_conv(weight, bias, (*pads, *pads), out, steps, alpha)
    if algorithm.kind == "winograd":
        return winograd.WinogradConv(weight, bias, (*pads, *pads), algorithm.tile, steps, alpha, spatial,
                                     fast_transform=True)
    return fft.FFTConv(weight, bias, (*pads, *pads), algorithm.tile, steps, alpha, spatial)


def forward(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, spec: ConvSpec,
            algorithm: Algorithm) -> Tensor:
    """The conv with its epilogue, no autograd."""
    if algorithm.kind != "direct":
        conv = _fast(algorithm, weight, bias, spec.pads, spec.steps, spec.alpha, x.shape[2:], spec.stride)
        return conv(x, residual=residual)
    y = onednn(x, weight, bias, spec.pads, spec.stride, spec.dilation, spec.groups)
    inputs = [x] if residual is None else [x, residual]
    for step in spec.steps:
        y = epilogue_step(step, spec.alpha, inplace=True)(y, inputs)
    return y


def onednn(x: Tensor, weight: Tensor, bias: Tensor | None, pads: Sequence[int], stride: Sequence[int] = (1, 1, 1),
           dilation: Sequence[int] = (1, 1, 1), groups: int = 1) -> Tensor:
    """oneDNN's convolution, asked for by name: F.conv3d sends float32 3D convs of few channels to
    PyTorch's own im2col kernel (8 channels at 32^3: 6.6 ms against oneDNN's 0.84; 16: 6x)."""
    result: Tensor = torch.ops.aten.mkldnn_convolution(x.contiguous(memory_format=torch.channels_last_3d),
                                                       weight, bias, list(pads), list(stride), list(dilation),
                                                       groups)
    return result


def flipped(weight: Tensor) -> Tensor:
    """The kernel of the input gradient: channels swapped, every spatial axis reversed."""
    return weight.flip(2, 3, 4).transpose(0, 1)


def data_pads(spec: ConvSpec, kernel: Sequence[int]) -> tuple[int, int, int]:
    return tuple(k - 1 - p for k, p in zip(kernel, spec.pads))  # type: ignore[return-value]


def _backward(g: Tensor, x: Tensor, weight: Tensor, spec: ConvSpec, mask: list[bool]) -> tuple[Any, ...]:
    result: tuple[Any, ...] = torch.ops.aten.convolution_backward(
        g, x, weight, None, list(spec.stride), list(spec.pads), list(spec.dilation), False, [0, 0, 0], spec.groups,
        mask)
    return result


def data_gradient(g: Tensor, x: Tensor, weight: Tensor, spec: ConvSpec, algorithm: Algorithm) -> Tensor:
    kernel = weight.shape[2:]
    if algorithm.kind == "direct":
        if spec.flippable(kernel):
            return onednn(g, flipped(weight).contiguous(memory_format=torch.channels_last_3d), None,
                          data_pads(spec, kernel))
        return _backward(g, x, weight, spec, [True, False, False])[0]
    conv = _fast(algorithm, flipped(weight).contiguous(), None, data_pads(spec, kernel), (), 0.0, g.shape[2:],
                 (1, 1, 1))
    return conv(g)


def weight_gradient(g: Tensor, x: Tensor, weight: Tensor, spec: ConvSpec, algorithm: Algorithm = DIRECT) -> Tensor:
    from znnx.kernels import fft, winograd

    if algorithm.kind == "winograd":
        return winograd.weight_gradient(x, g, weight.shape[2:], spec.pads, algorithm.tile)
    if algorithm.kind == "fft":
        return fft.weight_gradient(x, g, weight.shape[2:], spec.pads, algorithm.tile)
    return _backward(g, x, weight, spec, [False, True, False])[1]


def bias_gradient(g: Tensor) -> Tensor:
    """The per-channel sum of a channels-last gradient as one matrix-vector product (4.5x faster
    than PyTorch's reduction over the (N, D, H, W) axes on this CPU)."""
    rows = g.permute(0, 2, 3, 4, 1).reshape(-1, g.shape[1])
    return torch.mv(rows.t(), torch.ones(rows.shape[0], dtype=g.dtype))


def activation_gradient(g: Tensor, y: Tensor, activation: str | None, alpha: float) -> Tensor:
    """The gradient before the activation, from the gradient after it and the activation's output."""
    if activation is None:
        return g
    if activation == "relu":
        return g * (y > 0)
    if activation == "leaky_relu":
        return torch.where(y > 0, g, g * alpha)
    if activation == "elu":
        return torch.where(y > 0, g, g * (y + alpha))
    if activation == "sigmoid":
        return g * y * (1 - y)
    return g * (1 - y * y)


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None,
                spec: ConvSpec, algorithms: ConvAlgorithms) -> Tensor:
        y = forward(x, weight, bias, residual, spec, algorithms.forward)
        ctx.spec, ctx.algorithms = spec, algorithms
        ctx.has_bias, ctx.has_residual = bias is not None, residual is not None
        ctx.save_for_backward(x, weight, y if spec.activation else None)
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, y = ctx.saved_tensors
        spec: ConvSpec = ctx.spec
        g = activation_gradient(g, y, spec.activation, spec.alpha).contiguous(memory_format=torch.channels_last_3d)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        algorithms: ConvAlgorithms = ctx.algorithms
        if need_x and need_w and algorithms.data == algorithms.weight == DIRECT and \
                not spec.flippable(weight.shape[2:]):
            gx, gw, _ = _backward(g, x, weight, spec, [True, True, False])
        else:
            gx = data_gradient(g, x, weight, spec, algorithms.data) if need_x else None
            gw = weight_gradient(g, x, weight, spec, algorithms.weight) if need_w else None
        gb = bias_gradient(g) if ctx.has_bias and ctx.needs_input_grad[2] else None
        gr = g if ctx.has_residual else None
        return gx, gw, gb, gr, None, None


def conv(x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None, spec: ConvSpec,
         algorithms: ConvAlgorithms) -> Tensor:
    """The differentiable conv of the training graph."""
    result: Tensor = _Conv.apply(x, weight, bias, residual, spec, algorithms)
    return result


def data_graph(graph: Graph) -> Graph:
    """One conv per conv of `graph` whose input gradient is a forward convolution: the output's
    gradient (the conv's output type) convolved with the flipped kernel, as a graph the inference
    autotuner can measure. Nodes keep their conv's name; the weights are the flipped ones."""
    nodes, types, inputs = [], {}, []
    for node in graph.nodes:
        if node.op != "conv":
            continue
        spec, kernel = ConvSpec.of(node), tuple(node.attrs["kernel"])
        if not spec.flippable(kernel) or tuple(node.attrs["pads"][:3]) != tuple(node.attrs["pads"][3:]):
            continue
        weight = np.ascontiguousarray(np.flip(node.params["weight"], (2, 3, 4)).swapaxes(0, 1))
        source, target = f"{node.name}:grad_out", f"{node.name}:grad_in"
        pads = data_pads(spec, kernel)
        nodes.append(Node(node.name, "conv", (source,), target,
                          {"kernel": kernel, "stride": (1, 1, 1), "dilation": (1, 1, 1), "groups": 1,
                           "pads": (*pads, *pads)}, {"weight": weight}))
        out, x = graph.types[node.output], graph.types[node.inputs[0]]
        types[source] = TensorType(out.channels, out.spatial)
        types[target] = TensorType(x.channels, x.spatial)
        inputs.append(source)
    return Graph(tuple(nodes), tuple(inputs), tuple(n.output for n in nodes), types, graph.spatial_rank,
                 f"{graph.name}:data-gradients")


@dataclass(frozen=True)
class TrainChoice:
    """What `choose` measured: the forward, backward-data and backward-weights choices of every conv."""

    forward: tuple[LayerChoice, ...]
    data: tuple[LayerChoice, ...]
    weight: tuple[LayerChoice, ...] = ()

    def algorithms(self) -> dict[str, ConvAlgorithms]:
        data = {c.node: c.algorithm for c in self.data}
        weight = {c.node: c.algorithm for c in self.weight}
        return {c.node: ConvAlgorithms(c.algorithm, data.get(c.node, DIRECT), weight.get(c.node, DIRECT))
                for c in self.forward}

    def table(self) -> str:
        """One line per conv: the algorithm of each pass and the measured times."""
        data = {c.node: c for c in self.data}
        weight = {c.node: c for c in self.weight}

        def spell(choice: LayerChoice | None) -> str:
            if choice is None:
                return "direct (oneDNN backward)"
            times = ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in choice.seconds)
            return choice.algorithm.name + (f" ({times})" if times else "")

        if not self.forward:
            return "every op PyTorch's own (cuDNN / oneDNN convolutions), for the device or precision asked"
        return "\n".join(f"{c.node}: forward {spell(c)}; input gradient {spell(data.get(c.node))}; "
                         f"weight gradient {spell(weight.get(c.node))}" for c in self.forward)


def choose(graph: Graph, batch: int, forced: Forced = None, refresh: bool = False) -> TrainChoice:
    """Each conv's forward and backward-data algorithms for `batch` patches of `graph`, measured by
    the CPU backend's autotuner (`forced` as for `compile`: one name for every conv, or per conv)."""
    from znnx.backends import cpu
    from znnx.plan.precision import PRECISIONS

    precision, device = PRECISIONS["fp32"], torch.device("cpu")
    backward = data_graph(graph)
    data_forced: Forced = forced
    if isinstance(forced, Mapping):
        data_forced = {k: v for k, v in forced.items() if any(n.name == k for n in backward.nodes)}
    forward = cpu.choose_algorithms(graph, batch, device, precision, forced, refresh)
    return TrainChoice(forward, cpu.choose_algorithms(backward, batch, device, precision, data_forced, refresh),
                       weight_choices(graph, batch, forward))


def _median_seconds(run: Any, reps: int = 3) -> float:
    run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure_weight(name: str, spec: ConvSpec, x: Tensor, g: Tensor, weight: Tensor,
                    candidates: Sequence[Algorithm]) -> LayerChoice:
    """Direct and each of `candidates` (Winograd F(2,r), F(4,r), FFT) as weight gradients of one conv,
    timed; the fastest within its tolerance of direct."""
    reference = weight_gradient(g, x, weight, spec)
    scale = float(reference.abs().max()) or 1.0
    seconds = {"direct": _median_seconds(lambda: weight_gradient(g, x, weight, spec))}
    errors = {"direct": 0.0}
    for algorithm in candidates:
        got = weight_gradient(g, x, weight, spec, algorithm)
        errors[algorithm.name] = float((got - reference).abs().max()) / scale
        if errors[algorithm.name] <= algorithm.tolerance:
            seconds[algorithm.name] = _median_seconds(lambda a=algorithm: weight_gradient(g, x, weight, spec, a))
    best = min(seconds, key=lambda n: seconds[n])
    chosen = next((a for a in candidates if a.name == best), DIRECT)
    return LayerChoice(name, chosen, tuple(seconds.items()), tuple(errors.items()), "measured")


def weight_choices(graph: Graph, batch: int, forward: Sequence[LayerChoice]) -> tuple[LayerChoice, ...]:
    """The weight-gradient algorithm of each conv: Winograd F(2,r) / F(4,r) where Winograd takes the
    kernel, FFT (the backend's tile sizes) where it does not, timed against oneDNN's backward (narrow
    layers too: at 8 channels Winograd's weight gradient measured 4.7x oneDNN's), kept within the
    algorithm's tolerance of direct; a conv whose forward pass is forced gets a forced weight gradient
    (Winograd or FFT where that is forced and applies)."""
    from znnx.backends import cpu
    from znnx.kernels import fft, winograd
    from znnx.plan import algorithm as algorithms

    nodes = {n.name: n for n in graph.nodes}
    choices = []
    generator = torch.Generator().manual_seed(0)
    for choice in forward:
        node = nodes[choice.node]
        spec, a = ConvSpec.of(node), node.attrs
        shape, symmetric = (a["kernel"], a["stride"], a["dilation"], a["groups"]), a["pads"][:3] == a["pads"][3:]
        takes = {"winograd": symmetric and winograd.applicable(*shape), "fft": symmetric and fft.applicable(*shape)}
        if choice.source == "forced":
            forced = choice.algorithm if takes.get(choice.algorithm.kind, False) else DIRECT
            choices.append(LayerChoice(node.name, forced, source="forced"))
            continue
        candidates: tuple[Algorithm, ...] = ()
        if takes["winograd"]:
            candidates = (algorithms.winograd(2), algorithms.winograd(4))
        elif takes["fft"]:
            candidates = tuple(algorithms.fft(size) for size in cpu.fft_sizes(a["kernel"]))
        if not candidates:
            choices.append(LayerChoice(node.name, DIRECT))
            continue
        x_type, y_type = graph.types[node.inputs[0]], graph.types[node.output]
        x = torch.randn((batch, x_type.channels, *x_type.spatial), generator=generator).contiguous(
            memory_format=torch.channels_last_3d)
        g = torch.randn((batch, y_type.channels, *y_type.spatial), generator=generator).contiguous(
            memory_format=torch.channels_last_3d)
        choices.append(_measure_weight(node.name, spec, x, g, torch.from_numpy(np.array(node.params["weight"])),
                                       candidates))
    return tuple(choices)
