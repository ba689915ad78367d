"""Run a 1x1x1 conv before the upsampling that feeds it, on the coarse grid.

Before: x -> upsample(s) -> u -> conv 1x1x1 (c_in -> c_out) -> y
After:  x -> conv 1x1x1 -> t -> upsample(s) -> y

A 1x1x1 conv mixes channels voxel by voxel, and upsampling mixes voxels channel by channel with
weights that sum to 1, so the two commute: nearest upsampling copies voxels, so any activation in
the conv's epilogue commutes too; trilinear upsampling blends voxels, so only a conv without an
activation does (bias included, as the weights sum to 1). The conv then runs on prod(s) times fewer
voxels and the upsampling moves c_out instead of c_in channels (the U-Nets that upsample, then reduce
channels with a 1x1x1 conv: funlib's, PlantSeg's, anisotropic residual nets). Preconditions: the
upsampled value has no other reader and is not a graph output; the conv is 1x1x1, unstrided,
unpadded, without a residual add, and does not widen (c_out <= c_in). It runs after the fusions,
so a nearest upsampling takes the conv with its fused activation along.
"""

from __future__ import annotations

from dataclasses import replace

from znnx.ir.graph import Graph, Node, TensorType
from znnx.ir.ops import EPILOGUE_ACTIVATIONS, epilogue
from znnx.passes.rewrite import consumers, exhaust, rebuild, sole_consumer


def _commutes(graph: Graph, up: Node, conv: Node) -> bool:
    a = conv.attrs
    steps = epilogue(conv)
    pointwise = (tuple(a["kernel"]) == (1, 1, 1) and tuple(a["stride"]) == (1, 1, 1) and not any(a["pads"])
                 and len(conv.inputs) == 1 and "add" not in steps)
    activations = EPILOGUE_ACTIVATIONS & set(steps)
    narrows = graph.types[conv.output].channels <= graph.types[up.output].channels
    return pointwise and narrows and (up.attrs["mode"] == "nearest" or not activations)


def _swap_one(graph: Graph) -> Graph | None:
    users = consumers(graph)
    for up in graph.nodes:
        if up.op != "upsample":
            continue
        conv = sole_consumer(graph, users, up.output)
        if conv is None or conv.op != "conv" or not _commutes(graph, up, conv):
            continue
        source = graph.types[up.inputs[0]]
        coarse = next(name for i in range(len(graph.types) + 1)
                      if (name := f"{conv.output}_coarse{i or ''}") not in graph.types)
        types = {**graph.types, coarse: TensorType(graph.types[conv.output].channels, source.spatial,
                                                   source.fragments)}
        nodes: list[Node] = []
        for node in graph.nodes:
            if node is up:
                nodes += [replace(conv, inputs=up.inputs, output=coarse), replace(up, inputs=(coarse,),
                                                                                 output=conv.output)]
            elif node is not conv:
                nodes.append(node)
        return rebuild(replace(graph, types=types), nodes)
    return None


def pointwise_before_upsample(graph: Graph) -> tuple[Graph, int]:
    return exhaust(graph, _swap_one)
