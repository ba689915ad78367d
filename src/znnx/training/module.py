"""A graph as a trainable torch module, and its weights back into a graph.

The training graph is the imported graph with the inference passes that keep every parameter as
it is trained (identities removed, zero pads folded into convs, residual adds and activations fused
into the conv epilogue); BatchNorm stays a layer that trains in training mode (batch statistics,
running statistics updated with `momentum`) and is folded only at export. Convolutions run through
training/conv.py; every other op is PyTorch's own (backends/torch_eager.py), differentiated by
autograd. Parameters are registered in graph order and named `node/param` as in network files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from znnx.backends import torch_eager
from znnx.errors import ModelError
from znnx.frontends.init_rules import RULES, draw
from znnx.ir.graph import Graph, Node
from znnx.ir.ops import OUTPUT_DERIVATIVE_ACTIVATIONS
from znnx.ir.verify import verify
from znnx.kernels.epilogue import Kernel, activation
from znnx.passes import optimize
from znnx.passes.eliminate_padding import eliminate_padding
from znnx.passes.fold_constants import fold_constants
from znnx.passes.fuse_activation import fuse_output_derivative_activation
from znnx.passes.fuse_residual_add import fuse_residual_add
from znnx.passes.remove_dead_nodes import remove_dead_nodes
from znnx.passes.remove_identity import remove_identity
from znnx.training.conv import ConvAlgorithms, ConvSpec, conv

Tensor = torch.Tensor
TRAINABLE = {"conv": ("weight", "bias"), "conv_transpose": ("weight", "bias"), "batchnorm": ("gamma", "beta"),
             "scale": ("gamma", "beta"), "prelu": ("slope",)}
PIPELINE = (remove_identity, fold_constants, eliminate_padding, fuse_residual_add, fuse_output_derivative_activation,
            remove_dead_nodes)
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax")


def training_graph(graph: Graph) -> Graph:
    """`graph` with the fusions that keep its parameters (no BatchNorm folding). A conv whose epilogue
    already holds a step training cannot differentiate from the conv's output (a scale, GELU, PReLU:
    a compiled net's graph) is an error."""
    for node in graph.nodes:
        foreign = [s for s in node.attrs.get("epilogue", ()) if s != "add" and s not in OUTPUT_DERIVATIVE_ACTIVATIONS]
        if node.op in ("conv", "conv_transpose") and foreign:
            raise ModelError(f"train: conv {node.name!r} has fused steps {foreign} (a compiled net's graph); training "
                             f"differentiates {sorted(OUTPUT_DERIVATIVE_ACTIVATIONS)} fused into a conv; train the "
                             f"imported graph (znnx.load) instead")
    return optimize(graph, PIPELINE).graph


def final_activation(graph: Graph) -> str | None:
    """The sigmoid or softmax the net's single output ends in (a node, or a conv's fused epilogue)."""
    node = graph.producer(graph.outputs[0])
    if node is None:
        return None
    if node.op in OUTPUT_ACTIVATIONS:
        return node.op
    steps = node.attrs.get("epilogue", ()) if node.op in ("conv", "conv_transpose") else ()
    return "sigmoid" if "sigmoid" in steps else None


def without_final_activation(graph: Graph) -> Graph:
    """`graph` ending before its final sigmoid / softmax (the loss takes logits: stable gradients)."""
    activation = final_activation(graph)
    if activation is None:
        return graph
    node = graph.producer(graph.outputs[0])
    assert node is not None
    if node.op in OUTPUT_ACTIVATIONS:
        nodes = tuple(n for n in graph.nodes if n is not node)
        outputs = tuple(node.inputs[0] if o == node.output else o for o in graph.outputs)
        types = {k: v for k, v in graph.types.items() if k != node.output}
        return verify(dataclasses.replace(graph, nodes=nodes, outputs=outputs, types=types, source=None))
    steps = tuple(s for s in node.attrs["epilogue"] if s != "sigmoid")
    stripped = dataclasses.replace(node, attrs={**node.attrs, "epilogue": steps})
    return verify(dataclasses.replace(graph, nodes=tuple(stripped if n is node else n for n in graph.nodes),
                                      source=None))


def with_params(graph: Graph, params: Mapping[str, np.ndarray]) -> Graph:
    """`graph` with the parameters named `node/param` in `params` replaced (shapes checked)."""
    nodes = []
    for node in graph.nodes:
        new = {}
        for key, value in node.params.items():
            name = f"{node.name}/{key}"
            replaced = np.asarray(params.get(name, value), dtype=np.float32)
            if replaced.shape != value.shape:
                raise ModelError(f"train: parameter {name!r} has shape {replaced.shape}, the net needs {value.shape}")
            new[key] = replaced
        nodes.append(dataclasses.replace(node, params=new) if new else node)
    return verify(dataclasses.replace(graph, nodes=tuple(nodes), source=None))


def initialized(graph: Graph, rule: str, args: Sequence[float] = (), seed: int = 0) -> Graph:
    """`graph` with fresh weights: conv and transposed-conv kernels drawn by ZNN's init `rule`
    (frontends/init_rules.py), biases zero, BatchNorm and scale as identities, PReLU slopes 0.25 (PyTorch's)."""
    if rule not in RULES:
        raise ModelError(f"train: init rule {rule!r} is not one of {sorted(RULES)}")
    rng = np.random.default_rng(seed)
    fresh: dict[str, np.ndarray] = {}
    for node in graph.nodes:
        for key, value in node.params.items():
            name = f"{node.name}/{key}"
            if key == "weight" and node.op in ("conv", "conv_transpose"):
                fresh[name] = draw(rule, args, value.shape, rng)
            elif node.op in TRAINABLE or node.op == "batchnorm":
                fresh[name] = np.full_like(value, {"gamma": 1.0, "var": 1.0, "slope": 0.25}.get(key, 0.0))
    return with_params(graph, fresh)


class TrainableNet(nn.Module):
    """`graph` (a training graph) as a module: (N, C, D, H, W) in, the graph's outputs out (one
    tensor for a single-output graph). `algorithms` sets each conv's forward, input-gradient and
    weight-gradient algorithm (default direct); it may be replaced between steps. With `native`
    every op is PyTorch's own (cuDNN / oneDNN convolutions, PyTorch's BatchNorm), differentiated by
    autograd: the path for GPUs and for mixed precision under `torch.autocast`; `device` holds the
    parameters."""

    def __init__(self, graph: Graph, algorithms: Mapping[str, ConvAlgorithms] | None = None,
                 momentum: float = 0.1, native: bool = False, device: str = "cpu") -> None:
        super().__init__()
        self.graph = graph
        self.algorithms = dict(algorithms or {})
        self.momentum = momentum
        self.native = native
        self.names: list[str] = []
        self.live: dict[str, Tensor] = {}
        for node in graph.nodes:
            for key, value in node.params.items():
                name = f"{node.name}/{key}"
                tensor = torch.from_numpy(np.array(value, dtype=np.float32)).to(device)
                if tensor.dim() == 5:  # kernels channels-last like the activations: oneDNN's fast paths
                    tensor = tensor.contiguous(memory_format=torch.channels_last_3d)
                slot = f"t{len(self.names)}"
                if key in TRAINABLE.get(node.op, ()):
                    self.register_parameter(slot, nn.Parameter(tensor))
                else:
                    self.register_buffer(slot, tensor)
                self.names.append(name)
                self.live[name] = getattr(self, slot)
        self.execute = torch_eager.program(graph, _Builder(self))

    def named_tensors(self) -> dict[str, Tensor]:
        """Every parameter and buffer by its network-file name (`node/param`)."""
        return {name: getattr(self, f"t{i}") for i, name in enumerate(self.names)}

    def params(self) -> dict[str, np.ndarray]:
        """The current values as NumPy arrays, by network-file name."""
        return {name: t.detach().cpu().numpy().copy() for name, t in self.named_tensors().items()}

    def exported(self, graph: Graph | None = None) -> Graph:
        """`graph` (default: the training graph) holding the trained values."""
        return with_params(graph or self.graph, self.params())

    def forward(self, *inputs: Tensor) -> Tensor | list[Tensor]:
        xs = [x.contiguous(memory_format=torch.channels_last_3d) for x in inputs]
        outputs = self.execute(xs)
        return outputs[0] if len(outputs) == 1 else outputs


def _fused_batchnorm() -> Any:
    """kernels/batchnorm.py's fused BatchNorm and activation, or None without a C compiler."""
    from znnx.errors import KernelUnavailable
    from znnx.kernels import batchnorm

    try:
        batchnorm._library()
    except KernelUnavailable:
        return None
    return batchnorm.batchnorm_activation


class _Builder(torch_eager.Builder):
    """torch_eager's kernels over the module's live tensors (trainable ones reshaped per call, so
    optimizer updates apply at the next call and autograd reaches them); convs through
    training/conv.py, BatchNorm in the module's mode."""

    def __init__(self, net: TrainableNet) -> None:
        device = next(iter(net.live.values())).device if net.live else torch.device("cpu")
        super().__init__(net.graph, device)
        self.net = net
        self.absorbed: set[str] = set()

    def kernel(self, node: Node) -> Kernel:
        if node.name in self.absorbed:
            return lambda x: x[0]
        return super().kernel(node)

    def param(self, node: Node, key: str, channel_view: bool = False) -> Tensor | None:
        tensor = self.net.live.get(f"{node.name}/{key}")
        if tensor is None:
            return None
        return tensor.reshape(1, -1, 1, 1, 1) if channel_view else tensor

    def conv(self, node: Node) -> Kernel:
        if self.net.native:
            return super().conv(node)
        w, b = self.need(node, "weight"), self.param(node, "bias")
        pads, spec, name, net = node.attrs["pads"], ConvSpec.of(node), node.name, self.net
        if tuple(pads[:3]) == tuple(pads[3:]):
            return lambda x: conv(x[0], w, b, x[1] if len(x) > 1 else None, spec,
                                  net.algorithms.get(name, ConvAlgorithms()))
        explicit, unpadded = torch_eager._torch_pad(pads), dataclasses.replace(spec, pads=(0, 0, 0))
        return lambda x: conv(F.pad(x[0], explicit), w, b, x[1] if len(x) > 1 else None, unpadded,
                              net.algorithms.get(name, ConvAlgorithms()))

    def batchnorm(self, node: Node) -> Kernel:
        """In training mode BatchNorm and the activation that alone reads it run as one kernel
        (kernels/batchnorm.py; PyTorch's where no C compiler is at hand); in eval mode PyTorch's."""
        mean, var, gamma, beta = (self.need(node, k) for k in ("mean", "var", "gamma", "beta"))
        eps, net = float(node.attrs["eps"]), self.net
        readers = self.graph.consumers(node.output)
        after = readers[0] if len(readers) == 1 and readers[0].op in OUTPUT_DERIVATIVE_ACTIVATIONS and \
            node.output not in self.graph.outputs else None
        name, alpha = (after.op, float(after.attrs.get("alpha", 0.0))) if after else (None, 0.0)
        fused = None if self.net.native else _fused_batchnorm()
        if after is not None:
            self.absorbed.add(after.name)
        then = activation(name, alpha) if name else (lambda y: y)

        def run(x: Sequence[Tensor]) -> Tensor:
            if net.training and fused is not None:
                return fused(x[0], gamma, beta, mean, var, net.momentum, eps, name, alpha)
            return then(F.batch_norm(x[0], mean, var, gamma, beta, net.training, net.momentum, eps))

        return run
