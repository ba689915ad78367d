"""Import ZNN nets (`.znn`, seung-lab/znn-release's text format) as the patch classifiers they define.

The format: blocks separated by blank lines, each opened by `nodes NAME` or `edges NAME` and
followed by `key value` lines (`#` starts a comment). Nodes are `input`, `sum` or `transfer`
(`function` linear | rectify_linear | tanh | logistics | forward_logistics, `function_args`),
`size` feature maps; every edge into a node is summed there (a node fed by `maxout` edges takes
their maximum), then a transfer node adds its bias and applies its function. Edges are `conv`,
`max_filter`, `max_pool`, `dropout` (identity at inference), `crop` (`offset` voxels off each side),
`maxout` and `dummy` (identity), with `size` and `stride` triples written depth first, `input`,
`output`, `init` and `init_args`.

ZNN computes dense output: a `max_filter` slides with unit step and its `stride` makes every later
conv and filter sparse. This reader gives the same net as a patch classifier (a `max_filter` of
stride s is a max pool of stride s), whose dense form (`compile(..., dense=True)`, `znnx infer`'s
default for `.znn` models) is ZNN's output: one voxel per input voxel whose window fits. The input
patch defaults to the field of view (one output voxel). Weights come from `weights`, a safetensors
file (a znnx network file is one) with `EDGE/weight` (out maps, in maps, d, h, w) per conv edge and
`NODE/bias` per transfer node (or, as a network file names it, `EDGE/bias` on the node's first conv
edge; a network file's other tensors, such as a linear function's scale, are ignored), else from
each edge's `init` rule (zero, constant, uniform, gaussian, bernoulli, xavier,
msra; seeded) and zero biases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from znnx.errors import ModelError, UnsupportedError
from znnx.frontends.builder import GraphBuilder
from znnx.frontends.init_rules import RULES, draw
from znnx.ir.graph import Graph

IR_OPS = frozenset({"add", "conv", "crop", "identity", "max", "max_pool", "relu", "scale", "sigmoid", "tanh"})
"""The IR ops this frontend emits."""

COMPONENT = "znn reader"
NODE_TYPES = frozenset({"input", "sum", "transfer"})
EDGE_TYPES = frozenset({"conv", "max_filter", "max_pool", "dropout", "crop", "maxout", "dummy"})
FUNCTIONS = {"linear": None, "rectify_linear": "relu", "tanh": "tanh", "logistics": "sigmoid",
             "forward_logistics": "sigmoid"}
Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Block:
    """One `nodes` or `edges` block: its kind, name, keys and the line it opens on."""

    kind: str
    name: str
    keys: Mapping[str, str]
    line: int


def parse(text: str, source: str) -> list[Block]:
    """The blocks of a .znn file, in file order."""
    blocks: list[Block] = []
    head: tuple[str, str, int] | None = None
    keys: dict[str, str] = {}
    for number, raw in enumerate([*text.splitlines(), ""], start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            if head is not None:
                blocks.append(Block(head[0], head[1], keys, head[2]))
            head, keys = None, {}
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if head is None:
            if key not in ("nodes", "edges") or not value:
                raise ModelError(f"{COMPONENT}: {source}:{number}: a block must open with 'nodes NAME' or "
                                 f"'edges NAME', got {line!r}")
            head = (key, value, number)
            continue
        if not value:
            raise ModelError(f"{COMPONENT}: {source}:{number}: key {key!r} of {head[0]} {head[1]!r} has no value")
        keys[key] = value
    return blocks


class _Reader:
    def __init__(self, blocks: Sequence[Block], source: str, weights: Mapping[str, np.ndarray] | None,
                 seed: int) -> None:
        self.source = source
        self.nodes = {b.name: b for b in blocks if b.kind == "nodes"}
        self.edges = [b for b in blocks if b.kind == "edges"]
        self.weights = weights
        self.rng = np.random.default_rng(seed)
        self.used: set[str] = set()
        for kind, named in (("nodes", [b for b in blocks if b.kind == "nodes"]), ("edges", self.edges)):
            seen: set[str] = set()
            for b in named:
                if b.name in seen:
                    raise self.fail(b, f"{kind} name {b.name!r} is declared twice")
                seen.add(b.name)

    def fail(self, block: Block, message: str) -> ModelError:
        return ModelError(f"{COMPONENT}: {self.source}:{block.line}: {block.kind[:-1]} {block.name!r}: {message}")

    def key(self, block: Block, key: str) -> str:
        if key not in block.keys:
            raise self.fail(block, f"lacks the key {key!r}")
        return block.keys[key]

    def triple(self, block: Block, key: str, default: Triple | None = None) -> Triple:
        if key not in block.keys and default is not None:
            return default
        try:
            values = [int(v) for v in self.key(block, key).split(",")]
        except ValueError:
            raise self.fail(block, f"{key} must be integers like 1,3,3, got {block.keys[key]!r}") from None
        if len(values) != 3 or any(v < 1 for v in values):
            raise self.fail(block, f"{key} must be three positive integers (depth, height, width), got {values}")
        return (values[0], values[1], values[2])

    def floats(self, block: Block, key: str) -> list[float]:
        text = block.keys.get(key, "")
        try:
            return [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            raise self.fail(block, f"{key} must be numbers, got {text!r}") from None

    def maps(self, name: str) -> int:
        block = self.nodes[name]
        try:
            size = int(self.key(block, "size"))
        except ValueError:
            raise self.fail(block, f"size must be a number of feature maps, got {block.keys['size']!r}") from None
        if size < 1:
            raise self.fail(block, f"size must be at least 1, got {size}")
        return size

    def check(self) -> None:
        """Types, and every edge's ends among the declared nodes (the error names both)."""
        for node in self.nodes.values():
            kind = self.key(node, "type")
            if kind not in NODE_TYPES:
                raise self.fail(node, f"type {kind!r} is not one of {sorted(NODE_TYPES)}")
            self.maps(node.name)
        declared = ", ".join(sorted(self.nodes))
        for edge in self.edges:
            kind = self.key(edge, "type")
            if kind not in EDGE_TYPES:
                raise self.fail(edge, f"type {kind!r} is not one of {sorted(EDGE_TYPES)}")
            for end in ("input", "output"):
                target = self.key(edge, end)
                if target not in self.nodes:
                    raise self.fail(edge, f"its {end} is node {target!r}, which is not declared (the declared "
                                          f"nodes are {declared}); correct the name in the edge or declare the node")

    def order(self) -> list[str]:
        """The nodes in topological order (inputs first, in file order); a cycle is an error."""
        into = {name: [e for e in self.edges if e.keys["output"] == name] for name in self.nodes}
        done: list[str] = []
        pending = list(self.nodes)
        while pending:
            ready = [n for n in pending if all(e.keys["input"] in done for e in into[n])]
            if not ready:
                raise ModelError(f"{COMPONENT}: {self.source}: the edges among nodes {pending} form a cycle")
            done += ready
            pending = [n for n in pending if n not in ready]
        return done

    def field_of_view(self, order: Sequence[str]) -> Triple:
        """Per axis, the input voxels one output voxel of the classifier sees."""
        reach: dict[str, tuple[list[int], list[int]]] = {}
        for name in order:
            incoming = [e for e in self.edges if e.keys["output"] == name]
            if not incoming:
                reach[name] = ([1, 1, 1], [1, 1, 1])
                continue
            fields, jumps = [], []
            for e in incoming:
                field, jump = reach[e.keys["input"]]
                kind = e.keys["type"]
                size = self.triple(e, "size", (1, 1, 1)) if kind in ("conv", "max_filter", "max_pool") else (1, 1, 1)
                stride = self._stride(e)
                crop = self.triple(e, "offset", (1, 1, 1)) if kind == "crop" else None
                fields.append([f + (k - 1) * j + (2 * crop[a] * j if crop else 0)
                               for a, (f, k, j) in enumerate(zip(field, size, jump))])
                jumps.append([j * s for j, s in zip(jump, stride)])
            reach[name] = ([max(f[a] for f in fields) for a in range(3)], jumps[0])
        outputs = self.outputs()
        d, h, w = (max(reach[o][0][a] for o in outputs) for a in range(3))
        return (d, h, w)

    def _stride(self, edge: Block) -> Triple:
        kind = edge.keys["type"]
        if kind == "max_filter":
            return self.triple(edge, "stride", (1, 1, 1))
        if kind == "max_pool":
            return self.triple(edge, "size")
        if kind == "conv" and self.triple(edge, "stride", (1, 1, 1)) != (1, 1, 1):
            raise UnsupportedError(f"{COMPONENT}: {self.source}:{edge.line}: edge {edge.name!r}: conv stride "
                                   f"{edge.keys['stride']} is not supported (only max filters and pools stride)")
        return (1, 1, 1)

    def outputs(self) -> list[str]:
        feeding = {e.keys["input"] for e in self.edges}
        return [n for n in self.nodes if n not in feeding and self.nodes[n].keys["type"] != "input"]

    def param(self, key: str, shape: tuple[int, ...], init: np.ndarray | None) -> np.ndarray:
        if self.weights is not None and key in self.weights:
            value = np.asarray(self.weights[key], dtype=np.float64)
            if value.shape != shape:
                raise ModelError(f"{COMPONENT}: weights {key!r} have shape {value.shape}, the net needs {shape}")
            self.used.add(key)
            return value
        if init is None:
            raise ModelError(f"{COMPONENT}: the weights lack {key!r} of shape {shape}")
        return init

    def init(self, edge: Block, shape: tuple[int, ...]) -> np.ndarray:
        rule = edge.keys.get("init", "xavier")
        if rule not in RULES:
            raise self.fail(edge, f"init {rule!r} is not one of {sorted(RULES)}")
        return draw(rule, self.floats(edge, "init_args"), shape, self.rng)

    def build(self, name: str, input_shape: Sequence[int] | None) -> Graph:
        self.check()
        order = self.order()
        fov = self.field_of_view(order)
        spatial = tuple(input_shape[1:]) if input_shape is not None else fov
        b = GraphBuilder(COMPONENT, 3, name)
        values: dict[str, str] = {}
        for node in order:
            block = self.nodes[node]
            incoming = [e for e in self.edges if e.keys["output"] == node]
            if block.keys["type"] == "input":
                if incoming:
                    raise self.fail(block, "an input node cannot have edges into it")
                values[node] = b.add_input(node, self.maps(node), spatial)
                continue
            if not incoming:
                raise self.fail(block, "no edge writes into it")
            values[node] = self.combine(b, block, incoming, values)
        graph = b.finish([values[n] for n in self.outputs()])
        unused = sorted(k for k in set(self.weights or {}) - self.used if k.endswith(("/weight", "/bias")))
        if unused:
            raise ModelError(f"{COMPONENT}: the weights hold {unused}, which name no conv edge or transfer node of "
                             f"this net (a misspelt name, or weights of another net)")
        return graph

    def edge(self, b: GraphBuilder, edge: Block, x: str, bias: np.ndarray | None = None) -> str:
        kind, where = edge.keys["type"], f"{self.source}:{edge.line} edge {edge.name!r}"
        if kind == "conv":
            c_in, c_out = self.maps(edge.keys["input"]), self.maps(edge.keys["output"])
            self._stride(edge)
            shape = (c_out, c_in, *self.triple(edge, "size"))
            params = {"weight": self.param(f"{edge.name}/weight", shape, self.init(edge, shape))}
            if bias is not None:
                params["bias"] = bias
            return b.add("conv", [x], {"kernel": shape[2:], "stride": (1, 1, 1), "dilation": (1, 1, 1),
                                       "pads": (0,) * 6, "groups": 1}, params, edge.name, where)
        if kind in ("max_filter", "max_pool"):
            return b.add("max_pool", [x], {"kernel": self.triple(edge, "size"), "stride": self._stride(edge),
                                           "pads": (0,) * 6, "ceil_mode": False}, name=edge.name, where=where)
        if kind == "crop":
            offset = self.triple(edge, "offset")
            return b.add("crop", [x], {"begin": offset, "end": offset}, name=edge.name, where=where)
        if self.maps(edge.keys["input"]) != self.maps(edge.keys["output"]):
            raise self.fail(edge, f"a {kind} edge keeps the maps, but it joins {self.maps(edge.keys['input'])} "
                                  f"to {self.maps(edge.keys['output'])}")
        return b.add("identity", [x], name=edge.name, where=where)

    def bias(self, block: Block, incoming: Sequence[Block]) -> np.ndarray:
        """A transfer node's bias: `NODE/bias`, or (a network file's name) `EDGE/bias` of its first conv edge."""
        key = f"{block.name}/bias"
        convs = [e for e in incoming if e.keys["type"] == "conv"]
        if self.weights is not None and key not in self.weights and convs:
            key = f"{convs[0].name}/bias"
        return self.param(key, (self.maps(block.name),), np.zeros(self.maps(block.name)))

    def combine(self, b: GraphBuilder, block: Block, incoming: Sequence[Block], values: Mapping[str, str]) -> str:
        """The edges into a node summed (or, fed by maxout edges, their maximum), then a transfer
        node's bias (inside its first conv edge where it sums) and function."""
        where = f"{self.source}:{block.line} node {block.name!r}"
        op = "max" if any(e.keys["type"] == "maxout" for e in incoming) else "add"
        transfer = block.keys["type"] == "transfer"
        bias = self.bias(block, incoming) if transfer else None
        carrier = next((e.name for e in incoming if e.keys["type"] == "conv"), None) if op == "add" else None
        parts = [self.edge(b, e, values[e.keys["input"]], bias if e.name == carrier else None) for e in incoming]
        value = parts[0]
        for other in parts[1:]:
            value = b.add(op, [value, other], name=f"{block.name}_{op}", where=where)
        if bias is not None and carrier is None and bias.any():
            value = b.add("add", [value], {}, {"constant": bias}, name=f"{block.name}_bias", where=where)
        return self.function(b, block, value) if transfer else value

    def function(self, b: GraphBuilder, block: Block, x: str) -> str:
        name = block.keys.get("function", "linear")
        if name not in FUNCTIONS:
            raise UnsupportedError(f"{COMPONENT}: {self.source}:{block.line}: node {block.name!r}: function {name!r} "
                                   f"is not supported; znnx runs {sorted(FUNCTIONS)}")
        args = self.floats(block, "function_args")
        maps = self.maps(block.name)
        if name == "linear":
            slope, intercept = (args + [1.0, 0.0][len(args):])[:2]
            if (slope, intercept) == (1.0, 0.0):
                return x
            return b.add("scale", [x], {}, {"gamma": np.full(maps, slope), "beta": np.full(maps, intercept)},
                         name=f"{block.name}_linear")
        if name == "tanh" and args and (args + [1.0, 1.0][len(args):])[:2] != [1.0, 1.0]:
            amplitude, frequency = (args + [1.0, 1.0][len(args):])[:2]
            x = b.add("scale", [x], {}, {"gamma": np.full(maps, frequency)}, name=f"{block.name}_frequency")
            x = b.add("tanh", [x], name=f"{block.name}_tanh")
            return b.add("scale", [x], {}, {"gamma": np.full(maps, amplitude)}, name=f"{block.name}_amplitude")
        return b.add(str(FUNCTIONS[name]), [x], name=f"{block.name}_{FUNCTIONS[name]}")


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file (a znnx network file is one)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(f"{COMPONENT}: cannot read weights {str(path)!r} (a safetensors file): {error}") from None


def load_znn(path: str | Path, input_shape: Sequence[int] | None = None,
             weights: str | Path | Mapping[str, np.ndarray] | None = None, seed: int = 0) -> Graph:
    """The .znn net at `path` as a verified patch-classifier Graph (see the module docstring);
    `input_shape` is (C, D, H, W) of the first input, default its field of view."""
    source = Path(path)
    if input_shape is not None and len(input_shape) != 4:
        raise ModelError(f"{COMPONENT}: input_shape must be (C, D, H, W) for a ZNN net (its windows are 3D), got "
                         f"{tuple(input_shape)}")
    try:
        text = source.read_text()
    except OSError as error:
        raise ModelError(f"{COMPONENT}: cannot read {str(source)!r}: {error}") from None
    tensors = read_weights(weights) if isinstance(weights, str | Path) else weights
    reader = _Reader(parse(text, source.name), source.name, tensors, seed)
    return reader.build(source.stem, input_shape)
