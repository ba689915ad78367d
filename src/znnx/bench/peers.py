"""The runtimes compared side by side: znnx and its peers, each as prepare(model, x) -> run(x).

A peer whose package is missing reports why instead of failing; `znnx bench` lists it as absent.
All run with the thread count the worker process was started with, on the run's `Target` (device and
precision; the -bf16 peers always in bf16, to set beside fp32 runs in one table). On a GPU the
PyTorch peers hold the model and input in the target precision on the device (TF32 allowed in tf32
only, as znnx does), and every run includes the host-to-device and device-to-host copies; ONNX
Runtime and OpenVINO are CPU runtimes here.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from znnx.errors import UnsupportedError

Run = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Target:
    """Where and in what precision a benchmark runs (plan/precision.py names)."""

    device: str = "cpu"
    precision: str = "fp32"


def _threads() -> int:
    return torch.get_num_threads()


def _torch(model: nn.Module, target: Target, channels_last: bool) -> tuple[nn.Module, Callable[[np.ndarray],
                                                                                                torch.Tensor]]:
    """`model` on the target device in the target precision, and the matching input conversion."""
    from znnx import backends

    backend, _ = backends.resolve(target.device)
    dtype = backend.precision(target.precision).torch_dtype
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    if target.device != "cpu":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = target.precision == "tf32"
    model = model.to(target.device, dtype, memory_format=layout)  # type: ignore[call-overload]
    return model, lambda batch: torch.from_numpy(batch).to(target.device, dtype, memory_format=layout)


def _eager(model: nn.Module, x: np.ndarray, target: Target, channels_last: bool = False) -> Run:
    model, enter = _torch(model, target, channels_last)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(enter(batch)).float().contiguous().cpu().numpy()

    return run


def _compile(model: nn.Module, x: np.ndarray, target: Target, channels_last: bool = False) -> Run:
    import torch._inductor.config

    torch._inductor.config.freezing = True
    model, enter = _torch(model, target, channels_last=channels_last)
    compiled = torch.compile(model, dynamic=False)  # one fixed patch shape, as benchmarked

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return compiled(enter(batch)).float().cpu().numpy()

    return run


def export_onnx(model: nn.Module, x: np.ndarray, folder: Path) -> Path:
    """The model as an ONNX file (TorchScript exporter, opset 17), the peers' common input."""
    import warnings

    path = folder / "model.onnx"
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
    return path


def _cpu_only(name: str, target: Target) -> None:
    if target.device != "cpu":
        raise UnsupportedError(f"bench: {name} runs on the CPU here, not on {target.device}")


def _onnxruntime(model: nn.Module, x: np.ndarray, target: Target) -> Run:
    import onnxruntime as ort

    _cpu_only("onnxruntime", target)
    if target.precision != "fp32":
        raise UnsupportedError(f"bench: onnxruntime runs fp32 here, not {target.precision}")

    folder = Path(tempfile.mkdtemp(prefix="znnx-bench-"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(export_onnx(model, x, folder)), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {"input": batch})[0]


def _openvino(model: nn.Module, x: np.ndarray, target: Target) -> Run:
    import openvino as ov

    _cpu_only("openvino", target)
    precision = {"fp32": "f32", "bf16": "bf16"}[target.precision]

    folder = Path(tempfile.mkdtemp(prefix="znnx-bench-"))
    compiled = ov.Core().compile_model(str(export_onnx(model, x, folder)), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": str(_threads())})
    request = compiled.create_infer_request()
    return lambda batch: np.array(request.infer({0: batch})[compiled.output(0)])


def _znnx(model: nn.Module, x: np.ndarray, target: Target, dense: bool | str = True) -> Run:
    """znnx on the benchmark net; a dense sliding-window net (bench/sliding.py) is compiled from its
    classifier form with `dense` (True: the autotuner's choice of form)."""
    import znnx
    from znnx.bench.models import load_graph
    from znnx.bench.sliding import SlidingNet

    if isinstance(model, SlidingNet) and model.dense:
        graph = znnx.load(model.classifier(), input_shape=x.shape[1:])
        net = znnx.compile(graph, patch=x.shape[2:], device=target.device, precision=target.precision, dense=dense)
    else:
        net = znnx.compile(load_graph(model, x), device=target.device, precision=target.precision)
    return lambda batch: net(batch)


def _needs(*modules: str) -> Callable[[], str | None]:
    def check() -> str | None:
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        return f"not installed: pip install {' '.join(missing)}" if missing else None

    return check


@dataclass(frozen=True)
class Peer:
    name: str
    prepare: Callable[[nn.Module, np.ndarray, Target], Run]
    missing: Callable[[], str | None] = lambda: None


def _bf16(prepare: Callable[[nn.Module, np.ndarray, Target], Run]) -> Callable[[nn.Module, np.ndarray, Target], Run]:
    return lambda model, x, target: prepare(model, x, Target(target.device, "bf16"))


PEERS: dict[str, Peer] = {
    "pytorch-eager": Peer("pytorch-eager", _eager),
    "pytorch-channels-last": Peer("pytorch-channels-last", lambda m, x, t: _eager(m, x, t, channels_last=True)),
    "torch.compile": Peer("torch.compile", _compile),
    "torch.compile-channels-last": Peer("torch.compile-channels-last",
                                        lambda m, x, t: _compile(m, x, t, channels_last=True)),
    "onnxruntime": Peer("onnxruntime", _onnxruntime, _needs("onnxruntime")),
    "openvino": Peer("openvino", _openvino, _needs("openvino")),
    "znnx": Peer("znnx", _znnx),
    "openvino-bf16": Peer("openvino-bf16", _bf16(_openvino), _needs("openvino")),
    "znnx-bf16": Peer("znnx-bf16", _bf16(_znnx)),
    "znnx-dilated": Peer("znnx-dilated", lambda m, x, t: _znnx(m, x, t, dense="dilated")),
}
REFERENCE_PEER = "pytorch-eager"


def default_peers(device: str) -> str:
    """The runtimes `znnx bench` compares on `device` by default (ONNX Runtime and OpenVINO run on
    the CPU only)."""
    if device.startswith("cuda"):
        return "pytorch-eager,pytorch-channels-last,torch.compile,torch.compile-channels-last,znnx"
    return "pytorch-eager,pytorch-channels-last,torch.compile,onnxruntime,openvino,znnx"


def thread_environment(threads: int) -> dict[str, str]:
    """Environment for a worker process pinned to `threads` threads in every runtime."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    return env
