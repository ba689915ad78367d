"""Liveness-based memory plan: where every value lives, when buffers die, and the peak bytes.

The plan is a value the backend obeys, so the prediction is the execution's own accounting. Each
node's output is one of:
- a *view* (crop, center_crop, identity) aliasing its input's buffer, keeping it alive;
- *in place*: written into an input's buffer that has no later reader (activations, scale,
  binary ops, and a conv's residual add, which accumulates into the residual);
- a *slot* of the net's arena: buffers allocated once and reused by values whose lifetimes do not
  overlap (best fit among free slots), for ops the backend can point at a given buffer;
- *fresh*: allocated by the op itself and freed after its last reader.
A conv whose only reader is the next node, another conv or a `fragment`, may be *streamed* into it
(`Stream`): the pair runs in depth slabs at the reader's step, the first conv's output never whole,
only one slab of it in its slot (ZNNi's lesson: activations, not weights, bound the patch, and the
largest are the first layers' of a valid U-Net, or a dense net's before its first pool). A dense
net's fragment section may run one offset at a time (`loop`, plan/fragment_loop.py).
Graph inputs belong to the caller; graph outputs live to the end and never in a slot, since the
arena is overwritten by the next call. Peak bytes = the arena + the largest sum of live fresh
buffers at any step, plus that step's transient scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from znnx.errors import GraphError
from znnx.ir.graph import Graph, Node, TensorType
from znnx.ir.ops import ACTIVATIONS, BINARY, conv_input, conv_sources, epilogue, fragment_window

if TYPE_CHECKING:
    from znnx.plan.fragment_loop import FragmentLoop

FLOAT_BYTES = 4
BUFFERS: dict[str, str] = {
    **{op: "input" for op in (*ACTIVATIONS, *BINARY, "scale", "prelu")},
    **{op: "residual" for op in ("conv", "conv_transpose")},
    **{op: "view" for op in ("crop", "center_crop", "identity")},
    **{op: "own" for op in ("batchnorm", "softmax", "concat", "pad", "max_pool", "avg_pool", "upsample", "fragment",
                            "defragment")},
}
"""Where each op's output may live: `input` (over an input of the same shape that dies there),
`residual` (over the residual a fused add reads), `view` (a view of input 0, no buffer), `own` (a
buffer of its own)."""
VIEW_OPS = frozenset(op for op, where in BUFFERS.items() if where == "view")


@dataclass(frozen=True)
class Step:
    """Where one node's output lives: an input's buffer (`inplace`), input 0 (`view`), an arena
    `slot`, or a fresh allocation (all None/False); `live_bytes` is the memory in use during it;
    `scratch` is the arena slot of its temporary buffer, if the backend asked for one."""

    node: str
    inplace: int | None
    view: bool
    slot: int | None
    live_bytes: int
    scratch: int | None = None


@dataclass(frozen=True)
class Stream:
    """Conv `producer` streamed into `consumer` (the next node, its only reader: a conv, or a
    `fragment`): the consumer's step computes `planes` of its output depth at a time (of each
    fragment), each from the producer's slab for them, computed then into the producer's slot (one
    slab, one patch of the batch at a time)."""

    producer: str
    consumer: str
    planes: int


@dataclass(frozen=True)
class MemoryPlan:
    """Where each node's output lives (`steps`), the arena's slots, the peak bytes of one call of
    `batch` patches; `streams` run conv pairs in depth slabs; with a `loop` (plan/fragment_loop.py)
    the net runs in three `phases` (prefix, body, suffix), each with its own plan, their slots laid
    over `slot_bytes`."""

    steps: tuple[Step, ...]
    slot_bytes: tuple[int, ...]
    peak_bytes: int
    naive_bytes: int
    weight_bytes: int
    batch: int
    streams: tuple[Stream, ...] = ()
    loop: FragmentLoop | None = None
    phases: tuple[MemoryPlan, ...] = ()

    @property
    def arena_bytes(self) -> int:
        return sum(self.slot_bytes)


def inplace_candidates(node: Node) -> tuple[int, ...]:
    """Inputs whose buffer `node` can overwrite with its output (same shape), in preference order."""
    where = BUFFERS.get(node.op)
    if where is None:
        raise GraphError(f"memory plan: op {node.op!r} (node {node.name!r}) is not in plan.memory.BUFFERS; say "
                         f"there where its output may live")
    if where == "input":
        return (0, 1)[:len(node.inputs)]
    if where == "residual" and epilogue(node)[:1] == ("add",):
        return (conv_sources(node) if node.op == "conv" else 1,)
    return ()


def transient_bytes(graph: Graph, node: Node, batch: int, element_bytes: int = FLOAT_BYTES) -> int:
    """Scratch a step needs beyond its inputs and output: explicit copies made for asymmetric pads."""
    if node.op == "conv" and tuple(node.attrs["pads"][:3]) != tuple(node.attrs["pads"][3:]):
        x = conv_input(graph.types, node)
        pads = node.attrs["pads"]
        padded = x.channels * batch
        for i in range(3):
            padded *= x.spatial[i] + pads[i] + pads[i + 3]
        return padded * element_bytes
    if node.op == "conv_transpose" and any(node.attrs["pads"]):
        return 2 * graph.types[node.output].numel * batch * element_bytes
    return 0


class _Slots:
    """Arena slots: best fit among slots free before a buffer's first step, else the largest free
    slot grown to fit, else a new slot."""

    def __init__(self) -> None:
        self.size: list[int] = []
        self.busy_until: list[int] = []

    def take(self, nbytes: int, first: int, last: int) -> int:
        free = [i for i, until in enumerate(self.busy_until) if until < first]
        fitting = [i for i in free if self.size[i] >= nbytes]
        if fitting:
            slot = min(fitting, key=lambda i: self.size[i])
        elif free:
            slot = max(free, key=lambda i: self.size[i])
        else:
            self.size.append(0)
            self.busy_until.append(0)
            slot = len(self.size) - 1
        self.size[slot] = max(self.size[slot], nbytes)
        self.busy_until[slot] = last
        return slot


@dataclass(frozen=True)
class _Aliasing:
    buffer_of: dict[str, str]
    first: dict[str, int]
    last: dict[str, int]
    inplace: dict[str, int]


def _alias(graph: Graph, size: dict[str, int], owned_inputs: set[str], streams: Sequence[Stream]) -> _Aliasing:
    """Decide views and in-place writes; every buffer's first and last step (graph outputs: forever;
    a streamed producer's inputs: its consumer's step, where the producer runs)."""
    last_use = {value: i for i, node in enumerate(graph.nodes) for value in node.inputs}
    at = {node.name: i for i, node in enumerate(graph.nodes)}
    for stream in streams:
        for value in _node(graph, stream.producer).inputs:
            last_use[value] = max(last_use[value], at[stream.consumer])
    forever = len(graph.nodes)
    for name in graph.outputs:
        last_use[name] = forever
    buffer_of = {name: name for name in graph.inputs}
    first = {name: -1 for name in graph.inputs}
    last = {name: last_use.get(name, -1) if name in owned_inputs else forever for name in graph.inputs}
    inplace: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        buffer = node.output
        if node.op in VIEW_OPS:
            buffer = buffer_of[node.inputs[0]]
        else:
            for k in inplace_candidates(node):
                candidate = buffer_of[node.inputs[k]]
                owned = first[candidate] >= 0 or candidate in owned_inputs
                if (owned and last[candidate] == i and size[candidate] == size[node.output]
                        and node.inputs.count(node.inputs[k]) == 1):
                    inplace[node.name], buffer = k, candidate
                    break
        if buffer == node.output:
            first[buffer], last[buffer] = i, i
        buffer_of[node.output] = buffer
        last[buffer] = max(last[buffer], last_use.get(node.output, i))
    return _Aliasing(buffer_of, first, last, inplace)


STREAM_PLANES = 16
"""Output planes of a streamed consumer per slab: a multiple of every Winograd tile (2, 4), and a
3-deep consumer kernel recomputes 2 producer planes per 16 (12.5% of the producer's work)."""
STREAM_MIN_BYTES = 64 << 20
"""A producer output (per patch) below this is not worth streaming."""
STREAM_GAIN = 0.9
"""A stream is kept where it brings the plan's peak below this share of the peak without it."""


def _node(graph: Graph, name: str) -> Node:
    return next(node for node in graph.nodes if node.name == name)


def consumed_planes(consumer: Node, planes: int) -> int:
    """The input planes `planes` output planes of a streamed consumer read: a conv's plus its
    kernel's reach; a fragment's blocks of them plus its window's reach."""
    if consumer.op == "fragment":
        return planes * consumer.attrs["block"][0] + fragment_window(consumer)[0] - 1
    return planes + consumer.attrs["kernel"][0] - 1


def stream_slab(graph: Graph, stream: Stream) -> TensorType:
    """The producer's output slab for one patch: what `planes` of the consumer read."""
    t = graph.types[_node(graph, stream.producer).output]
    depth = min(t.spatial[0], consumed_planes(_node(graph, stream.consumer), stream.planes))
    return TensorType(t.channels, (depth, *t.spatial[1:]))


def plan_memory(graph: Graph, batch: int = 1, relayout: bool = False,
                placeable: Callable[[Node], bool] = lambda node: False,
                scratch: Callable[[Graph, Node], int] = lambda graph, node: 0,
                element_bytes: int = FLOAT_BYTES,
                accumulates: Callable[[Node], bool] = lambda node: False,
                streamable: Callable[[Graph, Node, Node], bool] = lambda graph, a, b: False,
                enters: bool = True, exits: bool = True) -> MemoryPlan:
    """The memory plan of running `graph` once on a batch of `batch` patches, activations and
    weights held in `element_bytes` per value (4 for fp32, 2 for fp16 / bf16).

    `placeable(node)` says whether the backend can write the node's output into an arena slot;
    `scratch(graph, node)` how many elements per patch of arena scratch the step needs while it runs;
    `accumulates(node)` whether a transposed conv adds into its residual's buffer as it computes
    (otherwise its result is computed apart, then added, where it has no scratch for it).
    With `relayout`, the backend copies multi-channel inputs into its own layout on entry (with
    `enters`: a buffer it owns and frees after the last reader; else they come in its layout and
    stay the caller's) and multi-channel outputs back to NCDHW on exit (with `exits`).
    `streamable(graph, a, b)` says whether the backend can stream conv `a` into `b` (`Stream`):
    pairs whose producer output takes at least STREAM_MIN_BYTES a patch are streamed, largest
    first, each where it brings the peak below STREAM_GAIN of what it was; a conv takes part in
    one stream at most.
    """
    options = (batch, relayout, placeable, scratch, element_bytes, accumulates, enters, exits)
    plan = _plan(graph, (), *options)
    pairs = [Stream(a.name, b.name, STREAM_PLANES) for a, b in zip(graph.nodes, graph.nodes[1:])
             if graph.consumers(a.output) == (b,) and a.output not in graph.outputs and streamable(graph, a, b)
             and graph.types[a.output].numel * element_bytes >= STREAM_MIN_BYTES]
    for pair in sorted(pairs, key=lambda p: -graph.types[_node(graph, p.producer).output].numel):
        if {pair.producer, pair.consumer} & {name for s in plan.streams for name in (s.producer, s.consumer)}:
            continue  # a conv takes part in one stream at most
        tried = _plan(graph, (*plan.streams, pair), *options)
        if tried.peak_bytes < STREAM_GAIN * plan.peak_bytes:
            plan = tried
    return plan


def _plan(graph: Graph, streams: tuple[Stream, ...], batch: int, relayout: bool, placeable: Callable[[Node], bool],
          scratch: Callable[[Graph, Node], int], element_bytes: int,
          accumulates: Callable[[Node], bool], enters: bool, exits: bool) -> MemoryPlan:
    """`plan_memory` with the given streams."""
    size = {name: t.numel * batch * element_bytes for name, t in graph.types.items()}
    producers = {stream.producer for stream in streams}
    for stream in streams:
        size[_node(graph, stream.producer).output] = stream_slab(graph, stream).numel * element_bytes
    copied = {name for name in graph.inputs if relayout and enters and graph.types[name].channels > 1}
    aliasing = _alias(graph, size, copied, streams)
    forever = len(graph.nodes)
    slots, slot_of, scratch_of = _Slots(), {}, {}
    for i, node in enumerate(graph.nodes):
        buffer = node.output
        if (aliasing.buffer_of[buffer] == buffer and (placeable(node) or node.name in producers)
                and aliasing.last[buffer] < forever):
            slot_of[buffer] = slots.take(size[buffer], aliasing.first[buffer], aliasing.last[buffer])
        if scratch(graph, node):
            scratch_of[node.name] = slots.take(scratch(graph, node) * batch * element_bytes, i, i)
    fresh = [b for b in aliasing.first if b not in slot_of and (b in copied or b not in graph.inputs)]
    steps = []
    for i, node in enumerate(graph.nodes):
        live = sum(size[b] for b in fresh if aliasing.first[b] <= i <= aliasing.last[b])
        buffer = aliasing.buffer_of[node.output]
        if (node.op == "conv_transpose" and node.name in aliasing.inplace and node.name not in scratch_of
                and not accumulates(node)):
            live += size[node.output]  # computed apart, then added into the residual
        steps.append(Step(node.name, aliasing.inplace.get(node.name), node.op in VIEW_OPS,
                          slot_of.get(buffer) if buffer == node.output else None,
                          live + transient_bytes(graph, node, batch, element_bytes), scratch_of.get(node.name)))
    at_exit = sum(size[b] for b in fresh if aliasing.last[b] >= forever)
    exit_copies = sum(size[name] for name in graph.outputs if relayout and exits and graph.types[name].channels > 1)
    intermediates = [node.output for node in graph.nodes if node.op not in VIEW_OPS]
    weights = sum(int(p.size) * element_bytes for node in graph.nodes for p in node.params.values())
    arena = sum(slots.size)
    return MemoryPlan(
        steps=tuple(steps),
        slot_bytes=tuple(slots.size),
        peak_bytes=arena + max([at_exit + exit_copies, *(step.live_bytes for step in steps)]),
        naive_bytes=sum(size[name] for name in intermediates),
        weight_bytes=weights,
        batch=batch,
        streams=streams,
    )
