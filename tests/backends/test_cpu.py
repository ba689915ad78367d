"""The fused CPU backend against the reference executor: every epilogue path, slots, in-place steps."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nets import rel_error
from tests.passes.graphs import batchnorm, builder, conv
from znnx import reference
from znnx.backends.cpu import FITTED_FFT_SIZES, fft_sizes, fitted_fft_size, overlaps, placeable
from znnx.errors import KernelUnavailable
from znnx.ir.graph import Graph
from znnx.ir.ops import ACTIVATIONS
from znnx.kernels import fft, pool, shuffle
from znnx.net import Net, compile  # noqa: A004
from znnx.passes import optimize


def _check(graph: Graph, batch: int = 2, tolerance: float = 1e-5) -> Net:
    net = compile(graph, optimize=False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, graph.types["x"].channels, *graph.types["x"].spatial)).astype(np.float32)
    original = x.copy()
    expected = reference.run(graph, {"x": x})[graph.outputs[0]]
    for _ in range(2):
        actual = net(x)
        actual = actual[0] if isinstance(actual, tuple) else actual
        assert np.abs(actual - expected).max() / np.abs(expected).max() < tolerance
    np.testing.assert_array_equal(x, original)
    return net


def _unavailable(*args: object, **kwargs: object) -> None:
    raise KernelUnavailable("kernels: no C compiler (test)")


@pytest.mark.parametrize("act", [None, *sorted(ACTIVATIONS)])
@pytest.mark.parametrize("order", ["add_first", "act_first", "no_add"])
def test_conv_epilogues(act: str | None, order: str) -> None:
    b, x = builder(channels=4, spatial=(3, 6, 5))
    h = conv(b, x, 4)
    c = conv(b, h, 4)
    attrs = {"alpha": 0.2} if act in ("elu", "leaky_relu") else {}
    if order == "no_add":
        out = b.add(act, [c], attrs) if act else c
    elif order == "add_first":
        s = b.add("add", [c, h])
        out = b.add(act, [s], attrs) if act else s
    else:
        a = b.add(act, [c], attrs) if act else c
        out = b.add("add", [h, a])
    graph = optimize(b.finish([b.add("tanh", [out])])).graph
    _check(graph)


def test_residual_still_needed_later_is_copied_into_a_slot() -> None:
    b, x = builder(channels=4, spatial=(3, 6, 5))
    h = conv(b, x, 4)
    s = b.add("add", [conv(b, h, 4), h])
    graph = optimize(b.finish([b.add("concat", [s, h])])).graph
    net = _check(graph)
    assert any(step.slot is not None for step in net.plan.memory.steps)


def test_anisotropic_strided_grouped_and_asymmetric_convs() -> None:
    b, x = builder(channels=4, spatial=(5, 9, 8))
    y = conv(b, x, 6, kernel=(1, 3, 3), pads=(0, 1, 1, 0, 1, 1), stride=(1, 2, 2))
    y = conv(b, y, 6, kernel=(3, 1, 1), pads=(1, 0, 0, 1, 0, 0), groups=3)
    y = conv(b, b.add("elu", [batchnorm(b, y)], {"alpha": 1.0}), 4, kernel=(2, 2, 3), pads=(0, 1, 1, 1, 0, 1))
    y = conv(b, y, 4, kernel=(2, 2, 2), pads=(0,) * 6, transposed=True, stride=(2, 2, 2))
    graph = optimize(b.finish([b.add("relu", [y])])).graph
    _check(graph)


@pytest.mark.parametrize("compiler", [True, False])
def test_transposed_conv_with_residual_and_pooling(compiler: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not compiler:
        monkeypatch.setattr(pool, "Pool", _unavailable)
        monkeypatch.setattr(shuffle, "ShuffleConv", _unavailable)
    b, x = builder(channels=2, spatial=(4, 8, 8))
    skip = b.add("elu", [conv(b, x, 4)], {"alpha": 1.0})
    down = b.add("max_pool", [skip], {"kernel": (2, 2, 2), "stride": (2, 2, 2), "pads": (0,) * 6,
                                      "ceil_mode": False})
    up = conv(b, conv(b, down, 8), 4, kernel=(2, 2, 2), pads=(0,) * 6, transposed=True, stride=(2, 2, 2))
    graph = optimize(b.finish([conv(b, b.add("add", [up, skip]), 3, kernel=(1, 1, 1), pads=(0,) * 6)])).graph
    assert [n.op for n in graph.nodes].count("add") == 0
    net = _check(graph)
    assert net.plan.memory.steps[[n.op for n in graph.nodes].index("max_pool")].slot is not None


@pytest.mark.parametrize("compiler", [True, False])
def test_narrow_average_and_max_pools_into_arena_slots(compiler: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not compiler:
        monkeypatch.setattr(pool, "Pool", _unavailable)
    b, x = builder(channels=2, spatial=(5, 9, 9))
    h = b.add("relu", [conv(b, x, 12)])
    avg = b.add("avg_pool", [h], {"kernel": (1, 3, 3), "stride": (1, 2, 2), "pads": (0, 1, 1, 0, 1, 1),
                                  "ceil_mode": True, "count_include_pad": True})
    top = b.add("max_pool", [conv(b, avg, 6)], {"kernel": (2, 3, 3), "stride": (1, 3, 3), "pads": (0,) * 6,
                                                "ceil_mode": False})
    net = _check(optimize(b.finish([conv(b, top, 3, kernel=(1, 1, 1), pads=(0,) * 6)])).graph)
    ops = [n.op for n in net.graph.nodes]
    assert all(net.plan.memory.steps[ops.index(op)].slot is not None for op in ("avg_pool", "max_pool"))


def test_multichannel_input_is_copied_not_overwritten() -> None:
    b, x = builder(channels=3, spatial=(2, 5, 5))
    graph = optimize(b.finish([b.add("add", [b.add("relu", [x]), x])])).graph
    _check(graph, batch=1)


@pytest.mark.parametrize("kernel, pads", [((3, 3, 3), (1,) * 6), ((2, 2, 2), (1, 0, 1, 1, 0, 1)),
                                          ((1, 2, 2), (0,) * 6)])
def test_transposed_conv_paths_with_residual(kernel: tuple[int, ...], pads: tuple[int, ...]) -> None:
    b, x = builder(channels=3, spatial=(3, 5, 4))
    stride = (1, 2, 2) if kernel == (1, 2, 2) else (2, 2, 2)
    first = conv(b, x, 4, kernel=kernel, pads=pads, transposed=True, stride=stride)
    second = conv(b, x, 4, kernel=kernel, pads=pads, transposed=True, stride=stride)
    graph = optimize(b.finish([b.add("elu", [b.add("add", [first, second])], {"alpha": 1.0})])).graph
    assert [n.attrs.get("epilogue") for n in graph.nodes][-1] == ("add", "elu")
    _check(graph)


@pytest.mark.parametrize("compiler", [True, False])
@pytest.mark.parametrize("kernel, pads, output_padding", [((2, 2, 2), (0,) * 6, (0, 0, 0)),
                                                          ((3, 3, 3), (1,) * 6, (1, 1, 1))])
def test_transposed_conv_with_skip_scale_and_activation(kernel: tuple[int, ...], pads: tuple[int, ...],
                                                        output_padding: tuple[int, ...], compiler: bool,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An up-convolution (C kernel, or its GEMM + shuffle without a compiler) and a oneDNN deconvolution
    with the fused (add, scale, elu) epilogue of PZnet's decoder."""
    if not compiler:
        monkeypatch.setattr(shuffle, "ShuffleConv", _unavailable)
    b, x = builder(channels=4, spatial=(4, 6, 8))
    skip = b.add("elu", [conv(b, x, 6)], {"alpha": 1.0})
    down = b.add("max_pool", [skip], {"kernel": (2, 2, 2), "stride": (2, 2, 2), "pads": (0,) * 6, "ceil_mode": False})
    rng = np.random.default_rng(4)
    up = b.add("conv_transpose", [conv(b, down, 8)], {"kernel": kernel, "stride": (2, 2, 2), "dilation": (1, 1, 1),
                                                      "pads": pads, "groups": 1, "output_padding": output_padding},
               {"weight": rng.standard_normal((8, 6, *kernel)) * 0.3, "bias": rng.standard_normal(6)})
    scaled = b.add("scale", [b.add("add", [up, skip])], {}, {"gamma": rng.random(6) + 0.5,
                                                            "beta": rng.standard_normal(6)})
    graph = optimize(b.finish([conv(b, b.add("elu", [scaled], {"alpha": 1.0}), 3, kernel=(1, 1, 1),
                                    pads=(0,) * 6)])).graph
    assert [n.attrs.get("epilogue") for n in graph.nodes if n.op == "conv_transpose"] == [("add", "scale", "elu")]
    _check(graph)


def test_asymmetric_padded_conv_with_residual_written_in_place() -> None:
    """oneDNN takes symmetric pads only: the eager conv runs and its result lands in the residual's slot."""
    b, x = builder(channels=4, spatial=(3, 7, 6))
    h = conv(b, x, 4)
    s = b.add("add", [conv(b, conv(b, h, 4), 4, kernel=(1, 4, 4), pads=(0, 2, 2, 0, 1, 1)), h])
    graph = optimize(b.finish([b.add("relu", [s])])).graph
    net = _check(graph)
    assert [step.inplace for step in net.plan.memory.steps][-1] == 1


def test_reserved_kernel_bytes_cover_whatever_the_autotuner_picks() -> None:
    from tests.plan.test_autotune import first_layer_graph, wide_graph
    from znnx.backends import cpu

    graph = wide_graph()
    weights, scratch = cpu.reserved_kernel_bytes(graph, cpu.precision("fp32"))
    assert weights > 0 and scratch > 0
    for algorithm in ("auto", "winograd2", "winograd4"):
        plan = compile(graph, optimize=False, algorithm=algorithm).plan
        assert plan.kernel_weight_bytes <= weights and plan.kernel_scratch_bytes <= scratch
    b, x = builder(channels=6, spatial=(3, 6, 5))
    narrow = optimize(b.finish([conv(b, x, 6)])).graph
    assert cpu.reserved_kernel_bytes(narrow, cpu.precision("fp32")) == (0, 0)  # narrow: direct
    first = first_layer_graph()
    weights, scratch = cpu.reserved_kernel_bytes(first, cpu.precision("fp32"))
    plan = compile(first, optimize=False, algorithm="implicit").plan
    assert plan.kernel_weight_bytes <= weights and 0 < plan.kernel_scratch_bytes <= scratch


@pytest.mark.parametrize("algorithm", ["direct", "implicit", "winograd2", "winograd4", "fft"])
def test_nan_and_inf_propagate_as_in_pytorch_whatever_the_algorithm(algorithm: str) -> None:
    import torch

    import znnx
    from tests.nets import SymmetricUNet, randomize

    model = randomize(SymmetricUNet(16, levels=2), 2)
    net = znnx.compile(znnx.load(model, input_shape=(1, 12, 20, 16)), algorithm=algorithm)
    assert algorithm in {c.algorithm.name if c.algorithm.kind != "fft" else "fft" for c in net.algorithms}
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 12, 20, 16)).astype(np.float32)
    spots = tuple(rng.integers(0, s, 4) for s in x.shape)
    x[spots] = np.nan
    x[0, 1, 2, 3] = np.inf
    with torch.no_grad():
        expected = model(torch.from_numpy(x)[None])[0].numpy()
    got = net(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
    finite = np.isfinite(expected)
    assert finite.any() and not finite.all()
    assert np.abs(got[finite] - expected[finite]).max() <= 1e-4 * np.abs(expected[finite]).max()
    clean = rng.standard_normal((1, 12, 20, 16)).astype(np.float32)
    with torch.no_grad():
        assert rel_error(net(clean), model(torch.from_numpy(clean)[None])[0].numpy()) < 1e-4


@pytest.mark.parametrize("algorithm", ["direct", "winograd2", "winograd4", "fft16", "implicit"])
def test_fused_concat_under_every_algorithm(algorithm: str) -> None:
    """A decoder conv reading the upsampled path and the skip as sources (residual added in place):
    Winograd reads the sources themselves, the others join them into the step's arena scratch."""
    b, x = builder(channels=3, spatial=(4, 6, 8))
    skip = conv(b, x, 5)
    up = conv(b, conv(b, skip, 6, kernel=(1, 2, 2), pads=(0,) * 6, stride=(1, 2, 2)), 2, kernel=(1, 2, 2),
              pads=(0,) * 6, transposed=True, stride=(1, 2, 2))
    narrow = conv(b, x, 2, kernel=(1, 1, 1), pads=(0,) * 6)  # implicit GEMM takes <= 4 input channels
    joined = b.add("concat", [up, skip] if algorithm != "implicit" else [up, narrow])
    residual = conv(b, x, 5, kernel=(1, 1, 1), pads=(0,) * 6)
    graph = optimize(b.finish([b.add("elu", [b.add("add", [conv(b, joined, 5), residual])], {"alpha": 1.0})])).graph
    fused = graph.nodes[-1]
    assert fused.attrs["sources"] == 2 and "concat" not in [node.op for node in graph.nodes]
    net = compile(graph, optimize=False, algorithm={fused.name: algorithm})
    assert dict((c.node, c.algorithm.name) for c in net.algorithms)[fused.name] == algorithm
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((2, 3, 4, 6, 8)).astype(np.float32)
    expected = reference.run(graph, {"x": xs})[graph.outputs[0]]
    for _ in range(2):
        assert rel_error(net(xs), expected) < (1e-4 if algorithm == "winograd4" else 1e-5)
    step = net.plan.memory.steps[-1]
    assert step.scratch is not None and step.inplace == 2


def test_fused_concat_into_a_conv_oneDNN_cannot_pad() -> None:
    """Asymmetric pads: the eager kernel runs and joins the sources itself (once), its result lands in
    the residual's buffer."""
    b, x = builder(channels=3, spatial=(4, 6, 8))
    joined = b.add("concat", [conv(b, x, 5), x])
    residual = conv(b, x, 4, kernel=(1, 1, 1), pads=(0,) * 6)
    graph = optimize(b.finish([b.add("add", [conv(b, joined, 4, kernel=(2, 3, 3), pads=(0, 1, 2, 1, 1, 0)),
                                             residual])])).graph
    assert graph.nodes[-1].attrs["sources"] == 2
    net = compile(graph, optimize=False, algorithm="direct")
    xs = np.random.default_rng(3).standard_normal((2, 3, 4, 6, 8)).astype(np.float32)
    assert rel_error(net(xs), reference.run(graph, {"x": xs})[graph.outputs[0]]) < 1e-5
    assert net.plan.memory.steps[-1].inplace == 2


@pytest.mark.parametrize(("first", "second", "kernel", "pads"), [
    ("implicit", "winograd4", (3, 3, 3), (0,) * 6),
    ("direct", "direct", (3, 3, 3), (0, 1, 1, 0, 1, 1)),
    ("winograd2", "fft16", (3, 3, 3), (0,) * 6),
    ("direct", "winograd4", (1, 3, 3), (0, 1, 1, 0, 1, 1)),
])
def test_streamed_pair_equals_the_reference(first: str, second: str, kernel: tuple[int, ...],
                                            pads: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """A large first conv streamed into the next in depth slabs (plan.memory.Stream): slabs of 4 output
    planes over an output depth that 4 does not divide (a last, shorter slab), two patches, every
    algorithm on either side, depth-valid kernels with and without padding in height and width, a
    conv before the pair (which could stream into the producer: a conv takes part in one stream);
    the plan's peak drops, and the values are the reference's."""
    from znnx.plan import memory

    monkeypatch.setattr(memory, "STREAM_MIN_BYTES", 1)
    monkeypatch.setattr(memory, "STREAM_PLANES", 4)
    b, x = builder(channels=2, spatial=(19, 10, 9))
    h = conv(b, x, 3, kernel=(1, 1, 1), pads=(0,) * 6)  # the producer's input: live until the consumer's step
    a = b.add("elu", [conv(b, h, 12, kernel=kernel, pads=pads)], {"alpha": 1.0})
    y = b.add("relu", [conv(b, a, 5, kernel=kernel, pads=pads)])
    pool = {"kernel": (1, 2, 2), "stride": (1, 2, 2), "pads": (0,) * 6, "dilation": (1, 1, 1), "ceil_mode": False}
    graph = optimize(b.finish([b.add("max_pool", [y], pool)])).graph
    producer, consumer = graph.nodes[1].name, graph.nodes[2].name
    net = compile(graph, optimize=False, algorithm={producer: first, consumer: second})
    assert [(s.producer, s.consumer, s.planes) for s in net.plan.memory.streams] == [(producer, consumer, 4)]
    assert net.plan.memory.peak_bytes < memory.plan_memory(graph, relayout=True, placeable=placeable).peak_bytes
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((2, 2, 19, 10, 9)).astype(np.float32)
    expected = reference.run(graph, {"x": xs})[graph.outputs[0]]
    for _ in range(2):
        assert rel_error(net(xs), expected) < (1e-4 if "winograd4" in (first, second) else 1e-5)


def test_streams_only_where_they_lower_the_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stream where the producer's output is small, a conv pads depth, or the slab would be most
    of the output anyway."""
    from znnx.plan import memory

    b, x = builder(channels=2, spatial=(19, 10, 9))
    y = conv(b, conv(b, x, 12, pads=(0,) * 6), 5, pads=(0,) * 6)
    valid = optimize(b.finish([y])).graph
    assert compile(valid, optimize=False, algorithm="direct").plan.memory.streams == ()  # under STREAM_MIN_BYTES
    monkeypatch.setattr(memory, "STREAM_MIN_BYTES", 1)
    b, x = builder(channels=2, spatial=(19, 10, 9))
    padded = optimize(b.finish([conv(b, conv(b, x, 12), 5)])).graph
    assert compile(padded, optimize=False, algorithm="direct").plan.memory.streams == ()
    b, x = builder(channels=2, spatial=(6, 10, 9))
    shallow = optimize(b.finish([conv(b, conv(b, x, 12, pads=(0,) * 6), 5, pads=(0,) * 6)])).graph
    assert compile(shallow, optimize=False, algorithm="direct").plan.memory.streams == ()  # one slab: no gain
    monkeypatch.setattr(memory, "STREAM_PLANES", 4)
    assert compile(valid, optimize=False, algorithm="direct").plan.memory.streams != ()


@pytest.mark.parametrize("kernel", ["c", "no compiler"])
def test_up_convolution_into_few_channels_with_a_residual(monkeypatch: pytest.MonkeyPatch, kernel: str) -> None:
    """MONAI's last up-convolution (kernel 3, stride 2, pads 1): the scatter kernel, into an arena slot
    and then added to the residual in place; without a compiler oneDNN's, copied into the slot."""
    from znnx.kernels import scatter

    if kernel == "no compiler":
        monkeypatch.setattr(scatter, "ScatterConv", _unavailable)
    b, x = builder(channels=6, spatial=(3, 5, 4))
    up = conv(b, x, 2, kernel=(3, 3, 3), pads=(1,) * 6, transposed=True, stride=(2, 2, 2))
    skip = conv(b, up, 2, kernel=(1, 1, 1), pads=(0,) * 6)
    graph = optimize(b.finish([b.add("elu", [b.add("add", [conv(b, up, 2), skip])], {"alpha": 1.0})])).graph
    assert any(overlaps(n) for n in graph.nodes)
    _check(graph)


def test_large_kernels_get_an_fft_tile_fitted_to_their_output() -> None:
    """The fitted tile covers the output in whole tiles with less waste than 24 points where that pays
    (99 = five 20-voxel tiles of 28 points; 33 = two of 17 of 25), is transformable by the C stages,
    and joins 16 and 24 only for kernels of 5 and more; an output one tile fits takes the smallest
    tile that holds it."""
    assert fitted_fft_size((9, 9, 9), (99, 99, 99), 80, 80) == 28
    assert fitted_fft_size((9, 9, 9), (33, 33, 33), 80, 80) == 25
    assert fitted_fft_size((9, 9, 9), (8, 8, 8), 80, 80) == 16
    for out in range(1, 140, 7):
        n = fitted_fft_size((1, 7, 7), (3, out, out + 5), 24, 3)
        assert n in FITTED_FFT_SIZES and fft.smooth(n) and n > 7
    assert fft_sizes((3, 3, 3), ((40, 40, 40), 8, 8)) == (16,)
    assert fft_sizes((5, 5, 5), ((21, 21, 21), 80, 80)) == (16, 24, 25)
    assert fft_sizes((9, 9, 9)) == (16, 24)
    assert fft_sizes((9, 9, 9), ((99, 99, 99), 80, 80)) == (16, 24, 28)
    assert fft_sizes((9, 9, 9), ((16, 16, 16), 80, 80)) == (16, 24)
