"""A third backend, PyTorch eager on the CPU node by node, written only against the `Backend`
protocol: the proof that a backend is one module plus one registry line (`backends.register`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from znnx.backends import cpu, torch_eager
from znnx.errors import DeviceError
from znnx.ir.graph import Graph, Node
from znnx.plan.algorithm import DIRECT, Algorithm
from znnx.plan.autotune import Forced, LayerChoice, direct_only
from znnx.plan.memory import MemoryPlan, plan_memory
from znnx.plan.plan import Plan
from znnx.plan.precision import Precision, resolve

KIND = "eager"
PRECISIONS = ("fp32",)
TRAINING_KERNELS = False
OPS = torch_eager.OPS


def device(name: str) -> torch.device:
    if name != KIND:
        raise DeviceError(f"eager backend: unknown device {name!r}; use {KIND!r}")
    return torch.device("cpu")


def machine(device: torch.device) -> str:
    return "eager: any CPU"


def precision(name: str) -> Precision:
    return resolve(name, KIND, PRECISIONS)


def free_memory(device: torch.device) -> int:
    return cpu.free_memory(device)


def io_bytes(graph: Graph, host_patches: int) -> int:
    return cpu.io_bytes(graph, host_patches)


def memory_plan(graph: Graph, batch: int, precision: Precision) -> MemoryPlan:
    return plan_memory(graph, batch, element_bytes=precision.element_bytes)


def conv_candidates(graph: Graph, node: Node, precision: Precision) -> tuple[Algorithm, ...]:
    return (DIRECT,)


def algorithm_bytes(graph: Graph, node: Node, algorithm: Algorithm) -> tuple[int, int]:
    return 0, 0


def reserved_kernel_bytes(graph: Graph, precision: Precision) -> tuple[int, int]:
    return 0, 0


def choose_algorithms(graph: Graph, batch: int, device: torch.device, precision: Precision,
                      forced: Forced, refresh: bool = False) -> tuple[LayerChoice, ...]:
    return direct_only(graph, forced, precision.name)


def build(plan: Plan, device: torch.device) -> Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]:
    return torch_eager.build(plan.graph, device)
