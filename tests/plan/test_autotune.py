"""The autotuner: measured choices within tolerance, the disk cache, forcing, and nets running
every algorithm against the reference executor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.passes.graphs import builder, conv
from znnx import reference
from znnx.errors import GraphError
from znnx.ir.graph import Graph, Node
from znnx.net import Net, compile  # noqa: A004
from znnx.passes import optimize
from znnx.plan import autotune
from znnx.plan.algorithm import DIRECT, NAMES, winograd

TOLERANCE = {"direct": 1e-5, "implicit": 1e-5, "scatter": 1e-5, "winograd2": 1e-5, "winograd4": 1e-4, "fft": 1e-5,
             "fft16": 1e-5}


def wide_graph() -> Graph:
    """Wide enough to tune: 3x3x3 + BN-free ELU, a (1,3,3), a (1,4,4) (FFT), a residual add."""
    b, x = builder(channels=16, spatial=(6, 13, 11))
    h = b.add("elu", [conv(b, x, 17)], {"alpha": 1.0})
    g = conv(b, h, 16, kernel=(1, 3, 3), pads=(0, 1, 1, 0, 1, 1))
    f = conv(b, g, 16, kernel=(1, 4, 4), pads=(0, 2, 2, 0, 1, 1))
    s = b.add("relu", [b.add("add", [f, x])])
    return optimize(b.finish([conv(b, s, 3, kernel=(1, 1, 1), pads=(0,) * 6)])).graph


def first_layer_graph() -> Graph:
    """Two input channels (where the implicit-GEMM direct conv applies), same and valid pads, a residual."""
    b, x = builder(channels=2, spatial=(6, 13, 11))
    h = b.add("elu", [conv(b, x, 16)], {"alpha": 1.0})
    g = conv(b, x, 16, kernel=(1, 3, 3), pads=(0, 1, 1, 0, 1, 1))
    return optimize(b.finish([conv(b, b.add("add", [h, g]), 3, kernel=(1, 1, 1), pads=(0,) * 6)])).graph


def compiled(graph: Graph, algorithm: autotune.Forced = None) -> Net:
    return compile(graph, optimize=False, algorithm=algorithm)


def check(net: Net, tolerance: float) -> None:
    x = np.random.default_rng(0).standard_normal((1, net.graph.types["x"].channels, 6, 13, 11)).astype(np.float32)
    want = reference.run(net.graph, {"x": x})[net.graph.outputs[0]]
    assert np.abs(net(x) - want).max() / np.abs(want).max() <= tolerance


@pytest.mark.parametrize("algorithm", NAMES)
def test_every_forced_algorithm_matches_the_reference(algorithm: str) -> None:
    net = compiled(first_layer_graph() if algorithm == "implicit" else wide_graph(), algorithm)
    convs = {c.node: c.algorithm.name for c in net.algorithms}
    spelled = {"fft": "fft16"}.get(algorithm, algorithm)  # plain "fft" forces the backend's FFT size
    assert spelled in convs.values() and all(c.source == "forced" for c in net.algorithms)
    check(net, TOLERANCE[algorithm])


def test_measured_choices_are_cached_on_disk_and_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    first = compiled(wide_graph())
    measured = [c for c in first.algorithms if c.source == "measured"]
    assert len(measured) == 4
    for choice in measured:
        seconds, errors = dict(choice.seconds), dict(choice.errors)
        assert choice.algorithm.name in seconds and "direct" in seconds
        assert seconds[choice.algorithm.name] == min(t for a, t in seconds.items() if errors[a] <= TOLERANCE[a])
    assert "fft16" in dict(measured[2].seconds)  # (1,4,4): Winograd does not apply
    assert set(dict(measured[-1].seconds)) == {"direct", "scatter"}  # 16 -> 3 1x1x1: direct or the scatter
    entries = json.loads(autotune.cache_file().read_text())
    assert sorted(e["algorithm"] for e in entries.values()) == sorted(c.algorithm.name for c in measured)

    def no_timing(*args: object) -> None:
        raise AssertionError("a cached layer was timed again")

    monkeypatch.setattr(autotune, "_measure", no_timing)
    again = compiled(wide_graph())
    assert [(c.node, c.algorithm) for c in again.algorithms] == [(c.node, c.algorithm) for c in first.algorithms]
    assert all(c.source in ("cache", "rule") for c in again.algorithms)
    check(again, 1e-4)


def test_a_cached_close_call_that_now_runs_the_other_way_is_measured_again(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: object) -> None:
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    compiled(wide_graph())
    entries = json.loads(autotune.cache_file().read_text())
    key, entry = next((k, e) for k, e in entries.items() if e["algorithm"] != "direct")
    entry["algorithm"], entry["seconds"]["direct"] = "direct", entry["seconds"][entry["algorithm"]] / 1.2
    autotune.cache_file().write_text(json.dumps(entries))  # direct cached, the true winner a close second
    monkeypatch.setattr(autotune, "_contradicted", lambda *args: False)
    kept = next(c for c in compiled(wide_graph()).algorithms if c.node == entry["node"])
    assert kept.source == "cache" and kept.algorithm == DIRECT
    checked: list[tuple[str, str]] = []
    monkeypatch.setattr(autotune, "_contradicted", lambda build, node, inputs, chosen, rival: checked.append(
        (chosen.name, rival.name)) or True)
    again = next(c for c in compiled(wide_graph()).algorithms if c.node == entry["node"])
    assert again.source == "measured" and checked[0][0] == "direct" and checked[0][1] != "direct"
    assert json.loads(autotune.cache_file().read_text())[key]["algorithm"] == again.algorithm.name


def test_close_rival_is_the_valid_runner_up_within_close_of_the_choice() -> None:
    from znnx.plan.algorithm import fft

    timed = (DIRECT, winograd(2), winograd(4), fft(16))
    seconds = (("direct", 1.0), ("winograd2", 1.2), ("winograd4", 1.1), ("fft16", 0.5))
    errors = (("direct", 0.0), ("winograd2", 1e-6), ("winograd4", 1e-6), ("fft16", 1.0))  # fft16 invalid
    choice = autotune.LayerChoice("a", DIRECT, seconds, errors, "cache")
    assert autotune.close_rival(choice, timed) == winograd(4)
    far = autotune.LayerChoice("a", DIRECT, (("direct", 1.0), ("winograd4", 2.0)), (("winograd4", 0.0),), "cache")
    assert autotune.close_rival(far, timed) is None


def test_contradicted_when_the_rival_runs_more_than_noise_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import torch

    monkeypatch.setattr(autotune, "NOISE", 1.3)

    def build(delays: dict[str, float]) -> autotune.Builder:
        def make(node: object, algorithm: autotune.Algorithm) -> autotune.Conv:
            def run(x: torch.Tensor, *, out: torch.Tensor | None = None, residual: object = None) -> torch.Tensor:
                time.sleep(delays[algorithm.name])
                return x.clone()
            return run
        return make

    x = (torch.zeros(1), None)
    slow_direct = build({"direct": 0.03, "winograd4": 0.005})
    assert autotune._contradicted(slow_direct, None, x, DIRECT, winograd(4))  # type: ignore[arg-type]
    alike = build({"direct": 0.01, "winograd4": 0.01})
    assert not autotune._contradicted(alike, None, x, DIRECT, winograd(4))  # type: ignore[arg-type]


def test_layers_forced_by_name_and_the_rest_measured(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    graph = wide_graph()
    first = next(n.name for n in graph.nodes if n.op == "conv")
    net = compiled(graph, {first: "winograd2"})
    assert net.algorithms[0] == autotune.LayerChoice(first, winograd(2), source="forced")
    assert {c.source for c in net.algorithms[1:]} <= {"measured", "rule"}


def test_bad_forcing_is_a_clear_error() -> None:
    graph = wide_graph()
    with pytest.raises(GraphError, match="not a convolution of this net"):
        compiled(graph, {"nope": "direct"})
    one_by_one = graph.nodes[-1].name
    with pytest.raises(GraphError, match="cannot run"):
        compiled(graph, {one_by_one: "winograd4"})
    with pytest.raises(GraphError, match="unknown algorithm"):
        compiled(graph, "winograd9")


def test_narrow_layers_stay_direct_without_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autotune, "_measure", lambda *args: (_ for _ in ()).throw(AssertionError("timed")))
    b, x = builder(channels=6, spatial=(5, 7, 6))
    net = compiled(optimize(b.finish([conv(b, conv(b, x, 6), 7)])).graph)
    assert all(c.algorithm.name == "direct" and c.source == "rule" for c in net.algorithms)


def test_few_output_channels_still_time_winograd() -> None:
    """A wide input into 3 channels (a score layer) is no narrow layer: direct conv is slow there."""
    from znnx.backends import cpu
    from znnx.plan.precision import PRECISIONS

    b, x = builder(channels=16, spatial=(3, 20, 20))
    graph = optimize(b.finish([conv(b, x, 3, kernel=(1, 5, 5), pads=(0, 2, 2, 0, 2, 2))])).graph
    node = graph.nodes[0]
    timed = autotune.choosable(graph, node, cpu.conv_candidates(graph, node, PRECISIONS["fp32"]))
    assert {"direct", "winograd2", "winograd4", "fft16"} <= {a.name for a in timed}


def test_fft_is_timed_beside_winograd_on_kernels_above_three_only() -> None:
    from znnx.backends import cpu
    from znnx.plan.precision import PRECISIONS

    for kernel, fft in (((3, 3, 3), False), ((1, 3, 3), False), ((5, 5, 5), True), ((3, 5, 3), True)):
        b, x = builder(channels=16, spatial=(9, 11, 10))
        graph = optimize(b.finish([conv(b, x, 16, kernel=kernel)])).graph
        node = graph.nodes[0]
        names = {a.name for a in autotune.choosable(graph, node, cpu.conv_candidates(graph, node, PRECISIONS["fp32"]))}
        assert "winograd4" in names and ("fft16" in names) == fft, kernel


def test_first_layers_time_the_direct_kernels_only(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """Few input channels: oneDNN's direct conv against znnx's implicit GEMM, no Winograd or FFT."""
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    net = compiled(first_layer_graph())
    first = [c for c in net.algorithms if c.source == "measured"]
    assert len(first) == 3  # the two first layers, and the 16 -> 3 head (direct or the scatter)
    assert all(set(dict(c.seconds)) == {"direct", "implicit"} for c in first[:2])
    check(net, 1e-5)


def test_noisy_timings_are_used_but_not_cached_and_retune_replaces_the_cache(
        monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """Runs that never agree (a busy machine) leave nothing in the cache; `retune` measures cached
    layers again."""
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "NOISE", 1.3)
    clock = np.cumsum(np.random.default_rng(0).uniform(1, 10, 100_000))  # every run takes 1 to 10 "seconds"
    ticks = iter(clock.tolist())
    monkeypatch.setattr(autotune.time, "perf_counter", lambda: next(ticks))
    noisy = compiled(wide_graph())
    assert {c.source for c in noisy.algorithms} == {"noisy"}
    assert not autotune.cache_file().exists()
    monkeypatch.undo()
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "NOISE", float("inf"))
    monkeypatch.setattr(autotune, "CONTENDED", 0.0)
    compiled(wide_graph())
    assert {c.source for c in compiled(wide_graph()).algorithms} <= {"cache", "rule"}
    retuned = compile(wide_graph(), optimize=False, retune=True)
    sources = {c.source for c in retuned.algorithms}
    assert "measured" in sources and "cache" not in sources


def test_runs_that_did_not_get_their_cores_count_by_cpu_time_and_as_noisy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel whose threads were descheduled (here: sleeping, no CPU time at all) is estimated by its
    CPU time per thread and marked noisy; without CPU threads (a GPU) the wall time stands."""
    import time

    import torch

    monkeypatch.setattr(autotune, "CONTENDED", 0.75)

    def sleeping(x: torch.Tensor, *, out: torch.Tensor | None = None, residual: object = None) -> torch.Tensor:
        time.sleep(0.01)
        return x

    x = torch.zeros(1)
    timing = autotune._timed(sleeping, x, x, None, threads=2)
    assert timing.contended and timing.seconds < 0.005
    timing = autotune._timed(sleeping, x, x, None)
    assert timing == autotune.Timing(timing.seconds) and timing.seconds >= 0.01

    def spinning(x: torch.Tensor, *, out: torch.Tensor | None = None, residual: object = None) -> torch.Tensor:
        end = time.perf_counter() + 0.01
        while time.perf_counter() < end:
            pass
        return x

    timing = autotune._timed(spinning, x, x, None, threads=1)
    assert timing == autotune.Timing(timing.seconds) and timing.seconds >= 0.01


def test_a_direct_convolution_far_slower_than_the_fast_kernels_runs_twice_not_a_full_timing() -> None:
    import time

    import torch

    from znnx.plan.algorithm import DIRECT, fft

    calls = {"direct": 0, "fft16": 0}

    def build(node: object, algorithm: object) -> object:
        name = algorithm.name  # type: ignore[attr-defined]

        def run(x: torch.Tensor, *, out: torch.Tensor | None = None, residual: object = None) -> torch.Tensor:
            calls[name] += 1
            time.sleep(0.05 if name == "direct" else 0.001)
            return x.clone() if out is None else out.copy_(x)

        return run

    x = torch.ones(1, 2, 3, 3, 3)
    seconds, errors, _ = autotune._measure(build, None, x, None, (DIRECT, fft(16)))  # type: ignore[arg-type]
    assert list(seconds) == ["direct", "fft16"] and errors == {"direct": 0.0, "fft16": 0.0}
    assert calls["direct"] == 2 and calls["fft16"] >= 1 + autotune.REPS
    assert seconds["direct"] > 3 * seconds["fft16"]


@pytest.mark.parametrize("pads, stride", [((1,) * 6, (1, 1, 1)), ((0,) * 6, (2, 1, 1))])
def test_a_large_layer_is_timed_on_a_slab_and_its_times_scaled_to_the_layer(pads: tuple[int, ...],
                                                                             stride: tuple[int, ...]) -> None:
    b, x = builder(channels=4, spatial=(40, 30, 20))
    y = conv(b, b.add("concat", [b.add("relu", [x]), x]), 6, pads=pads, stride=stride)
    r = b.add_input("r", 6, b.type(y).spatial)
    graph = optimize(b.finish([b.add("add", [y, r])])).graph
    node = graph.nodes[-1]
    assert node.attrs["sources"] == 2 and node.attrs["epilogue"] == ("add",)
    layer = autotune.timing_layer(graph, node, 1, limit=400_000)
    scale = autotune.slab_scale(graph.types[node.output], layer.types[node.output], DIRECT, node.attrs["kernel"])
    cut = layer.types[node.output]
    assert layer.nodes == (node,) and set(layer.inputs) == set(node.inputs)
    assert cut.spatial[1:] == graph.types[node.output].spatial[1:]
    assert sum(layer.types[v].numel for v in node.inputs[:2]) * 4 <= 400_000 and cut.numel * 4 <= 400_000
    assert scale == graph.types[node.output].numel / cut.numel and scale >= 2
    assert layer.types[node.inputs[2]] == cut  # the residual, cut as the output
    assert autotune.timing_layer(graph, node, 1) is graph  # within the default limit: whole
    x_cut, residual = autotune._inputs(layer, node, 1, autotune.torch.device("cpu"))
    from znnx.backends.cpu import conv_kernel

    assert conv_kernel(layer, node, DIRECT)(x_cut, residual=residual).shape[2:] == cut.spatial


def fragmented_conv(spatial: tuple[int, int, int], kernel: tuple[int, int, int],
                    fragments: int) -> tuple[Graph, Node]:
    """A valid 8 -> 8 conv alone, its values typed as `fragments` max-pooling fragments."""
    from dataclasses import replace

    b, x = builder(channels=8, spatial=spatial)
    graph = optimize(b.finish([conv(b, x, 8, kernel=kernel, pads=(0,) * 6)])).graph
    fragmented = replace(graph, types={name: replace(t, fragments=fragments) for name, t in graph.types.items()})
    return fragmented, graph.nodes[-1]


def test_a_fragmented_layer_is_cut_to_fewer_fragments_first_and_an_fft_slab_holds_its_tile() -> None:
    from znnx.plan.algorithm import fft

    graph, node = fragmented_conv((60, 60, 60), (7, 7, 7), 8)
    whole = graph.types[node.output]
    layer = autotune.timing_layer(graph, node, 1, (DIRECT, fft(24)), limit=2_000_000)
    cut = layer.types[node.output]
    assert cut.fragments == 1 and cut.spatial == (36, 36, whole.spatial[2])  # two of fft24's 18-voxel tiles
    assert autotune.slab_scale(whole, cut, DIRECT, (7, 7, 7)) == whole.numel / cut.numel
    assert autotune.slab_scale(whole, cut, fft(24), (7, 7, 7)) == 8 * (54 / 36) ** 2  # 54 = 3 tiles cover 54
    assert autotune.timing_layer(graph, node, 1, (DIRECT,), limit=2_000_000).types[node.output].spatial[0] < 36
    x_cut, _ = autotune._inputs(layer, node, 1, autotune.torch.device("cpu"))
    assert x_cut.shape[0] == 1


def test_small_fragments_are_timed_whole_and_many_so_their_data_leave_the_caches() -> None:
    graph, node = fragmented_conv((20, 20, 20), (3, 3, 3), 64)
    whole = graph.types[node.output]
    per_fragment = 20 ** 3 * 8 * 4
    layer = autotune.timing_layer(graph, node, 1, limit=1_000_000, fragment_limit=15 * per_fragment + 1)
    cut = layer.types[node.output]
    assert cut.fragments == 15 and cut.spatial == whole.spatial
    assert autotune.slab_scale(whole, cut, DIRECT, (3, 3, 3)) == 64 / 15
    assert autotune.timing_layer(graph, node, 1, limit=1_000_000, fragment_limit=10 ** 9) is graph


def test_direct_speedup_sums_the_layers_timed_both_ways() -> None:
    choices = (autotune.LayerChoice("a", winograd(4), (("direct", 3.0), ("winograd4", 1.0))),
               autotune.LayerChoice("b", DIRECT, (("direct", 1.0), ("winograd4", 2.0))),
               autotune.LayerChoice("c", DIRECT), autotune.LayerChoice("d", winograd(4), source="forced"))
    assert autotune.direct_speedup(choices) == 2.0
    assert autotune.direct_speedup(choices[2:]) is None


def test_a_noisy_layer_takes_the_largest_winograd_tile() -> None:
    from znnx.plan.algorithm import DIRECT, IMPLICIT, winograd

    valid = [DIRECT, winograd(2), winograd(4)]
    assert autotune._noisy_choice(valid, {"direct": 1.0, "winograd2": 0.3, "winograd4": 1.1}) == winograd(4)
    assert autotune._noisy_choice(valid[:2], {"direct": 0.5, "winograd2": 0.9}) == winograd(2)
    assert autotune._noisy_choice([DIRECT, IMPLICIT], {"direct": 1.0, "implicit": 0.7}) == IMPLICIT


def test_a_noisy_layer_takes_an_fft_that_measured_far_faster_than_its_largest_winograd_tile() -> None:
    from znnx.plan.algorithm import DIRECT, fft, winograd

    valid = [DIRECT, winograd(4), fft(16), fft(32)]
    assert autotune._noisy_choice(valid, {"direct": 9.0, "winograd4": 4.0, "fft16": 3.0, "fft32": 1.5}) == fft(32)
    assert autotune._noisy_choice(valid, {"direct": 9.0, "winograd4": 4.0, "fft16": 3.0, "fft32": 2.5}) == winograd(4)


def test_layers_of_one_shape_are_measured_once_and_choose_alike(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: object) -> None:
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    measured = []
    measure = autotune._measure
    monkeypatch.setattr(autotune, "_measure", lambda build, node, *args: measured.append(node.name) or
                        measure(build, node, *args))
    b, x = builder(channels=16, spatial=(6, 13, 11))
    graph = optimize(b.finish([b.add("relu", [conv(b, b.add("relu", [conv(b, x, 16)]), 16)])])).graph
    net = compiled(graph)
    first, second = net.algorithms
    assert measured == [first.node] and (first.source, second.source) == ("measured", "cache")
    assert second.algorithm == first.algorithm


def test_a_leaner_kernel_nearly_as_fast_runs_where_it_saves_enough_memory() -> None:
    """The original U-Net's 512 -> 512 layer: F(2,3) 26.1 ms and 64 MB of transformed weights, direct
    27.3 ms and none: direct runs. Small savings and clear losses keep the fastest."""
    valid = [DIRECT, winograd(2), winograd(4)]
    mib = 1 << 20
    weights = {"direct": 0, "winograd2": 64 * mib, "winograd4": 226 * mib}
    size = lambda a: weights[a.name]
    assert autotune.lean_choice(valid, {"direct": 27.3, "winograd2": 26.1, "winograd4": 48.2}, size) == DIRECT
    assert autotune.lean_choice(valid, {"direct": 29.0, "winograd2": 26.1, "winograd4": 48.2}, size) == winograd(2)
    assert autotune.lean_choice(valid, {"direct": 40.0, "winograd2": 26.1, "winograd4": 26.0}, size) == winograd(2)
    small = {"direct": 0, "winograd2": 2 * mib, "winograd4": 6 * mib}
    assert autotune.lean_choice(valid, {"direct": 10.2, "winograd2": 10.1, "winograd4": 10.0},
                                lambda a: small[a.name]) == winograd(4)


def test_short_kernels_are_timed_over_a_round_of_many_runs() -> None:
    """A 1 ms kernel runs about ROUND_SECONDS / 1 ms times a round, a 20 ms one REPS times."""
    import time

    import torch

    calls = []

    def kernel(seconds: float) -> autotune.Conv:
        def run(x: torch.Tensor, *, out: torch.Tensor | None = None, residual: object = None) -> torch.Tensor:
            calls.append(seconds)
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
            return x
        return run

    x = torch.zeros(1)
    assert not autotune._timed(kernel(0.001), x, x, None).unsteady
    assert 20 <= len(calls) <= autotune.MAX_REPS
    calls.clear()
    autotune._timed(kernel(0.02), x, x, None)
    assert len(calls) == autotune.REPS


@pytest.mark.parametrize("noise, chosen", [("unsteady", "winograd2"), ("contended", "winograd4")])
def test_only_contended_timings_fall_back_to_the_largest_tile(monkeypatch: pytest.MonkeyPatch, tmp_path: object,
                                                              noise: str, chosen: str) -> None:
    """Runs that merely never agreed still choose by what they measured (F(2,3) here, 3x faster than
    F(4,3)); runs beside another process take the largest Winograd tile. Neither is cached."""
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    seconds = {"direct": 3.0, "winograd2": 1.0, "winograd4": 3.0, "fft16": 9.0, "scatter": 9.0}

    def measure(build: object, node: object, x: object, residual: object, algorithms: tuple, *args: object) -> tuple:
        names = [a.name for a in algorithms]
        return {n: seconds[n] for n in names}, {n: 0.0 for n in names}, noise

    monkeypatch.setattr(autotune, "_measure", measure)
    net = compiled(wide_graph())
    first = net.algorithms[0]
    assert (first.algorithm.name, first.source) == (chosen, "noisy")
    assert not autotune.cache_file().exists()


def test_a_contended_layer_is_measured_again_and_a_quiet_measurement_decides(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: object) -> None:
    """Timings beside another process are retaken (up to CONTENDED_RETRIES times); the first quiet
    one chooses by what it measured and is cached."""
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    seconds = {"direct": 3.0, "winograd2": 1.0, "winograd4": 3.0, "fft16": 9.0, "scatter": 9.0}
    calls: list[str] = []

    def measure(build: object, node: object, x: object, residual: object, algorithms: tuple, *args: object) -> tuple:
        names = [a.name for a in algorithms]
        calls.append(str(getattr(node, "name", node)))
        noise = "contended" if calls.count(calls[-1]) <= autotune.CONTENDED_RETRIES else ""
        return {n: seconds[n] for n in names}, {n: 0.0 for n in names}, noise

    monkeypatch.setattr(autotune, "_measure", measure)
    first = compiled(wide_graph()).algorithms[0]
    assert (first.algorithm.name, first.source) == ("winograd2", "measured")
    assert calls.count(first.node) == 1 + autotune.CONTENDED_RETRIES
    assert autotune.cache_file().exists()
