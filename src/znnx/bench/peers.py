"""The runtimes compared side by side: znnx and its peers, each as prepare(model, x) -> run(x).

A peer whose package is missing reports why instead of failing; `znnx bench` lists it as absent.
All run with the thread count the worker process was started with, in fp32 unless their name ends
in -bf16 (weights and activations in bfloat16, fp32 accumulation: compare those with each other).
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

Run = Callable[[np.ndarray], np.ndarray]


def _threads() -> int:
    return torch.get_num_threads()


def _eager(model: nn.Module, x: np.ndarray) -> Run:
    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return run


def _channels_last(model: nn.Module, x: np.ndarray) -> Run:
    model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last_3d)
            return model(tensor).contiguous().numpy()

    return run


def _compile(model: nn.Module, x: np.ndarray) -> Run:
    import torch._inductor.config

    torch._inductor.config.freezing = True
    compiled = torch.compile(model, dynamic=False)  # one fixed patch shape, as benchmarked

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return compiled(torch.from_numpy(batch)).numpy()

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


def _onnxruntime(model: nn.Module, x: np.ndarray) -> Run:
    import onnxruntime as ort

    folder = Path(tempfile.mkdtemp(prefix="znnx-bench-"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(export_onnx(model, x, folder)), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, {"input": batch})[0]


def _openvino(model: nn.Module, x: np.ndarray, precision: str = "f32") -> Run:
    import openvino as ov

    folder = Path(tempfile.mkdtemp(prefix="znnx-bench-"))
    compiled = ov.Core().compile_model(str(export_onnx(model, x, folder)), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": str(_threads())})
    request = compiled.create_infer_request()
    return lambda batch: np.array(request.infer({0: batch})[compiled.output(0)])


def _znnx(model: nn.Module, x: np.ndarray, precision: str = "fp32") -> Run:
    import znnx
    from znnx.bench.worker import load_graph

    net = znnx.compile(load_graph(model, x), precision=precision)
    return lambda batch: net(batch)


def _needs(*modules: str) -> Callable[[], str | None]:
    def check() -> str | None:
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        return f"not installed: pip install {' '.join(missing)}" if missing else None

    return check


@dataclass(frozen=True)
class Peer:
    name: str
    prepare: Callable[[nn.Module, np.ndarray], Run]
    missing: Callable[[], str | None] = lambda: None


PEERS: dict[str, Peer] = {
    "pytorch-eager": Peer("pytorch-eager", _eager),
    "pytorch-channels-last": Peer("pytorch-channels-last", _channels_last),
    "torch.compile": Peer("torch.compile", _compile),
    "onnxruntime": Peer("onnxruntime", _onnxruntime, _needs("onnxruntime")),
    "openvino": Peer("openvino", _openvino, _needs("openvino")),
    "znnx": Peer("znnx", _znnx),
    "openvino-bf16": Peer("openvino-bf16", lambda m, x: _openvino(m, x, "bf16"), _needs("openvino")),
    "znnx-bf16": Peer("znnx-bf16", lambda m, x: _znnx(m, x, "bf16")),
}
REFERENCE_PEER = "pytorch-eager"


def thread_environment(threads: int) -> dict[str, str]:
    """Environment for a worker process pinned to `threads` threads in every runtime."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    return env
