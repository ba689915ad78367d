"""The memory plan: slots never hold two live values, in-place writes only dead buffers, the
prediction matches the measured peak growth, and the plan beats keeping every tensor alive."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

import znnx
from tests.nets import cases
from znnx.backends import cpu


def _lifetimes(graph: znnx.Graph) -> dict[str, tuple[int, int]]:
    """First and last step of each node output, following views and in-place successors."""
    last_use = {v: i for i, n in enumerate(graph.nodes) for v in n.inputs}
    return {n.output: (i, len(graph.nodes) if n.output in graph.outputs else last_use.get(n.output, i))
            for i, n in enumerate(graph.nodes)}


@pytest.mark.parametrize("case", cases()[:6], ids=lambda c: c.name)
def test_slots_hold_one_live_buffer_at_a_time(case: object) -> None:
    model, shape = case.build(), case.input_shape  # type: ignore[attr-defined]
    net = znnx.compile(znnx.load(model, shape))
    graph, plan = net.graph, net.plan.memory
    life = _lifetimes(graph)
    root = {}
    for node, step in zip(graph.nodes, plan.steps):
        alias = node.inputs[0] if step.view else (node.inputs[step.inplace] if step.inplace is not None else None)
        root[node.output] = root.get(alias, alias) if alias is not None else node.output
    span: dict[str, tuple[int, int]] = {}
    for value, (first, last) in life.items():
        r = root[value]
        lo, hi = span.get(r, (first, last))
        span[r] = (min(lo, first), max(hi, last))
    by_slot: dict[int, list[tuple[int, int]]] = {}
    for node, step in zip(graph.nodes, plan.steps):
        if step.slot is not None:
            by_slot.setdefault(step.slot, []).append(span[node.output])
    for intervals in by_slot.values():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end < start
    last_use = {v: i for i, n in enumerate(graph.nodes) for v in n.inputs}
    defined = {n.output: i for i, n in enumerate(graph.nodes)}
    for i, (node, step) in enumerate(zip(graph.nodes, plan.steps)):
        if step.inplace is not None:
            written = node.inputs[step.inplace]
            assert written not in graph.inputs or graph.types[written].channels > 1
            earlier = [v for v, r in root.items() if r == root.get(written, written) and defined[v] < i]
            assert all(last_use.get(v, i) <= i and v not in graph.outputs for v in earlier)
    boundary = sum(graph.types[n].numel * 4 for n in (*graph.inputs, *graph.outputs))
    assert plan.peak_bytes <= plan.naive_bytes + boundary


def test_batch_scales_the_plan() -> None:
    case = cases()[0]
    net = znnx.compile(znnx.load(case.build(), case.input_shape))
    two = cpu.memory_plan(net.graph, 2, net.precision)
    assert net.memory_bytes(2) == two.peak_bytes == 2 * net.memory_bytes()
    x = np.random.default_rng(0).standard_normal((2, *net.input_shape)).astype(np.float32)
    np.testing.assert_allclose(net(x)[1], net(x[1]), rtol=1e-5, atol=1e-6)


def test_predicted_peak_matches_measured_growth() -> None:
    """Full-width symmetric U-Net at its standard patch, in a fresh process."""
    out = subprocess.run([sys.executable, "-m", "znnx.bench.memory_check", "symmetric", "64,128,128"],
                         capture_output=True, text=True, check=True, timeout=600)
    result = json.loads(out.stdout)
    assert abs(result["error"]) < 0.10, result
    assert result["plan_peak_mib"] < result["naive_mib"]
