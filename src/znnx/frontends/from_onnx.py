"""Import ONNX models (opsets 13 to 21 for the supported ops; older opsets where semantics agree).

Values are either activations (IR values) or constants (initializers, Constant nodes, and nodes
whose inputs are all constants, folded with onnx's reference evaluator). Each supported op maps to
one IR node; every unsupported op or attribute raises UnsupportedError naming the node.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from znnx.errors import GraphError, ModelError, UnsupportedError
from znnx.frontends.builder import GraphBuilder, lift, lift_pads, lift_weight
from znnx.frontends.idioms import normalize_crops
from znnx.ir.graph import Graph
from znnx.ir.ops import PATCH_STATISTICS

IR_OPS = frozenset({"add", "avg_pool", "batchnorm", "center_crop", "concat", "conv", "conv_transpose", "crop", "div",
                    "elu", "erf", "gelu", "gelu_tanh", "identity", "leaky_relu", "max_pool", "mish", "mul", "pad",
                    "prelu", "relu", "sigmoid", "softmax", "softplus", "tanh", "upsample"})
"""The IR ops this frontend emits (crops become center_crop where they centre, outputs that are
inputs become identity)."""

COMPONENT = "onnx frontend"
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}


def _read(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    if isinstance(source, onnx.ModelProto):
        return source, "<ModelProto>"
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"{COMPONENT}: model file {str(path)!r} does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises DecodeError, or others on broken external data
        raise ModelError(f"{COMPONENT}: {str(path)!r} is not a readable ONNX model (corrupt or truncated "
                         f"file?): {type(error).__name__}: {error}") from None
    return model, repr(str(path))


def _check(model: onnx.ModelProto, where: str) -> None:
    if not model.graph.node:
        raise ModelError(f"{COMPONENT}: {where} holds no graph nodes (empty, truncated or not an ONNX file)")
    try:
        onnx.checker.check_model(model)
    except Exception as error:  # onnx.checker.ValidationError and its C++ relatives
        first = str(error).strip().splitlines()[0]
        raise ModelError(f"{COMPONENT}: {where} fails the ONNX checker (corrupt or truncated?): {first}") from None


class _Converter:
    def __init__(self, model: onnx.ModelProto, where: str, rank: int) -> None:
        self.where = where
        self.rank = rank
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.b = GraphBuilder(COMPONENT, rank, model.graph.name or Path(where.strip("'")).stem)
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.acts: dict[str, str] = {}
        self.onnx_node: onnx.NodeProto | None = None
        self.index = 0
        self.table = self.converters()
        self.attrs: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------------------------
    def label(self) -> str:
        node = self.onnx_node
        if node is None:
            return self.where
        return f"{self.where} node {node.name or f'#{self.index}'!r} ({node.op_type})"

    def fail(self, message: str) -> UnsupportedError:
        return UnsupportedError(f"{COMPONENT}: {self.label()}: {message}")

    def act(self, index: int) -> str:
        assert self.onnx_node is not None
        name = self.onnx_node.input[index]
        if name not in self.acts:
            raise self.fail(f"input {index} ({name!r}) must be an activation tensor, got a constant")
        return self.acts[name]

    def const(self, index: int, default: np.ndarray | None = None) -> np.ndarray | None:
        assert self.onnx_node is not None
        inputs = self.onnx_node.input
        if index >= len(inputs) or not inputs[index]:
            return default
        if inputs[index] not in self.consts:
            raise self.fail(f"input {index} ({inputs[index]!r}) must be a constant (initializer), "
                            f"got a computed tensor")
        return self.consts[inputs[index]]

    def need(self, index: int) -> np.ndarray:
        value = self.const(index)
        if value is None:
            raise self.fail(f"input {index} is required")
        return value

    def spatial_axes(self, axes: Sequence[int], what: str) -> list[int]:
        rank = self.rank + 2
        normal = [a + rank if a < 0 else a for a in axes]
        if any(a < 2 for a in normal):
            raise self.fail(f"{what} over the batch or channel axis is not supported (axes {list(axes)})")
        return [a - 2 + 3 - self.rank for a in normal]

    def add(self, op: str, inputs: Sequence[str], attrs: dict[str, Any] | None = None,
            params: dict[str, np.ndarray] | None = None) -> str:
        assert self.onnx_node is not None
        return self.b.add(op, inputs, attrs, params, name=self.onnx_node.name or op, where=self.label())

    def auto_pads(self, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
        """Explicit IR pads from `pads` or `auto_pad` (SAME_* computed for the static input shape)."""
        mode = self.attrs.get("auto_pad", "NOTSET")
        n = self.rank
        if mode in ("NOTSET", ""):
            pads = list(self.attrs.get("pads", [0] * 2 * n))
            return lift_pads(pads[:n], pads[n:])
        if mode == "VALID":
            return (0,) * 6
        spatial = self.b.type(self.act(0)).spatial[3 - n:]
        begin, end = [], []
        for size, k, s, d in zip(spatial, kernel[3 - n:], stride[3 - n:], dilation[3 - n:]):
            total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
            small = total // 2
            begin.append(small if mode == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return lift_pads(begin, end)

    def ints(self, key: str, default: int) -> tuple[int, int, int]:
        return lift(list(self.attrs.get(key, [default] * self.rank)), default)

    def weights(self) -> tuple[dict[str, np.ndarray], tuple[int, ...], tuple[int, int, int], tuple[int, int, int]]:
        """Conv/ConvTranspose parameters (weight lifted to 3D, optional bias), kernel, stride, dilation."""
        weight = lift_weight(self.need(1).astype(np.float64))
        params = {"weight": weight}
        bias = self.const(2)
        if bias is not None:
            params["bias"] = bias
        return params, tuple(weight.shape[2:]), self.ints("strides", 1), self.ints("dilations", 1)

    # -- op converters ---------------------------------------------------------------------------
    def conv(self) -> str:
        params, kernel, stride, dilation = self.weights()
        attrs = {"kernel": kernel, "stride": stride, "dilation": dilation,
                 "pads": self.auto_pads(kernel, stride, dilation), "groups": int(self.attrs.get("group", 1))}
        return self.add("conv", [self.act(0)], attrs, params)

    def conv_transpose(self) -> str:
        params, kernel, stride, dilation = self.weights()
        output_padding = self.ints("output_padding", 0)
        x = self.act(0)
        mode = self.attrs.get("auto_pad", "NOTSET")
        if "output_shape" in self.attrs or mode in ("SAME_UPPER", "SAME_LOWER"):
            spatial = self.b.type(x).spatial
            wanted = lift(self.attrs["output_shape"][-self.rank:], 1) if "output_shape" in self.attrs else \
                tuple(s * st for s, st in zip(spatial, stride))
            begin, end = [], []
            for i in range(3):
                total = stride[i] * (spatial[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilation[i] + 1 - wanted[i]
                if total < 0:
                    raise self.fail(f"output_shape {wanted} needs negative padding; not supported")
                first = total // 2 if mode != "SAME_LOWER" else total - total // 2
                begin.append(first)
                end.append(total - first)
            pads: tuple[int, ...] = (*begin, *end)
        else:
            pads = self.auto_pads(kernel, stride, dilation)
        attrs = {"kernel": kernel, "stride": stride, "dilation": dilation, "pads": pads,
                 "output_padding": output_padding, "groups": int(self.attrs.get("group", 1))}
        return self.add("conv_transpose", [x], attrs, params)

    def batchnorm(self) -> str:
        if self.attrs.get("training_mode", 0):
            raise self.fail("BatchNormalization with training_mode=1 is not supported (inference only)")
        gamma, beta, mean, var = (self.need(i) for i in range(1, 5))
        params = {"gamma": gamma, "beta": beta, "mean": mean, "var": var}
        return self.add("batchnorm", [self.act(0)], {"eps": float(self.attrs.get("epsilon", 1e-5))}, params)

    def pool(self, op: str) -> str:
        kernel = lift(list(self.attrs["kernel_shape"]), 1)
        stride, dilation = self.ints("strides", 1), self.ints("dilations", 1)
        attrs: dict[str, Any] = {"kernel": kernel, "stride": stride,
                                 "pads": self.auto_pads(kernel, stride, dilation),
                                 "ceil_mode": bool(self.attrs.get("ceil_mode", 0))}
        if any(d != 1 for d in dilation):
            attrs["dilation"] = dilation
        if op == "avg_pool":
            attrs["count_include_pad"] = bool(self.attrs.get("count_include_pad", 0))
        return self.add(op, [self.act(0)], attrs)

    def binary(self, op: str) -> str:
        assert self.onnx_node is not None
        a, b = self.onnx_node.input[:2]
        if a in self.acts and b in self.acts:
            ta, tb = self.b.type(self.acts[a]), self.b.type(self.acts[b])
            if ta.spatial != tb.spatial:
                raise self.fail(f"broadcasting {ta} with {tb} over spatial axes is not supported")
            return self.add(op, [self.acts[a], self.acts[b]])
        if b in self.consts:
            return self.add(op, [self.act(0)], params={"constant": self.channel_const(self.consts[b])})
        if op in ("add", "mul") and a in self.consts:
            return self.add(op, [self.act(1)], params={"constant": self.channel_const(self.consts[a])})
        raise self.fail(f"{op} with a constant numerator is not supported")

    def channel_const(self, array: np.ndarray) -> np.ndarray:
        rank = self.rank + 2
        if array.ndim > rank:
            raise self.fail(f"constant of shape {array.shape} has more axes than the activations")
        full = array.reshape((1,) * (rank - array.ndim) + array.shape)
        if full.shape[0] != 1 or any(s != 1 for s in full.shape[2:]):
            raise self.fail(f"a constant of shape {array.shape} broadcasts over batch or spatial axes; "
                            f"znnx supports scalars and per-channel (C, 1, ...) constants")
        return full.reshape(-1).astype(np.float64)

    def softmax(self) -> str:
        axis = int(self.attrs.get("axis", -1 if self.opset >= 13 else 1))
        if self.opset < 13:
            raise self.fail(f"Softmax of opset {self.opset} flattens its input; re-export with opset >= 13")
        if axis not in (1, 1 - (self.rank + 2)):
            raise self.fail(f"Softmax over axis {axis}; znnx supports softmax over channels (axis 1)")
        return self.add("softmax", [self.act(0)])

    def concat(self) -> str:
        assert self.onnx_node is not None
        axis = int(self.attrs["axis"])
        if axis not in (1, 1 - (self.rank + 2)):
            raise self.fail(f"Concat over axis {axis}; znnx concatenates channels (axis 1)")
        names = [n for n in self.onnx_node.input if n]
        if any(n not in self.acts for n in names):
            raise self.fail("concatenating a constant is not supported")
        return self.add("concat", [self.acts[n] for n in names])

    def slice(self) -> str:
        if self.opset < 10:
            starts, ends = self.attrs["starts"], self.attrs["ends"]
            axes, steps = self.attrs.get("axes", list(range(len(starts)))), [1] * len(starts)
        else:
            starts, ends = list(self.need(1)), list(self.need(2))
            axes = list(self.const(3, np.arange(len(starts))))  # type: ignore[arg-type]
            steps = list(self.const(4, np.ones(len(starts), dtype=np.int64)))  # type: ignore[arg-type]
        if any(int(s) != 1 for s in steps):
            raise self.fail(f"Slice with steps {[int(s) for s in steps]} is not supported (only 1)")
        x = self.act(0)
        spatial = self.b.type(x).spatial
        begin, end = [0, 0, 0], [0, 0, 0]
        for axis, start, stop in zip(self.spatial_axes([int(a) for a in axes], "Slice"), starts, ends):
            first, last = slice(_clamp(start), _clamp(stop)).indices(spatial[axis])[:2]
            begin[axis], end[axis] = first, spatial[axis] - max(last, first)
        if not any(begin) and not any(end):
            return x
        return self.add("crop", [x], {"begin": tuple(begin), "end": tuple(end)})

    def pad(self) -> str:
        modes = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}
        mode = self.attrs.get("mode", "constant")
        if mode not in modes:
            raise self.fail(f"Pad mode {mode!r} is not supported ({sorted(modes)} are)")
        rank = self.rank + 2
        if self.opset < 11:
            pads, value = list(self.attrs["pads"]), float(self.attrs.get("value", 0.0))
            axes = list(range(rank))
        else:
            pads = [int(p) for p in self.need(1)]
            value_array = np.asarray(self.const(2, np.zeros(())))
            value = float(value_array.reshape(-1)[0]) if value_array.size else 0.0
            axes = [int(a) for a in self.const(3, np.arange(rank))]  # type: ignore[union-attr]
        axes = [a + rank if a < 0 else a for a in axes]
        begin, end = [0] * rank, [0] * rank
        for i, axis in enumerate(axes):
            begin[axis], end[axis] = pads[i], pads[i + len(axes)]
        if any(begin[:2]) or any(end[:2]):
            raise self.fail(f"Pad pads the batch or channel axis ({pads}); only spatial axes are supported")
        if any(p < 0 for p in pads):
            raise self.fail(f"negative pads {pads} are not supported")
        return self.add("pad", [self.act(0)], {"pads": lift_pads(begin[2:], end[2:]), "mode": modes[mode],
                                               "value": value})

    def resize(self) -> str:
        if self.opset < 11:
            raise self.fail(f"Resize of opset {self.opset} is not supported; re-export with opset >= 13")
        a = self.attrs
        mode = a.get("mode", "nearest")
        transform = a.get("coordinate_transformation_mode", "half_pixel")
        for key, ok in (("antialias", 0), ("exclude_outside", 0), ("keep_aspect_ratio_policy", "stretch")):
            if a.get(key, ok) != ok:
                raise self.fail(f"Resize with {key}={a[key]!r} is not supported")
        x = self.act(0)
        rank = self.rank + 2
        axes = [int(v) + rank if int(v) < 0 else int(v) for v in a.get("axes", range(rank))]
        spatial = self.b.type(x).spatial[3 - self.rank:]
        in_full = [1, self.b.type(x).channels, *spatial]
        scales_in, sizes = self.const(2), self.const(3)
        factors = [1.0] * rank
        if sizes is not None and np.size(sizes):
            for axis, size in zip(axes, sizes):
                ratio = float(size) / in_full[axis]
                while math.floor(in_full[axis] * ratio) < int(size):
                    ratio = math.nextafter(ratio, math.inf)
                factors[axis] = ratio
        elif scales_in is not None:
            for axis, scale in zip(axes, scales_in):
                factors[axis] = float(scale)
        if factors[0] != 1 or factors[1] != 1:
            raise self.fail(f"Resize of the batch or channel axis (scales {factors[:2]}) is not supported")
        spatial_scales = factors[2:]
        out_sizes = [math.floor(s * f) for s, f in zip(spatial, spatial_scales)]
        if transform == "align_corners" and any(not (s * f).is_integer() for s, f in zip(spatial, spatial_scales)):
            raise self.fail(f"align_corners Resize to the fractional lengths "
                            f"{[s * f for s, f in zip(spatial, spatial_scales)]} is not supported (ONNX "
                            f"interpolates over the unrounded length, PyTorch over the rounded one)")
        if transform == "pytorch_half_pixel" and 1 in out_sizes:
            raise self.fail(f"pytorch_half_pixel Resize to an output length of 1 ({out_sizes}) is not supported")
        if mode == "nearest":
            nearest = a.get("nearest_mode", "round_prefer_floor")
            asym_floor = transform == "asymmetric" and nearest == "floor"
            integer_up = (transform in ("half_pixel", "pytorch_half_pixel")
                          and nearest in ("round_prefer_floor", "round_prefer_ceil")
                          and all(float(s).is_integer() for s in spatial_scales))
            if not (asym_floor or integer_up):
                raise self.fail(f"nearest Resize with coordinate_transformation_mode={transform!r}, "
                                f"nearest_mode={nearest!r}, scales {spatial_scales} is not supported "
                                f"(asymmetric+floor, or half_pixel with integer scales, are)")
            align = False
        elif mode == "linear":
            if transform not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
                raise self.fail(f"linear Resize with coordinate_transformation_mode={transform!r} is not "
                                f"supported (half_pixel, pytorch_half_pixel, align_corners are)")
            align = transform == "align_corners"
        else:
            raise self.fail(f"Resize mode {mode!r} is not supported (nearest and linear are)")
        scales = tuple(float(s) for s in [1.0] * (3 - self.rank) + spatial_scales)
        return self.add("upsample", [x], {"scales": scales, "mode": "nearest" if mode == "nearest" else "trilinear",
                                          "align_corners": align})

    def gelu(self) -> str:
        approximate = str(self.attrs.get("approximate", "none"))
        if approximate not in ("none", "tanh"):
            raise self.fail(f"Gelu with approximate={approximate!r}; znnx supports 'none' and 'tanh'")
        return self.add("gelu" if approximate == "none" else "gelu_tanh", [self.act(0)])

    def prelu(self) -> str:
        x = self.act(0)
        channels = self.b.type(x).channels
        slope = np.asarray(self.need(1), dtype=np.float64)
        per_channel = (1,) * (slope.ndim - self.rank - 1) + (channels,) + (1,) * self.rank
        if slope.size != 1 and slope.shape != per_channel[-slope.ndim:]:
            raise self.fail(f"PRelu slope of shape {slope.shape} on {channels} channels; znnx supports one slope or "
                            f"one per channel (shape {per_channel[-self.rank - 1:]})")
        return self.add("prelu", [x], {}, {"slope": slope.reshape(-1)})

    def dropout(self) -> str:
        assert self.onnx_node is not None
        training = np.asarray(self.const(2, np.zeros((), dtype=bool)))
        if training.size and bool(training.reshape(-1)[0]):
            raise self.fail("Dropout with training_mode=True is random; znnx runs inference only")
        return self.act(0)

    def converters(self) -> dict[str, Callable[[], str]]:
        unary = lambda op, **attrs: lambda: self.add(op, [self.act(0)], attrs)
        return {
            "Conv": self.conv,
            "ConvTranspose": self.conv_transpose,
            "BatchNormalization": self.batchnorm,
            "Relu": unary("relu"),
            "LeakyRelu": lambda: self.add("leaky_relu", [self.act(0)], {"alpha": float(self.attrs.get("alpha", 0.01))}),
            "Elu": lambda: self.add("elu", [self.act(0)], {"alpha": float(self.attrs.get("alpha", 1.0))}),
            "Sigmoid": unary("sigmoid"),
            "Tanh": unary("tanh"),
            "Gelu": self.gelu,
            "Mish": unary("mish"),
            "Softplus": unary("softplus"),
            "Erf": unary("erf"),
            "PRelu": self.prelu,
            "Softmax": self.softmax,
            "Add": lambda: self.binary("add"),
            "Mul": lambda: self.binary("mul"),
            "Div": lambda: self.binary("div"),
            "Concat": self.concat,
            "Slice": self.slice,
            "Pad": self.pad,
            "MaxPool": lambda: self.pool("max_pool"),
            "AveragePool": lambda: self.pool("avg_pool"),
            "Resize": self.resize,
            "Identity": lambda: self.act(0),
            "Dropout": self.dropout,
        }

    def shape(self, name: str) -> np.ndarray:
        """An activation's shape (N, C, *spatial) as the constant ONNX's Shape gives (N = 1), so that
        shape arithmetic (Gather, Slice, Div, Concat, ...) folds to constants at the import patch."""
        t = self.b.type(self.acts[name])
        full = np.array([1, t.channels, *t.spatial[3 - self.rank:]], dtype=np.int64)
        return full[slice(self.attrs.get("start"), self.attrs.get("end"))]

    def fold(self, node: onnx.NodeProto) -> None:
        """Evaluate a node whose inputs are all constants (shape arithmetic, Constant nodes)."""
        from onnx.reference import ReferenceEvaluator

        try:
            feeds = {name: self.consts[name] for name in node.input if name}
            results = ReferenceEvaluator(node).run(None, feeds)
        except Exception as error:  # the reference evaluator raises anything its ops raise
            raise self.fail(f"cannot evaluate this constant expression: {error}") from None
        for name, value in zip(node.output, results):
            self.consts[name] = np.asarray(value)

    def convert(self, index: int, node: onnx.NodeProto) -> None:
        self.onnx_node, self.index = node, index
        self.attrs = {a.name: _attr(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx"):
            raise self.fail(f"operator domain {node.domain!r} is not supported (only the default ONNX domain)")
        if node.op_type == "Shape" and node.input[0] in self.acts:
            self.consts[node.output[0]] = self.shape(node.input[0])
            return
        if all(name in self.consts for name in node.input if name):
            self.fold(node)
            return
        converter = self.table.get(node.op_type)
        if node.op_type in ("InstanceNormalization", "GroupNormalization", "LayerNormalization"):
            raise self.fail(f"{node.op_type} {PATCH_STATISTICS}")
        if converter is None:
            raise self.fail(f"operator {node.op_type} is not supported; znnx supports {sorted(self.table)}")
        used_extra = [o for o in node.output[1:] if o]
        if used_extra and node.op_type not in ("Dropout",):
            raise self.fail(f"extra outputs {used_extra} are not supported (only the first output)")
        for name in node.input:
            if name and name not in self.acts and name not in self.consts:
                raise ModelError(f"{COMPONENT}: {self.label()} reads {name!r}, which no node, input or "
                                 f"initializer defines") from None
        self.acts[node.output[0]] = converter()


def _clamp(index: Any) -> int:
    """ONNX uses +-2**63-ish sentinels for 'to the end'; Python slices want sane ints."""
    return int(max(min(int(index), 2**62), -(2**62)))


def _attr(attribute: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [v.decode() if isinstance(v, bytes) else v for v in value]
    return value


def _input_shape(value: onnx.ValueInfoProto, given: Sequence[int] | None,
                 where: str) -> tuple[int | None, ...]:
    """(C, *spatial) of a graph input: `given`, or as declared with None for symbolic spatial sizes."""
    tensor = value.type.tensor_type
    if tensor.elem_type not in _FLOAT_TYPES:
        name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise UnsupportedError(f"{COMPONENT}: {where} input {value.name!r} has element type {name}; znnx runs "
                               f"float models (FLOAT, DOUBLE, FLOAT16)")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
    if given is not None:
        shape = tuple(int(s) for s in given)
        if len(dims) and len(dims) != len(shape) + 1:
            raise ModelError(f"{COMPONENT}: input_shape {shape} has rank {len(shape) + 1} with the batch, but "
                             f"{where} input {value.name!r} has rank {len(dims)}")
        return shape
    if not 2 <= len(dims) <= 5:
        raise UnsupportedError(f"{COMPONENT}: {where} input {value.name!r} has rank {len(dims)}; znnx needs "
                               f"(N, C, *spatial) with 0..3 spatial axes")
    if dims[1] is None:
        raise ModelError(f"{COMPONENT}: {where} input {value.name!r} has a symbolic channel axis {dims}; give "
                         f"the input shape (--input-shape C,D,H,W on the command line, input_shape=(C, D, H, W) "
                         f"in Python)")
    return tuple(dims[1:])


DYNAMIC_SIZES = (64, 96, 128, 48, 32, 116, 132, 160, 192, 256, 16)


def _symbolic(value: onnx.ValueInfoProto) -> bool:
    """Whether an input declares a spatial size symbolic (a dynamic export)."""
    dims = value.type.tensor_type.shape.dim
    return any(not (d.HasField("dim_value") and d.dim_value > 0) for d in list(dims)[2:])


def load_onnx(source: str | Path | onnx.ModelProto, input_shape: Sequence[int] | None = None) -> Graph:
    """Import an ONNX model; `input_shape` (C, *spatial) overrides the model's declared input shape.

    Spatial axes declared symbolic (a dynamic export) stay free: the graph is imported with the first
    of DYNAMIC_SIZES along them that the model accepts (or at `input_shape`), and its `source`
    re-imports it at whatever patch `compile` or `infer` chooses, folding the model's shape arithmetic
    for that patch. A model with static axes is imported once; other patches re-type its graph (its
    centre crops were normalized to patch-independent ones)."""
    model, where = _read(source)
    _check(model, where)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if not inputs:
        raise ModelError(f"{COMPONENT}: {where} has no graph input that is not an initializer")
    declared = [_input_shape(v, input_shape, where) for v in inputs]
    if not any(_symbolic(v) for v in inputs):
        return _convert(model, where, inputs, declared)  # type: ignore[arg-type]
    if len(inputs) > 1:
        if any(None in shape for shape in declared):
            raise ModelError(f"{COMPONENT}: {where} has several inputs with symbolic spatial axes; give the input "
                             f"shape (--input-shape C,D,H,W on the command line, input_shape=(C, D, H, W) in Python)")
        return _convert(model, where, inputs, declared)  # type: ignore[arg-type]
    channels = int(declared[0][0])  # type: ignore[arg-type]

    def at(patch: tuple[int, ...]) -> Graph:
        return dataclasses.replace(_convert(model, where, inputs, [(channels, *patch)]), source=at)

    if None not in declared[0]:
        return at(tuple(int(s) for s in declared[0][1:]))  # type: ignore[arg-type]
    failures = []
    for size in DYNAMIC_SIZES:
        try:
            return at(tuple(size if d is None else int(d) for d in declared[0][1:]))
        except (ModelError, GraphError) as error:
            failures.append(f"{size}: {error}")
    raise ModelError(f"{COMPONENT}: {where} has dynamic spatial axes and accepts none of the patches tried "
                     f"({', '.join(str(s) for s in DYNAMIC_SIZES)} per axis; the first failed with: {failures[0]}); "
                     f"give one it accepts (--patch D,H,W on the command line, compile(..., patch=) in Python)")


def _convert(model: onnx.ModelProto, where: str, inputs: Sequence[onnx.ValueInfoProto],
             shapes: Sequence[tuple[int, ...]]) -> Graph:
    """The graph of `model` with its inputs at `shapes` (C, *spatial)."""
    ranks = {len(s) - 1 for s in shapes}
    if len(ranks) != 1 or not ranks <= {0, 1, 2, 3}:
        raise UnsupportedError(f"{COMPONENT}: {where} inputs have spatial ranks {sorted(ranks)}; znnx needs "
                               f"one spatial rank of 0..3 for all inputs")
    converter = _Converter(model, where, ranks.pop())
    for value, shape in zip(inputs, shapes):
        converter.acts[value.name] = converter.b.add_input(value.name, shape[0], shape[1:])
    for index, node in enumerate(model.graph.node):
        converter.convert(index, node)
    converter.onnx_node = None
    missing = [o.name for o in model.graph.output if o.name not in converter.acts]
    if missing:
        raise UnsupportedError(f"{COMPONENT}: {where} outputs {missing} are constants or undefined; znnx "
                               f"needs every output to depend on the input")
    return normalize_crops(converter.b.finish([converter.acts[o.name] for o in model.graph.output]))
