"""PZnet's price per patch, as USD per gigavoxel of output on cloud instances.

usd_per_gigavoxel = usd_per_hour / (voxels_per_s * 3600) * 1e9. A CPU instance's throughput is
the measured throughput per thread times its vCPU count (linear scaling: an assumption the table
states); a GPU instance is priced only from a measurement on the same GPU model; znnx bench does not
measure GPUs yet, so those rows read "not measured".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Instance:
    name: str
    kind: str
    usd_per_hour: float
    vcpus: int = 0
    gpu: str = ""
    gpus: int = 1


@dataclass(frozen=True)
class PriceTable:
    instances: tuple[Instance, ...]
    read_on: str
    note: str


def load_prices(path: Path | None = None) -> PriceTable:
    text = path.read_text() if path else (resources.files("znnx.bench") / "prices.json").read_text()
    raw = json.loads(text)
    return PriceTable(tuple(Instance(**item) for item in raw["instances"]), raw["read_on"], raw["note"])


def usd_per_gigavoxel(usd_per_hour: float, voxels_per_s: float) -> float:
    return usd_per_hour / (voxels_per_s * 3600.0) * 1e9


def cpu_throughput(instance: Instance, measured_voxels_per_s: float, measured_threads: int) -> float:
    """Throughput assumed for a CPU instance: linear in vCPUs from the measured per-thread rate."""
    return measured_voxels_per_s / measured_threads * instance.vcpus


def gpu_throughput(instance: Instance, gpu_results: dict[str, float]) -> float | None:
    """Throughput of a GPU instance from a measurement on its GPU model, or None when not measured."""
    per_gpu = gpu_results.get(instance.gpu)
    return None if per_gpu is None else per_gpu * instance.gpus
