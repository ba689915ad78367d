"""One max-pooling fragment at a time: a dense net's fragment section run in passes, one per offset.

In the fragment (mpf) form of a dense net (passes/dense.py) the first `fragment` splits its input
into B = prod(block) offsets, and every value after it, up to the defragments that undo it, holds B
times what one offset needs, each offset's part computed from that offset's fragment alone. Run
once per offset on that fragment, the section holds 1/B of each of its values. With the conv
before the fragment streamed into it in depth slabs (plan/memory.py `Stream`), its whole output is
never held: the peak falls from two whole-patch values (the first conv's output and its fragments,
then each fragment layer's input and output) to the fragments, one slab and two values of 1/B (n926 at
334^3: 13.7 GB planned against 22.4), and the automatic patch grows to match (n926 286^3 -> 338^3 in
24 GiB), for no more work: each pass reads its fragments where they lie.

The net then runs in three phases, each its own graph with its own memory plan, their arena slots
laid over one another (phases never run at once):
- `prefix`: the graph's inputs -> the fragment's output (`value`), held whole in a buffer of its own;
- `body`: one offset's fragments (entries of `value`, ir/ops.py: offset-major) -> the values the
  top-level defragments read, run once per offset, each pass copied into its offset's entries of
  whole buffers;
- `suffix`: those whole buffers -> the graph's outputs (the top-level defragments and what follows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from znnx.ir.graph import Graph, Node, TensorType
from znnx.ir.verify import infer_types
from znnx.plan.memory import MemoryPlan

LOOP_GAIN = 0.9
"""The loop is kept where it brings the plan's peak below this share of the peak without it."""


@dataclass(frozen=True)
class FragmentLoop:
    """The top-level `fragment` node, its output `value`, its `block`, and the three phases' graphs
    (`body` typed for one offset's fragments)."""

    fragment: str
    value: str
    block: tuple[int, int, int]
    prefix: Graph
    body: Graph
    suffix: Graph

    @property
    def passes(self) -> int:
        return math.prod(self.block)


def fragment_loop(graph: Graph) -> FragmentLoop | None:
    """The loop of `graph` (see the module), or None where it has no top-level fragment section of
    that shape: exactly one `fragment` of unfragmented input, its section contiguous in node order
    and read after it only by the defragments that undo it, no value before it read after it."""
    tops = [i for i, node in enumerate(graph.nodes)
            if node.op == "fragment" and graph.types[node.inputs[0]].fragments == 1]
    if len(tops) != 1:
        return None
    at = tops[0]
    fragment = graph.nodes[at]
    value = fragment.output
    end = at + 1
    while end < len(graph.nodes) and graph.types[graph.nodes[end].output].fragments > 1:
        end += 1
    prefix, body, suffix = graph.nodes[:at + 1], graph.nodes[at + 1:end], graph.nodes[end:]
    inside = {value} | {node.output for node in body}
    before = set(graph.inputs) | {node.output for node in prefix[:-1]}
    if not body or any(v not in inside for node in body for v in node.inputs):
        return None
    if any(v in before for node in suffix for v in node.inputs) or (before | inside) & set(graph.outputs):
        return None
    block = tuple(fragment.attrs["block"])
    undoing = [node for node in suffix if set(node.inputs) & inside]
    if any(node.op != "defragment" or tuple(node.attrs["block"]) != block
           or graph.types[node.inputs[0]].fragments != math.prod(block) for node in undoing):
        return None
    outputs = tuple(dict.fromkeys(node.inputs[0] for node in undoing))
    one = replace(graph.types[value], fragments=graph.types[value].fragments // math.prod(block))

    def phase(nodes: tuple[Node, ...], inputs: tuple[str, ...], outputs: tuple[str, ...], name: str,
              types: dict[str, TensorType]) -> Graph:
        return infer_types(Graph(nodes, inputs, outputs, types, graph.spatial_rank, f"{graph.name}:{name}"), {})

    return FragmentLoop(
        fragment.name, value, block,  # type: ignore[arg-type]
        prefix=phase(prefix, graph.inputs, (value,), "prefix", {n: graph.types[n] for n in graph.inputs}),
        body=phase(body, (value,), outputs, "body", {value: one}),
        suffix=phase(suffix, outputs, graph.outputs, "suffix", {n: graph.types[n] for n in outputs}),
    )


PHASES = ("prefix", "body", "suffix")


def plan_loop(graph: Graph, loop: FragmentLoop, batch: int, element_bytes: int,
              plan: Callable[[Graph, str], MemoryPlan]) -> MemoryPlan:
    """The memory plan of running `graph` through `loop`: each phase planned by `plan` (its graph
    and its name, one of PHASES: the prefix's inputs come from outside the net and the suffix's
    outputs leave it; the rest stays in the backend's layout), their slots laid over one another
    (slot i as large as the largest phase's slot i), the peak the overlaid arena plus the most any
    phase holds outside it: the whole fragments (`value`, kept between calls like the arena), and
    in the loop the whole buffers the passes fill and one pass's body."""
    phases = tuple(plan(g, name) for g, name in zip((loop.prefix, loop.body, loop.suffix), PHASES))
    prefix, body, suffix = phases
    count = max(len(p.slot_bytes) for p in phases)
    slots = tuple(max((p.slot_bytes[i] for p in phases if i < len(p.slot_bytes)), default=0) for i in range(count))

    def nbytes(g: Graph, name: str) -> int:
        return g.types[name].numel * batch * element_bytes

    value = nbytes(loop.prefix, loop.value)
    whole_outputs = sum(nbytes(loop.suffix, n) for n in loop.suffix.inputs)
    outside = max(prefix.peak_bytes - prefix.arena_bytes,
                  value + whole_outputs + body.peak_bytes - body.arena_bytes,
                  value + whole_outputs + suffix.peak_bytes - suffix.arena_bytes)
    return MemoryPlan((*prefix.steps, *body.steps, *suffix.steps), slots, sum(slots) + outside,
                      sum(p.naive_bytes for p in phases), sum(p.weight_bytes for p in phases), batch, loop=loop,
                      phases=phases)
