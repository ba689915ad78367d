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
from znnx.ir.graph import Graph, Node
from znnx.ir.ops import epilogue
from znnx.plan.autotune import Algorithm, LayerChoice, direct_only, reserved_bytes, tune
from znnx.plan.precision import Precision

Tensor = torch.Tensor
Execute = Callable[[Sequence[Tensor]], list[Tensor]]
CHANNELS_LAST = torch.channels_last_3d
FFT_SIZE = 32
WARMUP = 2


def flags(precision: Precision) -> contextlib.AbstractContextManager[None]:
    """cuDNN settings for znnx's own calls: benchmark on, TF32 only in tf32 (the user's global
    settings stay as they are)."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=precision.name == "tf32")


def conv_candidates(node: Node, precision: Precision) -> tuple[str, ...]:
    """Direct (cuDNN) always; FFT for stride-1 kernels larger than 1 in fp32 / tf32 (cuFFT's half
    precision takes power-of-two sizes only)."""
    from znnx.kernels import fft

    a = node.attrs
    usable = precision.dtype == "float32" and fft.applicable(a["kernel"], a["stride"], a["dilation"], int(a["groups"]))
    return ("direct", "fft") if usable else ("direct",)


def algorithm_bytes(graph: Graph, node: Node, algorithm: str) -> tuple[int, int]:
    """(weight bytes beyond the raw weights, scratch bytes while it runs) of a conv under `algorithm`."""
    from znnx.kernels import fft

    if algorithm != "fft":
        return 0, 0
    x, y = graph.types[node.inputs[0]], graph.types[node.output]
    weights, scratch = fft.footprint(x.channels, y.channels, node.attrs["kernel"], FFT_SIZE, x.spatial)
    return weights - int(node.params["weight"].size) * 4, scratch


def reserved_kernel_bytes(graph: Graph, precision: Precision) -> tuple[int, int]:
    """(weight bytes beyond the raw weights, scratch bytes) to reserve before the autotuner has
    chosen: FFT's spectra and slab wherever FFT may be chosen."""
    return reserved_bytes(graph, lambda node: conv_candidates(node, precision), algorithm_bytes)


def free_memory(device: torch.device) -> int:
    """Bytes free on the GPU now."""
    return int(torch.cuda.mem_get_info(device)[0])


class _Builder(torch_eager.Builder):
    """The eager kernels with channels-last weights (cuDNN then runs channels-last kernels end to
    end) and FFT convolutions where the autotuner chose them."""

    def __init__(self, graph: Graph, device: torch.device, dtype: torch.dtype, algorithms: Mapping[str, str]) -> None:
        super().__init__(graph, device, dtype)
        self.algorithms = algorithms

    def param(self, node: Node, key: str, channel_view: bool = False) -> Tensor | None:
        tensor = super().param(node, key, channel_view)
        return tensor.contiguous(memory_format=CHANNELS_LAST) if tensor is not None and tensor.dim() == 5 else tensor

    def conv(self, node: Node) -> torch_eager.Kernel:
        if self.algorithms.get(node.name, "direct") != "fft":
            return super().conv(node)
        from znnx.kernels import fft

        a = node.attrs
        conv = fft.FFTConv(self.need(node, "weight"), self.param(node, "bias"), a["pads"], FFT_SIZE, epilogue(node),
                           float(a.get("alpha", 0.0)), self.in_type(node).spatial)
        return lambda x: conv(x[0], None, x[1] if len(x) > 1 else None)


def _program(graph: Graph, device: torch.device, precision: Precision, algorithms: Mapping[str, str]) -> Execute:
    """Inputs (any float dtype, any layout, on `device`) -> float32 NCDHW outputs on `device`."""
    dtype = precision.torch_dtype
    execute = torch_eager.program(graph, _Builder(graph, device, dtype, algorithms))

    def run(inputs: Sequence[Tensor]) -> list[Tensor]:
        entered = [torch.empty_like(x, dtype=dtype, memory_format=CHANNELS_LAST).copy_(x) for x in inputs]
        return [y.to(torch.float32, memory_format=torch.contiguous_format) for y in execute(entered)]

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


def build(graph: Graph, device: torch.device, precision: Precision, algorithms: Mapping[str, str]) -> Execute:
    """A function from NCDHW input tensors (graph input order) to NCDHW float32 output tensors on
    `device`: a CUDA graph on CUDA, the same program eagerly elsewhere."""
    run = _program(graph, device, precision, algorithms)
    if device.type == "cuda":
        return _Graphed(run, device, precision)
    return run


def conv_kernel(graph: Graph, node: Node, algorithm: str, device: torch.device,
                precision: Precision) -> Callable[[Tensor, Tensor | None, Tensor | None], Tensor]:
    """One conv of `graph` alone under `algorithm` (for the autotuner): (input, residual or None,
    output or None) -> output, written into the given output when there is one."""
    kernel = _Builder(graph, device, precision.torch_dtype, {node.name: algorithm}).kernel(node)

    def run(x: Tensor, residual: Tensor | None, out: Tensor | None) -> Tensor:
        with flags(precision):
            y = kernel([x] if residual is None else [x, residual])
        return y if out is None else out.copy_(y)

    return run


def choose_algorithms(graph: Graph, batch: int, device: torch.device, precision: Precision,
                      algorithm: Algorithm = None) -> tuple[LayerChoice, ...]:
    """Each conv's algorithm on the GPU: cuDNN or FFT, measured (cached on disk) or forced."""
    if precision.dtype != "float32":
        return direct_only(graph, algorithm, precision.name)
    return tune(graph, batch, lambda node: conv_candidates(node, precision),
                lambda node, name: conv_kernel(graph, node, name, device, precision), algorithm, device,
                precision.name)
