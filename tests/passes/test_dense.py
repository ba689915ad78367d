"""Dense forms of pooling / strided nets (passes/dense.py) against the naive window-by-window oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import znnx
from tests.nets import rel_error
from tests.passes.windows import field_of_view, windows
from znnx import reference
from znnx.errors import GraphError
from znnx.net import reshape
from znnx.passes.dense import dense, dilated, fragmented, period, strided
from znnx.report import geometry


def _net(module: nn.Module, shape: tuple[int, ...]) -> znnx.Graph:
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.uniform_(p, -0.3, 0.3)
    return znnx.load(module.eval(), shape)


def pooling_net() -> znnx.Graph:
    """Anisotropic kernels, a (1, 2, 2) and a 2x2x2 max pool, a strided conv, ReLU and ELU, 1x1x1 head."""
    return _net(nn.Sequential(
        nn.Conv3d(1, 4, (1, 3, 2)), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
        nn.Conv3d(4, 5, (2, 2, 3)), nn.ELU(), nn.MaxPool3d(2, stride=2),
        nn.Conv3d(5, 6, 2, stride=(1, 2, 1)), nn.ReLU(),
        nn.Conv3d(6, 2, 1)), (1, 12, 30, 34))


def overlapping_net() -> znnx.Graph:
    """Pooling windows larger than their stride, an average pool, a 2D net."""
    return _net(nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(3, stride=2),
        nn.Conv2d(3, 4, 2), nn.AvgPool2d(2), nn.Conv2d(4, 3, 2)), (2, 40, 37))


@pytest.mark.parametrize("make", [pooling_net, overlapping_net])
@pytest.mark.parametrize("path", ["dilated", "mpf"])
def test_dense_forms_equal_the_window_by_window_oracle(make, path: str) -> None:
    graph = make()
    form = dense(graph, path)
    fov = field_of_view(graph)
    assert geometry(form).receptive_field == fov and geometry(form).stride == (1,) * len(fov)
    rng = np.random.default_rng(1)
    spatial = tuple(s + p for s, p in zip(fragmented(graph).types[graph.inputs[0]].spatial, period(graph)))[
        3 - graph.spatial_rank:]
    net = znnx.compile(graph, patch=spatial, dense=path, algorithm="direct")
    x = rng.standard_normal((graph.types[graph.inputs[0]].channels, *spatial)).astype(np.float32)
    got = net(x)
    assert got.shape[1:] == tuple(s - f + 1 for s, f in zip(spatial, fov))
    positions = np.stack(np.meshgrid(*(np.arange(n) for n in got.shape[1:]), indexing="ij"), -1).reshape(
        -1, len(fov))
    want = windows(graph, [x], positions)
    assert rel_error(got.reshape(got.shape[0], -1).T, want) < 1e-5
    assert net.plan.dense is not None and net.plan.dense.path == path


@pytest.mark.parametrize("path", ["dilated", "mpf"])
def test_the_reference_executor_runs_dense_forms(path: str) -> None:
    graph = pooling_net()
    form = dense(graph, path)
    x = np.random.default_rng(2).standard_normal((2, 1, *form.types[form.inputs[0]].spatial))
    got = reference.run(form, {form.inputs[0]: x})[form.outputs[0]]
    other = reference.run(reshape(dense(graph, "dilated"), x.shape[2:]), {form.inputs[0]: x})[form.outputs[0]]
    assert np.allclose(got, other, rtol=1e-9, atol=1e-9)


def test_fragments_are_a_batch_in_the_memory_plan() -> None:
    graph = pooling_net()
    form = fragmented(graph)
    counts = {t.fragments for t in form.types.values()}
    assert counts == {1, 4, 32, 64}
    net = znnx.compile(form, algorithm="direct")
    conv = next(n for n in net.graph.nodes if n.op == "conv" and net.graph.types[n.output].fragments == 64)
    assert net.graph.types[conv.output].numel == 64 * net.graph.types[conv.output].channels * \
        net.graph.types[conv.output].voxels


def test_auto_measures_both_forms_and_keeps_the_faster() -> None:
    graph = pooling_net()
    net = znnx.compile(graph, dense=True, algorithm="direct")
    choice = net.plan.dense
    assert choice is not None and {p for p, _ in choice.seconds} == {"dilated", "mpf"}
    assert choice.path == min(choice.seconds, key=lambda item: item[1])[0]


def test_auto_falls_back_to_dilation_where_fragments_do_not_divide() -> None:
    graph = pooling_net()
    patch = fragmented(graph).types[graph.inputs[0]].spatial
    odd = (patch[0], patch[1] + 1, patch[2])
    net = znnx.compile(graph, patch=odd, dense=True, algorithm="direct")
    assert net.plan.dense is not None and net.plan.dense.path == "dilated"
    assert "mpf" in dict(net.plan.dense.skipped) and "multiple" in dict(net.plan.dense.skipped)["mpf"]
    with pytest.raises(GraphError, match="valid patch sizes near it"):
        znnx.compile(graph, patch=odd, dense="mpf")


def test_dense_network_files_keep_their_form_and_choice(tmp_path) -> None:
    net = znnx.compile(pooling_net(), dense=True, algorithm="direct")
    loaded = znnx.load_net(net.save(tmp_path / "dense.znnx"))
    assert loaded.plan.dense == net.plan.dense
    x = np.random.default_rng(3).standard_normal(net.input_shape).astype(np.float32)
    assert np.array_equal(loaded(x), net(x))


def test_a_net_that_never_strides_is_its_own_dense_form() -> None:
    graph = _net(nn.Sequential(nn.Conv3d(1, 2, 3), nn.ReLU()), (1, 8, 8, 8))
    assert not strided(graph) and dense(graph, "mpf") is graph


@pytest.mark.parametrize(("module", "match"), [
    (nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.MaxPool3d(2)), "valid"),
    (nn.Sequential(nn.Conv3d(1, 2, 3), nn.MaxPool3d(2), nn.ConvTranspose3d(2, 2, 2, stride=2)), "upsamples"),
])
def test_nets_without_a_dense_form_are_refused_with_the_reason(module: nn.Module, match: str) -> None:
    graph = _net(module, (1, 16, 16, 16))
    for form in (dilated, fragmented):
        with pytest.raises(GraphError, match=match):
            form(graph)


@pytest.mark.parametrize("path", ["dilated", "mpf"])
def test_znni_n337_dense_equals_the_window_by_window_net(path: str) -> None:
    """ZNNi's n337 (8 maps instead of 80: the same geometry) at 200 random voxels; the full-width
    net at 1,000 voxels is `scripts/check_dense_exactness.py`."""
    from znnx.bench.sliding import znni_net

    graph = znnx.load(znni_net("n337", tiny=True).classifier(), (1, 85, 85, 85))
    patch = (100, 100, 100)
    net = znnx.compile(graph, patch=patch, dense=path)
    x = np.random.default_rng(4).random((1, *patch), dtype=np.float32)
    got = net(x).reshape(3, -1)
    flat = np.random.default_rng(5).choice(got.shape[1], 200, replace=False)
    positions = np.stack(np.unravel_index(flat, (16, 16, 16)), -1)
    assert rel_error(got[:, flat].T, windows(graph, [x], positions)) < 1e-5


def wide_pooling_net() -> znnx.Graph:
    """Eight channels after the pool, so the autotuner times the fragments' conv both ways."""
    return _net(nn.Sequential(nn.Conv3d(1, 8, 3), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(8, 8, 3), nn.ReLU(),
                              nn.Conv3d(8, 2, 1)), (1, 20, 20, 20))


def test_fragments_whose_layers_beat_direct_decisively_run_without_timing_the_dilated_form(monkeypatch) -> None:
    from znnx import net as net_module

    built: list[str] = []
    real = net_module.compile

    def counting(graph, *args, **kwargs):  # each dense form's own compile
        built.append("mpf" if any(t.fragments > 1 for t in graph.types.values()) else "dilated")
        return real(graph, *args, **kwargs)

    monkeypatch.setattr(net_module, "compile", counting)
    monkeypatch.setattr(net_module, "DECISIVE", 0.0)
    net = znnx.compile(wide_pooling_net(), dense=True)
    choice = net.plan.dense
    assert choice is not None and choice.path == "mpf" and choice.seconds == () and built == ["mpf"]
    assert "not timed whole" in dict(choice.skipped)["dilated"] and "dilated skipped" in choice.summary()
    monkeypatch.setattr(net_module, "DECISIVE", float("inf"))
    built.clear()
    timed = znnx.compile(wide_pooling_net(), dense=True).plan.dense
    assert timed is not None and [p for p, _ in timed.seconds] == ["dilated", "mpf"] and built[:2] == ["mpf", "dilated"]
