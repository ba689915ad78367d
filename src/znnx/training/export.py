"""A trained graph as a network file that `znnx infer` runs: compiled (BatchNorm folded into the
convs, epilogues fused, algorithms measured) at the training input patch, recording the input
normalization the net was trained with."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from znnx.ir.graph import Graph


def export_network(graph: Graph, patch: Sequence[int], scale: float, path: Path) -> Path:
    """Write `graph` (with trained weights, BatchNorm as layers) compiled for input `patch` (D, H, W)."""
    from znnx.net import compile as compile_net
    from znnx.plan import network_file

    net = compile_net(graph, patch=tuple(patch)[3 - graph.spatial_rank:])
    return network_file.save(dataclasses.replace(net.plan, normalize=(float(scale), 0.0, 1.0)), path)


def export_onnx(graph: Graph, path: Path) -> Path:
    """Write `graph` (with trained weights) as an ONNX file of its own input patch, BatchNorm folded:
    PyTorch's ONNX exporter traces the eager backend's ops (its static shapes: crops computed for
    this patch; the network file runs at any patch)."""
    import warnings

    import torch

    from znnx.backends import torch_eager
    from znnx.passes import optimize

    folded = optimize(graph).graph
    run = torch_eager.build(folded, torch.device("cpu"))

    class Eager(torch.nn.Module):
        def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
            return run(list(inputs))

    examples = tuple(torch.zeros(1, folded.types[name].channels, *folded.types[name].spatial)
                     for name in folded.inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Eager(), examples, str(path), dynamo=False, opset_version=17,
                          input_names=list(folded.inputs), output_names=list(folded.outputs))
    return path
