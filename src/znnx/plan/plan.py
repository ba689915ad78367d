"""The plan: everything `compile` decided for one graph on one kind of device, as one frozen value.

`compile` = passes -> `Plan` (the autotuner measures here) -> `backend.build(plan)`. A network file
stores the plan (plan/network_file.py), so a net loaded on the same kind of machine (`machine`: the
CPU model and its instruction sets, or the GPU's name) runs the saved algorithms without timing
anything, and every Dask worker or hybrid helper that loads it does the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from znnx.ir.graph import Graph
from znnx.plan.algorithm import Algorithm, Kind
from znnx.plan.autotune import LayerChoice
from znnx.plan.memory import MemoryPlan


@dataclass(frozen=True)
class DenseChoice:
    """How a dense net (passes/dense.py) was chosen: the form that runs (`path`, "dilated" or
    "mpf"), the measured seconds of one patch of each form timed, and the forms left out with why."""

    path: str
    seconds: tuple[tuple[str, float], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    def summary(self) -> str:
        """One line: the form that runs, the times measured, the forms skipped and why."""
        measured = ", ".join(f"{path} {seconds * 1e3:.1f} ms" for path, seconds in self.seconds)
        skipped = "; ".join(f"{path} skipped: {why}" for path, why in self.skipped)
        return (f"the {self.path} form runs" + (f" (one patch: {measured})" if measured else "")
                + (f"; {skipped}" if skipped else ""))


@dataclass(frozen=True)
class Plan:
    """`graph`: the optimized graph at its patch; `device`: the backend kind that runs it;
    `precision`: its name; `memory`: buffers and peak for `memory.batch` patches per call;
    `choices`: each conv's algorithm with the measured time of every candidate; `machine`: the kind
    of machine those times were measured on; `rewrites`: what each pass changed;
    `kernel_weight_bytes` / `kernel_scratch_bytes`: what the chosen Winograd / FFT kernels add to
    the weights and need as scratch (one slab, shared by every layer); `dense`: for a dense net,
    which dense form runs and why; `normalize`: (scale, mean, std) of the input normalization the
    net was trained with (the net sees (x * scale - mean) / std), None where unknown."""

    graph: Graph
    device: str
    precision: str
    memory: MemoryPlan
    choices: tuple[LayerChoice, ...]
    machine: str
    rewrites: tuple[tuple[str, int], ...] = ()
    kernel_weight_bytes: int = 0
    kernel_scratch_bytes: int = 0
    dense: DenseChoice | None = None
    normalize: tuple[float, float, float] | None = None

    @property
    def batch(self) -> int:
        return self.memory.batch

    @property
    def algorithms(self) -> dict[str, Algorithm]:
        """Conv node name -> the algorithm it runs with."""
        return {c.node: c.algorithm for c in self.choices}

    @property
    def peak_bytes(self) -> int:
        """Activations and kernel scratch one call of `batch` patches allocates (weights apart)."""
        return self.memory.peak_bytes + self.kernel_scratch_bytes

    @property
    def weight_bytes(self) -> int:
        """The weights as the net holds them (Winograd- and FFT-transformed where those run)."""
        return self.memory.weight_bytes + self.kernel_weight_bytes


def memory_json(memory: MemoryPlan) -> dict[str, Any]:
    return {
        "peak_bytes": memory.peak_bytes,
        "slot_bytes": list(memory.slot_bytes),
        "steps": [[s.node, s.inplace, s.view, s.slot] for s in memory.steps],
        **({"streams": [[s.producer, s.consumer, s.planes] for s in memory.streams]} if memory.streams else {}),
        **({"loop": {"fragment": memory.loop.fragment, "passes": memory.loop.passes,
                     "phases": [memory_json(phase) for phase in memory.phases]}} if memory.loop else {}),
    }


def choices_json(choices: tuple[LayerChoice, ...]) -> list[dict[str, Any]]:
    return [{"node": c.node, "kind": c.algorithm.kind, "tile": c.algorithm.tile, "seconds": dict(c.seconds),
             "errors": dict(c.errors), "source": c.source} for c in choices]


def choices_from_json(data: list[dict[str, Any]]) -> tuple[LayerChoice, ...]:
    """The choices a network file saved, marked `saved`; malformed entries raise KeyError / TypeError /
    ValueError, which the file reader reports."""
    kinds = get_args(Kind)
    choices = []
    for entry in data:
        if entry["kind"] not in kinds:
            raise ValueError(f"unknown algorithm kind {entry['kind']!r}")
        algorithm = Algorithm(entry["kind"], int(entry["tile"]))
        choices.append(LayerChoice(str(entry["node"]), algorithm,
                                   tuple((str(k), float(v)) for k, v in entry["seconds"].items()),
                                   tuple((str(k), float(v)) for k, v in entry["errors"].items()), "saved"))
    return tuple(choices)


def dense_json(dense: DenseChoice | None) -> dict[str, Any] | None:
    if dense is None:
        return None
    return {"path": dense.path, "seconds": dict(dense.seconds), "skipped": dict(dense.skipped)}


def dense_from_json(data: dict[str, Any] | None) -> DenseChoice | None:
    if data is None:
        return None
    return DenseChoice(str(data["path"]), tuple((str(k), float(v)) for k, v in data["seconds"].items()),
                       tuple((str(k), str(v)) for k, v in data["skipped"].items()))


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan less its graph (the network file stores the graph and weights itself)."""
    return {"device": plan.device, "precision": plan.precision, "batch": plan.batch, "machine": plan.machine,
            "memory": memory_json(plan.memory), "choices": choices_json(plan.choices), "dense": dense_json(plan.dense),
            "normalize": None if plan.normalize is None else list(plan.normalize)}

