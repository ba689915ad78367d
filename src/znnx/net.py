"""Compile a graph for one patch shape and device, and run it: `znnx.compile` and `Net`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from znnx import passes
from znnx.errors import DeviceError, GraphError, InputError
from znnx.ir.graph import Graph, TensorType
from znnx.ir.verify import infer_types, verify
from znnx.plan.memory import MemoryPlan, plan_memory
from znnx.report import summary_table

if TYPE_CHECKING:
    import torch

    from znnx.plan.autotune import Algorithm, LayerChoice
    from znnx.plan.precision import Precision


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
    """`graph` re-typed for input patches of spatial shape `patch`, with a fix when that is invalid."""
    types = _patch_types(graph, patch)
    try:
        return infer_types(graph, types)
    except GraphError as error:
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


def memory_plan(graph: Graph, batch: int, device_type: str = "cpu", precision: str = "fp32") -> MemoryPlan:
    """The memory plan a backend executes: the CPU's (channels-last, arena slots where it can
    place), or the GPU's (values freed after their last reader, in the CUDA graph's pool)."""
    from znnx.plan.precision import PRECISIONS

    element_bytes = PRECISIONS[precision].element_bytes
    if device_type != "cpu":
        return plan_memory(graph, batch, element_bytes=element_bytes)
    from znnx.backends import cpu

    return plan_memory(graph, batch, relayout=True, placeable=cpu.placeable, scratch=cpu.scratch_elements,
                       element_bytes=element_bytes)


def _device(name: str) -> torch.device:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"compile: unknown device {name!r}; use 'cpu' or 'cuda[:N]'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"compile: device {name!r} requested but no CUDA GPU is available; use device='cpu'")
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"compile: device type {device.type!r} is not supported; use 'cpu' or 'cuda[:N]'")
    return device


class Net:
    """A graph compiled for one patch shape on one device; call it on (C, *S) or (N, C, *S) arrays.

    `graph` is what runs (optimized by `compile`); `rewrites` counts what each pass changed;
    `precision` is what its weights and activations are held in (plan/precision.py).
    """

    def __init__(self, graph: Graph, device: str = "cpu", rewrites: tuple[tuple[str, int], ...] = (),
                 algorithm: Algorithm = None, precision: str = "fp32") -> None:
        from znnx.plan.precision import resolve

        self.graph = verify(graph)
        self.device = _device(device)
        self.precision = resolve(precision, self.device.type)
        self.rewrites = rewrites
        self.plan = self._plan(1)
        self.algorithms: tuple[LayerChoice, ...] = ()
        self.kernel_weight_bytes = self.kernel_scratch_bytes = 0
        nodes = {node.name: node for node in self.graph.nodes}
        if self.device.type == "cpu":
            from znnx.backends import cpu

            self.algorithms = cpu.choose_algorithms(self.graph, 1, algorithm, self.precision.name)
            sizes = [cpu.algorithm_bytes(self.graph, nodes[c.node], c.algorithm) for c in self.algorithms]
        else:
            from znnx.backends import cuda

            self.algorithms = cuda.choose_algorithms(self.graph, 1, self.device, self.precision, algorithm)
            sizes = [cuda.algorithm_bytes(self.graph, nodes[c.node], c.algorithm) for c in self.algorithms]
        self.kernel_weight_bytes = sum(w for w, _ in sizes)
        self.kernel_scratch_bytes = max((s for _, s in sizes), default=0)
        self._run = _backend(self.graph, self.device, self.plan, {c.node: c.algorithm for c in self.algorithms},
                             self.precision)

    def memory_bytes(self, batch: int = 1) -> int:
        """Predicted peak bytes one call allocates for activations (beyond weights and its input),
        for `batch` patches: the memory plan's largest set of simultaneously live buffers, plus the
        largest scratch of a Winograd / FFT layer (one slab, reused by every layer)."""
        plan = self.plan if batch == 1 else self._plan(batch)
        return plan.peak_bytes + self.kernel_scratch_bytes

    def _plan(self, batch: int) -> MemoryPlan:
        return memory_plan(self.graph, batch, self.device.type, self.precision.name)

    @property
    def weight_bytes(self) -> int:
        """The weights as the net holds them (Winograd- and FFT-transformed where those run)."""
        return self.plan.weight_bytes + self.kernel_weight_bytes

    def save(self, path: str | Path) -> Path:
        """Write this net as a network file (optimized graph, plan, weights; no code): see `load_net`."""
        from znnx.plan import network_file

        return network_file.save(self, path)

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
        return tensor.to(self.device, torch.float32).reshape(lifted), is_torch

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


Execute = Callable[[list["torch.Tensor"]], list["torch.Tensor"]]


def _backend(graph: Graph, device: torch.device, plan: MemoryPlan, algorithms: dict[str, str],
             precision: Precision) -> Execute:
    if device.type == "cpu":
        from znnx.backends import cpu

        return cpu.build(graph, plan, algorithms, precision.torch_dtype)
    from znnx.backends import cuda

    return cuda.build(graph, device, precision, algorithms)


def load_net(path: str | Path, device: str = "cpu", algorithm: Algorithm = None, precision: str = "fp32") -> Net:
    """Load a network file written by `Net.save` or `znnx compile`, compiled for its stored patch
    (`algorithm` and `precision` as in `compile`)."""
    from znnx.plan import network_file

    return network_file.load(path, device, algorithm, precision)


def compile(graph: Graph, patch: Sequence[int] | None = None, device: str = "cpu",  # noqa: A001
            optimize: bool = True, algorithm: Algorithm = None, precision: str = "fp32") -> Net:
    """Compile `graph` for input patches of spatial shape `patch` (the graph's own shape if None).

    With `optimize`, the graph passes run first (BatchNorm folding, epilogue fusion, ...).
    `algorithm` picks each conv's algorithm: None or "auto" measures (plan/autotune.py, cached on
    disk), one of "direct", "winograd2", "winograd4", "fft" forces it wherever it applies, and a
    mapping {conv node name: algorithm} forces it per layer (the others are measured). `precision`
    is "fp32" (default), "bf16" (CPU with AVX512-BF16 / AMX, CUDA), "tf32" or "fp16" (CUDA); below
    fp32 every conv runs direct on the CPU.
    """
    verify(graph)
    shaped = graph if patch is None else reshape(graph, patch)
    if not optimize:
        return Net(shaped, device, algorithm=algorithm, precision=precision)
    optimized = passes.optimize(shaped)
    return Net(optimized.graph, device, optimized.rewrites, algorithm, precision)
