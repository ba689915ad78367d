"""Fused CPU execution: oneDNN convolutions with prepacked weights, channels-last throughout.

- Every activation tensor is channels-last (NDHWC); inputs are converted on entry and outputs back
  to NCDHW on exit, nowhere else.
- Convolutions call the fused oneDNN primitives PyTorch exposes (`mkldnn._convolution_pointwise`):
  weights are reordered into oneDNN's blocked layout once, at build time; bias, relu / leaky_relu
  and the residual add run as oneDNN post-ops. A residual add whose operand dies at the conv
  accumulates in place into that operand's buffer. ELU (no oneDNN post-op in PyTorch), sigmoid and
  tanh (slower as post-ops, see ONEDNN_UNARY) run in place on the conv's output while it is still
  the freshest tensor.
- A conv the autotuner (plan/autotune.py) gave another algorithm runs through znnx's own kernels:
  the implicit-GEMM direct conv for few input channels (kernels/implicit.py), Winograd F(2,r) /
  F(4,r), r = 3 or 5 (kernels/winograd.py) or tiled FFT (kernels/fft.py), epilogue included.
- Max and average pooling run through znnx's channels-last C kernel (kernels/pool.py) where a C
  compiler is available (PyTorch's channels-last max_pool3d and avg_pool3d are several times slower
  than a pass over memory); so do max-pooling fragments, the window's maximum written straight into
  the fragment layout; nearest and trilinear upsampling through kernels/resample.py.
- A conv with a fused concat (several sources, passes/fuse_concat.py) reads the sources straight
  into its Winograd tiles; under the other algorithms it joins them into arena scratch first.
- Activations, scales and binary ops write in place where the memory plan says so.
- Every other op runs through the eager kernels, which accept channels-last tensors.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from znnx.backends import torch_eager
from znnx.errors import DeviceError, KernelUnavailable
from znnx.ir.graph import Graph, Node
from znnx.ir.ops import (
    ACTIVATIONS,
    EPILOGUE_ACTIVATIONS,
    conv_input,
    conv_sources,
    epilogue,
    fragment_window,
    pool_dilation,
)
from znnx.ir.verify import infer_types
from znnx.kernels.epilogue import Scale, activation, epilogue_step, prelu
from znnx.plan import algorithm as algorithms
from znnx.plan.algorithm import DIRECT, Algorithm
from znnx.plan.autotune import Forced, Input, LayerChoice, as_sources, direct_only, reserved_bytes, tune
from znnx.plan.fragment_loop import LOOP_GAIN, fragment_loop, plan_loop
from znnx.plan.memory import FLOAT_BYTES, MemoryPlan, Step, consumed_planes, plan_memory, stream_slab
from znnx.plan.plan import Plan
from znnx.plan.precision import Precision, resolve

Tensor = torch.Tensor
Kernel = Callable[[Sequence[Tensor]], Tensor]
CHANNELS_LAST = torch.channels_last_3d
ONEDNN_UNARY = frozenset({"relu", "leaky_relu"})
"""Activations applied as oneDNN post-ops; sigmoid and tanh run in place after the conv instead:
oneDNN's sigmoid post-op cost 5.4 ms on an 8 -> 1 1x1x1 head at 64x128x128 (a separate in-place
sigmoid: 0.24 ms), 1.2 ms against 0.19 on 48 -> 3, and about as much as in place on wide layers."""
FFT_SIZE = 16
LARGE_KERNEL = 5
"""Kernels this large and larger (along some axis) time 24-point FFT tiles and a fitted one beside 16:
a 16-point tile keeps 12 outputs or fewer per axis. n537's 80-channel 5^3 layers, per fragment set, in
seconds (fft16 / fft24 / fitted / Winograd F(4,5)): 8 x 115^3 10.97 / 8.20 / 6.85 (32) / 18.3; 64 x 25^3
0.65 / 2.04 / 0.45 (25) / 0.84."""
LARGE_KERNEL_FFT_SIZE = 24
FITTED_FFT_SIZES = range(16, 33)
"""Where a LARGE_KERNEL gets a third FFT tile, fitted to its output (`fitted_fft_size`); up to 32
points, whose scratch cube (32 x 32 x 17 points of 16 channels) is about L2's size."""
TRANSFORM_COST = 2.5
PRECISIONS = ("fp32", "bf16")
POOLS = ("max_pool", "avg_pool", "fragment")  # the ops of the C pool kernel
TRAINING_KERNELS = True
OPS = torch_eager.OPS  # the fused kernels cover a subset; every other op runs its eager kernel


def available() -> bool:
    return bool(torch.backends.mkldnn.is_available())


def device(name: str) -> torch.device:
    if name not in ("cpu", "cpu:0"):
        raise DeviceError(f"cpu backend: device {name!r} is not this machine's CPU; use 'cpu' (torch's threads "
                          f"use every core; set them with torch.set_num_threads or --threads)")
    return torch.device("cpu")


def machine(device: torch.device) -> str:
    """The CPU's model name and a digest of its instruction-set flags."""
    from znnx.kernels import native

    model = native.cpuinfo("model name").partition(":")[2].strip() or platform.processor() or platform.machine()
    return f"cpu: {model} (isa {hashlib.sha256(native.cpu_flags().encode()).hexdigest()[:12]})"


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). oneDNN's own test
    (`torch.ops.mkldnn._is_mkldnn_bf16_supported`) also says yes on plain AVX-512, where it emulates
    bf16: a 32 -> 32 3x3x3 conv at 64^3 ran 4.4x slower than fp32 on such a Xeon (220 vs 50 ms)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def precision(name: str) -> Precision:
    """fp32, or bf16 where the CPU has AVX512-BF16 or AMX (elsewhere oneDNN would emulate it, slower
    than fp32). fp16 is not offered: PyTorch's CPU fp16 convolution runs 80x slower than fp32."""
    chosen = resolve(name, "cpu", PRECISIONS)
    if name == "bf16" and not native_bf16():
        raise DeviceError("precision: bf16 on this CPU would be emulated (no AVX512-BF16 or AMX instructions, "
                          "so oneDNN runs it slower than fp32); use precision fp32")
    return chosen


def free_memory(device: torch.device) -> int:
    """Bytes the OS can give without swapping (MemAvailable), or physical memory if unknown."""
    try:
        match = re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        match = None
    if match:
        return int(match.group(1)) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def io_bytes(graph: Graph, host_patches: int) -> int:
    """The patches a caller keeps in flight (`host_patches` inputs and as many outputs) live in the
    same memory as the net."""
    inputs = sum(graph.types[name].numel for name in graph.inputs)
    outputs = sum(graph.types[name].numel for name in graph.outputs)
    return host_patches * (inputs + outputs) * FLOAT_BYTES


def shuffles(node: Node) -> bool:
    """A transposed conv whose windows tile the output (kernel == stride, no pads or dilation): in
    fp32 znnx's C kernel (kernels/shuffle.py: per tap one GEMM written straight into the output,
    epilogue fused), else one GEMM to kd*kh*kw*C_out channels and a pixel shuffle; both far faster
    than oneDNN's deconvolution."""
    a = node.attrs
    return (node.op == "conv_transpose" and tuple(a["kernel"]) == tuple(a["stride"]) and not any(a["pads"])
            and not any(a["output_padding"]) and tuple(a["dilation"]) == (1, 1, 1) and a["groups"] == 1)


def overlaps(node: Node) -> bool:
    """A transposed conv with overlapping windows into few output channels (one group, no dilation):
    in fp32 znnx's C kernel (kernels/scatter.py: one GEMM over every tap, each tap's sums added into
    its output voxels), where oneDNN's deconvolution wastes most of its 16-channel blocks."""
    from znnx.kernels import scatter

    a = node.attrs
    return (node.op == "conv_transpose" and not shuffles(node)
            and scatter.applicable(int(node.params["weight"].shape[1]), a["dilation"], int(a["groups"])))


def _onednn_pads(node: Node) -> bool:
    """oneDNN's (transposed) convolution takes symmetric pads only."""
    pads = tuple(node.attrs["pads"])
    return pads[:3] == pads[3:] and available()


def placeable(node: Node) -> bool:
    """Ops this backend can point at an arena slot: oneDNN convs (through the in-place primitive,
    into a zeroed slot or one holding the residual), shuffling transposed convs, pooling,
    upsampling, fragments and concat (a fresh output would be page-faulted in again on every patch)."""
    if node.op == "conv":
        return _onednn_pads(node)
    return node.op in ("concat", "upsample", *POOLS) or shuffles(node) or overlaps(node)


def scratch_elements(graph: Graph, node: Node, precision: Precision) -> int:
    """Arena scratch per patch, in elements: the joined input of a conv with sources (used unless
    Winograd reads them directly), the GEMM result of a shuffling transposed conv below fp32 (in
    fp32 the C kernel needs none)."""
    if node.op == "conv" and conv_sources(node) > 1:
        return conv_input(graph.types, node).numel
    return graph.types[node.output].numel if shuffles(node) and precision.name != "fp32" else 0


def streamable(graph: Graph, a: Node, b: Node, fragments: bool = False) -> bool:
    """Whether conv `a` can be streamed into `b` in depth slabs (plan.memory.Stream): each reads one
    input of one patch per buffer entry (no sources, no residual, no fragments), both step one plane
    at a time along depth without padding it (a slab needs no zeros from beyond the patch), and
    neither reaches over more than 3 planes (slabs of 16 planes keep whole Winograd tiles); with
    `fragments` (a fragment loop's prefix, whose first conv reads few channels), `b` may be the
    `fragment` of `a`'s output, `a` then of any depth (16 fragment planes of a 2-plane block and
    window read 33 planes of `a`). Elsewhere such a stream would cut an FFT conv's depth into slabs
    its tiles do not fit (n926's second conv, FFT 24 in slabs of 33 planes: 49 s against 38)."""

    def slides(node: Node, reach: int | None = 3) -> bool:
        at = node.attrs
        return (node.op == "conv" and len(node.inputs) == 1 and at["stride"][0] == 1 and at["dilation"][0] == 1
                and at["pads"][0] == at["pads"][3] == 0 and (reach is None or at["kernel"][0] <= reach)
                and graph.types[node.inputs[0]].fragments == 1)

    if b.op == "fragment":
        return fragments and slides(a, reach=None) and b.inputs == (a.output,)
    return slides(a) and slides(b) and b.inputs == (a.output,)


def memory_plan(graph: Graph, batch: int, precision: Precision) -> MemoryPlan:
    """Channels-last buffers, arena slots for the ops this backend can point at one (`placeable`),
    the scratch of `scratch_elements`; the fp32 shuffling transposed convs (C kernel) add into their
    residual as they compute; large conv outputs streamed into the next conv where `streamable`; a
    dense net's fragment section run one offset at a time (plan/fragment_loop.py) where that lowers
    the peak below LOOP_GAIN of it."""

    def plan(g: Graph, phase: str | None = None) -> MemoryPlan:
        return plan_memory(g, batch, relayout=True, placeable=placeable,
                           scratch=lambda g, node: scratch_elements(g, node, precision),
                           element_bytes=precision.element_bytes,
                           accumulates=lambda node: shuffles(node) and precision.name == "fp32",
                           streamable=lambda g, a, b: streamable(g, a, b, fragments=phase == "prefix"),
                           enters=phase in (None, "prefix"), exits=phase in (None, "suffix"))

    whole = plan(graph)
    loop = fragment_loop(graph)
    if loop is None:
        return whole
    looped = plan_loop(graph, loop, batch, precision.element_bytes, plan)
    return looped if looped.peak_bytes < LOOP_GAIN * whole.peak_bytes else whole


def conv_candidates(graph: Graph, node: Node, precision: Precision) -> tuple[Algorithm, ...]:
    """The algorithms this backend can run `node` (a conv) with: direct always; in fp32 also
    znnx's implicit-GEMM direct conv for convs of at most implicit.CHANNELS input channels (first
    layers, where oneDNN is slow), the scatter for stride-1 convs into at most scatter.CHANNELS
    without a residual add (score layers), Winograd for kernel sizes 1, 3 and 5 (stride 1) and FFT
    for stride-1 kernels larger than 1 (znnx's own kernels are fp32 kernels)."""
    from znnx.kernels import fft, implicit, scatter, winograd

    a = node.attrs
    shape = (a["kernel"], a["stride"], a["dilation"], int(a["groups"]))
    if precision.name != "fp32":
        return (DIRECT,)
    few = implicit.applicable(conv_input(graph.types, node).channels, *shape[1:])
    to_few = (scatter.applicable(int(node.params["weight"].shape[0]), a["dilation"], int(a["groups"]))
              and tuple(a["stride"]) == (1, 1, 1) and "add" not in epilogue(node))
    return (DIRECT, *((algorithms.IMPLICIT,) if few else ()), *((algorithms.SCATTER,) if to_few else ()),
            *((algorithms.winograd(2), algorithms.winograd(4)) if winograd.applicable(*shape) else ()),
            *(algorithms.fft(size) for size in fft_sizes(a["kernel"], (
                graph.types[node.output].spatial, conv_input(graph.types, node).channels,
                graph.types[node.output].channels)) if fft.applicable(*shape)))


def fft_sizes(kernel: Sequence[int],
              layer: tuple[Sequence[int], int, int] | None = None) -> tuple[int, ...]:
    """The FFT tiles tried for `kernel`: 16 points, and for LARGE_KERNELs 24 (a 9^3 kernel
    keeps 8^3 of a 16^3 tile, 16^3 of a 24^3 one: 2.5x fewer products per output voxel; on small
    inputs, such as deep max-pooling fragments, the larger tile pads more than it saves) and, given
    `layer` (its output size, C and C'), the tile fitted to it (`fitted_fft_size`)."""
    if max(kernel) < LARGE_KERNEL:
        return (FFT_SIZE,)
    fitted = () if layer is None else (fitted_fft_size(kernel, *layer),)
    return tuple(dict.fromkeys((FFT_SIZE, LARGE_KERNEL_FFT_SIZE, *fitted)))


def fitted_fft_size(kernel: Sequence[int], out_spatial: Sequence[int], c_in: int, c_out: int) -> int:
    """The FFT tile of FITTED_FFT_SIZES (those kernels/spectral.c transforms) that costs this output
    least: per tile (whole tiles per axis) its products (frequencies x C x C' complex multiply-adds)
    and its transforms (C + C' channels, counted at TRANSFORM_COST times their 5 N log2 N flops: on
    an 80-channel 24-point layer they took as long as the products, with 2.5x fewer flops); the
    smaller tile among equals. n926's fragment layers: 99 outputs get five 20-voxel tiles of a
    28-point FFT (a 24-point one: seven of 16; measured 1.9 -> 1.3 s per 107^3 fragment)."""
    from znnx.kernels import fft

    def cost(n: int) -> float:
        points = [n if k > 1 else 1 for k in kernel]
        half = [*points[:-1], points[-1] // 2 + 1]
        tiles = math.prod(-(-o // (n - k + 1)) if k > 1 else 1 for o, k in zip(out_spatial, kernel))
        volume = math.prod(points)
        transforms = TRANSFORM_COST * (c_in + c_out) * 5 * volume * math.log2(volume)
        return tiles * (8 * math.prod(half) * c_in * c_out + transforms)

    return min((n for n in FITTED_FFT_SIZES if fft.smooth(n) and n > max(kernel)), key=lambda n: (cost(n), n))


def algorithm_bytes(graph: Graph, node: Node, algorithm: Algorithm) -> tuple[int, int]:
    """(weight bytes beyond the raw weights, scratch bytes while it runs) of a conv under `algorithm`."""
    from znnx.kernels import fft, implicit, scatter, winograd

    if algorithm.kind == "direct":
        return 0, 0
    x, y = conv_input(graph.types, node), graph.types[node.output]
    kernel = tuple(node.attrs["kernel"])
    raw = int(node.params["weight"].size) * FLOAT_BYTES
    if algorithm.kind == "implicit":
        weights, scratch = implicit.footprint(x.channels, y.channels, kernel, node.attrs["pads"], x.spatial)
        scratch *= x.fragments
    elif algorithm.kind == "scatter":
        weights, scratch = scatter.footprint(x.channels, y.channels, kernel), 0
    elif algorithm.kind == "winograd":
        weights, scratch, _ = winograd.footprint(x.channels, y.channels, kernel, algorithm.tile, y.spatial,
                                                 parts=sources_channels(graph, node))
    else:
        weights, scratch = fft.footprint(x.channels, y.channels, kernel, algorithm.tile, x.spatial,
                                         native=fft.available())
    return weights - raw, scratch


def reserved_kernel_bytes(graph: Graph, precision: Precision) -> tuple[int, int]:
    """(weight bytes beyond the raw weights, scratch bytes) to reserve before the autotuner has
    chosen: each conv's most memory-hungry algorithm it may choose (F(4,3) holds 8x the raw weights
    of a 3x3x3 layer), weights summed, scratch the largest (one slab buffer serves every layer).
    Below fp32 every conv runs direct: nothing to reserve."""
    return reserved_bytes(graph, lambda node: conv_candidates(graph, node, precision), algorithm_bytes)


Run = Callable[[Sequence[Tensor], Tensor | None, Tensor | None], Tensor]


def calling(conv: Callable[..., Tensor], step: Step, sources: int = 1) -> Run:
    """The step running `conv` (called as (input, *, out=None, residual=None); the input is a tuple
    of the conv's first `sources` inputs where there are several): the residual is the input after
    them, and the output goes into the residual's buffer where the plan says so, else into `out`."""

    def run(xs: Sequence[Tensor], out: Tensor | None, scratch: Tensor | None) -> Tensor:
        x = xs[0] if sources == 1 else tuple(xs[:sources])
        if step.inplace == sources:
            return conv(x, out=xs[sources], residual=xs[sources])
        return conv(x, out=out, residual=xs[sources] if len(xs) > sources else None)

    return run


def sources_channels(graph: Graph, node: Node) -> tuple[int, ...]:
    """The channels of each source of a conv's input (one entry where it has one source)."""
    return tuple(graph.types[name].channels for name in node.inputs[:conv_sources(node)])


class _Builder:
    def __init__(self, graph: Graph, algorithms: Mapping[str, Algorithm], dtype: torch.dtype = torch.float32) -> None:
        self.graph = graph
        self.eager = torch_eager.Builder(graph, torch.device("cpu"), dtype)
        self.algorithms = algorithms
        self.dtype = dtype

    def fast_kernel(self, node: Node) -> Callable[..., Tensor]:
        """The conv's kernel object of znnx's implicit-GEMM, scatter, Winograd or FFT kernels, epilogue
        fused."""
        from znnx.kernels import fft, implicit, scatter, winograd

        a, algorithm = node.attrs, self.algorithms[node.name]
        spatial = self.graph.types[node.inputs[0]].spatial
        weight, bias = self.eager.need(node, "weight"), self.eager.param(node, "bias")
        steps, alpha, scale = epilogue(node), float(a.get("alpha", 0.0)), self.eager.scale_of(node)
        slope = self.eager.slope_of(node)
        if algorithm.kind == "implicit":
            return implicit.ImplicitConv(weight, bias, a["pads"], steps, alpha, spatial, scale=scale, slope=slope,
                                         stride=a["stride"])
        if algorithm.kind == "scatter":
            return scatter.forward_conv(weight, bias, a["pads"], self.graph.types[node.output].spatial, steps, alpha,
                                        scale=scale, slope=slope)
        if algorithm.kind == "winograd":
            return winograd.WinogradConv(weight, bias, a["pads"], algorithm.tile, steps, alpha, spatial, scale=scale,
                                         parts=sources_channels(self.graph, node), slope=slope)
        return fft.FFTConv(weight, bias, a["pads"], algorithm.tile, steps, alpha, spatial, scale=scale, native=True,
                           slope=slope)

    def fast_conv(self, node: Node, step: Step) -> Run:
        """A conv through `fast_kernel`; Winograd takes a conv's sources as they are."""
        sources = conv_sources(node) if self.algorithms[node.name].kind == "winograd" else 1
        return calling(self.fast_kernel(node), step, sources)

    def joined(self, node: Node, run: Run) -> Run:
        """`run` (built for one input) of a conv with sources, given them joined first: into its arena
        scratch (a fresh tensor would be page-faulted in on every patch)."""
        sources, x = conv_sources(node), conv_input(self.graph.types, node)

        def run_joined(xs: Sequence[Tensor], out: Tensor | None, scratch: Tensor | None) -> Tensor:
            parts = list(xs[:sources])
            if scratch is None:
                joined = torch.cat(parts, 1)
            else:
                n = parts[0].shape[0]
                view = scratch[:n * x.numel // x.fragments].view(n, *x.spatial, x.channels).permute(0, 4, 1, 2, 3)
                joined = torch.cat(parts, 1, out=view)
            return run([joined, *xs[sources:]], out, None)

        return run_joined

    def activation_(self, op: str, alpha: float) -> Callable[[Tensor], Tensor]:
        """An activation in place on a conv's output: ELU through the C kernel in fp32 (PyTorch's
        elu_ is compute-bound), the others through PyTorch."""
        from znnx.kernels import activation as fast

        if op == "elu" and self.dtype == torch.float32:
            try:
                return fast.elu_(alpha)
            except KernelUnavailable:
                pass
        return activation(op, alpha, inplace=True)

    def prelu_(self, slope: Tensor) -> Callable[[Tensor], Tensor]:
        """PReLU in place: the C kernel in fp32, PyTorch's otherwise."""
        from znnx.kernels import activation as fast

        if self.dtype == torch.float32:
            try:
                return fast.prelu_(slope)
            except KernelUnavailable:
                pass
        return prelu(slope, inplace=True)

    def scale_then(self, scale: Scale, act: str | None, alpha: float) -> Callable[[Tensor], Tensor]:
        """A fused "scale" step and the activation after it, in place on a conv's output."""
        gamma, beta = scale
        finish = None if act is None else self.activation_(act, alpha)

        def run(y: Tensor) -> Tensor:
            y = torch.addcmul(beta, y, gamma, out=y)
            return y if finish is None else finish(y)

        return run

    def conv(self, node: Node, step: Step) -> Run:
        a = node.attrs
        padding, stride, dilation = list(a["pads"][:3]), list(a["stride"]), list(a["dilation"])
        groups = int(a["groups"])
        x = conv_input(self.graph.types, node)
        w = torch.ops.mkldnn._reorder_convolution_weight(
            self.eager.need(node, "weight"), padding, stride, dilation, groups, [1, x.channels, *x.spatial])
        b = self.eager.param(node, "bias")
        args = (padding, stride, dilation, groups)
        steps = epilogue(node)
        act = next((s for s in steps if s in EPILOGUE_ACTIVATIONS), None)
        alpha = float(a.get("alpha", 0.0))
        add_first, add_last = steps[:1] == ("add",), steps[-1:] == ("add",) and act is not None
        scale = self.eager.scale_of(node)
        after_relu: Callable[[Tensor], Tensor] | None
        after_plain: Callable[[Tensor], Tensor] | None
        if scale is not None:  # add, scale, activation: oneDNN's primitive takes the add, the rest follows
            relu, plain = None, "none"
            after_relu = after_plain = self.scale_then(scale, act, alpha)
        else:
            relu = "relu" if act == "relu" else None
            finish = self.prelu_(self.eager.need(node, "prelu_slope")) if act == "prelu" else \
                None if act is None else self.activation_(act, alpha)
            after_relu = None if act == "relu" else finish
            plain = act if act in ONEDNN_UNARY else "none"
            after_plain = None if act in ONEDNN_UNARY else finish
        scalars = [alpha] if plain == "leaky_relu" else []
        pointwise, accumulate = torch.ops.mkldnn._convolution_pointwise, torch.ops.mkldnn._convolution_pointwise_

        def run(xs: Sequence[Tensor], out: Tensor | None, scratch: Tensor | None) -> Tensor:
            if step.inplace == 1:
                y, post = xs[1], after_relu
                accumulate(y, xs[0], w, b, *args, "add", 1.0, relu, [], "")
            elif out is not None:
                y, post = (out.copy_(xs[1]) if add_first else out.zero_()), after_relu
                accumulate(y, xs[0], w, b, *args, "add", 1.0, relu, [], "")
            elif add_first:
                y, post = pointwise(xs[0], xs[1].contiguous(memory_format=CHANNELS_LAST), w, b, *args, "add", 1.0,
                                    relu, [], ""), after_relu
            else:
                y, post = pointwise(xs[0], w, b, *args, plain, scalars, ""), after_plain
            if post is not None:
                y = post(y)
            return y.add_(xs[1]) if add_last else y

        return run

    def shuffle(self, node: Node, step: Step) -> Run:
        """A transposed conv whose windows tile the output through the C kernel, where there is one."""
        from znnx.kernels import shuffle

        try:
            if self.dtype != torch.float32:
                raise KernelUnavailable(f"{node.op}: the C kernel is an fp32 kernel")
            conv = shuffle.ShuffleConv(self.eager.need(node, "weight"), self.eager.param(node, "bias"),
                                       epilogue(node), float(node.attrs.get("alpha", 0.0)),
                                       scale=self.eager.scale_of(node), slope=self.eager.slope_of(node))
        except KernelUnavailable:
            return self.shuffle_gemm(node, step)
        return calling(conv, step)

    def scatter(self, node: Node, step: Step) -> Run | None:
        """A transposed conv into few output channels through the C kernel; None where there is none
        (below fp32, no compiler): `single` then runs it as any other transposed conv."""
        from znnx.kernels import scatter

        a = node.attrs
        if self.dtype != torch.float32:
            return None
        try:
            conv = scatter.ScatterConv(self.eager.need(node, "weight"), self.eager.param(node, "bias"), a["stride"],
                                       a["pads"], self.graph.types[node.output].spatial, epilogue(node),
                                       float(a.get("alpha", 0.0)), scale=self.eager.scale_of(node),
                                       slope=self.eager.slope_of(node))
        except KernelUnavailable:
            return None
        return calling(conv, step)

    def shuffle_gemm(self, node: Node, step: Step) -> Run:
        """y[n, o, d*kd + a, h*kh + b, w*kw + c] = sum_i x[n, i, d, h, w] W[i, o, a, b, c] + bias[o]."""
        kd, kh, kw = node.attrs["kernel"]
        weight = self.eager.need(node, "weight")
        c_in, c_out = weight.shape[:2]
        w2d = weight.permute(0, 2, 3, 4, 1).reshape(c_in, -1).contiguous()
        bias = self.eager.param(node, "bias")
        b2d = (torch.zeros(c_out, dtype=self.dtype) if bias is None else bias).repeat(kd * kh * kw)
        add_first = epilogue(node)[:1] == ("add",)
        alpha = float(node.attrs.get("alpha", 0.0))
        scale = self.eager.scale_of(node)
        slope = self.eager.slope_of(node)
        actions = [epilogue_step(s, alpha, inplace=True, scale=scale, slope=slope) for s in epilogue(node)[add_first:]]

        def tiles(t: Tensor, n: int, d: int, h: int, w: int) -> Tensor:
            """An NDHWC output as (n, d, kd, h, kh, w, kw, c_out) without copying."""
            return t.permute(0, 2, 3, 4, 1).view(n, d, kd, h, kh, w, kw, c_out)

        def run(xs: Sequence[Tensor], out: Tensor | None, scratch: Tensor | None) -> Tensor:
            x = xs[0].contiguous(memory_format=CHANNELS_LAST)
            n, _, d, h, w = x.shape
            rows = x.permute(0, 2, 3, 4, 1).reshape(-1, c_in)
            gemm = torch.addmm(b2d, rows, w2d) if scratch is None else torch.addmm(
                b2d, rows, w2d, out=scratch.view(-1)[:rows.shape[0] * w2d.shape[1]].view(rows.shape[0], -1))
            shuffled = gemm.view(n, d, h, w, kd, kh, kw, c_out).permute(0, 1, 4, 2, 5, 3, 6, 7)
            if step.inplace == 1:
                y = xs[1]
                tiles(y, n, d, h, w).add_(shuffled)
            else:
                y = out if out is not None else torch.empty(
                    (n, c_out, d * kd, h * kh, w * kw), dtype=self.dtype, memory_format=CHANNELS_LAST)
                target = tiles(y, n, d, h, w)
                if add_first:
                    torch.add(shuffled, tiles(xs[1].contiguous(memory_format=CHANNELS_LAST), n, d, h, w), out=target)
                else:
                    target.copy_(shuffled)
            for action in actions:
                y = action(y, xs)
            return y

        return run

    def conv_transpose(self, node: Node, step: Step) -> Kernel:
        a = node.attrs
        padding, out_pad, stride = list(a["pads"][:3]), list(a["output_padding"]), list(a["stride"])
        dilation, groups = list(a["dilation"]), int(a["groups"])
        x = self.graph.types[node.inputs[0]]
        w = torch.ops.mkldnn._reorder_convolution_transpose_weight(
            self.eager.need(node, "weight"), padding, out_pad, stride, dilation, groups, [1, x.channels, *x.spatial])
        b = self.eager.param(node, "bias")
        alpha = float(a.get("alpha", 0.0))
        scale = self.eager.scale_of(node)
        slope = self.eager.slope_of(node)
        actions = [epilogue_step(s, alpha, inplace=True, scale=scale, slope=slope) for s in epilogue(node)]
        args = (padding, out_pad, stride, dilation, groups)

        def run(xs: Sequence[Tensor]) -> Tensor:
            y = torch.ops.mkldnn._convolution_transpose_pointwise(xs[0], w, b, *args, "none", [], "")
            if step.inplace == 1:
                y = xs[1].add_(y)
            for action in actions[step.inplace == 1:]:
                y = action(y, xs)
            return y

        return run

    def c_kernel(self, node: Node, make: Callable[[], Callable[..., Tensor]]) -> Run:
        """The C kernel `make` builds (fp32 only; called with the input and the arena slot as `out`),
        or the node's eager kernel where there is none (another precision, no C compiler)."""
        try:
            if self.dtype != torch.float32:
                raise KernelUnavailable(f"{node.op}: the C kernel is an fp32 kernel")
            fast = make()
        except KernelUnavailable:
            eager = self.eager.kernel(node)
            return lambda xs, out, _: eager(xs) if out is None else out.copy_(eager(xs))
        return lambda xs, out, _: fast(xs[0], out=out)

    def pool(self, node: Node) -> Run:
        """A max or average pool, or a fragment (with its max window), through the C kernel."""
        from znnx.kernels import pool

        a, spatial = node.attrs, self.graph.types[node.output].spatial
        if node.op == "fragment":
            window, block = fragment_window(node), a["block"]
            out = tuple(s * b for s, b in zip(spatial, block))
            return self.c_kernel(node, lambda: pool.Pool(window, (1, 1, 1), (0,) * 6, out, block=block))
        return self.c_kernel(node, lambda: pool.Pool(
            a["kernel"], a["stride"], a["pads"], spatial, pool_dilation(node), average=node.op == "avg_pool",
            count_include_pad=bool(a.get("count_include_pad", False))))

    def upsample(self, node: Node) -> Run:
        """Nearest or trilinear upsampling through the C kernel."""
        from znnx.kernels import resample

        a = node.attrs
        return self.c_kernel(node, lambda: resample.Upsample(self.graph.types[node.inputs[0]].spatial, a["scales"],
                                                             a["mode"], a["align_corners"]))

    def inplace(self, node: Node, k: int) -> Kernel:
        if node.op in ACTIVATIONS:
            fn = self.activation_(node.op, float(node.attrs.get("alpha", 0.0)))
            return lambda xs: fn(xs[0])
        if node.op == "prelu":
            slope = self.prelu_(self.eager.need(node, "slope"))
            return lambda xs: slope(xs[0])
        if node.op == "scale":
            gamma = self.eager.need(node, "gamma", channel_view=True)
            beta = self.eager.param(node, "beta", channel_view=True)
            if beta is None:
                return lambda xs: xs[0].mul_(gamma)
            return lambda xs: torch.addcmul(beta, xs[0], gamma, out=xs[0])
        ops: dict[str, Callable[..., Tensor]] = {"add": torch.add, "mul": torch.mul, "div": torch.div,
                                                 "max": torch.maximum}
        fn = ops[node.op]
        constant = self.eager.param(node, "constant", channel_view=True)
        if constant is not None:
            return lambda xs: fn(xs[0], constant, out=xs[0])
        return lambda xs: fn(xs[0], xs[1], out=xs[k])

    def stream_fragment(self, producer: Node, consumer: Node) -> Run:
        """The fragment's step of a streamed conv and fragment (plan.memory.Stream), called with the
        conv's input and its slab (a view of its slot) as scratch: per patch of the batch and per
        slab of fragment planes, the conv computes the planes those read into the slab, the C pool
        kernel writes the slab's fragments into their planes of every fragment of the output. Each
        slab depth gets its own kernels, built on first use."""
        from znnx.kernels import pool

        window, block = fragment_window(consumer), tuple(consumer.attrs["block"])
        reach = producer.attrs["kernel"][0] - 1
        source = producer.inputs[0]
        x = self.graph.types[source]
        y = self.graph.types[consumer.output]
        pooled = tuple(s * b for s, b in zip(y.spatial, block))
        alone = Graph((producer,), (source,), (producer.output,), {source: x}, self.graph.spatial_rank,
                      f"{self.graph.name}:{producer.name}")
        kernels: dict[int, tuple[Run, Callable[[Tensor, Tensor, int, int], None]]] = {}

        def into(planes: int) -> Callable[[Tensor, Tensor, int, int], None]:
            """(slab, whole output, patch, first plane) -> None: the slab's fragments written in place,
            by the C kernel in fp32, else by the eager kernel and a copy."""
            if self.dtype == torch.float32:
                try:
                    return pool.Pool(window, (1, 1, 1), (0,) * 6, (planes * block[0], *pooled[1:]), block=block).into
                except KernelUnavailable:
                    pass
            eager = self.eager.kernel(consumer)

            def copy(a: Tensor, whole: Tensor, item: int, first: int) -> None:
                whole.unflatten(0, (math.prod(block), -1))[:, item, :, first:first + planes].copy_(eager([a]))

            return copy

        def slab_kernels(planes: int) -> tuple[Run, Callable[[Tensor, Tensor, int, int], None]]:
            if planes not in kernels:
                depth = consumed_planes(consumer, planes) + reach
                slab = infer_types(alone, {source: replace(x, spatial=(depth, *x.spatial[1:]))})
                conv = _Builder(slab, self.algorithms, self.dtype).kernel(producer, Step(producer.name, None, False,
                                                                                        None, 0))
                kernels[planes] = (conv, into(planes))
            return kernels[planes]

        def run(xs: Sequence[Tensor], out: Tensor | None, scratch: Tensor | None) -> Tensor:
            assert scratch is not None, "a streamed pair computes its producer into the producer's slot"
            n, depth = xs[0].shape[0], y.spatial[0]
            result = out if out is not None else torch.empty(
                (n * math.prod(block), y.channels, *y.spatial), dtype=self.dtype, memory_format=CHANNELS_LAST)
            planes = (scratch.shape[2] - window[0] + 1) // block[0]
            for item in range(n):
                for p0 in range(0, depth, planes):
                    p = min(planes, depth - p0)
                    conv, write = slab_kernels(p)
                    first, read = p0 * block[0], consumed_planes(consumer, p)
                    a = conv([xs[0][item:item + 1, :, first:first + read + reach]], scratch[:, :, :read], None)
                    write(a, result, item, p0)
            return result

        return run

    def stream(self, producer: Node, consumer: Node) -> Run:
        """The consumer's step of a streamed pair (plan.memory.Stream), called with the producer's
        input and the producer's slab (a view of its slot) as scratch: per patch of the batch and per
        slab of the consumer's output depth, the producer computes the slab's planes (those planes plus
        the consumer's reach) into the slab, the consumer its planes from them straight into its
        output. Each slab depth gets its own pair of kernels, built on first use."""
        consumer_reach = consumer.attrs["kernel"][0] - 1
        reach = producer.attrs["kernel"][0] - 1 + consumer_reach
        source = producer.inputs[0]
        x = self.graph.types[source]
        y = self.graph.types[consumer.output]
        pair = Graph((producer, consumer), (source,), (consumer.output,), {source: x}, self.graph.spatial_rank,
                     f"{self.graph.name}:{producer.name}+{consumer.name}")
        kernels: dict[int, tuple[Run, Run]] = {}

        def slab_kernels(planes: int) -> tuple[Run, Run]:
            if planes not in kernels:
                slab = infer_types(pair, {source: replace(x, spatial=(planes + reach, *x.spatial[1:]))})
                builder = _Builder(slab, self.algorithms, self.dtype)
                kernels[planes] = (builder.kernel(producer, Step(producer.name, None, False, None, 0)),
                                   builder.kernel(consumer, Step(consumer.name, None, False, None, 0)))
            return kernels[planes]

        def run(xs: Sequence[Tensor], out: Tensor | None, scratch: Tensor | None) -> Tensor:
            assert scratch is not None, "a streamed pair computes its producer into the producer's slot"
            n, depth = xs[0].shape[0], y.spatial[0]
            result = out if out is not None else torch.empty(
                (n, y.channels, *y.spatial), dtype=self.dtype, memory_format=CHANNELS_LAST)
            planes = scratch.shape[2] - consumer_reach
            for item in range(n):
                for d0 in range(0, depth, planes):
                    p = min(planes, depth - d0)
                    first, second = slab_kernels(p)
                    a = first([xs[0][item:item + 1, :, d0:d0 + p + reach]],
                              scratch[:, :, :p + consumer_reach], None)
                    target = result[item:item + 1, :, d0:d0 + p]
                    b = second([a], target, None)
                    if b.data_ptr() != target.data_ptr():
                        target.copy_(b)
            return result

        return run

    def kernel(self, node: Node, step: Step) -> Run:
        """The step's kernel. A conv with sources gets them joined into its scratch where it runs
        oneDNN or a fast kernel other than Winograd (which reads them directly); the eager kernel, for
        pads oneDNN cannot take, joins them itself."""
        algorithm = self.algorithms.get(node.name, DIRECT)
        if (node.op == "conv" and conv_sources(node) > 1 and algorithm.kind != "winograd"
                and (algorithm.kind != "direct" or placeable(node))):
            inplace = None if step.inplace is None else 1
            return self.joined(node, self.single(node, replace(step, inplace=inplace)))
        return self.single(node, step)

    def single(self, node: Node, step: Step) -> Run:
        if node.op == "conv" and self.algorithms.get(node.name, DIRECT).kind != "direct":
            return self.fast_conv(node, step)
        if node.op == "conv" and placeable(node):
            return self.conv(node, step)
        if shuffles(node):
            return self.shuffle(node, step)
        if overlaps(node) and (scattered := self.scatter(node, step)) is not None:
            return scattered
        if node.op in POOLS:
            return self.pool(node)
        if node.op == "upsample":
            return self.upsample(node)
        if node.op == "concat":
            return lambda xs, out, _: torch.cat(list(xs), 1, out=out) if out is not None else torch.cat(list(xs), 1)
        if node.op == "conv_transpose" and _onednn_pads(node):
            fn = self.conv_transpose(node, step)
        elif step.inplace is not None and not node.op.startswith("conv"):
            fn = self.inplace(node, step.inplace)
        else:
            fn = self.eager.kernel(node)
            if step.inplace is not None:  # a (transposed) conv oneDNN cannot pad, into its residual's buffer
                eager, k = fn, step.inplace
                fn = lambda xs: xs[k].copy_(eager(xs))
        # a slot only where the plan counted on the scatter (`placeable`) and it is not at hand
        return lambda xs, out, scratch: fn(xs) if out is None else out.copy_(fn(xs))


class _SlotStore:
    """The arena's slots (`slot_bytes` per patch) for one batch size, allocated on first use and kept
    between calls; the phases of a fragment loop share one store (they never run at once)."""

    def __init__(self, slot_bytes: Sequence[int], dtype: torch.dtype) -> None:
        self.slot_bytes = tuple(slot_bytes)
        self.dtype = dtype
        self.batch = 0
        self.tensors: list[Tensor] = []

    def slots(self, batch: int) -> list[Tensor]:
        if batch != self.batch:
            self.tensors = []
            size = torch.empty((), dtype=self.dtype).element_size()
            self.tensors = [torch.empty(n * batch // size, dtype=self.dtype) for n in self.slot_bytes]
            self.batch = batch
        return self.tensors


class _Arena:
    """Views of the plan's slots (in `store`) for one batch size, rebuilt when the batch changes."""

    def __init__(self, graph: Graph, plan: MemoryPlan, store: _SlotStore) -> None:
        self.graph = graph
        self.plan = plan
        self.store = store
        self.batch = 0
        self.views: dict[str, tuple[Tensor | None, Tensor | None]] = {}

    def buffers(self, batch: int) -> dict[str, tuple[Tensor | None, Tensor | None]]:
        """Node name -> (channels-last view of its output slot, its flat scratch slot) for `batch` patches."""
        if batch != self.batch:
            self.views = {}
            slots = self.store.slots(batch)
            slabs = {stream.producer: stream_slab(self.graph, stream) for stream in self.plan.streams}
            for node, step in zip(self.graph.nodes, self.plan.steps):
                out = scratch = None
                if step.slot is not None:
                    t, items = (slabs[node.name], 1) if node.name in slabs else (self.graph.types[node.output], batch)
                    flat = slots[step.slot][:items * t.numel]
                    out = flat.view(items * t.fragments, *t.spatial, t.channels).permute(0, 4, 1, 2, 3)
                if step.scratch is not None:
                    scratch = slots[step.scratch]
                self.views[node.name] = (out, scratch)
            for stream in self.plan.streams:  # the consumer computes the producer's slabs into its slot
                self.views[stream.consumer] = (self.views[stream.consumer][0], self.views[stream.producer][0])
            self.batch = batch
        return self.views


def _placeholder(xs: Sequence[Tensor], out: Tensor | None, scratch: Tensor | None) -> Tensor:
    """The step of a streamed producer: nothing to do (its consumer's step runs it, slab by slab);
    its value is its slot, which only the consumer reads."""
    assert out is not None, "a streamed producer has a slot"
    return out


class _Program:
    """The built steps of one graph: kernels, arena, which values each step reads (a streamed pair's
    consumer reads its producer's input), and which die after each step."""

    def __init__(self, graph: Graph, plan: MemoryPlan, algorithms: Mapping[str, Algorithm],
                 dtype: torch.dtype = torch.float32, store: _SlotStore | None = None) -> None:
        builder = _Builder(graph, algorithms, dtype)
        self.graph = graph
        self.dtype = dtype
        nodes = {node.name: node for node in graph.nodes}
        producers = {stream.producer for stream in plan.streams}
        consumers = {stream.consumer: nodes[stream.producer] for stream in plan.streams}
        self.reads = [() if node.name in producers else consumers[node.name].inputs if node.name in consumers
                      else node.inputs for node in graph.nodes]
        self.steps = [(node, _placeholder if node.name in producers else
                       builder.stream_fragment(consumers[node.name], node) if node.name in consumers
                       and node.op == "fragment" else
                       builder.stream(consumers[node.name], node) if node.name in consumers else
                       builder.kernel(node, step)) for node, step in zip(graph.nodes, plan.steps)]
        last_use = {value: i for i, reads in enumerate(self.reads) for value in reads}
        keep = set(graph.outputs)
        self.frees = [[v for v in dict.fromkeys(reads) if last_use[v] == i and v not in keep]
                      for i, reads in enumerate(self.reads)]
        self.arena = _Arena(graph, plan, store or _SlotStore(plan.slot_bytes, dtype))

    def run(self, inputs: Sequence[Tensor], times: list[float] | None = None) -> list[Tensor]:
        """Outputs for `inputs` (NCDHW float32: a one-channel output, channels-last and NCDHW alike, is
        returned as computed, as the memory plan counts it); with `times`, append each step's wall time
        in seconds."""
        outputs = self.execute([_enter(x, self.dtype) for x in inputs], times)
        return [y.float().contiguous() for y in outputs]

    def execute(self, inputs: list[Tensor], times: list[float] | None = None,
                into: Mapping[str, Tensor] | None = None) -> list[Tensor]:
        """The outputs as computed (channels-last, the program's dtype) for `inputs` in that form,
        which it owns: `inputs` is emptied, so that each input dies at its last reader. `into` gives
        nodes the buffer to write their output in (node name -> channels-last tensor)."""
        name = self.graph.inputs[0]
        buffers = self.arena.buffers(inputs[0].shape[0] // self.graph.types[name].fragments)
        values = dict(zip(self.graph.inputs, inputs))
        inputs.clear()
        for (node, fn), reads, dead in zip(self.steps, self.reads, self.frees):
            start = time.perf_counter()
            out, scratch = buffers[node.name]
            if into is not None and node.name in into:
                out = into[node.name]
            values[node.output] = fn([values[v] for v in reads], out, scratch)
            if times is not None:
                times.append(time.perf_counter() - start)
            for value in dead:
                del values[value]
        return [values[name] for name in self.graph.outputs]


class _LoopProgram:
    """A graph run through its fragment loop (plan/fragment_loop.py): the prefix, its fragments
    written into a buffer kept between calls (allocated afresh, n926's 11 GB at 334^3 were paged in
    again on every call), then per offset the body on that offset's entries of them,
    each pass copied into its offset's entries of the whole buffers, then the suffix. The phases'
    arenas share one store. `steps` lists every node once; `times` (see `_Program.run`) gives each
    body step its sum over the passes."""

    def __init__(self, graph: Graph, plan: MemoryPlan, algorithms: Mapping[str, Algorithm],
                 dtype: torch.dtype) -> None:
        loop = plan.loop
        assert loop is not None, "a loop program runs a plan with a fragment loop"
        store = _SlotStore(plan.slot_bytes, dtype)
        self.loop = loop
        self.dtype = dtype
        self.phases = [_Program(g, p, algorithms, dtype, store)
                       for g, p in zip((loop.prefix, loop.body, loop.suffix), plan.phases)]
        self.steps = [step for phase in self.phases for step in phase.steps]
        self.fragments = torch.empty(0, dtype=dtype)

    def _held(self, n: int) -> Tensor:
        """The buffer of the fragments of `n` patches."""
        t = self.loop.prefix.types[self.loop.value]
        shape = (n * t.fragments, t.channels, *t.spatial)
        if tuple(self.fragments.shape) != shape:
            self.fragments = torch.empty(0, dtype=self.dtype)
            self.fragments = torch.empty(shape, dtype=self.dtype, memory_format=CHANNELS_LAST)
        return self.fragments

    def run(self, inputs: Sequence[Tensor], times: list[float] | None = None) -> list[Tensor]:
        prefix, body, suffix = self.phases
        held = {self.loop.fragment: self._held(inputs[0].shape[0])}
        (fragments,) = prefix.execute([_enter(x, self.dtype) for x in inputs], times, held)
        n = fragments.shape[0] // self.loop.passes
        whole: list[Tensor] = []
        sums = [0.0] * len(body.steps)
        for i in range(self.loop.passes):
            passed: list[float] | None = None if times is None else []
            ys = body.execute([fragments[i * n:(i + 1) * n]], passed)
            if passed is not None:
                sums = [a + b for a, b in zip(sums, passed)]
            if not whole:
                whole = [torch.empty((self.loop.passes * n, *y.shape[1:]), dtype=y.dtype, memory_format=CHANNELS_LAST)
                         for y in ys]
            for target, y in zip(whole, ys):
                target[i * n:(i + 1) * n].copy_(y)
            del ys
        del fragments
        if times is not None:
            times.extend(sums)
        return [y.float().contiguous() for y in suffix.execute(whole, times)]


def conv_kernel(graph: Graph, node: Node, algorithm: Algorithm) -> Callable[..., Tensor]:
    """One conv of `graph` alone under `algorithm`, in the kernel calling convention: (channels-last
    input, *, out=None, residual=None) -> the channels-last output, written into `out` as into an
    arena slot, else fresh."""
    run = _Builder(graph, {node.name: algorithm}).kernel(node, Step(node.name, None, False, None, 0))

    def conv(x: Input, *, out: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
        return run([*as_sources(x), *([] if residual is None else [residual])], out, None)

    return conv


def choose_algorithms(graph: Graph, batch: int, device: torch.device, precision: Precision,
                      forced: Forced, refresh: bool = False) -> tuple[LayerChoice, ...]:
    """Each conv's algorithm: measured by the autotuner (cached on disk), or forced. Below fp32
    every conv runs direct: Winograd and FFT are fp32 kernels."""
    if precision.name != "fp32":
        return direct_only(graph, forced, precision.name)
    from znnx.kernels import winograd

    context = f"{machine(device)} winograd {hashlib.sha256(winograd.source().encode()).hexdigest()[:12]}"
    return tune(graph, batch, lambda node: conv_candidates(graph, node, precision),
                conv_kernel, algorithm_bytes, forced, device, precision.name, context,
                refresh, cpu_threads=True)


def _program(plan: Plan) -> _Program | _LoopProgram:
    dtype = precision(plan.precision).torch_dtype
    if plan.memory.loop is not None:
        return _LoopProgram(plan.graph, plan.memory, plan.algorithms, dtype)
    return _Program(plan.graph, plan.memory, plan.algorithms, dtype)


def build(plan: Plan, device: torch.device) -> Callable[[Sequence[Tensor]], list[Tensor]]:
    """A function from NCDHW input tensors (graph input order) to NCDHW float32 output tensors,
    running the plan's memory plan and algorithms with values held in its precision.

    NaN and Inf: Winograd and FFT tiles spread a non-finite input over a whole tile, and fused
    activations may turn NaN into a number, so a call whose inputs hold any non-finite value runs
    PyTorch's own kernels node by node instead (built on first need), which propagate them exactly
    as PyTorch does. The check is one sum per input (NaN and Inf survive a sum; a finite input whose
    sum overflows merely takes the exact path), NumPy's, on the calling thread: `isfinite().all()`
    took 4 ms on a 128^3 patch, torch's parallel sum 0.17 ms alone but 4 ms in a volume run, whose
    reader and writer threads keep both cores busy, so that the OpenMP team waits at its barrier.
    Non-finite values the net creates from finite inputs (overflow) follow each kernel's own
    arithmetic."""
    program = _program(plan)
    dtype = program.dtype
    exact: list[Callable[[Sequence[Tensor]], list[Tensor]]] = []

    def run(inputs: Sequence[Tensor]) -> list[Tensor]:
        if all(math.isfinite(float(x.numpy().sum())) for x in inputs):
            return program.run(inputs)
        if not exact:
            eager = torch_eager.program(plan.graph, torch_eager.Builder(plan.graph, device, dtype))
            exact.append(lambda xs: [y.float().contiguous()
                                     for y in eager([x.to(dtype) for x in xs])])
        return exact[0](inputs)

    return run


def profile(plan: Plan, inputs: Sequence[Tensor], passes: int = 3) -> list[tuple[Node, float]]:
    """Each node with its median wall time over `passes` runs, after one untimed run."""
    program = _program(plan)
    program.run(inputs)
    runs: list[list[float]] = []
    for _ in range(passes):
        runs.append([])
        program.run(inputs, runs[-1])
    return [(node, sorted(run[i] for run in runs)[passes // 2]) for i, (node, _) in enumerate(program.steps)]


def _enter(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """A channels-last copy in `dtype` the net owns (the plan may overwrite it); one channel in its
    own dtype needs no copy and is never written, since channels-last and NCDHW coincide and the plan
    treats it as the caller's."""
    if tensor.shape[1] == 1 and tensor.dtype == dtype:
        return tensor.contiguous(memory_format=CHANNELS_LAST)
    return torch.empty_like(tensor, dtype=dtype, memory_format=CHANNELS_LAST).copy_(tensor)
