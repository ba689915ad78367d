"""compile() and Net: shapes, batching, array kinds, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import znnx
from tests.nets import Net2d, ValidUNet, randomize, rel_error


@pytest.fixture(scope="module")
def unet_graph() -> znnx.Graph:
    return znnx.load(randomize(ValidUNet(2), 0), input_shape=(1, 44, 44, 44))


def test_shapes_and_batching(unet_graph: znnx.Graph) -> None:
    net = znnx.compile(unet_graph)
    assert net.input_shape == (1, 44, 44, 44)
    assert net.output_shape == (3, 28, 28, 28)
    x = np.random.default_rng(0).standard_normal((2, 1, 44, 44, 44), dtype=np.float32)
    batched = net(x)
    assert batched.shape == (2, 3, 28, 28, 28)
    assert rel_error(net(x[1]), batched[1]) < 1e-6


def test_torch_in_torch_out(unet_graph: znnx.Graph) -> None:
    net = znnx.compile(unet_graph)
    x = torch.randn(1, 44, 44, 44, dtype=torch.float64)
    y = net(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (3, 28, 28, 28)


def test_wrong_input_shape(unet_graph: znnx.Graph) -> None:
    net = znnx.compile(unet_graph)
    with pytest.raises(znnx.InputError, match=r"shape \(1, 40, 44, 44\), but this net was compiled for "
                                              r"\(1, 44, 44, 44\).*compile with patch"):
        net(np.zeros((1, 40, 44, 44), np.float32))


def test_wrong_input_dtype(unet_graph: znnx.Graph) -> None:
    net = znnx.compile(unet_graph)
    with pytest.raises(znnx.InputError, match=r"dtype uint8; znnx nets take floating point input.*/ 255"):
        net(np.zeros((1, 44, 44, 44), np.uint8))


def test_wrong_input_count(unet_graph: znnx.Graph) -> None:
    net = znnx.compile(unet_graph)
    with pytest.raises(znnx.InputError, match=r"expected 1 input\(s\)"):
        net(np.zeros((1, 44, 44, 44), np.float32), np.zeros(3))


def test_invalid_patch_suggests_a_valid_one(unet_graph: znnx.Graph) -> None:
    with pytest.raises(znnx.GraphError, match=r"patch \(10, 44, 44\) does not fit.*empty output.*valid patch "
                                              r"sizes near it: \(18, 44, 44\)"):
        znnx.compile(unet_graph, patch=(10, 44, 44))
    assert znnx.compile(unet_graph, patch=(45, 44, 44)).output_shape == (3, 28, 28, 28)
    with pytest.raises(znnx.GraphError, match="must have 3 positive sizes"):
        znnx.compile(unet_graph, patch=(44, 44))


def test_2d_net_keeps_its_rank() -> None:
    model = randomize(Net2d(3), 0)
    net = znnx.compile(znnx.load(model, input_shape=(3, 16, 12)), patch=(20, 24))
    assert net.input_shape == (3, 20, 24)
    x = np.random.default_rng(0).standard_normal((3, 20, 24), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)[None])[0].numpy()
    assert rel_error(net(x), expected) < 1e-4


def test_unknown_and_missing_devices(unet_graph: znnx.Graph) -> None:
    with pytest.raises(znnx.DeviceError, match="unknown device 'gpu0'"):
        znnx.compile(unet_graph, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(znnx.DeviceError, match="no CUDA GPU is available"):
            znnx.compile(unet_graph, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(unet_graph: znnx.Graph) -> None:
    x = np.random.default_rng(0).standard_normal((1, 44, 44, 44), dtype=np.float32)
    cpu = znnx.compile(unet_graph)(x)
    gpu = znnx.compile(unet_graph, device="cuda")(x)
    assert rel_error(gpu, cpu) < 1e-5  # fp32 on both; TF32 (1e-4) would fail this
    assert torch.backends.cudnn.allow_tf32  # the user's global default is left alone


def test_summary_mentions_geometry(unet_graph: znnx.Graph) -> None:
    text = znnx.compile(unet_graph).summary()
    assert "input 44x44x44 -> output 28x28x28" in text
    assert "receptive field 18x18x18" in text


def test_compile_and_load_refuse_a_patch_over_the_memory_naming_one_that_fits(unet_graph: znnx.Graph,
                                                                                tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(znnx.InputError, match=r"a patch of 300x300x300 needs .* more than the memory budget, "
                                              r"256.0 MiB; use a patch of at most \d+x\d+x\d+"):
        znnx.compile(unet_graph, patch=(300, 300, 300), memory_bytes=256 << 20)
    net = znnx.compile(unet_graph, patch=(60, 60, 60), memory_bytes=256 << 20)
    assert net.memory_bytes() + net.weight_bytes < 256 << 20
    path = net.save(Path(str(tmp_path)) / "net.znnx")
    assert znnx.load_net(path).input_shape == (1, 60, 60, 60)
