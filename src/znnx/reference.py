"""A slow, obviously correct NumPy executor of the IR: the oracle every pass, kernel and backend
is tested against. It imports no torch and computes in float64.

Arrays are (N, C, D, H, W). Each op is a plain function of arrays and the node's attributes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from znnx.errors import InputError
from znnx.ir.graph import Graph, Node
from znnx.ir.ops import ACTIVATIONS, center_crop_begin, conv_sources, fragment_window, pool_dilation, pool_output

Array = np.ndarray


def _spatial_pad(pads: Sequence[int]) -> list[tuple[int, int]]:
    return [(0, 0), (0, 0)] + [(pads[i], pads[i + 3]) for i in range(3)]


def _window(start: int, count: int, step: int) -> slice:
    return slice(start, start + (count - 1) * step + 1, step)


def conv(x: Array, weight: Array, bias: Array | None, stride: Sequence[int],
         dilation: Sequence[int], pads: Sequence[int], groups: int) -> Array:
    """Cross-correlation: out[n, o, p] = sum over c, k of w[o, c, k] * xpad[n, c, p*stride + k*dilation]."""
    x = np.pad(x, _spatial_pad(pads))
    c_out, c_in_g, *kernel = weight.shape
    out_sp = [(x.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(3)]
    out = np.zeros((x.shape[0], c_out, *out_sp))
    c_out_g = c_out // groups
    for g in range(groups):
        xg = x[:, g * c_in_g:(g + 1) * c_in_g]
        wg = weight[g * c_out_g:(g + 1) * c_out_g]
        for k in itertools.product(*(range(n) for n in kernel)):
            window = (slice(None), slice(None),
                      *(_window(k[i] * dilation[i], out_sp[i], stride[i]) for i in range(3)))
            tap = wg[:, :, k[0], k[1], k[2]]
            out[:, g * c_out_g:(g + 1) * c_out_g] += np.einsum("oc,ncdhw->nodhw", tap, xg[window])
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1, 1)
    return out


def conv_transpose(x: Array, weight: Array, bias: Array | None, stride: Sequence[int],
                   dilation: Sequence[int], pads: Sequence[int], output_padding: Sequence[int],
                   groups: int) -> Array:
    """Scatter form: input voxel p adds w[c, o, k] * x[n, c, p] to full[n, o, p*stride + k*dilation];
    the output is full[begin_pad : begin_pad + size], zeros past the end of full."""
    c_in, c_out_g, *kernel = weight.shape
    in_sp = x.shape[2:]
    full_sp = [(in_sp[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 for i in range(3)]
    full = np.zeros((x.shape[0], c_out_g * groups, *full_sp))
    c_in_g = c_in // groups
    for g in range(groups):
        xg = x[:, g * c_in_g:(g + 1) * c_in_g]
        wg = weight[g * c_in_g:(g + 1) * c_in_g]
        for k in itertools.product(*(range(n) for n in kernel)):
            window = (slice(None), slice(g * c_out_g, (g + 1) * c_out_g),
                      *(_window(k[i] * dilation[i], in_sp[i], stride[i]) for i in range(3)))
            full[window] += np.einsum("co,ncdhw->nodhw", wg[:, :, k[0], k[1], k[2]], xg)
    out_sp = [full_sp[i] + output_padding[i] - pads[i] - pads[i + 3] for i in range(3)]
    out = np.zeros((x.shape[0], full.shape[1], *out_sp))
    src = tuple(slice(pads[i], min(full_sp[i], pads[i] + out_sp[i])) for i in range(3))
    dst = tuple(slice(0, s.stop - s.start) for s in src)
    out[(slice(None), slice(None), *dst)] = full[(slice(None), slice(None), *src)]
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1, 1)
    return out


def pool(x: Array, kind: str, kernel: Sequence[int], stride: Sequence[int], pads: Sequence[int],
         ceil_mode: bool, count_include_pad: bool, dilation: Sequence[int] = (1, 1, 1)) -> Array:
    """Max or average over (dilated) windows of the padded input. Average divides by the number of
    window voxels inside the input (or inside the padded input when count_include_pad)."""
    out_sp = pool_output(x.shape[2:], kernel, stride, pads, ceil_mode, dilation)  # type: ignore[arg-type]
    span = [(kernel[i] - 1) * dilation[i] + 1 for i in range(3)]
    extra = [max(0, (out_sp[i] - 1) * stride[i] + span[i] - (x.shape[2 + i] + pads[i] + pads[i + 3]))
             for i in range(3)]
    full_pads = [*pads[:3], *(pads[3 + i] + extra[i] for i in range(3))]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, _spatial_pad(full_pads), constant_values=fill)
    windows = [
        (slice(None), slice(None), *(_window(k[i] * dilation[i], out_sp[i], stride[i]) for i in range(3)))
        for k in itertools.product(*(range(n) for n in kernel))
    ]
    if kind == "max":
        return np.max([xp[w] for w in windows], axis=0)
    counted = np.ones((1, 1, *x.shape[2:]))
    counted = np.pad(counted, _spatial_pad(pads), constant_values=1.0 if count_include_pad else 0.0)
    counted = np.pad(counted, _spatial_pad([0, 0, 0, *extra]))
    return np.sum([xp[w] for w in windows], axis=0) / np.sum([counted[w] for w in windows], axis=0)


def fragment(x: Array, block: Sequence[int]) -> Array:
    """(N, C, D, H, W) -> (prod(block) * N, C, D/bd, H/bh, W/bw): fragment (a, b, c) of entry n, at
    ((a*bh + b)*bw + c)*N + n, holds voxels (a + bd*i, b + bh*j, c + bw*k)."""
    n, c, *sizes = x.shape
    out = np.empty((*block, n, c, *(s // b for s, b in zip(sizes, block))))
    for a, b, k in itertools.product(*(range(v) for v in block)):
        out[a, b, k] = x[:, :, a::block[0], b::block[1], k::block[2]]
    return out.reshape(-1, *out.shape[4:])


def defragment(x: Array, block: Sequence[int]) -> Array:
    """The inverse of `fragment`: fragments interleaved back into whole patches."""
    parts = x.reshape(*block, -1, *x.shape[1:])
    n, c, *sizes = parts.shape[3:]
    out = np.empty((n, c, *(s * b for s, b in zip(sizes, block))))
    for a, b, k in itertools.product(*(range(v) for v in block)):
        out[:, :, a::block[0], b::block[1], k::block[2]] = parts[a, b, k]
    return out


def interpolation_taps(size_in: int, scale: float, mode: str, align_corners: bool) -> tuple[Array, Array, Array]:
    """Per output index along one axis: the two input indices it reads (lo, hi) and the weight of hi
    (frac; the weight of lo is 1 - frac), as PyTorch's interpolate computes them. Nearest reads one
    index (lo == hi, frac 0)."""
    size_out = math.floor(size_in * scale)
    dst = np.arange(size_out, dtype=np.float64)
    if mode == "nearest":
        src = np.minimum(np.floor(dst * np.float32(1.0 / scale)), size_in - 1).astype(int)
        return src, src, np.zeros(size_out)
    if align_corners:
        pos = dst * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros_like(dst)
    else:
        pos = np.maximum((dst + 0.5) / scale - 0.5, 0.0)
    lo = np.minimum(np.floor(pos).astype(int), size_in - 1)
    return lo, np.minimum(lo + 1, size_in - 1), pos - lo


def _interpolation_matrix(size_in: int, scale: float, mode: str, align_corners: bool) -> Array:
    lo, hi, frac = interpolation_taps(size_in, scale, mode, align_corners)
    matrix = np.zeros((len(lo), size_in))
    np.add.at(matrix, (np.arange(len(lo)), lo), 1.0 - frac)
    np.add.at(matrix, (np.arange(len(lo)), hi), frac)
    return matrix


def upsample(x: Array, scales: Sequence[float], mode: str, align_corners: bool) -> Array:
    """Separable resize: one interpolation matrix per spatial axis (one-hot rows for nearest)."""
    for axis in range(3):
        matrix = _interpolation_matrix(x.shape[2 + axis], scales[axis], mode, align_corners)
        x = np.moveaxis(np.tensordot(x, matrix, axes=([2 + axis], [1])), -1, 2 + axis)
    return x


def softmax(x: Array) -> Array:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _channel(vector: Array) -> Array:
    return vector.astype(np.float64).reshape(1, -1, 1, 1, 1)


def _binary(node: Node, args: Sequence[Array]) -> Array:
    a, b = args if len(args) == 2 else (args[0], _channel(node.params["constant"]))
    if node.op == "add":
        return a + b
    if node.op == "mul":
        return a * b
    if node.op == "max":
        return np.maximum(a, b)
    return a / b


def _crop(x: Array, begin: Sequence[int], size: Sequence[int]) -> Array:
    return x[(slice(None), slice(None), *(slice(b, b + s) for b, s in zip(begin, size)))]


_PAD_MODES = {"constant": "constant", "replicate": "edge", "reflect": "reflect"}


def _pad(node: Node, x: Array) -> Array:
    mode = _PAD_MODES[node.attrs["mode"]]
    if mode == "constant":
        return np.pad(x, _spatial_pad(node.attrs["pads"]), constant_values=node.attrs["value"])
    return np.pad(x, _spatial_pad(node.attrs["pads"]), mode=mode)  # type: ignore[call-overload]


def _p(node: Node, key: str) -> Array | None:
    value = node.params.get(key)
    return None if value is None else value.astype(np.float64)


def activation(op: str, x: Array, alpha: float = 0.0) -> Array:
    """An IR activation of `x` (ir/ops.py ACTIVATIONS; `alpha` for leaky_relu and elu)."""
    if op == "relu":
        return np.maximum(x, 0.0)
    if op == "leaky_relu":
        return np.where(x > 0, x, x * alpha)
    if op == "elu":
        return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    if op == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if op == "gelu":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if op == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if op == "silu":
        return x / (1.0 + np.exp(-x))
    if op == "mish":
        return x * np.tanh(np.logaddexp(0.0, x))
    if op == "softplus":
        return np.logaddexp(0.0, x)
    if op == "erf":
        return _erf(x)
    return np.tanh(x)


def _prelu(x: Array, slope: Array) -> Array:
    """x below 0 times its channel's slope (one per channel, or one shared)."""
    return np.where(x > 0, x, x * _channel(slope))


def _erf(x: Array) -> Array:
    """erf elementwise (NumPy has none): math.erf voxel by voxel, exact to double, slow."""
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _epilogue(node: Node, out: Array, args: Sequence[Array]) -> Array:
    """A conv's fused steps in order: add the residual (the input after its sources), scale per
    channel, apply the activation."""
    for step in node.attrs.get("epilogue", ()):
        if step == "add":
            out = out + args[conv_sources(node)]
        elif step == "scale":
            out = out * _channel(node.params["scale_gamma"]) + _channel(node.params["scale_beta"])
        elif step == "prelu":
            out = _prelu(out, node.params["prelu_slope"])
        else:
            out = activation(step, out, node.attrs.get("alpha", 0.0))
    return out


OpFn = Callable[[Node, Sequence[Array]], Array]

OPS: dict[str, OpFn] = {
    "conv": lambda n, a: _epilogue(n, conv(
        np.concatenate(a[:conv_sources(n)], axis=1), _p(n, "weight"), _p(n, "bias"), n.attrs["stride"],  # type: ignore[arg-type]
        n.attrs["dilation"], n.attrs["pads"], n.attrs["groups"]), a),
    "conv_transpose": lambda n, a: _epilogue(n, conv_transpose(
        a[0], _p(n, "weight"), _p(n, "bias"), n.attrs["stride"], n.attrs["dilation"],  # type: ignore[arg-type]
        n.attrs["pads"], n.attrs["output_padding"], n.attrs["groups"]), a),
    "batchnorm": lambda n, a: (a[0] - _channel(n.params["mean"]))
    / np.sqrt(_channel(n.params["var"]) + n.attrs["eps"]) * _channel(n.params["gamma"])
    + _channel(n.params["beta"]),
    "scale": lambda n, a: a[0] * _channel(n.params["gamma"])
    + (_channel(n.params["beta"]) if "beta" in n.params else 0.0),
    **{op: (lambda n, a: activation(n.op, a[0], n.attrs.get("alpha", 0.0))) for op in ACTIVATIONS},
    "prelu": lambda n, a: _prelu(a[0], n.params["slope"]),
    "softmax": lambda n, a: softmax(a[0]),
    "add": _binary,
    "mul": _binary,
    "div": _binary,
    "max": _binary,
    "concat": lambda n, a: np.concatenate(a, axis=1),
    "crop": lambda n, a: _crop(a[0], n.attrs["begin"], [
        s - b - e for s, b, e in zip(a[0].shape[2:], n.attrs["begin"], n.attrs["end"])]),
    "center_crop": lambda n, a: _crop(a[0], center_crop_begin(a[0].shape[2:], a[1].shape[2:]),
                                      a[1].shape[2:]),
    "pad": lambda n, a: _pad(n, a[0]),
    "max_pool": lambda n, a: pool(a[0], "max", n.attrs["kernel"], n.attrs["stride"], n.attrs["pads"],
                                  n.attrs["ceil_mode"], False, pool_dilation(n)),
    "avg_pool": lambda n, a: pool(a[0], "avg", n.attrs["kernel"], n.attrs["stride"], n.attrs["pads"],
                                  n.attrs["ceil_mode"], n.attrs["count_include_pad"], pool_dilation(n)),
    "upsample": lambda n, a: upsample(a[0], n.attrs["scales"], n.attrs["mode"], n.attrs["align_corners"]),
    "identity": lambda n, a: a[0],
    "fragment": lambda n, a: fragment(pool(a[0], "max", fragment_window(n), (1, 1, 1), (0,) * 6, False, False),
                                      n.attrs["block"]),
    "defragment": lambda n, a: defragment(a[0], n.attrs["block"]),
}


def run(graph: Graph, inputs: Mapping[str, Array]) -> dict[str, Array]:
    """Execute `graph` on 5D arrays (N, C, D, H, W) keyed by input name; returns float64 outputs."""
    values: dict[str, Array] = {}
    for name in graph.inputs:
        if name not in inputs:
            raise InputError(f"reference: missing graph input {name!r}; inputs are {list(graph.inputs)}")
        array = np.asarray(inputs[name], dtype=np.float64)
        expected = (graph.types[name].channels, *graph.types[name].spatial)
        if array.ndim != 5 or array.shape[1:] != expected:
            raise InputError(f"reference: input {name!r} must be (N, {expected}), got {array.shape}")
        values[name] = array
    last_use = {value: i for i, node in enumerate(graph.nodes) for value in node.inputs}
    keep = set(graph.outputs)
    for i, node in enumerate(graph.nodes):
        values[node.output] = OPS[node.op](node, [values[v] for v in node.inputs])
        for value in set(node.inputs):
            if last_use[value] == i and value not in keep:
                del values[value]
    return {name: values[name] for name in graph.outputs}
