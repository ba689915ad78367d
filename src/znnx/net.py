"""Compile a graph for one patch shape and device, and run it: `znnx.compile` and `Net`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from znnx import backends, passes, status
from znnx.errors import DeviceError, GraphError, InputError, ModelError
from znnx.ir.graph import Graph, TensorType
from znnx.ir.verify import infer_types, verify
from znnx.plan.autotune import Forced, LayerChoice, direct_speedup
from znnx.plan.plan import DenseChoice, Plan, memory_json
from znnx.report import summary_table
from znnx.units import human_bytes

if TYPE_CHECKING:
    import torch


def model_shape(graph: Graph, ttype: TensorType) -> tuple[int, ...]:
    """A lifted type shown in the model's own rank: (C, *spatial[-rank:])."""
    return (ttype.channels, *ttype.spatial[3 - graph.spatial_rank:])


def _patch_types(graph: Graph, patch: Sequence[int]) -> dict[str, TensorType]:
    rank = graph.spatial_rank
    patch = tuple(int(p) for p in patch)
    if len(patch) == 3 and rank < 3 and patch[:3 - rank] == (1,) * (3 - rank):
        patch = patch[3 - rank:]
    if len(patch) != rank or any(p < 1 for p in patch):
        raise GraphError(f"compile: patch must have {rank} positive sizes for this {rank}D model, got {patch}")
    spatial = (1,) * (3 - rank) + patch
    return {name: TensorType(graph.types[name].channels, spatial) for name in graph.inputs}  # type: ignore[arg-type]


def reshape(graph: Graph, patch: Sequence[int]) -> Graph:
    """`graph` for input patches of spatial shape `patch` (re-typed, or re-imported by its `source`),
    with a fix when that is invalid."""
    types = _patch_types(graph, patch)
    try:
        if graph.source is not None:
            return graph.source(types[graph.inputs[0]].spatial[3 - graph.spatial_rank:])
        return infer_types(graph, types)
    except (GraphError, ModelError) as error:
        wanted = types[graph.inputs[0]].spatial[3 - graph.spatial_rank:]
        near = valid_patches_near(graph, wanted)
        hint = f"; valid patch sizes near it: {near}" if near else ""
        raise GraphError(f"compile: patch {wanted} does not fit the model: {error}{hint}") from None


def accepted_size(graph: Graph, axis: int, sizes: Iterable[int], own: Sequence[int]) -> int | None:
    """The first of `sizes` the graph accepts along `axis` (other axes at `own`), or None."""
    for size in sizes:
        if size < 1:
            continue
        trial = list(own)
        trial[axis] = size
        try:
            infer_types(graph, _patch_types(graph, trial))
        except GraphError:
            continue
        return size
    return None


def valid_patches_near(graph: Graph, patch: Sequence[int], reach: int = 16) -> tuple[int, ...] | None:
    """The nearest valid patch, searched axis by axis with the other axes at the graph's own sizes."""
    rank = graph.spatial_rank
    own = graph.types[graph.inputs[0]].spatial[3 - rank:]
    found = [accepted_size(graph, axis, (patch[axis] + step for step in sorted(range(-reach, reach + 1), key=abs)),
                           own) for axis in range(rank)]
    return None if None in found else tuple(found)  # type: ignore[arg-type]


def footprint(graph: Graph, device: str = "cpu", precision: str = "fp32") -> int:
    """Bytes a net of the shaped, optimized `graph` needs on its device before its algorithms are
    chosen: the memory plan's peak and the weights, plus room for whichever Winograd / FFT kernels
    the autotuner may pick (transformed weights, one slab of scratch)."""
    backend, _ = backends.resolve(device)
    chosen = backend.precision(precision)
    memory = backend.memory_plan(graph, 1, chosen)
    weights, scratch = backend.reserved_kernel_bytes(graph, chosen)
    return memory.peak_bytes + memory.weight_bytes + weights + scratch


def largest_patch(graph: Graph, patch: Sequence[int], fits: Callable[[tuple[int, ...]], bool],
                  steps: int = 12) -> tuple[int, ...] | None:
    """The largest patch of `patch`'s proportions (each axis snapped down to a size the graph
    accepts) for which `fits` holds, by bisection on the scale; None if not even the smallest does."""
    patch = tuple(patch)

    def scaled(scale: float) -> tuple[int, ...] | None:
        sizes = [accepted_size(graph, axis, range(max(1, int(size * scale)), 0, -1), patch)
                 for axis, size in enumerate(patch)]
        trial = tuple(s for s in sizes if s is not None)
        if len(trial) < len(patch):
            return None
        try:
            reshape(graph, trial)
        except GraphError:
            return None
        return trial

    low, high, best = 0.0, 1.0, None
    for _ in range(steps):
        middle = (low + high) / 2
        trial = scaled(middle)
        if trial is not None and fits(trial):
            low, best = middle, trial
        else:
            high = middle
    return best


def check_fits(graph: Graph, shaped: Graph, device: str, precision: str, memory_bytes: int | None,
               prepare: Callable[[Graph], Graph] = lambda g: passes.optimize(g).graph,
               extra: Callable[[Graph], int] = lambda g: 0) -> None:
    """Refuse, before anything is allocated, the patch of `shaped` (`graph` at that patch, prepared
    as compile prepares it) if its `footprint` plus `extra` exceeds `memory_bytes` (default: the
    memory free on `device`), naming the largest patch of its proportions that fits (each one
    `graph` reshaped to it and prepared)."""
    backend, target = backends.resolve(device)
    budget = memory_bytes if memory_bytes is not None else backend.free_memory(target)
    patch = model_shape(shaped, shaped.types[shaped.inputs[0]])[1:]

    def need(p: tuple[int, ...]) -> int:
        candidate = shaped if p == patch else prepare(reshape(graph, p))
        return footprint(candidate, device, precision) + extra(candidate)

    needed = need(patch)
    if needed <= budget:
        return
    largest = largest_patch(graph, patch, lambda p: need(p) <= budget)
    where = "the memory budget" if memory_bytes is not None else f"the memory free on {device}"
    fix = (f"use a patch of at most {'x'.join(map(str, largest))}" if largest else
           "no patch of this model fits; free memory or run on a larger machine")
    raise InputError(f"compile: a patch of {'x'.join(map(str, patch))} needs {human_bytes(needed)} (activations, "
                     f"weights, kernel scratch), more than {where}, {human_bytes(budget)}; {fix}")


def make_plan(graph: Graph, device: str = "cpu", precision: str = "fp32", forced: Forced = None,
              rewrites: tuple[tuple[str, int], ...] = (), choices: tuple[LayerChoice, ...] | None = None,
              retune: bool = False, dense: DenseChoice | None = None,
              normalize: tuple[float, float, float] | None = None) -> Plan:
    """What `compile` decides for a shaped graph on `device`: the memory plan, and each conv's
    algorithm (`choices` as given, e.g. saved in a network file, else measured, afresh with
    `retune`, or `forced`); `dense` and `normalize` as given."""
    verify(graph)
    backend, target = backends.resolve(device)
    chosen = backend.precision(precision)
    if choices is None:
        choices = backend.choose_algorithms(graph, 1, target, chosen, forced, retune)
    nodes = {node.name: node for node in graph.nodes}
    sizes = [backend.algorithm_bytes(graph, nodes[c.node], c.algorithm) for c in choices]
    return Plan(graph, backends.kind_of(device), chosen.name, backend.memory_plan(graph, 1, chosen), choices,
                backend.machine(target), rewrites, sum(w for w, _ in sizes), max((s for _, s in sizes), default=0),
                dense, normalize)


class Net:
    """A `Plan` built by its backend on one device; call it on (C, *S) or (N, C, *S) arrays.

    `graph` is what runs (optimized by `compile`); `plan` is what compile decided (memory plan,
    each conv's algorithm); `precision` is what its weights and activations are held in."""

    def __init__(self, plan: Plan, device: str | None = None) -> None:
        self.device = (device or plan.device).strip()
        if backends.kind_of(self.device) != plan.device:
            raise DeviceError(f"net: a plan for {plan.device} cannot run on {self.device}; compile it for "
                              f"{self.device} (znnx.compile or load_net with device={self.device!r})")
        self.backend, self.torch_device = backends.resolve(self.device)
        self.plan = plan
        self.graph = plan.graph
        self.precision = self.backend.precision(plan.precision)
        self._run = self.backend.build(plan, self.torch_device)

    @property
    def rewrites(self) -> tuple[tuple[str, int], ...]:
        return self.plan.rewrites

    @property
    def algorithms(self) -> tuple[LayerChoice, ...]:
        return self.plan.choices

    def memory_bytes(self, batch: int = 1) -> int:
        """Predicted peak bytes one call allocates for activations (beyond weights and its input),
        for `batch` patches: the memory plan's largest set of simultaneously live buffers, plus the
        largest scratch of a Winograd / FFT layer (one slab, reused by every layer)."""
        if batch == self.plan.batch:
            return self.plan.peak_bytes
        return self.backend.memory_plan(self.graph, batch, self.precision).peak_bytes + self.plan.kernel_scratch_bytes

    @property
    def weight_bytes(self) -> int:
        """The weights as the net holds them (Winograd- and FFT-transformed where those run)."""
        return self.plan.weight_bytes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, *spatial) of the (first) input, in the model's own spatial rank."""
        return model_shape(self.graph, self.graph.types[self.graph.inputs[0]])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """(C, *spatial) of the (first) output, in the model's own spatial rank."""
        return model_shape(self.graph, self.graph.types[self.graph.outputs[0]])

    def summary(self) -> str:
        return summary_table(self.graph)

    def _to_tensor(self, name: str, value: Any) -> tuple[torch.Tensor, bool]:
        import torch

        is_torch = isinstance(value, torch.Tensor)
        array = value if is_torch else np.asarray(value)
        dtype = str(array.dtype)
        floating = value.is_floating_point() if is_torch else np.asarray(value).dtype.kind == "f"
        if not floating:
            raise InputError(
                f"net: input {name!r} has dtype {dtype}; znnx nets take floating point input. Normalize "
                f"first, e.g. x.astype(np.float32) / 255 for uint8 images"
            )
        expected = model_shape(self.graph, self.graph.types[name])
        shape = tuple(array.shape)
        if shape == expected:
            shape = (1, *shape)
        elif len(shape) != len(expected) + 1 or shape[1:] != expected:
            raise InputError(
                f"net: input {name!r} has shape {tuple(array.shape)}, but this net was compiled for "
                f"{expected} (C, *spatial) or (N, {', '.join(map(str, expected))}); compile with "
                f"patch={expected[1:]} matching your data, or use `znnx infer` for whole volumes"
            )
        tensor = value if is_torch else torch.from_numpy(np.ascontiguousarray(array))
        lifted = (shape[0], shape[1], *self.graph.types[name].spatial)
        return tensor.to(self.torch_device, torch.float32).reshape(lifted), is_torch

    def __call__(self, *inputs: Any) -> Any:
        """Run the net; returns arrays of the inputs' kind (NumPy or torch), batched like the input."""
        import torch

        if len(inputs) != len(self.graph.inputs):
            raise InputError(f"net: expected {len(self.graph.inputs)} input(s) {list(self.graph.inputs)}, "
                             f"got {len(inputs)}")
        converted = [self._to_tensor(n, v) for n, v in zip(self.graph.inputs, inputs)]
        batched = any(np.ndim(v) == len(self.input_shape) + 1 for v in inputs)
        with torch.inference_mode():
            outputs = self._run([t for t, _ in converted])
        results = []
        for name, out in zip(self.graph.outputs, outputs):
            shape = (out.shape[0], *model_shape(self.graph, self.graph.types[name]))
            out = out.reshape(shape if batched else shape[1:])
            results.append(out if converted[0][1] else out.cpu().numpy())
        return results[0] if len(results) == 1 else tuple(results)

    def __repr__(self) -> str:
        return (f"Net({self.graph.name!r}, input={self.input_shape}, output={self.output_shape}, device={self.device}, "
                f"precision={self.precision.name})")

    def save(self, path: str | Path) -> Path:
        """Write this net as a network file (optimized graph, plan, weights; no code): see `load_net`."""
        from znnx.plan import network_file

        return network_file.save(self.plan, path)


def load_net(path: str | Path, device: str = "cpu", algorithm: Forced = None, precision: str | None = None) -> Net:
    """Load a network file written by `Net.save` or `znnx compile`, for its stored patch, in its
    stored precision unless `precision` asks for another. On the kind of machine its choices were
    measured on, with no `algorithm` forced, the saved algorithms run and nothing is timed; on
    another kind of machine the convolutions are measured again, which one line on stderr says."""
    from znnx.plan import network_file

    saved = network_file.load(path)
    backend, target = backends.resolve(device)
    chosen = backend.precision(precision or saved.precision)
    same_target = (backends.kind_of(device), chosen.name) == (saved.device, saved.precision)
    if same_target and memory_json(backend.memory_plan(saved.graph, 1, chosen)) != saved.memory:
        raise ModelError(f"network file: {str(path)!r} stores a memory plan that differs from the one this znnx "
                         f"computes for its graph; recompile the model with this znnx")
    check_fits(saved.graph, saved.graph, device, chosen.name, None)
    machine = backend.machine(target)
    unforced = same_target and algorithm in (None, "auto") and saved.choices is not None
    reuse = unforced and saved.machine == machine
    if unforced and not reuse:
        print(f"znnx: {str(path)!r} was tuned on {saved.machine}; this is {machine}: measuring its convolutions "
              f"again", file=sys.stderr)
    plan = make_plan(saved.graph, device, chosen.name, algorithm, saved.rewrites, saved.choices if reuse else None,
                     dense=saved.dense, normalize=saved.normalize)
    return Net(plan, device)


Dense = bool | str


def dense_paths(dense: Dense) -> tuple[str, ...]:
    """The dense forms `dense` asks for: none (False), both to measure (True or "auto"), or one."""
    from znnx.passes.dense import PATHS

    if dense is False:
        return ()
    if dense is True or dense == "auto":
        return PATHS
    if dense not in PATHS:
        raise InputError(f"compile: dense={dense!r} is not one of True, False, 'auto', {', '.join(map(repr, PATHS))}")
    return (str(dense),)


def dense_patch_graph(graph: Graph, dense: Dense) -> Graph:
    """The dense form whose accepted patch sizes suit every form `dense` may choose (fragments
    accept fewer sizes than dilation), for choosing a patch; `graph` itself when not dense."""
    from znnx.passes.dense import dense as dense_form

    paths = dense_paths(dense)
    return dense_form(graph, "mpf" if "mpf" in paths else "dilated") if paths else graph


ONE_RUN = 1.0
"""Seconds from which one run of a patch is its measurement (see `_seconds`)."""
DECISIVE = 1.5
"""A fragmented (mpf) dense net whose layers' chosen algorithms measured at least this much faster
than direct runs without timing the dilated form, whose convolutions are dilated and so run direct
(see `_compile_dense`)."""


def _seconds(net: Net, runs: int = 3) -> float:
    """Wall time of one patch of random input: the first run's where it took ONE_RUN seconds or more
    (its one-off costs, oneDNN's kernel generation and the arena's first page faults, are then a
    small share; n726's dense forms take 1.5 and 3 minutes a patch at 196^3), else the median of
    `runs` more."""
    rng = np.random.default_rng(0)
    inputs = [rng.random(model_shape(net.graph, net.graph.types[n]), dtype=np.float32) for n in net.graph.inputs]
    start = time.perf_counter()
    net(*inputs)
    first = time.perf_counter() - start
    if first >= ONE_RUN:
        return first
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        net(*inputs)
        times.append(time.perf_counter() - start)
    return sorted(times)[runs // 2]


def _settled(fragmented: Net) -> str | None:
    """Why the dilated form need not be timed beside `fragmented`: its layers' algorithms measured
    DECISIVE times faster than direct, the way the dilated form's convolutions run (dilation rules
    out Winograd and FFT; both forms compute the same voxels). None where they did not."""
    speedup = direct_speedup(fragmented.plan.choices)
    if speedup is None or speedup < DECISIVE:
        return None
    return (f"not timed whole: its convolutions are dilated and run direct, which measured {speedup:.2f}x slower "
            f"than the fragments' chosen algorithms on their layers (at least {DECISIVE}x decides)")


def _compile_dense(graph: Graph, patch: Sequence[int] | None, paths: tuple[str, ...],
                   build: Callable[[Graph, Sequence[int] | None], Net]) -> Net:
    """The dense net of `graph` at `patch` along the fastest of `paths`; `patch` None: the patch
    every form accepts nearest `graph`'s own. Of two forms, fragments (mpf) compile first: where
    their layers settle the choice (`_settled`) the dilated form is not built at all (n726 at 196^3:
    a dilated patch takes 3 minutes, the fragmented one 1.5); else each form runs a patch and the
    faster one is kept."""
    from znnx.passes.dense import dense as dense_form

    if patch is None:
        patch = model_shape(graph, dense_patch_graph(graph, paths[0] if len(paths) == 1 else True).types[
            graph.inputs[0]])[1:]
    last: tuple[str, Net] | None = None
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    order = sorted(paths, key=lambda p: p != "mpf")
    for path in order:
        status.report(f"compile: dense form {path!r}", force=True)
        last = None  # one form's buffers at a time: the peak is the larger form's, not both
        try:
            last = (path, build(dense_form(graph, path), patch))
        except GraphError as error:
            if len(paths) == 1:
                raise
            skipped[path] = str(error)
            continue
        if path == order[-1] and not seconds:
            break  # nothing to compare it with
        settled = _settled(last[1]) if path == "mpf" else None
        if settled is not None:
            skipped.update({other: settled for other in paths if other != path})
            break
        seconds[path] = _seconds(last[1])
    if last is None and not seconds:
        raise GraphError(f"compile: no dense form runs at patch {tuple(patch)}: " + "; ".join(skipped.values()))
    best = min(seconds, key=lambda path: seconds[path]) if seconds else next(p for p in paths if p not in skipped)
    chosen = last[1] if last is not None and last[0] == best else build(dense_form(graph, best), patch)
    return Net(replace(chosen.plan, dense=DenseChoice(best, tuple((p, seconds[p]) for p in paths if p in seconds),
                                                   tuple((p, skipped[p]) for p in paths if p in skipped))),
               chosen.device)


def compile(graph: Graph, patch: Sequence[int] | None = None, device: str = "cpu",  # noqa: A001
            optimize: bool = True, algorithm: Forced = None, precision: str = "fp32",
            memory_bytes: int | None = None, retune: bool = False, dense: Dense = False) -> Net:
    """Compile `graph` for input patches of spatial shape `patch` (the graph's own shape if None).

    With `optimize`, the graph passes run first (BatchNorm folding, epilogue fusion, ...).
    `algorithm` picks each conv's algorithm: None or "auto" measures (plan/autotune.py, cached on
    disk), one of "direct", "winograd2", "winograd4", "fft" forces it wherever it applies, and a
    mapping {conv node name: algorithm} forces it per layer (the others are measured). `precision`
    is "fp32" (default), "bf16" (CPU with AVX512-BF16 / AMX, CUDA), "tf32" or "fp16" (CUDA); below
    fp32 every conv runs direct on the CPU. Before anything is measured or allocated, the net's
    footprint is checked against `memory_bytes` (default: the memory free on the device). `retune`
    measures every conv again and replaces its cached choice (after tuning on a busy machine).

    `dense` (passes/dense.py) compiles the net's dense form instead, for a net that pools or
    strides: its output at every voxel whose window fits (input - field of view + 1 per axis).
    True or "auto" measures both forms at the patch and keeps the faster ("mpf" needs a patch its
    fragments divide; else the dilated form runs); "dilated" or "mpf" forces one. `net.plan.dense`
    says which form runs and the times measured.
    """
    verify(graph)
    paths = dense_paths(dense)
    if paths:
        return _compile_dense(graph, patch, paths, lambda form, p: compile(
            form, p, device, optimize, algorithm, precision, memory_bytes, retune))
    status.report(f"compile: optimizing {graph.name!r}", force=True)
    shaped = graph if patch is None else reshape(graph, patch)
    prepared = passes.optimize if optimize else lambda g: passes.Optimized(g, ())
    optimized = prepared(shaped)
    check_fits(graph, optimized.graph, device, precision, memory_bytes, lambda g: prepared(g).graph)
    plan = make_plan(optimized.graph, device, precision, algorithm, optimized.rewrites, retune=retune)
    status.report(f"compile: building {len(plan.graph.nodes)} kernels for {device}", force=True)
    net = Net(plan, device)
    status.clear()
    return net
