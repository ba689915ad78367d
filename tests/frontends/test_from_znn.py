"""The ZNN .znn reader on ZNN's own nets (../shared/models) and on small nets written here; dense
output of those nets against the window-by-window oracle."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import znnx
from tests.nets import rel_error
from tests.passes.windows import field_of_view, windows
from znnx.errors import ModelError, UnsupportedError
from znnx.frontends.from_znn import load_znn
from znnx.passes.dense import fragmented, period

MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"
needs_models = pytest.mark.skipif(not (MODELS / "N4.znn").is_file(), reason=f"no reference models at {MODELS}")


def corrected_vd2d3d(tmp_path: Path) -> Path:
    text = (MODELS / "VD2D3D.znn").read_text()
    assert "input npool\n" in text
    path = tmp_path / "VD2D3D.znn"
    path.write_text(text.replace("input npool\n", "input npool1\n"))
    return path


@needs_models
def test_n4_loads_as_a_95x95_patch_classifier() -> None:
    graph = znnx.load(MODELS / "N4.znn")
    assert field_of_view(graph) == (1, 95, 95)
    assert graph.types[graph.inputs[0]].spatial == (1, 95, 95)
    assert graph.types[graph.outputs[0]].channels == 2 and graph.types[graph.outputs[0]].spatial == (1, 1, 1)
    assert [n.attrs["stride"] for n in graph.nodes if n.op == "max_pool"] == [(1, 2, 2)] * 4


@needs_models
def test_vd2d3d_as_published_names_the_edge_and_the_missing_node() -> None:
    with pytest.raises(ModelError, match=r"edge 'conv2a'.*node 'npool', which is not declared"):
        znnx.load(MODELS / "VD2D3D.znn")


@needs_models
def test_vd2d3d_corrected_loads_with_two_inputs_and_a_summed_node(tmp_path: Path) -> None:
    graph = znnx.load(corrected_vd2d3d(tmp_path))
    assert graph.inputs == ("input", "input-r")
    assert any(n.op == "add" for n in graph.nodes)  # conv1c and conv1c-r both write nconv1c
    assert graph.types[graph.outputs[0]].channels == 2


def _dense_check(graph: znnx.Graph, voxels: int, path: str, seed: int) -> None:
    base = fragmented(graph).types[graph.inputs[0]].spatial
    extra = [0 if f == 1 else p * math.ceil(math.sqrt(voxels) / p) for f, p in zip(field_of_view(graph), period(graph))]
    patch = tuple(b + e for b, e in zip(base, extra))
    net = znnx.compile(graph, patch=patch, dense=path, algorithm="direct")
    rng = np.random.default_rng(seed)
    inputs = [rng.random((graph.types[n].channels, *patch), dtype=np.float32) for n in graph.inputs]
    got = net(*inputs)
    spatial = got.shape[1:]
    assert spatial == tuple(p - f + 1 for p, f in zip(patch, field_of_view(graph)))
    flat = rng.choice(math.prod(spatial), size=voxels, replace=False)
    positions = np.stack(np.unravel_index(flat, spatial), -1)
    want = windows(graph, inputs, positions)
    assert rel_error(got.reshape(got.shape[0], -1)[:, flat].T, want) < 1e-5


@needs_models
@pytest.mark.parametrize("path", ["dilated", "mpf"])
def test_n4_dense_output_equals_the_window_by_window_net_at_1000_voxels(path: str) -> None:
    _dense_check(znnx.load(MODELS / "N4.znn"), 1000, path, 0)


@needs_models
@pytest.mark.parametrize("path", ["dilated", "mpf"])
def test_vd2d3d_dense_output_equals_the_window_by_window_net_at_1000_voxels(path: str, tmp_path: Path) -> None:
    _dense_check(znnx.load(corrected_vd2d3d(tmp_path)), 1000, path, 1)


SMALL = """\
nodes input
type input
size 2

edges conv1
type conv
init {init}
init_args {args}
size 1,3,3
input input
output hidden

edges skip
type conv
init constant
init_args 0.5
size 1,3,3
input input
output hidden

nodes hidden
type transfer
function {function}
function_args {function_args}
size 3

edges pool
type max_filter
size 1,2,2
stride 1,2,2
input hidden
output out

nodes out
type sum
size 3
"""


def _small(tmp_path: Path, init: str = "uniform", args: str = "-1,1", function: str = "tanh",
           function_args: str = "2,0.5") -> Path:
    path = tmp_path / "small.znn"
    path.write_text(SMALL.format(init=init, args=args, function=function, function_args=function_args))
    return path


def test_edges_into_a_node_are_summed_then_its_function_applies(tmp_path: Path) -> None:
    graph = load_znn(_small(tmp_path), (2, 1, 6, 6))
    weights = {n.name: n.params["weight"] for n in graph.nodes if n.op == "conv"}
    assert np.all(weights["skip"] == 0.5) and np.abs(weights["conv1"]).max() <= 1
    x = np.random.default_rng(0).random((2, 1, 6, 6)).astype(np.float64)
    pre = sum(_valid_conv(x, w) for w in weights.values())
    hidden = 2 * np.tanh(0.5 * pre)
    want = hidden.reshape(3, 1, 2, 2, 2, 2).max(axis=(3, 5))
    got = znnx.compile(graph).__call__(x.astype(np.float32))
    assert rel_error(got, want) < 1e-5


def _valid_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    out = np.zeros((w.shape[0], 1, x.shape[2] - w.shape[3] + 1, x.shape[3] - w.shape[4] + 1))
    for i in range(w.shape[3]):
        for j in range(w.shape[4]):
            out += np.einsum("oc,cdhw->odhw", w[:, :, 0, i, j], x[:, :, i:i + out.shape[2], j:j + out.shape[3]])
    return out


@pytest.mark.parametrize(("init", "args", "check"), [
    ("zero", "", lambda w: np.all(w == 0)),
    ("constant", "0.25", lambda w: np.all(w == 0.25)),
    ("uniform", "-0.5,0.5", lambda w: w.min() >= -0.5 and w.max() <= 0.5),
    ("gaussian", "1,0.01", lambda w: abs(w.mean() - 1) < 0.05),
    ("bernoulli", "0.5", lambda w: set(np.unique(w)) <= {0.0, 1.0}),
    ("xavier", "", lambda w: np.abs(w).max() <= math.sqrt(3 / 18)),
    ("msra", "", lambda w: w.std() > 0),
])
def test_init_rules(tmp_path: Path, init: str, args: str, check) -> None:
    graph = load_znn(_small(tmp_path, init, args or "0"), (2, 1, 6, 6))
    assert check(next(n for n in graph.nodes if n.name == "conv1").params["weight"])


def test_weights_from_a_safetensors_file_or_a_network_file(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = _small(tmp_path)
    rng = np.random.default_rng(5)
    tensors = {"conv1/weight": rng.standard_normal((3, 2, 1, 3, 3)).astype(np.float32),
               "skip/weight": rng.standard_normal((3, 2, 1, 3, 3)).astype(np.float32),
               "hidden/bias": np.array([0.1, -0.2, 0.3], np.float32)}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    graph = znnx.load(path, (2, 1, 8, 8), weights=tmp_path / "w.safetensors")
    conv1 = next(n for n in graph.nodes if n.name == "conv1")
    assert np.array_equal(conv1.params["weight"], tensors["conv1/weight"])
    assert np.allclose(conv1.params["bias"], tensors["hidden/bias"])
    saved = znnx.compile(graph, optimize=False).save(tmp_path / "small.znnx")
    again = znnx.load(path, (2, 1, 8, 8), weights=saved)
    assert all(np.array_equal(a.params[k], b.params[k]) for a, b in zip(graph.nodes, again.nodes) for k in a.params)
    save_file({**tensors, "nothing/weight": tensors["hidden/bias"]}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ModelError, match="nothing/weight"):
        znnx.load(path, (2, 1, 8, 8), weights=tmp_path / "extra.safetensors")


def test_unsupported_functions_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="soft_sign"):
        load_znn(_small(tmp_path, function="soft_sign", function_args="0"), (2, 1, 6, 6))
    bad = tmp_path / "bad.znn"
    bad.write_text("nodes input\ntype input\nsize 1\n\nedges e\ntype conv\nsize 1,3\ninput input\noutput out\n\n"
                   "nodes out\ntype transfer\nfunction rectify_linear\nsize 1\n")
    with pytest.raises(ModelError, match=r"bad.znn:5: edge 'e': size must be three positive integers"):
        load_znn(bad)
    bad.write_text(bad.read_text().replace("output out", "output input"))
    with pytest.raises(ModelError, match="cycle"):
        load_znn(bad)


@needs_models
def test_the_cli_runs_znn_nets_densely_and_inspect_prints_the_choice(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from znnx.cli import main

    x = np.random.default_rng(2).random((1, 126, 126), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(MODELS / "N4.znn"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--quiet"]) == 0
    assert np.load(tmp_path / "y.npy").shape == (2, 1, 32, 32)
    assert main(["inspect", str(MODELS / "N4.znn"), "--patch", "1,126,126", "--plan", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "dense: the " in out and "dilated" in out and "mpf" in out
    assert ("4 x (48," in out) == ("the mpf form runs" in out)  # fragments show in the plan's shapes
    assert main(["inspect", str(MODELS / "N4.znn"), "--dense", "off"]) == 0
    assert "input 1x95x95 -> output 1x1x1" in capsys.readouterr().out
    with pytest.raises(ModelError, match=r"\(C, D, H, W\)"):
        load_znn(MODELS / "N4.znn", (1, 95, 95))
