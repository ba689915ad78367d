"""Per-op rules of the IR: arity, attributes, parameter shapes and shape inference.

Spatial attributes are always 3-tuples ordered (depth, height, width); `pads` is a 6-tuple
(begin_d, begin_h, begin_w, end_d, end_h, end_w).

Fragments (see `TensorType.fragments`): `fragment` splits each patch, whose sizes must be multiples
of `block`, into the prod(block) offsets of the block grid, offset-major (fragment (a, b, c) of
entry n is batch entry ((a*bh + b)*bw + c)*N + n, holding voxels (a + bd*i, b + bh*j, c + bw*k));
with a `window`, it takes the maximum over that window (stride 1) first: ZNNi's max-pooling
fragments in one pass. `defragment` interleaves fragments back. Every other op keeps its
inputs' fragment count, which must agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from znnx.errors import GraphError
from znnx.ir.graph import Node, Shape3, TensorType

ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "gelu_tanh", "silu", "mish",
                         "softplus", "erf"})
"""Pointwise functions without parameters, fusable into a conv's epilogue: gelu is the erf form,
gelu_tanh PyTorch's approximate="tanh" form, silu x * sigmoid(x), mish x * tanh(softplus(x)),
softplus log(1 + e^x); erf is the error function (ONNX exports spell GELU with it)."""
OUTPUT_DERIVATIVE_ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu", "sigmoid", "tanh"})
"""The activations whose derivative follows from their output: training fuses only these into a conv
(training/conv.py keeps no pre-activation tensor); the others run as nodes of their own there."""
BINARY = frozenset({"add", "mul", "div", "max"})
PATCH_STATISTICS = ("normalizes each input by statistics of the whole input (its mean and variance at run time): "
                    "every output voxel depends on every input voxel, so no blockwise run can equal a whole-volume "
                    "one and znnx does not import it; use BatchNorm (running statistics, folded into the conv) or "
                    "export the model after replacing it")
"""Why instance, group and layer normalization are refused, for the frontends' errors."""
PAD_MODES = frozenset({"constant", "replicate", "reflect"})
UPSAMPLE_MODES = frozenset({"nearest", "trilinear"})


def _fail(node: Node, message: str) -> GraphError:
    return GraphError(f"ir: node {node.name!r} ({node.op}): {message}")


def _ints(node: Node, key: str, length: int, minimum: int) -> tuple[int, ...]:
    value = node.attrs.get(key)
    if (
        not isinstance(value, tuple)
        or len(value) != length
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    ):
        raise _fail(node, f"attribute {key!r} must be {length} ints >= {minimum}, got {value!r}")
    return value


def _floats(node: Node, key: str, length: int) -> tuple[float, ...]:
    value = node.attrs.get(key)
    if (
        not isinstance(value, tuple)
        or len(value) != length
        or not all(isinstance(v, int | float) and v > 0 for v in value)
    ):
        raise _fail(node, f"attribute {key!r} must be {length} positive numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _scalar(node: Node, key: str, kinds: tuple[type, ...]) -> object:
    value = node.attrs.get(key)
    if not isinstance(value, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise _fail(node, f"attribute {key!r} must be {names}, got {value!r}")
    return value


def _choice(node: Node, key: str, allowed: frozenset[str]) -> str:
    value = node.attrs.get(key)
    if value not in allowed:
        raise _fail(node, f"attribute {key!r} must be one of {sorted(allowed)}, got {value!r}")
    return str(value)


def _param(node: Node, key: str, shape: tuple[int, ...]) -> None:
    if key not in node.params:
        raise _fail(node, f"missing parameter {key!r} of shape {shape}")
    if node.params[key].shape != shape:
        raise _fail(node, f"parameter {key!r} has shape {node.params[key].shape}, expected {shape}")


def _no_params(node: Node, allowed: Sequence[str] = ()) -> None:
    extra = sorted(set(node.params) - set(allowed))
    if extra:
        raise _fail(node, f"unexpected parameters {extra}")


def _positive(node: Node, spatial: Sequence[int], what: str) -> Shape3:
    if any(s < 1 for s in spatial):
        raise _fail(node, f"{what} gives an empty output of spatial shape {tuple(spatial)}")
    d, h, w = spatial
    return (d, h, w)


def _same_spatial(node: Node, types: Sequence[TensorType]) -> None:
    shapes = {t.spatial for t in types}
    if len(shapes) > 1:
        raise _fail(node, f"inputs must share one spatial shape, got {[str(t) for t in types]}")


def conv_sources(node: Node) -> int:
    """How many of a conv's first inputs make its input, concatenated along channels (a concat fused
    into the conv; attribute `sources`, default 1); a residual it adds is the input after them."""
    return int(node.attrs.get("sources", 1))


def conv_input(types: Mapping[str, TensorType], node: Node) -> TensorType:
    """The input a conv convolves: its sources' types joined along channels."""
    parts = [types[name] for name in node.inputs[:conv_sources(node)]]
    return replace(parts[0], channels=sum(t.channels for t in parts))


def epilogue(node: Node) -> tuple[str, ...]:
    """The fused steps a conv applies to its biased output, in order: "add" (the input after its sources),
    "scale" (y * scale_gamma + scale_beta per channel: a folded BatchNorm after a residual add) and
    at most one activation (with `alpha` for elu and leaky_relu; "prelu": below 0 times the channel's
    `prelu_slope`, never beside a "scale")."""
    return tuple(node.attrs.get("epilogue", ()))


EPILOGUE_ACTIVATIONS = frozenset({*ACTIVATIONS, "prelu"})
EPILOGUE_STEPS = frozenset({"add", "scale", *EPILOGUE_ACTIVATIONS})
SCALE_PARAMS = ("scale_gamma", "scale_beta")


def epilogue_params(node: Node) -> tuple[str, ...]:
    """The parameters a conv's fused steps hold: the scale's gamma and beta, PReLU's slopes."""
    steps = epilogue(node)
    return (*(SCALE_PARAMS if "scale" in steps else ()), *(("prelu_slope",) if "prelu" in steps else ()))


def _check_epilogue(node: Node, types: Sequence[TensorType], out: TensorType) -> TensorType:
    steps = node.attrs.get("epilogue", ())
    if not isinstance(steps, tuple) or not all(s in EPILOGUE_STEPS for s in steps):
        raise _fail(node, f"attribute 'epilogue' must be a tuple of {sorted(EPILOGUE_STEPS)}, got {steps!r}")
    activations = [s for s in steps if s in EPILOGUE_ACTIVATIONS]
    if steps.count("add") > 1 or steps.count("scale") > 1 or len(activations) > 1:
        raise _fail(node, f"epilogue {steps} may hold one 'add', one 'scale' and one activation at most")
    if "prelu" in steps and "scale" in steps:
        raise _fail(node, f"epilogue {steps} holds 'prelu' beside 'scale' (the kernels carry one vector for both)")
    for key in epilogue_params(node):
        _param(node, key, (out.channels,))
    if set(activations) & {"elu", "leaky_relu"}:
        _scalar(node, "alpha", (int, float))
    if ("add" in steps) != (len(types) == 2):
        raise _fail(node, f"epilogue {steps} needs {2 if 'add' in steps else 1} input(s), got {len(types)}")
    if len(types) == 2 and (types[1].channels, types[1].spatial) != (out.channels, out.spatial):
        raise _fail(node, f"the residual input {types[1]} must match the output {out}")
    return out


def conv_spatial(spatial: Sequence[int], kernel: Sequence[int], pads: Sequence[int],
                 stride: Sequence[int] = (1, 1, 1), dilation: Sequence[int] = (1, 1, 1)) -> tuple[int, ...]:
    """A convolution's output sizes for input sizes `spatial`, pads (begin..., end...); a size < 1
    means the kernel does not fit."""
    return tuple((size + pads[i] + pads[i + 3] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                 for i, size in enumerate(spatial))


def _conv(node: Node, types: Sequence[TensorType]) -> TensorType:
    sources = node.attrs.get("sources", 1)
    if not isinstance(sources, int) or not 1 <= sources <= len(types):
        raise _fail(node, f"attribute 'sources' must be an int in 1..{len(types)} (the inputs it concatenates), "
                          f"got {sources!r}")
    _same_spatial(node, types[:sources])
    x = TensorType(sum(t.channels for t in types[:sources]), types[0].spatial)
    kernel = _ints(node, "kernel", 3, 1)
    stride = _ints(node, "stride", 3, 1)
    dilation = _ints(node, "dilation", 3, 1)
    pads = _ints(node, "pads", 6, 0)
    groups = int(_scalar(node, "groups", (int,)))  # type: ignore[call-overload]
    weight = node.params.get("weight")
    if weight is None or weight.ndim != 5:
        raise _fail(node, "needs a 5D parameter 'weight' (C_out, C_in/groups, kd, kh, kw)")
    c_out = weight.shape[0]
    if groups < 1 or x.channels % groups or c_out % groups:
        raise _fail(node, f"groups={groups} must divide C_in={x.channels} and C_out={c_out}")
    _param(node, "weight", (c_out, x.channels // groups, *kernel))
    if "bias" in node.params:
        _param(node, "bias", (c_out,))
    _no_params(node, ("weight", "bias", *epilogue_params(node)))
    spatial = conv_spatial(x.spatial, kernel, pads, stride, dilation)
    out = TensorType(c_out, _positive(node, spatial, f"input {x} with kernel {kernel}"))
    return _check_epilogue(node, [x, *types[sources:]], out)


def _conv_transpose(node: Node, types: Sequence[TensorType]) -> TensorType:
    x = types[0]
    kernel = _ints(node, "kernel", 3, 1)
    stride = _ints(node, "stride", 3, 1)
    dilation = _ints(node, "dilation", 3, 1)
    pads = _ints(node, "pads", 6, 0)
    output_padding = _ints(node, "output_padding", 3, 0)
    groups = int(_scalar(node, "groups", (int,)))  # type: ignore[call-overload]
    weight = node.params.get("weight")
    if weight is None or weight.ndim != 5:
        raise _fail(node, "needs a 5D parameter 'weight' (C_in, C_out/groups, kd, kh, kw)")
    if groups < 1 or x.channels % groups:
        raise _fail(node, f"groups={groups} must divide C_in={x.channels}")
    c_out = weight.shape[1] * groups
    _param(node, "weight", (x.channels, c_out // groups, *kernel))
    if "bias" in node.params:
        _param(node, "bias", (c_out,))
    _no_params(node, ("weight", "bias", *epilogue_params(node)))
    for i in range(3):
        if output_padding[i] >= max(stride[i], dilation[i]):
            raise _fail(
                node,
                f"output_padding {output_padding} must be smaller than stride {stride} "
                f"or dilation {dilation} on each axis",
            )
    spatial = [
        (size - 1) * stride[i]
        + dilation[i] * (kernel[i] - 1)
        + 1
        + output_padding[i]
        - pads[i]
        - pads[i + 3]
        for i, size in enumerate(x.spatial)
    ]
    out = TensorType(c_out, _positive(node, spatial, f"input {x} with pads {pads}"))
    return _check_epilogue(node, types, out)


def pool_dilation(node: Node) -> tuple[int, ...]:
    """A pooling window's dilation: the optional attribute `dilation`, else 1 on every axis."""
    return _ints(node, "dilation", 3, 1) if "dilation" in node.attrs else (1, 1, 1)


def window_dilation(node: Node) -> tuple[int, int, int]:
    """The dilation of a conv's or a pool's window."""
    d = node.attrs["dilation"] if node.op == "conv" else pool_dilation(node)
    return (int(d[0]), int(d[1]), int(d[2]))


def _pool(node: Node, types: Sequence[TensorType]) -> TensorType:
    (x,) = types
    kernel = _ints(node, "kernel", 3, 1)
    stride = _ints(node, "stride", 3, 1)
    pads = _ints(node, "pads", 6, 0)
    dilation = pool_dilation(node)
    ceil_mode = bool(_scalar(node, "ceil_mode", (bool,)))
    if node.op == "avg_pool":
        _scalar(node, "count_include_pad", (bool,))
    _no_params(node)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    for i in range(3):
        if pads[i] >= span[i] or pads[i + 3] >= span[i]:
            raise _fail(node, f"pads {pads} must be smaller than the (dilated) window {tuple(span)}")
    spatial = pool_output(x.spatial, kernel, stride, pads, ceil_mode, dilation)
    return TensorType(x.channels, _positive(node, spatial, f"input {x}"))


def pool_output(
    spatial: Shape3, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int], ceil_mode: bool,
    dilation: Sequence[int] = (1, 1, 1),
) -> list[int]:
    """Output sizes of a pooling window; in ceil mode a last window must start inside the input."""
    out = []
    for i, size in enumerate(spatial):
        span = size + pads[i] + pads[i + 3] - (kernel[i] - 1) * dilation[i] - 1
        n = (math.ceil(span / stride[i]) if ceil_mode else span // stride[i]) + 1
        if ceil_mode and (n - 1) * stride[i] >= size + pads[i]:
            n -= 1
        out.append(n)
    return out


def _batchnorm(node: Node, types: Sequence[TensorType]) -> TensorType:
    (x,) = types
    if float(_scalar(node, "eps", (int, float))) <= 0:  # type: ignore[arg-type]
        raise _fail(node, f"eps must be positive, got {node.attrs['eps']}")
    for key in ("mean", "var", "gamma", "beta"):
        _param(node, key, (x.channels,))
    _no_params(node, ("mean", "var", "gamma", "beta"))
    return x


def _scale(node: Node, types: Sequence[TensorType]) -> TensorType:
    (x,) = types
    _param(node, "gamma", (x.channels,))
    if "beta" in node.params:
        _param(node, "beta", (x.channels,))
    _no_params(node, ("gamma", "beta"))
    return x


def _activation(node: Node, types: Sequence[TensorType]) -> TensorType:
    if node.op in ("leaky_relu", "elu"):
        _scalar(node, "alpha", (int, float))
    _no_params(node)
    return types[0]


def _unary(node: Node, types: Sequence[TensorType]) -> TensorType:
    _no_params(node)
    return types[0]


def _prelu(node: Node, types: Sequence[TensorType]) -> TensorType:
    """PReLU: x below 0 times `slope`, one per channel or one shared (PyTorch's default)."""
    slope = node.params.get("slope")
    if slope is None or slope.shape not in ((1,), (types[0].channels,)):
        raise _fail(node, f"needs a parameter 'slope' of shape (1,) or ({types[0].channels},), got "
                          f"{None if slope is None else slope.shape}")
    _no_params(node, ("slope",))
    return types[0]


def _binary(node: Node, types: Sequence[TensorType]) -> TensorType:
    if len(types) == 1:
        constant = node.params.get("constant")
        if constant is None or constant.ndim != 1 or constant.shape[0] not in (1, types[0].channels):
            raise _fail(
                node,
                f"with one input it needs a 1D parameter 'constant' of length 1 or "
                f"{types[0].channels}, got {None if constant is None else constant.shape}",
            )
        return types[0]
    _no_params(node)
    _same_spatial(node, types)
    a, b = (t.channels for t in types)
    if a != b and 1 not in (a, b):
        raise _fail(node, f"channel counts {a} and {b} do not broadcast (equal, or one of them 1)")
    return TensorType(max(a, b), types[0].spatial)


def _concat(node: Node, types: Sequence[TensorType]) -> TensorType:
    _no_params(node)
    _same_spatial(node, types)
    return TensorType(sum(t.channels for t in types), types[0].spatial)


def _crop(node: Node, types: Sequence[TensorType]) -> TensorType:
    (x,) = types
    begin = _ints(node, "begin", 3, 0)
    end = _ints(node, "end", 3, 0)
    _no_params(node)
    spatial = [s - b - e for s, b, e in zip(x.spatial, begin, end)]
    return TensorType(x.channels, _positive(node, spatial, f"cropping {x} by {begin}/{end}"))


def _center_crop(node: Node, types: Sequence[TensorType]) -> TensorType:
    x, ref = types
    _no_params(node)
    if any(r > s for r, s in zip(ref.spatial, x.spatial)):
        raise _fail(node, f"cannot crop {x} to the larger reference {ref}")
    return TensorType(x.channels, ref.spatial)


def center_crop_begin(source: Shape3, target: Shape3) -> Shape3:
    """Leading margin of a center crop: the extra voxel of an odd difference goes to the end."""
    d, h, w = ((s - t) // 2 for s, t in zip(source, target))
    return (d, h, w)


def _pad(node: Node, types: Sequence[TensorType]) -> TensorType:
    (x,) = types
    pads = _ints(node, "pads", 6, 0)
    mode = _choice(node, "mode", PAD_MODES)
    _scalar(node, "value", (int, float))
    _no_params(node)
    if mode == "reflect" and any(pads[i] >= x.spatial[i] or pads[i + 3] >= x.spatial[i] for i in range(3)):
        raise _fail(node, f"reflect pads {pads} must be smaller than the input {x}")
    return TensorType(x.channels, tuple(s + pads[i] + pads[i + 3] for i, s in enumerate(x.spatial)))  # type: ignore[arg-type]


def _upsample(node: Node, types: Sequence[TensorType]) -> TensorType:
    (x,) = types
    scales = _floats(node, "scales", 3)
    _choice(node, "mode", UPSAMPLE_MODES)
    _scalar(node, "align_corners", (bool,))
    _no_params(node)
    spatial = [math.floor(s * f) for s, f in zip(x.spatial, scales)]
    return TensorType(x.channels, _positive(node, spatial, f"resizing {x} by {scales}"))


def _fragment(node: Node, types: Sequence[TensorType]) -> TensorType:
    (x,) = types
    block = _ints(node, "block", 3, 1)
    window = fragment_window(node)
    _no_params(node)
    filtered = tuple(s - k + 1 for s, k in zip(x.spatial, window))
    _positive(node, filtered, f"input {x} with the max window {window}")
    if any(s % b for s, b in zip(filtered, block)):
        raise _fail(node, f"input {x} (after the max window {window}: {filtered}) is not a multiple of the block "
                          f"{block} on every axis")
    spatial = tuple(s // b for s, b in zip(filtered, block))
    return TensorType(x.channels, spatial, x.fragments * math.prod(block))  # type: ignore[arg-type]


def fragment_window(node: Node) -> tuple[int, ...]:
    """The max window a `fragment` takes first (optional attribute `window`; 1 on every axis: none)."""
    return _ints(node, "window", 3, 1) if "window" in node.attrs else (1, 1, 1)


def _defragment(node: Node, types: Sequence[TensorType]) -> TensorType:
    (x,) = types
    block = _ints(node, "block", 3, 1)
    _no_params(node)
    if x.fragments % math.prod(block):
        raise _fail(node, f"block {block} needs a multiple of {math.prod(block)} fragments, got {x}")
    spatial = tuple(s * b for s, b in zip(x.spatial, block))
    return TensorType(x.channels, spatial, x.fragments // math.prod(block))  # type: ignore[arg-type]


@dataclass(frozen=True)
class OpSpec:
    """Arity and shape rule of one op; `infer` also checks attributes and parameters."""

    min_inputs: int
    max_inputs: int
    infer: Callable[[Node, Sequence[TensorType]], TensorType]


OPS: dict[str, OpSpec] = {
    "conv": OpSpec(1, 1 << 16, _conv),
    "conv_transpose": OpSpec(1, 2, _conv_transpose),
    "batchnorm": OpSpec(1, 1, _batchnorm),
    "scale": OpSpec(1, 1, _scale),
    **{op: OpSpec(1, 1, _activation) for op in ACTIVATIONS},
    "prelu": OpSpec(1, 1, _prelu),
    "softmax": OpSpec(1, 1, _unary),
    **{op: OpSpec(1, 2, _binary) for op in BINARY},
    "concat": OpSpec(1, 1 << 16, _concat),
    "crop": OpSpec(1, 1, _crop),
    "center_crop": OpSpec(2, 2, _center_crop),
    "pad": OpSpec(1, 1, _pad),
    "max_pool": OpSpec(1, 1, _pool),
    "avg_pool": OpSpec(1, 1, _pool),
    "upsample": OpSpec(1, 1, _upsample),
    "identity": OpSpec(1, 1, _unary),
    "fragment": OpSpec(1, 1, _fragment),
    "defragment": OpSpec(1, 1, _defragment),
}
FRAGMENT_OPS = frozenset({"fragment", "defragment"})


def infer_node(node: Node, types: Sequence[TensorType]) -> TensorType:
    """The output type of `node` given its input types; raises GraphError on any broken rule."""
    spec = OPS.get(node.op)
    if spec is None:
        raise _fail(node, f"unknown op; the IR knows {sorted(OPS)}")
    if not spec.min_inputs <= len(types) <= spec.max_inputs:
        raise _fail(node, f"takes {spec.min_inputs}..{spec.max_inputs} inputs, got {len(types)}")
    out = spec.infer(node, types)
    if node.op in FRAGMENT_OPS:
        return out
    counts = sorted({t.fragments for t in types})
    if len(counts) > 1:
        raise _fail(node, f"inputs hold different fragment counts {counts} ({[str(t) for t in types]}): a value "
                          f"inside a max-pooling-fragment section meets one outside it")
    return replace(out, fragments=counts[0])
