"""Caffe import: PyTorch nets written out as prototxt + weights match PyTorch; bad files give clear errors."""

from __future__ import annotations

import collections
import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import znnx
from tests.caffe_export import caffemodel, npz_arrays, to_caffe
from tests.nets import ResidualNet, SymmetricUNet, ValidUNet, randomize, rel_error
from znnx import reference
from znnx.bench.models import PZNET_PROTOTXT
from znnx.frontends.prototxt import PrototxtError, parse
from znnx.ir import Graph

TOLERANCE = 1e-4
PZNET = PZNET_PROTOTXT

ROUND_TRIPS = {
    "residual": (lambda: randomize(ResidualNet(5), 0), (1, 5, 24, 30)),
    "merge_crop_unet": (lambda: randomize(ValidUNet(3, skip_first=False), 1), (1, 44, 46, 44)),
    "symmetric_unet": (lambda: randomize(SymmetricUNet(3), 2), (1, 16, 24, 32)),
}


def _write(tmp_path: Path, model: torch.nn.Module, shape: tuple[int, ...], weights: str) -> Path:
    prototxt, blobs = to_caffe(znnx.load(model, shape))
    (tmp_path / "net.prototxt").write_text(prototxt)
    if weights == "caffemodel":
        (tmp_path / "net.caffemodel").write_bytes(caffemodel(blobs))
    else:
        np.savez(tmp_path / "net.npz", **npz_arrays(blobs))
    return tmp_path / f"net.{weights}"


@pytest.mark.parametrize("weights", ["caffemodel", "npz"])
@pytest.mark.parametrize("name", sorted(ROUND_TRIPS))
def test_round_trip_matches_pytorch(tmp_path: Path, name: str, weights: str) -> None:
    build, shape = ROUND_TRIPS[name]
    model = build()
    weights_path = _write(tmp_path, model, shape, weights)
    graph = znnx.load(tmp_path / "net.prototxt", weights=weights_path)
    ops = collections.Counter(node.op for node in graph)
    assert ops["batchnorm"] == ops["scale"] > 0
    x = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert rel_error(znnx.compile(graph)(x), expected) < TOLERANCE


def test_merge_crop_becomes_center_crop_and_recompiles(tmp_path: Path) -> None:
    model = randomize(ValidUNet(2, skip_first=False), 3)
    weights = _write(tmp_path, model, (1, 44, 44, 44), "npz")
    assert "MergeCrop" in (tmp_path / "net.prototxt").read_text()
    graph = znnx.load(tmp_path / "net.prototxt", weights=weights)
    assert any(node.op == "center_crop" for node in graph)
    x = np.random.default_rng(1).standard_normal((1, 1, 52, 48, 60), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert rel_error(znnx.compile(graph, patch=(52, 48, 60))(x), expected) < TOLERANCE


SMALL_NET = """
name: "small"  # comments, in-place layers, phases and every remaining layer type
input: "data"
input_shape { dim: 1 dim: 2 dim: 6 dim: 9 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "split" type: "Split" bottom: "conv" top: "a" top: "b" }
layer { name: "relu" type: "ReLU" bottom: "a" top: "a" relu_param { negative_slope: 0.1 } }
layer { name: "tanh" type: "TanH" bottom: "b" top: "t" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "t" top: "sum"
        eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }
layer { name: "prod" type: "Eltwise" bottom: "sum" bottom: "t" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "prod" bottom: "a" top: "max" eltwise_param { operation: MAX } }
layer { name: "drop" type: "Dropout" bottom: "max" top: "max" dropout_param { dropout_ratio: 0.5 } }
layer { name: "pool" type: "Pooling" bottom: "max" top: "pool"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "crop" type: "Crop" bottom: "max" bottom: "pool" top: "crop" crop_param { axis: 2 offset: 1 } }
layer { name: "cat" type: "Concat" bottom: "crop" bottom: "pool" top: "cat" }
layer { name: "prob" type: "Softmax" bottom: "cat" top: "prob" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "prob" bottom: "label" top: "loss" include { phase: TRAIN } }
"""


def test_hand_written_net_matches_pytorch(tmp_path: Path) -> None:
    (tmp_path / "small.prototxt").write_text(SMALL_NET)
    weight = np.random.default_rng(2).standard_normal((4, 2, 3, 3, 3))
    graph = znnx.load(tmp_path / "small.prototxt", weights={"conv": [weight]})
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((1, 2, 6, 9, 8)))
    conv = F.conv3d(x, torch.from_numpy(weight), padding=1)
    a, t = F.leaky_relu(conv, 0.1), torch.tanh(conv)
    top = torch.maximum((0.5 * a - 2 * t) * t, a)
    pool = F.avg_pool3d(top, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    crop = top[:, :, 1:1 + pool.shape[2], 1:1 + pool.shape[3], 1:1 + pool.shape[4]]
    expected = torch.softmax(torch.cat([crop, pool], 1), 1).numpy()
    assert rel_error(znnx.compile(graph)(x.numpy().astype(np.float32)), expected) < TOLERANCE


PRELU_NET = """
input: "data"
input_dim: 1 input_dim: 2 input_dim: 5 input_dim: 7 input_dim: 6
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "per_channel" type: "PReLU" bottom: "conv" top: "conv" }
layer { name: "shared" type: "PReLU" bottom: "conv" top: "out" prelu_param { channel_shared: true } }
"""


def test_prelu_per_channel_and_shared(tmp_path: Path) -> None:
    """Caffe's PReLU: a slope per channel, or one with channel_shared; random weights start at 0.25."""
    (tmp_path / "prelu.prototxt").write_text(PRELU_NET)
    rng = np.random.default_rng(4)
    weight, per_channel, shared = rng.standard_normal((3, 2, 3, 3, 3)), rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 1)
    graph = znnx.load(tmp_path / "prelu.prototxt", weights={"conv": [weight], "per_channel": [per_channel],
                                                            "shared": [shared]})
    x = torch.from_numpy(rng.standard_normal((1, 2, 5, 7, 6)))
    conv = F.conv3d(x, torch.from_numpy(weight), padding=1)
    expected = F.prelu(F.prelu(conv, torch.from_numpy(per_channel)), torch.from_numpy(shared)).numpy()
    assert rel_error(znnx.compile(graph)(x.numpy().astype(np.float32)), expected) < TOLERANCE
    random = znnx.load(tmp_path / "prelu.prototxt", weights="random")
    assert [n.params["slope"].tolist() for n in random.nodes if n.op == "prelu"] == [[0.25] * 3, [0.25]]


def test_pznet_reference_model_loads_and_runs() -> None:
    """The PZnet authors' own net (no published weights): structure, shapes, backend vs reference."""
    graph = znnx.load(PZNET, weights="random")
    ops = collections.Counter(node.op for node in graph)
    assert ops == {"conv": 49, "conv_transpose": 6, "batchnorm": 38, "scale": 38, "elu": 40, "add": 16,
                   "max_pool": 5, "sigmoid": 1}
    assert znnx.compile(graph).output_shape == (3, 18, 192, 192)
    net = znnx.compile(graph, patch=(18, 64, 64))
    scores = net.graph.nodes[-1].inputs[0]
    probe = Graph(net.graph.nodes[:-1], net.graph.inputs, (scores,), net.graph.types, 3, "pznet-scores")
    x = np.random.default_rng(0).random((1, 1, 18, 64, 64), dtype=np.float32)
    got = znnx.compile(probe)(x)
    want = reference.run(probe, {probe.inputs[0]: x})[scores]
    assert rel_error(got, want) < 1e-5  # scores, not sigmoid(scores): random weights make them ~1e3


# -- errors -----------------------------------------------------------------------------------------

def _load_text(tmp_path: Path, text: str, weights: object = "random") -> znnx.Graph:
    (tmp_path / "bad.prototxt").write_text(text)
    return znnx.load(tmp_path / "bad.prototxt", weights=weights)


def test_unbalanced_braces_give_line(tmp_path: Path) -> None:
    text = SMALL_NET.replace('top: "t" }', 'top: "t" ', 1)
    with pytest.raises(PrototxtError, match=r"bad\.prototxt:\d+: .*(never closed|unbalanced)"):
        _load_text(tmp_path, text)
    with pytest.raises(PrototxtError, match=r"bad\.prototxt:3: expected a field name, got '}' \(unbalanced"):
        _load_text(tmp_path, 'name: "x"\ninput: "data"\n}\n')


def test_unknown_layer_type(tmp_path: Path) -> None:
    text = SMALL_NET.replace('type: "TanH"', 'type: "Swish"')
    with pytest.raises(znnx.UnsupportedError, match=r"bad\.prototxt:9: layer 'tanh' \(Swish\): layer type 'Swish' is "
                                                     r"not supported"):
        _load_text(tmp_path, text)


def test_bottom_that_names_no_top(tmp_path: Path) -> None:
    text = SMALL_NET.replace('bottom: "b" top: "t"', 'bottom: "bb" top: "t"')
    with pytest.raises(znnx.ModelError, match=r"layer 'tanh' \(TanH\): bottom 'bb' names no top of an earlier layer"):
        _load_text(tmp_path, text)


def test_wrong_blob_count_and_shape(tmp_path: Path) -> None:
    weight = np.zeros((4, 2, 3, 3, 3))
    with pytest.raises(znnx.ModelError, match=r"layer 'conv' \(Convolution\): expected 1 blob\(s\) of shapes "
                                              r"\[\(4, 2, 3, 3, 3\)\], the weights hold 2"):
        _load_text(tmp_path, SMALL_NET, {"conv": [weight, np.zeros(4)]})
    with pytest.raises(znnx.ModelError, match=r"blob 0 has shape \(4, 2, 3, 3\), expected \(4, 2, 3, 3, 3\)"):
        _load_text(tmp_path, SMALL_NET, {"conv": [np.zeros((4, 2, 3, 3))]})
    with pytest.raises(znnx.ModelError, match=r"layer 'conv' \(Convolution\): the weights hold no blobs"):
        _load_text(tmp_path, SMALL_NET, {"other": [weight]})


def test_missing_weights_and_files(tmp_path: Path) -> None:
    with pytest.raises(znnx.ModelError, match=r"layers such as 'conv' need weights; pass weights="):
        _load_text(tmp_path, SMALL_NET, None)
    with pytest.raises(znnx.ModelError, match=r"weights file .* does not exist"):
        _load_text(tmp_path, SMALL_NET, tmp_path / "none.caffemodel")
    with pytest.raises(znnx.ModelError, match=r"prototxt file .* does not exist"):
        znnx.load(tmp_path / "none.prototxt")


def test_truncated_caffemodel(tmp_path: Path) -> None:
    data = caffemodel({"conv": [np.ones((4, 2, 3, 3, 3))]})
    (tmp_path / "cut.caffemodel").write_bytes(data[:-9])
    with pytest.raises(znnx.ModelError, match=r"cut\.caffemodel' is truncated"):
        _load_text(tmp_path, SMALL_NET, tmp_path / "cut.caffemodel")


def test_legacy_input_dim_and_batch_statistics(tmp_path: Path) -> None:
    legacy = SMALL_NET.replace("input_shape { dim: 1 dim: 2 dim: 6 dim: 9 dim: 8 }",
                               "input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 9 input_dim: 8")
    assert znnx.compile(_load_text(tmp_path, legacy)).input_shape == (2, 6, 9, 8)
    batch_stats = SMALL_NET.replace('layer { name: "split"', 'layer { name: "bn" type: "BatchNorm" bottom: "conv" '
                                    'top: "conv" batch_norm_param { use_global_stats: false } }\nlayer { name: "split"')
    with pytest.raises(znnx.UnsupportedError, match=r"layer 'bn' \(BatchNorm\): use_global_stats: false"):
        _load_text(tmp_path, batch_stats)


def test_v1_layers_format_is_named(tmp_path: Path) -> None:
    with pytest.raises(znnx.UnsupportedError, match="V1 'layers' format"):
        _load_text(tmp_path, 'input: "data"\nlayers { name: "c" type: CONVOLUTION bottom: "data" top: "c" }\n')


def test_hdf5_weights(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    weight = np.random.default_rng(4).standard_normal((4, 2, 3, 3, 3))
    with h5py.File(tmp_path / "w.h5", "w") as file:
        file["data/conv/0"] = weight
    graph = _load_text(tmp_path, SMALL_NET, tmp_path / "w.h5")
    np.testing.assert_allclose(graph.nodes[0].params["weight"], weight.astype(np.float32))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('layer{}:"# \n\t0123456789.-_abcxyz[],\'<>;\\')), max_size=200))
def test_parser_fuzz_raises_only_its_own_error(text: str) -> None:
    try:
        message = parse(text)
    except PrototxtError:
        return
    for field in message.fields:
        for accessor in (message.ints, message.floats, message.strs, message.messages):
            with contextlib.suppress(PrototxtError):
                accessor(field.key)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(start=st.integers(0, 4000), length=st.integers(1, 60), insert=st.sampled_from(["", "{", "}", '"', ":", "x"]))
def test_mutated_pznet_fails_only_with_model_errors(tmp_path_factory: pytest.TempPathFactory, start: int,
                                                    length: int, insert: str) -> None:
    text = PZNET.read_text()
    mutated = text[:start] + insert + text[start + length:]
    path = tmp_path_factory.mktemp("fuzz") / "net.prototxt"
    path.write_text(mutated)
    with contextlib.suppress(znnx.ModelError):
        znnx.load(path, weights="random")
