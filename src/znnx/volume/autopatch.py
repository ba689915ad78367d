"""Choose the patch shape that runs a volume fastest within a memory budget (ZNNi's question).

Candidates are the net's own patch shape scaled up and down, snapped to sizes the net accepts and
capped where one patch already covers the volume, and the largest patch of those proportions that
fits the budget (ZNNi: border waste falls with the patch, so the largest that fits is often the
fastest, and for dense nets by far). Each is costed without running anything: the
memory plan's peak plus weights (with room for the transformed weights and slab of whichever
Winograd / FFT kernel the autotuner may pick) and the pipeline's buffers must fit the budget, and
the run's FLOPs (patches the block layout needs x FLOPs per patch) rank them. The best few are then
compiled and timed on one patch; the choice minimizes patches x measured seconds, i.e. maximizes the
volume's output voxels per second, border waste and per-patch overheads included.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from znnx import backends
from znnx.errors import GraphError, InputError
from znnx.ir.graph import Graph
from znnx.report import layers
from znnx.units import human_bytes
from znnx.volume.runner import VolumeOptions, plan_blocks

SCALES = (0.5, 0.625, 0.75, 0.875, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0)
BUDGET_SHARES = MappingProxyType({"cpu": 0.8})
"""The share of a device's free memory the automatic patch may fill (others: DEFAULT_BUDGET_SHARE). On
the CPU the memory plan's footprint (with the pipeline's patches) came within 2% of the measured peak
RSS of dense n337, n537, n726 and n926 at 6-17 GB, and a dense net's throughput grows steeply with the
patch (n726: 36,523 output voxels/s at 196^3, 102,474 at 276^3, which half the free memory of a 24 GiB
machine did not allow); a GPU's footprint (cuDNN's workspaces) has not been checked on a device."""
DEFAULT_BUDGET_SHARE = 0.5
BISECTIONS = 6
PIPELINE_PATCHES = 4


@dataclass(frozen=True)
class Candidate:
    patch: tuple[int, ...]
    memory_bytes: int
    patches: int
    flops: int
    seconds_per_patch: float | None = None

    @property
    def seconds(self) -> float | None:
        """Predicted compute seconds for the whole run (measured candidates only)."""
        return None if self.seconds_per_patch is None else self.patches * self.seconds_per_patch


@dataclass(frozen=True)
class Choice:
    patch: tuple[int, ...]
    budget_bytes: int
    candidates: tuple[Candidate, ...]
    reason: str


def default_budget(device: str = "cpu") -> int:
    """The device's share (BUDGET_SHARES) of the memory free now on `device` (the GPU's for a GPU, else
    the host's)."""
    backend, target = backends.resolve(device)
    return int(BUDGET_SHARES.get(target.type, DEFAULT_BUDGET_SHARE) * backend.free_memory(target))


def _snap(graph: Graph, axis: int, size: int, own: tuple[int, ...]) -> int | None:
    """The smallest size >= `size` (within 64) the net accepts along `axis`, others at `own`."""
    from znnx.net import accepted_size

    return accepted_size(graph, axis, range(max(size, 1), size + 65), own)


def _caps(graph: Graph, volume: tuple[int, ...]) -> list[int]:
    """Per axis, the smallest accepted patch size that covers the volume (with the net's context)."""
    from znnx.net import model_shape

    own = model_shape(graph, graph.types[graph.inputs[0]])[1:]
    out = model_shape(graph, graph.types[graph.outputs[0]])[1:]
    context = tuple(p - q for p, q in zip(own, out))
    return [_snap(graph, axis, v + c, own) or own[axis] for axis, (v, c) in enumerate(zip(volume, context))]


def candidate_patches(graph: Graph, volume: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The graph's own patch scaled by SCALES, snapped to accepted sizes and capped per axis at the
    smallest accepted size that covers the volume (with the net's context)."""
    from znnx.net import model_shape

    own = model_shape(graph, graph.types[graph.inputs[0]])[1:]
    caps = _caps(graph, volume)
    return list(dict.fromkeys(_scaled(graph, own, caps, scale) for scale in SCALES))


def _scaled(graph: Graph, own: tuple[int, ...], caps: list[int], scale: float) -> tuple[int, ...]:
    """`own` times `scale`, snapped to accepted sizes and capped per axis at `caps`."""
    patch = []
    for axis, size in enumerate(own):
        snapped = _snap(graph, axis, min(max(round(size * scale), 1), caps[axis]), own)
        patch.append(caps[axis] if snapped is None else min(snapped, caps[axis]))
    return tuple(patch)


def largest_fitting(graph: Graph, volume: tuple[int, ...], options: VolumeOptions, budget: int,
                    costed: list[Candidate], device: str = "cpu", precision: str = "fp32") -> Candidate | None:
    """The largest patch of the net's own proportions that fits `budget`, between the largest of the
    `costed` SCALES candidates that fits and the next scale (BISECTIONS halvings of the scale ratio);
    None where no larger one fits than those."""
    from znnx.net import model_shape

    own = model_shape(graph, graph.types[graph.inputs[0]])[1:]
    caps = _caps(graph, volume)
    memory = {c.patch: c.memory_bytes for c in costed}
    fits = [s for s in SCALES if memory.get(_scaled(graph, own, caps, s), budget + 1) <= budget]
    larger = [s for s in SCALES if fits and s > fits[-1]]
    if not fits or not larger:
        return None
    low, high, best = fits[-1], larger[0], None
    for _ in range(BISECTIONS):
        middle = math.sqrt(low * high)
        patch = _scaled(graph, own, caps, middle)
        found = next((c for c in costed if c.patch == patch), None) or _cost(graph, patch, volume, options, device,
                                                                               precision)
        if found is not None and found.memory_bytes <= budget:
            low, best = middle, found
        else:
            high = middle
    return best


def _cost(graph: Graph, patch: tuple[int, ...], volume: tuple[int, ...], options: VolumeOptions,
          device: str = "cpu", precision: str = "fp32") -> Candidate | None:
    """The candidate's memory on the device that runs it: the plan, weights, room for the kernels the
    autotuner may choose, and the inputs and outputs the device holds (the pipeline's patches in
    flight where they share its memory)."""
    from znnx import passes
    from znnx.net import reshape

    try:
        shaped = passes.optimize(reshape(graph, patch)).graph
        _, blocks, _ = plan_blocks(shaped, volume, options)
    except (GraphError, InputError):
        return None
    flops = sum(layer.flops for layer in layers(shaped))
    return Candidate(patch, _memory(shaped, device, precision), sum(len(b.reads) for b in blocks), flops)


def _memory(shaped: Graph, device: str, precision: str) -> int:
    """The net's footprint on its device plus the inputs and outputs it holds there."""
    from znnx.net import footprint

    backend, _ = backends.resolve(device)
    return footprint(shaped, device, precision) + backend.io_bytes(shaped, PIPELINE_PATCHES)


def fit_patch(graph: Graph, patch: tuple[int, ...], volume: tuple[int, ...], budget_bytes: int | None = None,
              device: str = "cpu", precision: str = "fp32") -> tuple[tuple[int, ...], str | None]:
    """An explicit patch made safe for a volume run: reduced per axis to what covering the volume
    needs (with a note saying so), then checked, before anything is allocated, against
    `budget_bytes` (default: `default_budget`) with the pipeline's patches
    counted; over it, an error names the largest patch of its proportions that fits."""
    from znnx import passes
    from znnx.net import check_fits, reshape

    backend, _ = backends.resolve(device)
    capped = tuple(min(p, c) for p, c in zip(patch, _caps(graph, volume)))
    note = None if capped == patch else (
        f"patch {'x'.join(map(str, patch))} reduced to {'x'.join(map(str, capped))}: that covers the volume "
        f"{'x'.join(map(str, volume))} with the net's context")
    budget = budget_bytes if budget_bytes is not None else default_budget(device)
    check_fits(graph, passes.optimize(reshape(graph, capped)).graph, device, precision, budget,
               extra=lambda shaped: backend.io_bytes(shaped, PIPELINE_PATCHES))
    return capped, note


def _time(graph: Graph, patch: tuple[int, ...], device: str, precision: str, reps: int) -> float:
    from znnx.net import compile  # noqa: A004

    net = compile(graph, patch=patch, device=device, precision=precision)
    x = np.zeros(net.input_shape, np.float32)
    net(x)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        net(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def choose_patch(graph: Graph, volume: tuple[int, ...], options: VolumeOptions, budget_bytes: int | None = None,
                 device: str = "cpu", measure: int = 3, reps: int = 1, precision: str = "fp32") -> Choice:
    """The patch that minimizes predicted run time on `device` within `budget_bytes` (default: the
    device's share of its free memory, `default_budget`)."""
    budget = budget_bytes if budget_bytes is not None else default_budget(device)
    costed = [c for c in (_cost(graph, p, volume, options, device, precision)
                          for p in candidate_patches(graph, volume)) if c]
    largest = largest_fitting(graph, volume, options, budget, costed, device, precision)
    costed += [largest] if largest is not None and largest.patch not in {c.patch for c in costed} else []
    fitting = [c for c in costed if c.memory_bytes <= budget]
    if not fitting:
        smallest = min(costed, key=lambda c: c.memory_bytes, default=None)
        need = f"; the smallest candidate {smallest.patch} needs {human_bytes(smallest.memory_bytes)}" \
            if smallest else ""
        raise InputError(f"autopatch: no patch fits the memory budget of {human_bytes(budget)}{need}; raise "
                         f"--memory or give --patch")
    ranked = sorted(fitting, key=lambda c: c.patches * c.flops)
    measured = [Candidate(c.patch, c.memory_bytes, c.patches, c.flops, _time(graph, c.patch, device, precision, reps))
                for c in ranked[:measure]]
    best = min(measured, key=lambda c: c.seconds or math.inf)
    others = ", ".join(f"{'x'.join(map(str, c.patch))}: {c.patches} x {c.seconds_per_patch:.3f} s"
                       for c in measured if c is not best)
    reason = (f"patch {'x'.join(map(str, best.patch))}: {best.patches} patch(es) x {best.seconds_per_patch:.3f} s = "
              f"{best.seconds:.1f} s of compute predicted, {human_bytes(best.memory_bytes)} of the "
              f"{human_bytes(budget)} budget; {len(fitting)} of {len(costed)} candidates fit, the "
              f"{len(measured)} with the fewest FLOPs were timed" + (f" (others: {others})" if others else ""))
    return Choice(best.patch, budget, tuple(measured), reason)
