"""Dense (sliding-window) forms of a net that pools or strides: `dilated` (ZNN) and `fragmented` (ZNNi).

A net with strided pooling or strided convolutions, run as usual, computes one output voxel per
stride. Its dense output is what it gives as a patch classifier at every input position whose
window (the field of view) fits: output size = input - field of view + 1 per axis, voxel p being
the net's (first) output for the window that starts at p. Both forms compute exactly that:

- `dilated` (ZNN's max filtering and sparse convolutions): every strided op runs with stride 1, and
  every op after it is dilated by the product of the strides before it (crops scale with it).
- `fragmented` (ZNNi's max-pooling fragments, MPF): every strided op runs with stride 1 and then
  splits its output into the stride's offsets (`fragment`, which takes a max pool's window itself, so
  a pool and its split are one pass over memory); the ops after it run undilated on each
  fragment, as a batch, so Winograd and FFT apply; the outputs are interleaved back
  (`defragment`). A fragment needs whole blocks: the patch sizes this form accepts are those whose
  size at every strided op is a multiple of its stride (`net.reshape` names the nearest).

Both forms need a valid net (no padding: a padded net has no fixed window) without upsampling
(a net that upsamples already gives dense output), and two inputs of one op must have seen the
same strides. Ceil-mode pooling counts as floor mode: voxel 0 of the classifier's output is the
same. The `window` of the first output is the classifier's field of view (report.geometry).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from znnx.errors import GraphError
from znnx.ir.graph import Graph, Node, TensorType
from znnx.ir.ops import center_crop_begin, window_dilation
from znnx.ir.verify import infer_types

PATHS = ("dilated", "mpf")
WINDOW_OPS = frozenset({"conv", "max_pool", "avg_pool"})
REFUSED = {
    "conv_transpose": "it upsamples, and a net that upsamples already gives dense output",
    "upsample": "it upsamples, and a net that upsamples already gives dense output",
    "pad": "a padded net has no fixed window to slide",
    "fragment": "the graph is already in dense form",
    "defragment": "the graph is already in dense form",
}
Triple = tuple[int, int, int]


def _fail(node: Node, message: str) -> GraphError:
    return GraphError(f"dense: node {node.name!r} ({node.op}): {message}")


def _check(node: Node) -> None:
    if node.op in REFUSED:
        raise _fail(node, f"has no dense form: {REFUSED[node.op]}; run the net without dense mode")
    if node.op in WINDOW_OPS and any(node.attrs["pads"]):
        raise _fail(node, f"pads {node.attrs['pads']}: dense mode needs a valid (unpadded) net, since a padded "
                          f"net has no fixed window; remove the padding or run without dense mode")


def _common(node: Node, seen: Sequence[Any]) -> Any:
    if any(s != seen[0] for s in seen):
        raise _fail(node, f"its inputs have seen different strides {list(seen)}; a dense form needs them equal")
    return seen[0]


def strided(graph: Graph) -> tuple[str, ...]:
    """The nodes with a stride above 1 (what dense mode undoes)."""
    return tuple(n.name for n in graph.nodes if n.op in WINDOW_OPS and any(s > 1 for s in n.attrs["stride"]))


def period(graph: Graph) -> Triple:
    """Per axis, the product of the strides on the way (the fragment form accepts one input size in
    every `period` consecutive ones)."""
    names = strided(graph)
    strides = [n.attrs["stride"] for n in graph.nodes if n.name in names]
    d, h, w = (math.prod(s[axis] for s in strides) for axis in range(3))
    return (d, h, w)


def _unstrided(node: Node, dilation: Triple, inputs: Sequence[str], output: str) -> Node:
    attrs = {**node.attrs, "stride": (1, 1, 1)}
    if node.op == "conv":
        attrs["dilation"] = dilation
    else:
        attrs["ceil_mode"] = False
        attrs.pop("dilation", None)
        if dilation != (1, 1, 1):
            attrs["dilation"] = dilation
    return Node(node.name, node.op, tuple(inputs), output, attrs, node.params)


def _times(a: Sequence[int], b: Sequence[int]) -> Triple:
    return (a[0] * b[0], a[1] * b[1], a[2] * b[2])


def _typed(graph: Graph, nodes: list[Node], outputs: Sequence[str], name: str,
           sizes: Callable[[Graph], Mapping[str, TensorType]]) -> Graph:
    bare = Graph(tuple(nodes), graph.inputs, tuple(outputs), {n: graph.types[n] for n in graph.inputs},
                 graph.spatial_rank, name)
    return infer_types(bare, sizes(bare))


def dilated(graph: Graph) -> Graph:
    """ZNN's dense form: stride 1 everywhere, each op dilated by the strides before it; typed at
    `graph`'s own input size."""
    factor: dict[str, Triple] = {name: (1, 1, 1) for name in graph.inputs}
    nodes = []
    for node in graph.nodes:
        _check(node)
        f = _common(node, [factor[v] for v in node.inputs])
        out = f
        if node.op in WINDOW_OPS:
            nodes.append(_unstrided(node, _times(window_dilation(node), f), node.inputs, node.output))
            out = _times(f, node.attrs["stride"])
        elif node.op == "crop":
            nodes.append(Node(node.name, "crop", node.inputs, node.output,
                              {"begin": _times(node.attrs["begin"], f), "end": _times(node.attrs["end"], f)}))
        elif node.op == "center_crop":
            source, target = (graph.types[v].spatial for v in node.inputs)
            begin = center_crop_begin(source, target)
            end = tuple(s - t - b for s, t, b in zip(source, target, begin))
            nodes.append(Node(node.name, "crop", node.inputs[:1], node.output,
                              {"begin": _times(begin, f), "end": _times(end, f)}))
        else:
            nodes.append(node)
        factor[node.output] = out
    return _typed(graph, nodes, graph.outputs, f"{graph.name} (dense, dilated)",
                  lambda bare: {n: graph.types[n] for n in graph.inputs})


def fragmented(graph: Graph) -> Graph:
    """ZNNi's dense form: each strided op at stride 1 followed by a `fragment` of its stride, the
    outputs defragmented; typed at the smallest input size at or above `graph`'s own that it
    accepts (every strided op's input size a multiple of its stride)."""
    blocks: dict[str, tuple[Triple, ...]] = {name: () for name in graph.inputs}
    nodes = []
    outputs = set(graph.outputs)
    for node in graph.nodes:
        _check(node)
        stack = _common(node, [blocks[v] for v in node.inputs])
        inputs = tuple(f"{v}:fragments" if v in outputs and blocks[v] else v for v in node.inputs)
        stride = tuple(node.attrs["stride"]) if node.op in WINDOW_OPS else (1, 1, 1)
        final = f"{node.output}:fragments" if node.output in outputs and (stack or stride != (1, 1, 1)) else node.output
        if stride == (1, 1, 1):
            nodes.append(Node(node.name, node.op, inputs, final, node.attrs, node.params))
            blocks[node.output] = stack
            continue
        if node.op == "max_pool" and window_dilation(node) == (1, 1, 1):
            nodes.append(Node(f"{node.name}:fragment", "fragment", inputs, final,
                              {"block": stride, "window": tuple(node.attrs["kernel"])}))
        else:
            dense = f"{node.output}:dense"
            nodes.append(_unstrided(node, window_dilation(node), inputs, dense))
            nodes.append(Node(f"{node.name}:fragment", "fragment", (dense,), final, {"block": stride}))
        blocks[node.output] = (*stack, stride)  # type: ignore[arg-type]
    for name in graph.outputs:
        value = f"{name}:fragments"
        for i, block in enumerate(reversed(blocks[name])):
            last = i == len(blocks[name]) - 1
            target = name if last else f"{name}:defragment{i}"
            nodes.append(Node(f"{name}:defragment{i}", "defragment", (value,), target, {"block": block}))
            value = target
    every = period(graph)
    return _typed(graph, nodes, graph.outputs, f"{graph.name} (dense, fragments)",
                  lambda bare: _accepted_input(bare, every))


def _accepted_input(bare: Graph, every: Triple) -> dict[str, TensorType]:
    """The input types nearest above `bare`'s own sizes whose every fragment op gets whole blocks
    (searched over one `period` per axis)."""
    first = bare.types[bare.inputs[0]].spatial
    offsets = sorted(itertools.product(*(range(p) for p in every)), key=sum)
    for offset in offsets:
        types = _inputs_at(bare, [f + o for f, o in zip(first, offset)])
        try:
            infer_types(bare, types)
        except GraphError as error:
            if "multiple of the block" in str(error):
                continue
            raise
        return types
    raise GraphError(f"dense: no input size from {first} on gives every fragment whole blocks")


def _inputs_at(bare: Graph, spatial: Sequence[int]) -> dict[str, TensorType]:
    d, h, w = spatial
    return {name: TensorType(bare.types[name].channels, (d, h, w)) for name in bare.inputs}


def dense(graph: Graph, path: str) -> Graph:
    """`graph`'s dense form along `path` ("dilated" or "mpf"); a net that strides nowhere is its own."""
    if path not in PATHS:
        raise GraphError(f"dense: path {path!r} is not one of {PATHS}")
    if not strided(graph):
        return graph
    return dilated(graph) if path == "dilated" else fragmented(graph)
