"""Liveness-based memory plan: which steps write in place, when buffers die, and the peak bytes.

The plan is a value the backend obeys, so the prediction is the execution's own accounting:
- a *view* step (crop, center_crop, identity) aliases its input's buffer, keeping it alive;
- an *in-place* step writes its output into an input's buffer when that buffer has no later reader
  (activations, scale, binary ops, and a conv's residual add, which accumulates into the residual);
- every other step allocates its output while its inputs are alive, then frees the buffers whose
  last reader it was. Graph inputs belong to the caller and graph outputs live to the end.
Peak bytes is the largest sum of live buffers at any step, plus that step's transient scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

from znnx.ir.graph import Graph, Node
from znnx.ir.ops import ACTIVATIONS, BINARY, epilogue

FLOAT_BYTES = 4
VIEW_OPS = frozenset({"crop", "center_crop", "identity"})


@dataclass(frozen=True)
class Step:
    """How one node runs: the input whose buffer it overwrites (`inplace`), or a view of input 0."""

    node: str
    inplace: int | None
    view: bool
    live_bytes: int


@dataclass(frozen=True)
class MemoryPlan:
    steps: tuple[Step, ...]
    peak_bytes: int
    naive_bytes: int
    weight_bytes: int
    input_bytes: int

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.node == name)


def inplace_candidates(node: Node) -> tuple[int, ...]:
    """Inputs whose buffer `node` can overwrite with its output (same shape), in preference order."""
    if node.op in ACTIVATIONS or node.op == "scale" or (node.op in BINARY and len(node.inputs) == 1):
        return (0,)
    if node.op in BINARY:
        return (0, 1)
    if node.op == "conv" and "add" in epilogue(node):
        return (1,)
    return ()


def transient_bytes(graph: Graph, node: Node, batch: int) -> int:
    """Scratch a step needs beyond its inputs and output: explicit copies made for asymmetric pads."""
    if node.op == "conv" and tuple(node.attrs["pads"][:3]) != tuple(node.attrs["pads"][3:]):
        x = graph.types[node.inputs[0]]
        pads = node.attrs["pads"]
        padded = x.channels * batch
        for i in range(3):
            padded *= x.spatial[i] + pads[i] + pads[i + 3]
        return padded * FLOAT_BYTES
    if node.op == "conv_transpose" and any(node.attrs["pads"]):
        return 2 * graph.types[node.output].numel * batch * FLOAT_BYTES
    return 0


def plan_memory(graph: Graph, batch: int = 1, relayout: bool = False) -> MemoryPlan:
    """The memory plan of running `graph` once on a batch of `batch` patches.

    With `relayout`, the backend copies multi-channel inputs into its own layout on entry (a buffer
    it owns and frees after the last reader) and multi-channel outputs back to NCDHW on exit.
    """
    size = {name: t.numel * batch * FLOAT_BYTES for name, t in graph.types.items()}
    last_use = {value: i for i, node in enumerate(graph.nodes) for value in node.inputs}
    forever = len(graph.nodes)
    for name in graph.outputs:
        last_use[name] = forever
    buffer_of = {name: name for name in graph.inputs}
    buffer_size = {name: size[name] for name in graph.inputs}
    copied = {name for name in graph.inputs if relayout and graph.types[name].channels > 1}
    buffer_end = {name: last_use.get(name, 0) if name in copied else forever for name in graph.inputs}
    owned = set(copied)
    live = sum(size[name] for name in copied)
    steps = []
    for i, node in enumerate(graph.nodes):
        view = node.op in VIEW_OPS
        inplace = None
        if not view:
            for k in inplace_candidates(node):
                buffer = buffer_of[node.inputs[k]]
                if (buffer in owned and buffer_end[buffer] == i and size[node.inputs[k]] == size[node.output]
                        and buffer_size[buffer] == size[node.output]
                        and node.inputs.count(node.inputs[k]) == 1):
                    inplace = k
                    break
        if view or inplace is not None:
            buffer = buffer_of[node.inputs[0 if view else inplace]]  # type: ignore[index]
        else:
            buffer = node.output
            buffer_size[buffer] = size[node.output]
            buffer_end[buffer] = i
            owned.add(buffer)
            live += size[node.output]
        buffer_of[node.output] = buffer
        buffer_end[buffer] = max(buffer_end[buffer], last_use.get(node.output, i))
        steps.append(Step(node.name, inplace, view, live + transient_bytes(graph, node, batch)))
        for value in set(node.inputs) | {node.output}:
            dead = buffer_of[value]
            if dead in owned and buffer_end[dead] == i:
                owned.discard(dead)
                live -= buffer_size[dead]
    exit_copies = sum(size[name] for name in graph.outputs if relayout and graph.types[name].channels > 1)
    intermediates = [node.output for node in graph.nodes if node.op not in VIEW_OPS]
    weights = sum(int(p.nbytes) for node in graph.nodes for p in node.params.values())
    return MemoryPlan(
        steps=tuple(steps),
        peak_bytes=max([live + exit_copies, *(step.live_bytes for step in steps)]),
        naive_bytes=sum(size[name] for name in intermediates),
        weight_bytes=weights,
        input_bytes=sum(size[name] for name in graph.inputs),
    )
