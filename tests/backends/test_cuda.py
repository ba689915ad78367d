"""The GPU backend. Its program (channels-last weights, precisions, FFT convs) is checked on the CPU
everywhere; what needs a GPU (CUDA graphs, cuDNN, the autotuner on the device) skips without one.
Importing and using znnx on the CPU never initializes CUDA."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import znnx
from tests.nets import SymmetricUNet, ValidUNet, randomize, rel_error
from znnx import reference
from znnx.backends import cuda
from znnx.net import make_plan
from znnx.plan.algorithm import DIRECT, fft
from znnx.plan.precision import PRECISIONS

GPU = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA GPU on this machine (CI has none); the GPU backend's "
                                               "arithmetic is checked on the CPU by the other tests here")


def _graph(seed: int = 0, valid: bool = False, width: int = 3) -> znnx.Graph:
    model = randomize(ValidUNet(width) if valid else SymmetricUNet(width + 1, levels=2), seed)
    return znnx.compile(znnx.load(model, input_shape=(1, 28, 28, 28) if valid else (1, 16, 20, 24))).graph


def _oracle(graph: znnx.Graph, x: np.ndarray) -> np.ndarray:
    return reference.run(graph, {graph.inputs[0]: x})[graph.outputs[0]]


@pytest.mark.parametrize("valid", [False, True])
def test_fft_convolutions_through_the_program(valid: bool) -> None:
    graph = _graph(1, valid)
    fp32 = PRECISIONS["fp32"]
    spectral = fft(cuda.FFT_SIZE)
    ffts = {n.name for n in graph.nodes if n.op == "conv" and spectral in cuda.conv_candidates(graph, n, fp32)}
    assert ffts
    x = np.random.default_rng(0).standard_normal((2, 1, *graph.types[graph.inputs[0]].spatial)).astype(np.float32)
    plan = make_plan(graph, "cpu", "fp32", "direct")
    choices = tuple(replace(c, algorithm=fft(cuda.FFT_SIZE)) if c.node in ffts else c for c in plan.choices)
    y = cuda.build(replace(plan, device="cuda", choices=choices), torch.device("cpu"))([torch.from_numpy(x)])[0]
    assert y.is_contiguous() and y.dtype == torch.float32
    assert rel_error(y.numpy(), _oracle(graph, x)) < 1e-5


def test_candidates_by_precision() -> None:
    graph = _graph()
    conv = next(n for n in graph.nodes if n.op == "conv")
    assert cuda.conv_candidates(graph, conv, PRECISIONS["tf32"]) == (DIRECT, fft(cuda.FFT_SIZE))
    assert cuda.conv_candidates(graph, conv, PRECISIONS["fp16"]) == (DIRECT,)


def test_kernel_for_the_autotuner_writes_into_the_output() -> None:
    graph = _graph(2)
    node = next(n for n in graph.nodes if n.op == "conv" and len(n.inputs) == 1 and n.attrs["kernel"] == (3, 3, 3))
    x_type, y_type = graph.types[node.inputs[0]], graph.types[node.output]
    x = torch.rand((1, x_type.channels, *x_type.spatial)).contiguous(memory_format=torch.channels_last_3d)
    direct = cuda.conv_kernel(graph, node, DIRECT, torch.device("cpu"), PRECISIONS["fp32"])
    spectral = cuda.conv_kernel(graph, node, fft(cuda.FFT_SIZE), torch.device("cpu"), PRECISIONS["fp32"])
    out = torch.empty((1, y_type.channels, *y_type.spatial))
    assert spectral(x, out=out) is out
    assert rel_error(out.numpy(), direct(x).numpy()) < 1e-5


def test_importing_and_running_on_the_cpu_never_initializes_cuda() -> None:
    code = ("import numpy as np, torch, znnx\n"
            "from znnx.backends import cuda\n"
            "g = znnx.load('src/znnx/data/demo_unet.onnx')\n"
            "znnx.compile(g)(np.zeros((1, 32, 32, 32), np.float32))\n"
            "assert not torch.cuda.is_initialized(), 'CUDA was initialized'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@needs_gpu
@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_gpu_net_within_tolerance_and_graph_replays(precision: str) -> None:
    graph = _graph(3)
    net = znnx.compile(graph, device="cuda", precision=precision)
    rng = np.random.default_rng(1)
    for _ in range(3):  # capture, then replays with new inputs
        x = rng.standard_normal(net.input_shape).astype(np.float32)
        assert rel_error(net(x), _oracle(graph, x[None])[0]) < PRECISIONS[precision].tolerance
    batch = rng.standard_normal((2, *net.input_shape)).astype(np.float32)
    assert rel_error(net(batch), _oracle(graph, batch)) < PRECISIONS[precision].tolerance  # a new shape recaptures


@needs_gpu
def test_gpu_autotuner_measures_fft_and_direct() -> None:
    graph = _graph(4, valid=True, width=16)  # the autotuner measures layers of 16 channels and more
    net = znnx.compile(graph, device="cuda")
    measured = [c for c in net.algorithms if c.source == "measured"]
    assert measured and all({"direct", "fft32"} <= dict(c.seconds).keys() for c in measured)
    forced = znnx.compile(graph, device="cuda", algorithm="fft")
    x = np.random.default_rng(2).standard_normal(net.input_shape).astype(np.float32)
    assert rel_error(forced(x), net(x)) < 1e-4
