"""Incremental graph construction shared by the frontends.

Types are inferred as nodes are added, so a frontend can ask for the shape of any value it has
made, and a broken rule is reported with the source location (model file, node, code line).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from znnx.errors import GraphError, ModelError
from znnx.ir.graph import Graph, Node, Shape3, TensorType
from znnx.ir.ops import infer_node
from znnx.ir.verify import verify


def lift(values: Sequence[int], fill: int) -> tuple[int, int, int]:
    """A per-axis setting of a rank-r model (r <= 3) as a 3-tuple, leading axes set to `fill`."""
    full = [fill] * (3 - len(values)) + [int(v) for v in values]
    return (full[0], full[1], full[2])


def lift_pads(begin: Sequence[int], end: Sequence[int]) -> tuple[int, ...]:
    """Per-axis begin/end pads of a rank-r model as the IR's 6-tuple."""
    return (*lift(begin, 0), *lift(end, 0))


def lift_weight(weight: np.ndarray) -> np.ndarray:
    """A conv weight (O, I, *kernel) of spatial rank r as (O, I, kd, kh, kw)."""
    return weight.reshape(weight.shape[:2] + (1,) * (5 - weight.ndim) + weight.shape[2:])


class GraphBuilder:
    """Collects nodes in topological order; `component` prefixes every error message."""

    def __init__(self, component: str, spatial_rank: int, name: str = "graph") -> None:
        self.component = component
        self.spatial_rank = spatial_rank
        self.name = name
        self.nodes: list[Node] = []
        self.types: dict[str, TensorType] = {}
        self.inputs: list[str] = []
        self._names: set[str] = set()

    def _unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def add_input(self, name: str, channels: int, spatial: Sequence[int]) -> str:
        value = self._unique(name)
        self.inputs.append(value)
        self.types[value] = TensorType(channels, lift(spatial, 1))
        return value

    def type(self, value: str) -> TensorType:
        return self.types[value]

    def add(self, op: str, inputs: Sequence[str], attrs: Mapping[str, Any] | None = None,
            params: Mapping[str, np.ndarray] | None = None, name: str = "", where: str = "") -> str:
        """Append a node and return its output value; `where` locates it in the source model."""
        node_name = self._unique(name or op)
        node = Node(node_name, op, tuple(inputs), node_name, dict(attrs or {}), dict(params or {}))
        try:
            self.types[node_name] = infer_node(node, [self.types[v] for v in inputs])
        except GraphError as error:
            raise ModelError(f"{self.component}: {where or node_name}: {error}") from None
        self.nodes.append(node)
        return node_name

    def finish(self, outputs: Sequence[str]) -> Graph:
        """The verified graph: outputs that are graph inputs get an identity, dead nodes go."""
        final = [self.add("identity", [v], name=f"{v}_out") if v in self.inputs else v for v in outputs]
        needed = set(final)
        for node in reversed(self.nodes):
            if node.output in needed:
                needed.update(node.inputs)
        nodes = [node for node in self.nodes if node.output in needed]
        types = {k: t for k, t in self.types.items() if k in needed or k in self.inputs}
        graph = Graph(tuple(nodes), tuple(self.inputs), tuple(final), types, self.spatial_rank, self.name)
        try:
            return verify(graph)
        except GraphError as error:
            raise ModelError(f"{self.component}: the imported graph is invalid: {error}") from None


def spatial_of(shape: Sequence[int]) -> Shape3:
    """The lifted 3D spatial shape of an activation shaped (N, C, *spatial)."""
    return lift(shape[2:], 1)
