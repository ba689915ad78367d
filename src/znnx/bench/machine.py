"""A description of the machine and libraries a benchmark ran on, for the results file."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
from pathlib import Path


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    vector = [f for f in ("avx512f", "avx2", "amx_tile") if flags and f in flags.group(1).split()]
    return f"{match.group(1).strip() if match else platform.machine()} ({', '.join(vector) or 'no AVX2'})"


def onednn_version() -> str:
    import torch

    match = re.search(r"(?:oneDNN|MKL-DNN) v?([\d.]+)", torch.__config__.show())
    return match.group(1) if match else "unknown"


def describe() -> dict[str, str]:
    versions = {}
    for package in ("znnx", "torch", "numpy", "onnx", "onnxruntime", "openvino"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return {"cpu": cpu_model(), "cores": str(os.cpu_count()), "memory": _memory(), "python": platform.python_version(),
            "oneDNN": onednn_version(), **versions}


def _memory() -> str:
    try:
        match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return "unknown"
    return f"{int(match.group(1)) / 2**20:.1f} GiB" if match else "unknown"
