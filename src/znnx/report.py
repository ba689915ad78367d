"""Static facts about a shaped graph: per-layer parameters and FLOPs, and the net's geometry.

FLOPs count one multiply-add as two for conv and conv_transpose (plus one per output element for
each fused epilogue step), one per window element for pooling, and one per output element for
other computing ops; pure data movement (crop, pad, concat, identity) counts zero. A fused conv is
shown as its op and epilogue, e.g. `conv+add+elu`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from znnx.errors import GraphError
from znnx.ir.graph import Graph, Node
from znnx.ir.ops import ACTIVATIONS, BINARY, conv_input, fragment_window, window_dilation


def _conv_flops(graph: Graph, node: Node) -> int:
    c_in = conv_input(graph.types, node).channels // node.attrs["groups"]
    return 2 * c_in * math.prod(node.attrs["kernel"]) * graph.types[node.output].numel


def _conv_transpose_flops(graph: Graph, node: Node) -> int:
    x = graph.types[node.inputs[0]]
    return 2 * x.numel * math.prod(node.attrs["kernel"]) * graph.types[node.output].channels // node.attrs["groups"]


def _window_flops(graph: Graph, node: Node) -> int:
    window = node.attrs["window"] if node.op == "fragment" else node.attrs["kernel"]
    return math.prod(window) * graph.types[node.output].numel


def _elementwise_flops(graph: Graph, node: Node) -> int:
    return graph.types[node.output].numel


def _no_flops(graph: Graph, node: Node) -> int:
    return 0


FLOPS: dict[str, Callable[[Graph, Node], int]] = {
    "conv": _conv_flops,
    "conv_transpose": _conv_transpose_flops,
    "max_pool": _window_flops,
    "avg_pool": _window_flops,
    **{op: _elementwise_flops for op in (*ACTIVATIONS, *BINARY, "scale", "prelu", "batchnorm", "softmax", "upsample")},
    "fragment": lambda graph, node: (_window_flops if "window" in node.attrs else _no_flops)(graph, node),
    **{op: _no_flops for op in ("crop", "center_crop", "pad", "concat", "identity", "defragment")},
}
"""FLOPs of each op (fused epilogue steps are added on top)."""
GEOMETRY: dict[str, str] = {
    **{op: "window" for op in ("conv", "max_pool", "avg_pool")},
    "conv_transpose": "transposed",
    **{op: op for op in ("upsample", "crop", "center_crop", "pad", "fragment", "defragment")},
    **{op: "pointwise" for op in (*ACTIVATIONS, *BINARY, "scale", "prelu", "batchnorm", "softmax", "concat",
                                    "identity")},
}
"""How each op maps input voxels to output voxels: a sliding window, a transposed window, an
upsampling, a crop or pad (a shift), fragments (a max window and a subsampling, followed as its
first fragment, and its inverse), or voxel for voxel."""


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    shape: str
    params: int
    flops: int


@dataclass(frozen=True)
class Geometry:
    """The first output w.r.t. the first input, per model axis: receptive field (input voxels),
    stride (input voxels per output voxel), offset (input position of output voxel 0's centre,
    input voxel 0's centre at 0), downsampling (the coarsest stride of any tensor on the way:
    shifting the input by a multiple of it shifts the output without changing it), and whether
    any op pads (reads outside its input)."""

    input_spatial: tuple[int, ...]
    output_spatial: tuple[int, ...]
    receptive_field: tuple[int, ...]
    stride: tuple[Fraction, ...]
    offset: tuple[Fraction, ...] = ()
    downsampling: tuple[int, ...] = ()
    pads: bool = False

    @property
    def voxel_ratio(self) -> float:
        return math.prod(self.output_spatial) / math.prod(self.input_spatial)


def _entry(table: Mapping[str, object], name: str, node: Node) -> object:
    if node.op not in table:
        raise GraphError(f"report: op {node.op!r} (node {node.name!r}) is not in report.{name}; add it there")
    return table[node.op]


def node_flops(graph: Graph, node: Node) -> int:
    flops: Callable[[Graph, Node], int] = _entry(FLOPS, "FLOPS", node)  # type: ignore[assignment]
    return flops(graph, node) + len(node.attrs.get("epilogue", ())) * graph.types[node.output].numel


def layers(graph: Graph) -> list[Layer]:
    rank = graph.spatial_rank
    return [
        Layer(node.name, "+".join((node.op, *node.attrs.get("epilogue", ()))),
              "x".join(map(str, (graph.types[node.output].channels, *graph.types[node.output].spatial[3 - rank:]))),
              sum(int(p.size) for p in node.params.values()), node_flops(graph, node))
        for node in graph.nodes
    ]


def _grow(node: Node, axis: int, field: Fraction, jump: Fraction) -> tuple[Fraction, Fraction]:
    a, kind = node.attrs, _entry(GEOMETRY, "GEOMETRY", node)
    if kind == "window":
        span = (a["kernel"][axis] - 1) * window_dilation(node)[axis]
        return field + span * jump, jump * a["stride"][axis]
    if kind == "transposed":
        span = (a["kernel"][axis] - 1) * a["dilation"][axis] + 1
        return field + (math.ceil(span / a["stride"][axis]) - 1) * jump, jump / a["stride"][axis]
    if kind == "upsample":
        scale = Fraction(a["scales"][axis]).limit_denominator(1000)
        return field + (jump if a["mode"] == "trilinear" else 0), jump / scale
    if kind == "fragment":
        return field + (fragment_window(node)[axis] - 1) * jump, jump * a["block"][axis]
    if kind == "defragment":
        return field, jump / a["block"][axis]
    return field, jump


def _shift(graph: Graph, node: Node, axis: int, jump: Fraction) -> Fraction:
    """How far (in input voxels) `node` moves the centre of voxel 0 from its first input's, given
    that input's jump (input voxels per voxel)."""
    a, kind = node.attrs, _entry(GEOMETRY, "GEOMETRY", node)
    if kind == "window":
        return jump * (Fraction((a["kernel"][axis] - 1) * window_dilation(node)[axis], 2) - a["pads"][axis])
    if kind == "transposed":
        reach = Fraction((a["kernel"][axis] - 1) * a["dilation"][axis], 2) - a["pads"][axis]
        return -jump * reach / a["stride"][axis]
    if kind == "upsample":
        scale = Fraction(a["scales"][axis]).limit_denominator(1000)
        return -jump * (scale - 1) / (2 * scale)
    if kind == "crop":
        return jump * a["begin"][axis]
    if kind == "fragment":
        return jump * Fraction(fragment_window(node)[axis] - 1, 2)
    if kind == "center_crop":
        source, target = (graph.types[v].spatial for v in node.inputs)
        return jump * ((source[axis] - target[axis]) // 2)
    if kind == "pad":
        return -jump * a["pads"][axis]
    return Fraction(0)


def _pads(node: Node) -> bool:
    return node.op != "conv_transpose" and any(node.attrs.get("pads", ()))


def geometry(graph: Graph) -> Geometry:
    """Receptive field (in input voxels), stride, offset and downsampling of the first output."""
    rank = graph.spatial_rank
    fields: dict[str, list[tuple[Fraction, Fraction]]] = {
        name: [(Fraction(1), Fraction(1))] * 3 for name in graph.inputs}
    centres: dict[str, list[Fraction]] = {name: [Fraction(0)] * 3 for name in graph.inputs}
    coarsest = [Fraction(1)] * 3
    for node in graph.nodes:
        sources = [fields[v] for v in node.inputs]
        merged = [max(s[axis] for s in sources) for axis in range(3)]
        jumps = fields[node.inputs[0]]
        centres[node.output] = [centres[node.inputs[0]][axis] + _shift(graph, node, axis, jumps[axis][1])
                                for axis in range(3)]
        fields[node.output] = [_grow(node, axis, *merged[axis]) for axis in range(3)]
        if graph.types[node.output].fragments == 1:  # inside fragments, the coarse grid is every offset's
            coarsest = [max(c, j) for c, (_, j) in zip(coarsest, fields[node.output])]
    final = fields[graph.outputs[0]][3 - rank:]
    return Geometry(
        graph.types[graph.inputs[0]].spatial[3 - rank:],
        graph.types[graph.outputs[0]].spatial[3 - rank:],
        tuple(math.ceil(f) for f, _ in final),
        tuple(j for _, j in final),
        tuple(centres[graph.outputs[0]][3 - rank:]),
        tuple(math.ceil(c) for c in coarsest[3 - rank:]),
        any(_pads(node) for node in graph.nodes),
    )


def _si(value: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return str(int(value))


def summary_table(graph: Graph) -> str:
    """A fixed-width table of every layer and the net's totals and geometry, for humans."""
    rows = layers(graph)
    name_w = max([4, *(len(r.name) for r in rows)])
    op_w = max([2, *(len(r.op) for r in rows)])
    shape_w = max([12, *(len(r.shape) for r in rows)])
    lines = [f"{'node':<{name_w}}  {'op':<{op_w}}  {'output shape':<{shape_w}}  {'params':>9}  {'FLOPs':>9}"]
    lines.append("-" * len(lines[0]))
    lines += [f"{r.name:<{name_w}}  {r.op:<{op_w}}  {r.shape:<{shape_w}}  {_si(r.params):>9}  {_si(r.flops):>9}"
              for r in rows]
    geo = geometry(graph)
    axes = "x".join
    lines += [
        "-" * len(lines[0]),
        f"nodes {len(rows)}, parameters {_si(sum(r.params for r in rows))}, "
        f"FLOPs per patch {_si(sum(r.flops for r in rows))}",
        f"input {axes(map(str, geo.input_spatial))} -> output {axes(map(str, geo.output_spatial))} "
        f"(output/input voxels {geo.voxel_ratio:.3f})",
        f"receptive field {axes(map(str, geo.receptive_field))}, stride {axes(map(str, geo.stride))}",
    ]
    return "\n".join(lines)
