"""The graph IR: tensor types, nodes and graphs, all immutable values.

A tensor is (channels, depth, height, width); the batch is a runtime dimension. A tensor inside a
max-pooling-fragment (MPF) section of a dense net holds `fragments` patches per batch entry (the
pooling offsets), each of its spatial shape: its buffers are `fragments` times the batch. Models of spatial
rank 0, 1 or 2 are lifted to 3D with leading unit axes, and `Graph.spatial_rank` remembers the
source rank so inputs and outputs can be shown and accepted in the model's own shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

Shape3 = tuple[int, int, int]


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class TensorType:
    """Static type of one activation tensor: channel count, three spatial sizes, and how many
    fragments (patches per batch entry) it holds."""

    channels: int
    spatial: Shape3
    fragments: int = 1

    @property
    def voxels(self) -> int:
        d, h, w = self.spatial
        return d * h * w

    @property
    def numel(self) -> int:
        """Elements per batch entry, all fragments together."""
        return self.fragments * self.channels * self.voxels

    def __str__(self) -> str:
        shape = f"{self.channels}x{'x'.join(map(str, self.spatial))}"
        return shape if self.fragments == 1 else f"{self.fragments}*{shape}"


@dataclass(frozen=True, eq=False)
class Node:
    """One operation with a single output value.

    `inputs` and `output` name activation values; weights and other constants live in `params`
    (read-only arrays), plain settings in `attrs`.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "attrs", _frozen(self.attrs))
        frozen_params = {}
        for key, value in self.params.items():
            array = np.array(value, dtype=np.float32, copy=True)
            array.flags.writeable = False
            frozen_params[key] = array
        object.__setattr__(self, "params", MappingProxyType(frozen_params))

    def attr(self, key: str) -> Any:
        return self.attrs[key]


@dataclass(frozen=True, eq=False)
class Graph:
    """A static-shaped dataflow graph; `nodes` are kept in a topological order.

    `source`, where a frontend sets it, imports the model again for another input patch (spatial
    sizes in the model's rank): models whose layer sizes are computed from the input size (ONNX
    exports with dynamic axes and shape arithmetic) are re-imported, not re-typed, per patch."""

    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    types: Mapping[str, TensorType]
    spatial_rank: int = 3
    name: str = "graph"
    source: Callable[[tuple[int, ...]], Graph] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "types", _frozen(self.types))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def producer(self, value: str) -> Node | None:
        return next((node for node in self.nodes if node.output == value), None)

    def consumers(self, value: str) -> tuple[Node, ...]:
        return tuple(node for node in self.nodes if value in node.inputs)

    def param_count(self) -> int:
        return sum(int(p.size) for node in self.nodes for p in node.params.values())
