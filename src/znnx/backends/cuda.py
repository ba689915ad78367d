"""GPU execution: cuDNN convolutions in channels-last-3d, the whole net replayed as one CUDA graph.

- Weights and activations are held in the net's precision (fp32, tf32, fp16, bf16; see
  plan/precision.py), channels-last-3d, on the GPU from build time on. cuDNN chooses its fastest
  algorithm per layer shape (`benchmark`) on the first call; TF32 tensor cores are allowed only in
  tf32 (PyTorch lets cuDNN use TF32 by default, which would turn an fp32 net into a tf32 one).
- A conv the autotuner gave "fft" runs through kernels/fft.py on the GPU (cuFFT through torch.fft,
  the frequency-domain products as batched GEMMs over channels).
- On CUDA the net is captured into a CUDA graph on its first call with a given input shape (after
  two warm-up runs on a side stream): every later call copies the input into the graph's static
  input, replays the graph (one launch instead of one per op) and copies the outputs out.
  Intermediates live in the graph's private memory pool, freed values reused within it, so it holds
  what the memory plan predicts. On any other torch device (the tests' CPU) the same program runs
  eagerly, which is how its arithmetic is checked on machines without a GPU.

Nothing here touches CUDA at import; `build` does, for a CUDA device only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence

import torch

from znnx.backends import torch_eager
from znnx.errors import DeviceError
from znnx.ir.graph import Graph, Node
from znnx.ir.ops import conv_input, epilogue
from znnx.plan import algorithm as algorithms
from znnx.plan.algorithm import DIRECT, Algorithm
from znnx.plan.autotune import Forced, Input, LayerChoice, as_sources, direct_only, reserved_bytes, tune
from znnx.plan.memory import FLOAT_BYTES, MemoryPlan, plan_memory
from znnx.plan.plan import Plan
from znnx.plan.precision import Precision, resolve

Tensor = torch.Tensor
Execute = Callable[[Sequence[Tensor]], list[Tensor]]
CHANNELS_LAST = torch.channels_last_3d
FFT_SIZE = 32
WARMUP = 2
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
TRAINING_KERNELS = False
OPS = torch_eager.OPS


def device(name: str) -> torch.device:
    try:
        target = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"cuda backend: cannot read device {name!r}; use 'cuda' or 'cuda:N'") from None
    if not torch.cuda.is_available():
        raise DeviceError(f"compile: device {name!r} requested but no CUDA GPU is available; use device='cpu'")
    return target


def machine(device: torch.device) -> str:
    """The GPU's name and cuDNN version."""
    return f"cuda: {torch.cuda.get_device_name(device)} (cudnn {torch.backends.cudnn.version()})"


def precision(name: str) -> Precision:
    return resolve(name, "cuda", PRECISIONS)


def io_bytes(graph: Graph, host_patches: int) -> int:
    """The CUDA graph's static input and its outputs, plus the copies handed back; the caller's
    patches in flight stay in host memory."""
    inputs = sum(graph.types[name].numel for name in graph.inputs)
    outputs = sum(graph.types[name].numel for name in graph.outputs)
    return (inputs + 2 * outputs) * FLOAT_BYTES


def memory_plan(graph: Graph, batch: int, precision: Precision) -> MemoryPlan:
    """Values freed after their last reader, in the CUDA graph's pool."""
    return plan_memory(graph, batch, element_bytes=precision.element_bytes)


def flags(precision: Precision) -> contextlib.AbstractContextManager[None]:
    """cuDNN settings for znnx's own calls: benchmark on, TF32 only in tf32 (the user's global
    settings stay as they are)."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=precision.name == "tf32")


def conv_candidates(graph: Graph, node: Node, precision: Precision) -> tuple[Algorithm, ...]:
    """Direct (cuDNN) always; FFT for stride-1 kernels larger than 1 in fp32 / tf32 (cuFFT's half
    precision takes power-of-two sizes only)."""
    from znnx.kernels import fft

    a = node.attrs
    usable = precision.dtype == "float32" and fft.applicable(a["kernel"], a["stride"], a["dilation"], int(a["groups"]))
    return (DIRECT, algorithms.fft(FFT_SIZE)) if usable else (DIRECT,)


def algorithm_bytes(graph: Graph, node: Node, algorithm: Algorithm) -> tuple[int, int]:
    """(weight bytes beyond the raw weights, scratch bytes while it runs) of a conv under `algorithm`."""
    from znnx.kernels import fft

    if algorithm.kind != "fft":
        return 0, 0
    x, y = conv_input(graph.types, node), graph.types[node.output]
    weights, scratch = fft.footprint(x.channels, y.channels, node.attrs["kernel"], algorithm.tile, x.spatial)
    return weights - int(node.params["weight"].size) * FLOAT_BYTES, scratch


def reserved_kernel_bytes(graph: Graph, precision: Precision) -> tuple[int, int]:
    """(weight bytes beyond the raw weights, scratch bytes) to reserve before the autotuner has
    chosen: FFT's spectra and slab wherever FFT may be chosen."""
    return reserved_bytes(graph, lambda node: conv_candidates(graph, node, precision), algorithm_bytes)


def free_memory(device: torch.device) -> int:
    """Bytes free on the GPU now."""
    return int(torch.cuda.mem_get_info(device)[0])


class _Builder(torch_eager.Builder):
    """The eager kernels with channels-last weights (cuDNN then runs channels-last kernels end to
    end) and FFT convolutions where the autotuner chose them."""

    def __init__(self, graph: Graph, device: torch.device, dtype: torch.dtype,
                 algorithms: Mapping[str, Algorithm]) -> None:
        super().__init__(graph, device, dtype)
        self.algorithms = algorithms

    def param(self, node: Node, key: str, channel_view: bool = False) -> Tensor | None:
        tensor = super().param(node, key, channel_view)
        return tensor.contiguous(memory_format=CHANNELS_LAST) if tensor is not None and tensor.dim() == 5 else tensor

    def conv(self, node: Node) -> torch_eager.Kernel:
        algorithm = self.algorithms.get(node.name, DIRECT)
        if algorithm.kind != "fft":
            return super().conv(node)
        from znnx.kernels import fft

        a = node.attrs
        conv = fft.FFTConv(self.need(node, "weight"), self.param(node, "bias"), a["pads"], algorithm.tile,
                           epilogue(node), float(a.get("alpha", 0.0)), self.in_type(node).spatial,
                           scale=self.scale_of(node), slope=self.slope_of(node))
        return lambda x: conv(x[0], residual=x[1] if len(x) > 1 else None)


def _program(graph: Graph, device: torch.device, precision: Precision,
             algorithms: Mapping[str, Algorithm]) -> Execute:
    """Inputs (any float dtype, any layout, on `device`) -> float32 NCDHW outputs on `device`."""
    dtype = precision.torch_dtype
    execute = torch_eager.program(graph, _Builder(graph, device, dtype, algorithms))

    def run(inputs: Sequence[Tensor]) -> list[Tensor]:
        entered = [torch.empty_like(x, dtype=dtype, memory_format=CHANNELS_LAST).copy_(x) for x in inputs]
        return [y.float().contiguous() for y in execute(entered)]

    return run


class _Graphed:
    """`run` captured in a CUDA graph for the latest input shapes (one graph held at a time: a net
    runs one patch shape, and each graph keeps its memory pool)."""

    def __init__(self, run: Execute, device: torch.device, precision: Precision) -> None:
        self.run, self.device, self.precision = run, device, precision
        self.shapes: tuple[tuple[int, ...], ...] = ()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[Tensor] = []
        self.outputs: list[Tensor] = []

    def capture(self, inputs: Sequence[Tensor]) -> None:
        self.graph = None
        self.inputs = [torch.empty_like(x, device=self.device) for x in inputs]
        for static, x in zip(self.inputs, inputs):
            static.copy_(x)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), flags(self.precision):
            for _ in range(WARMUP):
                self.run(self.inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with flags(self.precision), torch.cuda.graph(graph):
            self.outputs = self.run(self.inputs)
        self.graph, self.shapes = graph, tuple(tuple(x.shape) for x in inputs)

    def __call__(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        if self.graph is None or tuple(tuple(x.shape) for x in inputs) != self.shapes:
            self.capture(inputs)
        else:
            for static, x in zip(self.inputs, inputs):
                static.copy_(x, non_blocking=True)
        assert self.graph is not None
        self.graph.replay()
        return [y.clone() for y in self.outputs]


def build(plan: Plan, device: torch.device) -> Execute:
    """A function from NCDHW input tensors (graph input order) to NCDHW float32 output tensors on
    `device`: a CUDA graph on CUDA, the same program eagerly elsewhere (how the tests check it)."""
    chosen = precision(plan.precision)
    run = _program(plan.graph, device, chosen, plan.algorithms)
    if device.type == "cuda":
        return _Graphed(run, device, chosen)
    return run


def conv_kernel(graph: Graph, node: Node, algorithm: Algorithm, device: torch.device,
                precision: Precision) -> Callable[..., Tensor]:
    """One conv of `graph` alone under `algorithm`, for the autotuner, in the kernel calling
    convention: (input, *, out=None, residual=None) -> output, written into `out` when given; on a
    GPU it returns once the device has finished, so that wall time measures the work."""
    kernel = _Builder(graph, device, precision.torch_dtype, {node.name: algorithm}).kernel(node)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    def run(x: Input, *, out: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
        with flags(precision):
            y = kernel([*as_sources(x), *([] if residual is None else [residual])])
        y = y if out is None else out.copy_(y)
        sync()
        return y

    return run


def choose_algorithms(graph: Graph, batch: int, device: torch.device, precision: Precision,
                      forced: Forced, refresh: bool = False) -> tuple[LayerChoice, ...]:
    """Each conv's algorithm on the GPU: cuDNN or FFT, measured (cached on disk) or forced."""
    if precision.dtype != "float32":
        return direct_only(graph, forced, precision.name)
    return tune(graph, batch, lambda node: conv_candidates(graph, node, precision),
                lambda layer, node, algorithm: conv_kernel(layer, node, algorithm, device, precision),
                algorithm_bytes, forced, device, precision.name, machine(device), refresh)
