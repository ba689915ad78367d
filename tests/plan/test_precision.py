"""Precisions below fp32: where each runs, the errors refused, and whole nets within the stated
tolerance of the fp32 model (bf16 on the CPU backend; bf16 and fp16 through the GPU backend's
program, which runs eagerly on the CPU)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

import znnx
from tests.nets import Case, cases, rel_error
from znnx import backends
from znnx.backends import cpu, cuda
from znnx.errors import DeviceError, GraphError
from znnx.net import make_plan
from znnx.plan.precision import PRECISIONS


@pytest.fixture
def bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 allowed on every CPU: where oneDNN emulates it the results are the same, only slower."""
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)


def _expected(case: Case, x: np.ndarray) -> tuple[znnx.Graph, np.ndarray]:
    model = case.build()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    return znnx.load(model, case.input_shape), expected


@pytest.mark.parametrize("name, device", [("tf32", "cpu"), ("fp16", "cpu"), ("fp64", "cpu")])
def test_refused_where_it_does_not_run(name: str, device: str) -> None:
    with pytest.raises(DeviceError, match=rf"precision: .*{name}.*use"):
        backends.get(device).precision(name)


def test_bf16_refused_where_onednn_would_emulate_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    with pytest.raises(DeviceError, match=r"bf16 on this CPU would be emulated.*use precision fp32"):
        cpu.precision("bf16")
    assert cpu.precision("fp32").name == "fp32"


def test_every_precision_runs_on_cuda() -> None:
    assert [cuda.precision(name).name for name in PRECISIONS] == list(PRECISIONS)


@pytest.mark.usefixtures("bf16")
@pytest.mark.parametrize("case", cases(), ids=str)
def test_cpu_bf16_within_tolerance(case: Case) -> None:
    x = np.random.default_rng(5).standard_normal((1, *case.input_shape), dtype=np.float32)
    graph, expected = _expected(case, x)
    net = znnx.compile(graph, precision="bf16")
    assert {c.algorithm.name for c in net.algorithms} <= {"direct"}
    for _ in range(2):
        y = net(x)
        assert y.dtype == np.float32
        assert rel_error(y, expected) < PRECISIONS["bf16"].tolerance


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", [c for c in cases() if c.name.endswith("_0")], ids=str)
def test_gpu_program_within_tolerance(case: Case, precision: str) -> None:
    """The GPU backend's arithmetic (channels-last weights, casts in and out) on the CPU."""
    x = np.random.default_rng(6).standard_normal((1, *case.input_shape), dtype=np.float32)
    graph, expected = _expected(case, x)
    optimized = znnx.compile(graph).graph
    lifted = torch.from_numpy(x).reshape(1, case.input_shape[0], *optimized.types[optimized.inputs[0]].spatial)
    plan = replace(make_plan(optimized, "cpu", "fp32", "direct"), device="cuda", precision=precision)
    run = cuda.build(plan, torch.device("cpu"))
    y = run([lifted])[0]
    assert y.dtype == torch.float32
    assert rel_error(y.reshape(expected.shape), expected) < PRECISIONS[precision].tolerance


@pytest.mark.usefixtures("bf16")
def test_bf16_halves_the_plan_and_refuses_fp32_kernels() -> None:
    case = cases()[1]
    graph = znnx.load(case.build(), case.input_shape)
    fp32, bf16 = znnx.compile(graph, algorithm="direct"), znnx.compile(graph, precision="bf16")
    same_buffers_in_fp32 = cpu.memory_plan(bf16.graph, 1, replace(bf16.precision, element_bytes=4))
    assert bf16.plan.memory.peak_bytes * 2 == same_buffers_in_fp32.peak_bytes >= fp32.plan.memory.peak_bytes
    assert bf16.weight_bytes * 2 == fp32.weight_bytes
    with pytest.raises(GraphError, match=r"\['winograd4'\] run in fp32 only.*bf16"):
        znnx.compile(graph, precision="bf16", algorithm="winograd4")


@pytest.mark.usefixtures("bf16")
def test_network_file_loads_in_another_precision(tmp_path: object) -> None:
    from pathlib import Path

    case = cases()[1]
    graph = znnx.load(case.build(), case.input_shape)
    path = znnx.compile(graph, precision="bf16").save(Path(str(tmp_path)) / "net.znnx")
    x = np.random.default_rng(7).standard_normal(case.input_shape, dtype=np.float32)
    assert znnx.load_net(path).precision.name == "bf16"  # the saved precision by default
    fp32 = znnx.load_net(path, precision="fp32")
    assert fp32.precision.name == "fp32"
    assert rel_error(znnx.load_net(path, precision="bf16")(x), fp32(x)) < PRECISIONS["bf16"].tolerance
