"""The fragment loop (plan/fragment_loop.py): a dense net's fragment section run one offset at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import znnx
from tests.passes.test_dense import _net, overlapping_net, pooling_net
from znnx.backends import cpu
from znnx.errors import KernelUnavailable
from znnx.kernels import pool
from znnx.net import reshape
from znnx.passes import optimize
from znnx.passes.dense import dilated, fragmented
from znnx.plan import memory
from znnx.plan.fragment_loop import fragment_loop
from znnx.plan.plan import memory_json


@pytest.fixture
def always_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU backend loops whatever the peak it saves."""
    monkeypatch.setattr(cpu, "LOOP_GAIN", float("inf"))


def _cpu_plan(graph: znnx.Graph, loop: bool) -> cpu.MemoryPlan:
    """The CPU backend's memory plan of `graph`, through its fragment loop or whole."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "LOOP_GAIN", float("inf") if loop else 0.0)
        return cpu.memory_plan(graph, 1, cpu.precision("fp32"))


def test_the_loop_splits_a_fragmented_net_after_its_first_fragment() -> None:
    form = fragmented(pooling_net())
    loop = fragment_loop(form)
    assert loop is not None
    first = next(node for node in form.nodes if node.op == "fragment")
    assert (loop.fragment, loop.value, loop.block, loop.passes) == (first.name, first.output, (1, 2, 2), 4)
    assert loop.prefix.nodes[-1] is first and loop.prefix.outputs == loop.body.inputs == (first.output,)
    assert {t.fragments for t in loop.body.types.values()} == {1, 8, 16}  # a quarter of the whole net's
    assert [node.op for node in loop.suffix.nodes] == ["defragment"]
    assert loop.suffix.types[loop.suffix.inputs[0]].fragments == 4
    assert len(loop.prefix.nodes) + len(loop.body.nodes) + len(loop.suffix.nodes) == len(form.nodes)


def test_a_net_that_pools_its_input_loops_from_its_fragments_and_a_dilated_one_not_at_all() -> None:
    pooled_first = znnx.load(torch.nn.Sequential(torch.nn.MaxPool3d(2), torch.nn.Conv3d(1, 2, 3)).eval(),
                             (1, 12, 12, 12))
    loop = fragment_loop(fragmented(pooled_first))
    assert loop is not None and [node.op for node in loop.prefix.nodes] == ["fragment"]
    assert fragment_loop(dilated(pooling_net())) is None


def znni_net() -> znnx.Graph:
    """ZNNi's benchmark nets in small: C3 P C3 C3 C1, as wide after the pool as before, one output."""
    return _net(torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool3d(2),
                                    torch.nn.Conv3d(8, 8, 3), torch.nn.ReLU(), torch.nn.Conv3d(8, 8, 3),
                                    torch.nn.ReLU(), torch.nn.Conv3d(8, 1, 1)), (1, 40, 40, 40))


def test_the_loop_streams_the_first_conv_and_lowers_the_peak_to_the_fragments_and_one_offset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "STREAM_MIN_BYTES", 0)
    form = optimize(reshape(fragmented(znni_net()), (201, 201, 201))).graph  # ReLUs fused, as compile runs it
    loop = fragment_loop(form)
    assert loop is not None
    whole = _cpu_plan(form, loop=False)
    looped = _cpu_plan(form, loop=True)
    assert looped.loop is not None and whole.loop is None
    prefix, body, _ = looped.phases
    assert all(s.consumer not in {n.name for n in loop.body.nodes if n.op == "fragment"}
               for s in body.streams)  # a conv into a fragment streams in the prefix only
    assert [(s.producer, s.consumer) for s in prefix.streams] == [(loop.prefix.nodes[-2].name, loop.fragment)]
    fragments = form.types[loop.value].numel * 4  # as large as the first conv's output
    assert 1.9 * fragments < whole.peak_bytes
    slab = prefix.slot_bytes[0]  # 33 planes of the first conv's output, for 16 planes of fragments
    assert slab == 33 * form.types[loop.prefix.nodes[-2].output].numel * 4 // 199
    outputs = sum(loop.suffix.types[name].numel * 4 for name in loop.suffix.inputs)  # every pass's, whole
    # the fragments beside the slab, one pass, and the outputs: every pass's, defragmented, copied out
    assert fragments + slab < looped.peak_bytes <= fragments + slab + body.peak_bytes + 3 * outputs
    assert looped.peak_bytes < 0.8 * whole.peak_bytes
    assert looped.slot_bytes == tuple(max(p.slot_bytes[i] if i < len(p.slot_bytes) else 0 for p in looped.phases)
                                      for i in range(len(looped.slot_bytes)))
    assert [s.node for s in looped.steps] == [node.name for node in form.nodes]
    assert memory_json(looped)["loop"]["passes"] == 8


@pytest.mark.parametrize("make", [pooling_net, overlapping_net])
@pytest.mark.parametrize("batch", [1, 2])
def test_the_looped_net_gives_the_whole_nets_output(make, batch: int, always_loop: None) -> None:
    graph = make()
    spatial = fragmented(graph).types[graph.inputs[0]].spatial[3 - graph.spatial_rank:]
    x = np.random.default_rng(3).standard_normal(
        (batch, graph.types[graph.inputs[0]].channels, *spatial)).astype(np.float32)
    looped = znnx.compile(graph, patch=spatial, dense="mpf", algorithm="direct")
    assert looped.plan.memory.loop is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "LOOP_GAIN", 0.0)
        whole = znnx.compile(graph, patch=spatial, dense="mpf", algorithm="direct")
    assert whole.plan.memory.loop is None
    for _ in range(2):  # the second call reuses the shared arena
        assert np.array_equal(looped(x), whole(x))


def test_the_loop_runs_winograd_and_fft_fragments(always_loop: None) -> None:
    graph = znni_net()
    x = np.random.default_rng(4).standard_normal((1, 41, 41, 41)).astype(np.float32)
    want = znnx.compile(graph, patch=(41, 41, 41), dense="mpf", algorithm="direct")(x)
    for algorithm in ("winograd4", "fft"):
        net = znnx.compile(graph, patch=(41, 41, 41), dense="mpf", algorithm=algorithm)
        assert net.plan.memory.loop is not None
        assert np.abs(net(x) - want).max() <= 1e-4 * np.abs(want).max()


def test_profile_times_every_node_once(always_loop: None) -> None:
    graph = pooling_net()
    spatial = fragmented(graph).types[graph.inputs[0]].spatial
    net = znnx.compile(graph, patch=spatial, dense="mpf", algorithm="direct")
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((1, 1, *spatial)).astype(np.float32))
    timed = cpu.profile(net.plan, [x], passes=1)
    assert [node.name for node, _ in timed] == [node.name for node in net.graph.nodes]
    assert all(seconds >= 0 for _, seconds in timed)


def test_the_streamed_fragments_without_the_c_pool_kernel_give_the_same_output(monkeypatch: pytest.MonkeyPatch,
                                                                               always_loop: None) -> None:
    monkeypatch.setattr(memory, "STREAM_MIN_BYTES", 0)
    graph = znni_net()
    x = np.random.default_rng(7).standard_normal((2, 1, 81, 81, 81)).astype(np.float32)
    net = znnx.compile(graph, patch=(81, 81, 81), dense="mpf", algorithm="direct")
    assert net.plan.memory.loop is not None and net.plan.memory.phases[0].streams
    want = net(x)

    def unavailable(*args: object, **kwargs: object) -> None:
        raise KernelUnavailable("kernels: no C compiler (test)")

    monkeypatch.setattr(pool, "Pool", unavailable)
    eager = znnx.compile(graph, patch=(81, 81, 81), dense="mpf", algorithm="direct")
    assert memory_json(eager.plan.memory) == memory_json(net.plan.memory)
    assert np.abs(eager(x) - want).max() <= 1e-6 * np.abs(want).max()


def test_a_network_file_keeps_the_loop(tmp_path, always_loop: None) -> None:
    graph = pooling_net()
    spatial = fragmented(graph).types[graph.inputs[0]].spatial
    net = znnx.compile(graph, patch=spatial, dense="mpf", algorithm="direct")
    net.save(tmp_path / "net.znnx")
    loaded = znnx.load_net(tmp_path / "net.znnx")
    assert loaded.plan.memory.loop is not None
    x = np.random.default_rng(6).standard_normal((1, *spatial)).astype(np.float32)
    assert np.array_equal(loaded(x), net(x))
