"""Backends: one module per device kind, all of one shape (`Backend`), found through `REGISTRY`.

A backend says which conv algorithms apply to a node and what they cost in memory, how much memory
its device has free, how it plans a graph's buffers, measures and chooses each conv's algorithm,
and turns a `Plan` into a callable. Nothing outside this package asks which device it is on:
`net.py`, the autotuner and the volume runner call the backend of the device's kind.

Adding a backend: one module implementing `Backend`, plus one line in `REGISTRY` (or `register`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from znnx.errors import DeviceError

if TYPE_CHECKING:
    import torch

    from znnx.ir.graph import Graph, Node
    from znnx.plan.algorithm import Algorithm
    from znnx.plan.autotune import Forced, LayerChoice
    from znnx.plan.memory import MemoryPlan
    from znnx.plan.plan import Plan
    from znnx.plan.precision import Precision

Execute = Callable[[Sequence["torch.Tensor"]], list["torch.Tensor"]]
REGISTRY: dict[str, str] = {
    "cpu": "znnx.backends.cpu",
    "cuda": "znnx.backends.cuda",
}
_registered: dict[str, Backend] = {}


class Backend(Protocol):
    """What every backend module provides. `PRECISIONS` names the precisions it runs, `OPS` the IR
    ops it has kernels for, `TRAINING_KERNELS` whether znnx's own training kernels (training/conv.py,
    kernels/batchnorm.py: CPU C kernels) run on its device; elsewhere training runs PyTorch's ops."""

    PRECISIONS: tuple[str, ...]
    OPS: frozenset[str]
    TRAINING_KERNELS: bool

    def device(self, name: str) -> torch.device:
        """The torch device that holds this backend's tensors for the device called `name`
        ("cpu", "cuda:1", ...); a DeviceError names what is missing if it cannot run here."""

    def machine(self, device: torch.device) -> str:
        """The kind of machine, for reusing measured choices: equal strings, equal choices."""

    def precision(self, name: str) -> Precision:
        """The precision called `name`, refused with the reason where this backend cannot run it."""

    def free_memory(self, device: torch.device) -> int:
        """Bytes the device can give now."""

    def io_bytes(self, graph: Graph, host_patches: int) -> int:
        """Device bytes a running net holds for its inputs and outputs beyond the memory plan, when
        its caller keeps `host_patches` input and output patches in flight in host memory."""

    def memory_plan(self, graph: Graph, batch: int, precision: Precision) -> MemoryPlan:
        """The buffers the built net allocates for `batch` patches."""

    def conv_candidates(self, graph: Graph, node: Node, precision: Precision) -> tuple[Algorithm, ...]:
        """The algorithms that can run conv `node` here, direct first."""

    def algorithm_bytes(self, graph: Graph, node: Node, algorithm: Algorithm) -> tuple[int, int]:
        """(weight bytes beyond the raw weights, scratch bytes while it runs) of conv `node`."""

    def reserved_kernel_bytes(self, graph: Graph, precision: Precision) -> tuple[int, int]:
        """`algorithm_bytes` to reserve before the algorithms are chosen (the most any choice takes)."""

    def choose_algorithms(self, graph: Graph, batch: int, device: torch.device, precision: Precision,
                          forced: Forced, refresh: bool = False) -> tuple[LayerChoice, ...]:
        """Each conv's algorithm: measured (plan/autotune.py; `refresh` measures cached ones again)
        or as `forced`."""

    def build(self, plan: Plan, device: torch.device) -> Execute:
        """A function from NCDHW input tensors on `device` (graph input order) to NCDHW float32
        outputs on `device`, running `plan`."""


if TYPE_CHECKING:
    from znnx.backends import cpu, cuda

    _shaped: tuple[Backend, ...] = (cpu, cuda)


def register(kind: str, backend: Backend) -> None:
    """Make `backend` the one for devices of `kind` (a new device kind, or a replacement)."""
    _registered[kind] = backend


def unregister(kind: str) -> None:
    _registered.pop(kind, None)


def kinds() -> list[str]:
    return sorted({*REGISTRY, *_registered})


def get(kind: str) -> Backend:
    """The backend of device kind `kind` ("cpu", "cuda", or a registered one)."""
    if kind not in _registered:
        if kind not in REGISTRY:
            raise DeviceError(f"backends: no backend for device kind {kind!r}; known kinds: {kinds()}; name a "
                              f"device as KIND or KIND:INDEX, e.g. cpu or cuda:0")
        module: Backend = importlib.import_module(REGISTRY[kind])  # type: ignore[assignment]
        _registered[kind] = module
    return _registered[kind]


def kind_of(device: str) -> str:
    """The kind part of a device name: 'cuda:1' -> 'cuda'."""
    return device.strip().partition(":")[0]


def resolve(device: str) -> tuple[Backend, torch.device]:
    """The backend and torch device of the device called `device`."""
    if kind_of(device) not in kinds():
        raise DeviceError(f"backends: unknown device {device!r}; known device kinds: {kinds()}; name a device as "
                          f"KIND or KIND:INDEX, e.g. cpu or cuda:0")
    backend = get(kind_of(device))
    return backend, backend.device(device.strip())
