"""Import Caffe networks (.prototxt) with weights from .caffemodel, .npz or HDF5 files.

One converter per layer type. Blobs are addressed by name; an in-place layer (top == bottom)
rebinds the name to its output. The net's outputs are the blobs whose last value no later layer
reads. `weights="random"` gives seeded random weights and BatchNorm statistics of the right
shapes, for benchmarks and for inspecting nets whose weights are not published.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from znnx.errors import ModelError, UnsupportedError
from znnx.frontends.builder import GraphBuilder, lift, lift_weight
from znnx.frontends.caffe_weights import Blobs, read_weights
from znnx.frontends.prototxt import Message, PrototxtError, parse
from znnx.ir.graph import Graph
from znnx.ir.ops import pool_output

IR_OPS = frozenset({"add", "avg_pool", "batchnorm", "center_crop", "concat", "conv", "conv_transpose", "crop", "elu",
                    "identity", "leaky_relu", "max", "max_pool", "mul", "prelu", "relu", "scale", "sigmoid",
                    "softmax", "tanh"})
"""The IR ops this frontend emits (crops become center_crop where they centre, outputs that are
inputs become identity)."""

COMPONENT = "caffe frontend"
RANDOM = "random"


def _axis_values(param: Message, key: str, rank: int, default: int) -> tuple[int, int, int]:
    """A per-axis setting from repeated `key` (one value or one per axis) or `key_h`/`key_w`."""
    values = param.ints(key)
    if not values and (param.has(f"{key}_h") or param.has(f"{key}_w")):
        values = [param.get_int(f"{key}_d", default)] * (rank == 3) + [param.get_int(f"{key}_h", default),
                                                                   param.get_int(f"{key}_w", default)]
    if not values:
        values = [default]
    if len(values) == 1:
        values = values * rank
    if len(values) != rank:
        raise PrototxtError(f"{param.source}:{param.line}: {key} has {len(values)} values for a "
                            f"{rank}D net (give 1 or {rank})")
    return lift(values, 1 if key != "pad" else 0)


class _Converter:
    def __init__(self, net: Message, blobs: Blobs | None, rank: int, source: str) -> None:
        self.net = net
        self.blobs = blobs
        self.rank = rank
        self.source = source
        self.b = GraphBuilder(COMPONENT, rank, net.get_str("name", Path(source).stem) or "caffe")
        self.env: dict[str, str] = {}
        self.layer = Message((), 0, source)
        self.rng = np.random.default_rng(0)

    # -- helpers ------------------------------------------------------------------------------------
    def label(self) -> str:
        return f"{self.source}:{self.layer.line}: layer {self.layer.get_str('name')!r} ({self.layer.get_str('type')})"

    def fail(self, message: str) -> UnsupportedError:
        return UnsupportedError(f"{COMPONENT}: {self.label()}: {message}")

    def bottoms(self, count: int | None = None) -> list[str]:
        names = self.layer.strs("bottom")
        if count is not None and len(names) != count:
            raise ModelError(f"{COMPONENT}: {self.label()}: needs {count} bottom(s), got {len(names)}")
        missing = [n for n in names if n not in self.env]
        if missing:
            raise ModelError(f"{COMPONENT}: {self.label()}: bottom {missing[0]!r} names no top of an earlier "
                             f"layer; known blobs: {sorted(self.env)}")
        return [self.env[n] for n in names]

    def add(self, op: str, inputs: Sequence[str], attrs: dict[str, Any] | None = None,
            params: dict[str, np.ndarray] | None = None, suffix: str = "") -> str:
        return self.b.add(op, inputs, attrs, params, name=self.layer.get_str("name") + suffix, where=self.label())

    def weights(self, shapes: Sequence[tuple[int, ...]], random: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
        """This layer's blobs, checked against the shapes the prototxt implies."""
        name = self.layer.get_str("name")
        if self.blobs is None:
            return random()
        if name not in self.blobs:
            raise ModelError(f"{COMPONENT}: {self.label()}: the weights hold no blobs for this layer")
        found = self.blobs[name]
        if len(found) != len(shapes):
            raise ModelError(f"{COMPONENT}: {self.label()}: expected {len(shapes)} blob(s) of shapes "
                             f"{list(shapes)}, the weights hold {len(found)}: {[b.shape for b in found]}")
        out = []
        for i, (blob, shape) in enumerate(zip(found, shapes)):
            if blob.size != math.prod(shape):
                raise ModelError(f"{COMPONENT}: {self.label()}: blob {i} has shape {blob.shape}, expected {shape}")
            out.append(blob.reshape(shape))
        return out

    # -- layers ---------------------------------------------------------------------------------------
    def convolution(self, transposed: bool) -> str:
        (x,) = self.bottoms(1)
        p = self.layer.message("convolution_param")
        if p.get_int("axis", 1) != 1:
            raise self.fail(f"convolution over axis {p.get_int('axis', 1)} is not supported (axis 1)")
        kernel = _axis_values(p, "kernel_size", self.rank, 1)
        stride = _axis_values(p, "stride", self.rank, 1)
        dilation = _axis_values(p, "dilation", self.rank, 1)
        pad = _axis_values(p, "pad", self.rank, 0)
        groups, c_out, c_in = p.get_int("group", 1), p.get_int("num_output", 0), self.b.type(x).channels
        if c_out < 1:
            raise ModelError(f"{COMPONENT}: {self.label()}: convolution_param.num_output must be positive")
        spatial = kernel[3 - self.rank:]
        shape = (c_in, c_out // groups, *spatial) if transposed else (c_out, c_in // groups, *spatial)
        shapes = [shape, (c_out,)] if p.get_bool("bias_term", True) else [shape]

        def random() -> list[np.ndarray]:
            fan_in = math.prod(shape[1:]) if not transposed else c_in // groups * math.prod(spatial)
            return [self.rng.normal(0, math.sqrt(1 / fan_in), shape), *(self.rng.normal(0, 0.1, s) for s in shapes[1:])]

        blobs = self.weights(shapes, random)
        params = {"weight": lift_weight(blobs[0])}
        if len(blobs) == 2:
            params["bias"] = blobs[1]
        attrs: dict[str, Any] = {"kernel": kernel, "stride": stride, "dilation": dilation, "pads": (*pad, *pad),
                                 "groups": groups}
        if transposed:
            attrs["output_padding"] = (0, 0, 0)
        return self.add("conv_transpose" if transposed else "conv", [x], attrs, params)

    def batchnorm(self) -> str:
        (x,) = self.bottoms(1)
        c = self.b.type(x).channels
        param = self.layer.message("batch_norm_param")
        if not param.get_bool("use_global_stats", True):
            raise self.fail("use_global_stats: false normalizes by batch statistics; znnx runs inference with "
                            "the stored statistics (remove the field or set it true)")
        eps = param.get_float("eps", 1e-5)

        def random() -> list[np.ndarray]:
            return [self.rng.uniform(-0.2, 0.2, c), self.rng.uniform(0.5, 1.5, c), np.ones(1)]

        mean, var, factor = self.weights([(c,), (c,), (1,)], random)
        scale = 0.0 if factor[0] == 0 else 1.0 / factor[0]
        params = {"mean": mean * scale, "var": var * scale, "gamma": np.ones(c), "beta": np.zeros(c)}
        return self.add("batchnorm", [x], {"eps": eps}, params)

    def scale(self) -> str:
        if len(self.layer.strs("bottom")) != 1:
            raise self.fail("Scale by a second bottom blob is not supported (learned per-channel scale only)")
        (x,) = self.bottoms(1)
        p = self.layer.message("scale_param")
        if p.get_int("axis", 1) != 1 or p.get_int("num_axes", 1) != 1:
            raise self.fail("Scale with axis/num_axes other than 1/1 is not supported (per-channel only)")
        c = self.b.type(x).channels
        shapes = [(c,), (c,)] if p.get_bool("bias_term", False) else [(c,)]
        blobs = self.weights(shapes, lambda: [self.rng.uniform(0.5, 1.5, c), *([self.rng.normal(0, 0.1, c)]
                                                                              * (len(shapes) - 1))])
        params = {"gamma": blobs[0], **({"beta": blobs[1]} if len(blobs) == 2 else {})}
        return self.add("scale", [x], params=params)

    def eltwise(self) -> str:
        inputs = self.bottoms()
        p = self.layer.message("eltwise_param")
        operation = p.get_str("operation", "SUM")
        op = {"SUM": "add", "PROD": "mul", "MAX": "max", "1": "add", "0": "mul", "2": "max"}.get(operation)
        if op is None or len(inputs) < 2:
            raise ModelError(f"{COMPONENT}: {self.label()}: needs >= 2 bottoms and operation SUM, PROD or MAX, "
                             f"got {len(inputs)} bottoms and {operation!r}")
        coeffs = p.floats("coeff")
        if coeffs and (op != "add" or len(coeffs) != len(inputs)):
            raise ModelError(f"{COMPONENT}: {self.label()}: coeff needs operation SUM and one value per bottom, "
                             f"got {coeffs} for {len(inputs)} bottoms")
        if coeffs:
            inputs = [x if c == 1 else self.add("mul", [x], params={"constant": np.array([c])}, suffix=f"_coeff{i}")
                      for i, (x, c) in enumerate(zip(inputs, coeffs))]
        result = inputs[0]
        for i, other in enumerate(inputs[1:], 1):
            result = self.add(op, [result, other], suffix="" if i == len(inputs) - 1 else f"_{i}")
        return result

    def pooling(self) -> str:
        (x,) = self.bottoms(1)
        p = self.layer.message("pooling_param")
        kind = p.get_str("pool", "MAX")
        if kind not in ("MAX", "AVE", "0", "1"):
            raise self.fail(f"pooling method {kind!r} is not supported (MAX and AVE are)")
        spatial = self.b.type(x).spatial
        if p.get_bool("global_pooling", False):
            kernel, stride, pad = spatial, (1, 1, 1), (0, 0, 0)
        else:
            kernel = _axis_values(p, "kernel_size", self.rank, 1)
            stride = _axis_values(p, "stride", self.rank, 1)
            pad = _axis_values(p, "pad", self.rank, 0)
        pads = (*pad, *pad)
        ours = pool_output(spatial, kernel, stride, pads, True)
        caffe = [math.ceil((s + 2 * q - k) / st) + 1 for s, q, k, st in zip(spatial, pad, kernel, stride)]
        caffe = [n - 1 if q and (n - 1) * st >= s + q else n for n, s, q, st in zip(caffe, spatial, pad, stride)]
        if ours != caffe:
            raise self.fail(f"Caffe keeps a pooling window that starts past the input ({caffe} windows for input "
                            f"{spatial}, kernel {kernel}, stride {stride}); not supported")
        op = "max_pool" if kind in ("MAX", "0") else "avg_pool"
        attrs: dict[str, Any] = {"kernel": kernel, "stride": stride, "pads": pads, "ceil_mode": True}
        if op == "avg_pool":
            attrs["count_include_pad"] = True
        return self.add(op, [x], attrs)

    def concat(self) -> str:
        p = self.layer.message("concat_param")
        axis = p.get_int("axis", p.get_int("concat_dim", 1))
        if axis not in (1, 1 - (self.rank + 2)):
            raise self.fail(f"Concat over axis {axis} is not supported (channels, axis 1)")
        return self.add("concat", self.bottoms())

    def merge_crop(self) -> str:
        small, large = self.bottoms(2)
        operation = self.layer.message("mergecrop_param").get_str("operation", "STACK")
        cropped = self.add("center_crop", [large, small], suffix="_crop")
        if operation in ("STACK", "0"):
            return self.add("concat", [small, cropped])
        if operation in ("ADD", "1"):
            return self.add("add", [small, cropped])
        raise self.fail(f"MergeCrop operation {operation!r} is not supported (STACK, ADD)")

    def crop(self) -> str:
        x, ref = self.bottoms(2)
        p = self.layer.message("crop_param")
        axis = p.get_int("axis", 2)
        axis = axis + self.rank + 2 if axis < 0 else axis
        if axis < 2:
            raise self.fail(f"Crop from axis {axis} would crop batch or channels; only spatial crops are supported")
        offsets = p.ints("offset") or [0]
        spatial_axes = self.rank + 2 - axis
        offsets = offsets * spatial_axes if len(offsets) == 1 else offsets
        if len(offsets) != spatial_axes:
            raise ModelError(f"{COMPONENT}: {self.label()}: crop_param.offset has {len(offsets)} values for "
                             f"{spatial_axes} cropped axes")
        source, target = self.b.type(x).spatial, self.b.type(ref).spatial
        begin = [0] * (3 - spatial_axes) + offsets
        end = [s - b - (t if i >= 3 - spatial_axes else s) for i, (s, b, t) in enumerate(zip(source, begin, target))]
        if any(e < 0 for e in end):
            raise ModelError(f"{COMPONENT}: {self.label()}: offsets {offsets} crop past the end of {source}")
        return self.add("crop", [x], {"begin": tuple(begin), "end": tuple(end)})

    def activation(self, op: str, attrs: dict[str, Any] | None = None) -> str:
        (x,) = self.bottoms(1)
        return self.add(op, [x], attrs)

    def relu(self) -> str:
        slope = self.layer.message("relu_param").get_float("negative_slope", 0.0)
        return self.activation("leaky_relu", {"alpha": slope}) if slope else self.activation("relu")

    def prelu(self) -> str:
        """PReLU: one learned slope per channel, or one for all with channel_shared (Caffe's filler
        default: 0.25)."""
        (x,) = self.bottoms(1)
        n = 1 if self.layer.message("prelu_param").get_bool("channel_shared", False) else self.b.type(x).channels
        (slope,) = self.weights([(n,)], lambda: [np.full(n, 0.25)])
        return self.add("prelu", [x], params={"slope": slope})

    def softmax(self) -> str:
        axis = self.layer.message("softmax_param").get_int("axis", 1)
        if axis not in (1, 1 - (self.rank + 2)):
            raise self.fail(f"Softmax over axis {axis} is not supported (channels, axis 1)")
        return self.activation("softmax")

    def converters(self) -> dict[str, Callable[[], str | list[str]]]:
        return {
            "Convolution": lambda: self.convolution(False),
            "Deconvolution": lambda: self.convolution(True),
            "BatchNorm": self.batchnorm,
            "Scale": self.scale,
            "ReLU": self.relu,
            "ELU": lambda: self.activation("elu", {"alpha": self.layer.message("elu_param").get_float("alpha", 1.0)}),
            "Sigmoid": lambda: self.activation("sigmoid"),
            "TanH": lambda: self.activation("tanh"),
            "PReLU": self.prelu,
            "Eltwise": self.eltwise,
            "Concat": self.concat,
            "Crop": self.crop,
            "MergeCrop": self.merge_crop,
            "Pooling": self.pooling,
            "Dropout": lambda: self.bottoms(1)[0],
            "Split": lambda: [self.bottoms(1)[0]] * len(self.layer.strs("top")),
            "Softmax": self.softmax,
        }

    # -- the net --------------------------------------------------------------------------------------
    def run(self, input_shape: Sequence[int] | None) -> Graph:
        layers = [layer for layer in self.net.messages("layer") if _in_test_phase(layer)]
        inputs = _inputs(self.net, layers, self.source)
        if len(inputs) != 1:
            raise UnsupportedError(f"{COMPONENT}: {self.source}: znnx needs exactly one input blob, found "
                                   f"{[name for name, _ in inputs]}")
        name, dims = inputs[0]
        shape = tuple(input_shape) if input_shape is not None else tuple(dims[1:])
        self.env[name] = self.b.add_input(name, int(shape[0]), [int(s) for s in shape[1:]])
        read_after: dict[str, bool] = {}
        converters = self.converters()
        for layer in layers:
            self.layer = layer
            kind = layer.get_str("type")
            if kind == "Input":
                continue
            converter = converters.get(kind)
            if converter is None:
                raise self.fail(f"layer type {kind!r} is not supported; znnx reads {sorted(converters)}")
            tops = layer.strs("top")
            result = converter()
            results = result if isinstance(result, list) else [result]
            if len(results) != len(tops):
                raise ModelError(f"{COMPONENT}: {self.label()}: has {len(tops)} tops, expected {len(results)}")
            for bottom in layer.strs("bottom"):
                read_after[bottom] = True
            for top, value in zip(tops, results):
                self.env[top] = value
                read_after[top] = False
        outputs = [self.env[top] for top, read in read_after.items() if not read and top != name]
        if not outputs:
            raise ModelError(f"{COMPONENT}: {self.source}: no output blob (every top is read by a later layer)")
        return self.b.finish(outputs)


def _in_test_phase(layer: Message) -> bool:
    included = [m.get_str("phase") for m in layer.messages("include") if m.has("phase")]
    excluded = [m.get_str("phase") for m in layer.messages("exclude") if m.has("phase")]
    return (not included or "TEST" in included) and "TEST" not in excluded


def _inputs(net: Message, layers: list[Message], source: str) -> list[tuple[str, list[int]]]:
    """(name, dims) of each net input: `input:` fields or Input layers."""
    found = []
    names = net.strs("input")
    shapes = [m.ints("dim") for m in net.messages("input_shape")]
    legacy = net.ints("input_dim")
    for i, name in enumerate(names):
        if i < len(shapes):
            dims = shapes[i]
        else:
            dims = legacy if len(names) == 1 else legacy[i * 4:(i + 1) * 4]
        found.append((name, dims))
    for layer in layers:
        if layer.get_str("type") == "Input":
            shapes = [m.ints("dim") for m in layer.message("input_param").messages("shape")]
            for i, top in enumerate(layer.strs("top")):
                found.append((top, shapes[min(i, len(shapes) - 1)] if shapes else []))
    for name, dims in found:
        if not 2 <= len(dims) <= 5:
            raise ModelError(f"{COMPONENT}: {source}: input {name!r} needs a shape (N, C, *spatial) with 0..3 "
                             f"spatial axes, got {dims}; give input_shape=(C, *spatial)")
    return found


def load_caffe(prototxt: str | Path, weights: str | Path | Mapping[str, Sequence[np.ndarray]] | None = None,
               input_shape: Sequence[int] | None = None) -> Graph:
    """Import a Caffe net. `weights`: a .caffemodel/.npz/.h5 path, a mapping of blobs per layer name, or
    "random" for seeded random weights. Without weights, a net that has parameters is refused."""
    path = Path(prototxt)
    if not path.is_file():
        raise ModelError(f"{COMPONENT}: prototxt file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"{COMPONENT}: {str(path)!r} is not a text prototxt (binary .caffemodel given as the "
                         f"net? pass it as weights=)") from None
    net = parse(text, str(path))
    if net.has("layers"):
        raise UnsupportedError(f"{COMPONENT}: {path}: the old V1 'layers' format is not supported; upgrade it "
                               f"with Caffe's upgrade_net_proto_text tool")
    blobs = None if isinstance(weights, str) and weights == RANDOM else _required(weights, net, path)
    rank = len(input_shape) - 1 if input_shape is not None else None
    if rank is None:
        layers = [layer for layer in net.messages("layer") if _in_test_phase(layer)]
        found = _inputs(net, layers, str(path))
        rank = len(found[0][1]) - 2 if found else 3
    if not 0 <= rank <= 3:
        raise ModelError(f"{COMPONENT}: {path}: input needs 0..3 spatial axes, got {rank}")
    return _Converter(net, blobs, rank, str(path)).run(input_shape)


def _required(weights: str | Path | Mapping[str, Sequence[np.ndarray]] | None, net: Message, path: Path) -> Blobs:
    if weights is not None:
        return read_weights(weights)
    with_params = [layer.get_str("name") for layer in net.messages("layer")
                   if layer.get_str("type") in ("Convolution", "Deconvolution", "BatchNorm", "Scale")]
    if with_params:
        raise ModelError(f"{COMPONENT}: {path}: layers such as {with_params[0]!r} need weights; pass "
                         f"weights='net.caffemodel' (or .npz/.h5), or weights='random' for random weights")
    return {}
