"""Import a `torch.nn.Module` through `torch.export` (ATen ops, static shapes).

Each ATen op maps to IR nodes in `_Converter`; shapes come from the export's fake tensors. Ops
that only alias or copy (dropout in eval mode, clone, contiguous) vanish. Slices become crops;
`idioms.py` later turns U-Net centre crops into crops to a reference tensor.
"""

from __future__ import annotations

import gc
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx

from znnx import heap
from znnx.errors import ModelError, UnsupportedError
from znnx.frontends.builder import GraphBuilder, lift, lift_pads, lift_weight
from znnx.frontends.idioms import normalize_crops
from znnx.ir.graph import Graph
from znnx.ir.ops import PATCH_STATISTICS

IR_OPS = frozenset({"add", "avg_pool", "batchnorm", "center_crop", "concat", "conv", "conv_transpose", "crop", "div",
                    "elu", "erf", "gelu", "gelu_tanh", "identity", "leaky_relu", "max_pool", "mish", "mul", "pad",
                    "prelu", "relu", "sigmoid", "silu", "softmax", "softplus", "tanh", "upsample"})
"""The IR ops this frontend emits (crops become center_crop where they centre, outputs that are
inputs become identity)."""

COMPONENT = "torch frontend"

_ALIASES = frozenset({"clone", "contiguous", "detach", "alias", "lift_fresh_copy", "dropout",
                      "feature_dropout", "alpha_dropout", "feature_alpha_dropout"})
_IGNORED = frozenset({"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size"})


class _Const:
    """A tensor constant (weight, buffer or lifted literal) seen while converting."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _location(node: torch.fx.Node) -> str:
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in \w+\n\s*(.*)', trace)
    if not frames:
        return f"node {node.name!r}"
    file, line, code = frames[-1]
    return f"{file}:{line} `{code.strip()}`"


def _bind(node: torch.fx.Node) -> dict[str, Any]:
    """Arguments of an ATen call by schema name, defaults filled in."""
    schema = node.target._schema  # type: ignore[union-attr]
    bound: dict[str, Any] = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            bound[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            bound[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


def _triple(value: Any, rank: int, fill: int) -> tuple[int, int, int]:
    values = [int(v) for v in (value if isinstance(value, list | tuple) else [value])]
    if len(values) == 1 and rank > 1:
        values = values * rank
    return lift(values, fill)


class _Converter:
    def __init__(self, exported: torch.export.ExportedProgram, rank: int) -> None:
        self.exported = exported
        self.rank = rank
        self.b = GraphBuilder(COMPONENT, rank, type(exported).__name__)
        self.env: dict[torch.fx.Node, Any] = {}
        self.node: torch.fx.Node | None = None
        self.table = self.converters()

    # -- helpers -------------------------------------------------------------------------------
    def fail(self, message: str) -> UnsupportedError:
        where = _location(self.node) if self.node is not None else "model"
        return UnsupportedError(f"{COMPONENT}: {where}: {message}")

    def act(self, value: Any, what: str = "input") -> str:
        if not isinstance(value, str):
            raise self.fail(f"{what} must be an activation tensor, got a constant {type(value).__name__}")
        return value

    def const(self, value: Any, what: str) -> np.ndarray:
        if isinstance(value, _Const):
            return value.array
        raise self.fail(f"{what} must be a constant (a weight or buffer), got an activation")

    def arg(self, value: Any) -> Any:
        if isinstance(value, torch.fx.Node):
            return self.env[value]
        if isinstance(value, list | tuple):
            return type(value)(self.arg(v) for v in value)
        return value

    def spatial_dim(self, dim: int, ndim: int, what: str) -> int:
        dim = dim + ndim if dim < 0 else dim
        if dim < 2:
            raise self.fail(f"{what} over the {'batch' if dim == 0 else 'channel'} axis is not supported; "
                            f"znnx ops act on spatial axes")
        return dim - 2 + (3 - self.rank)

    def add(self, op: str, inputs: Sequence[str], attrs: dict[str, Any] | None = None,
            params: dict[str, np.ndarray] | None = None) -> str:
        assert self.node is not None
        return self.b.add(op, inputs, attrs, params, name=self.node.name, where=_location(self.node))

    # -- op converters ---------------------------------------------------------------------------
    def conv(self, a: dict[str, Any], transposed: bool) -> str:
        weight = lift_weight(self.const(a["weight"], "conv weight"))
        bias = a.get("bias")
        params = {"weight": weight}
        if bias is not None:
            params["bias"] = self.const(bias, "conv bias")
        kernel = weight.shape[2:]
        padding = a.get("padding", 0)
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            else:
                return self.same_conv(a, params, kernel)
        pads = _triple(padding, self.rank, 0)
        attrs = {"kernel": tuple(kernel), "stride": _triple(a.get("stride", 1), self.rank, 1),
                 "dilation": _triple(a.get("dilation", 1), self.rank, 1), "pads": (*pads, *pads),
                 "groups": int(a.get("groups", 1))}
        if transposed:
            attrs["output_padding"] = _triple(a.get("output_padding", 0), self.rank, 0)
            return self.add("conv_transpose", [self.act(a["input"])], attrs, params)
        return self.add("conv", [self.act(a["input"])], attrs, params)

    def same_conv(self, a: dict[str, Any], params: dict[str, np.ndarray], kernel: Sequence[int]) -> str:
        dilation = _triple(a.get("dilation", 1), self.rank, 1)
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        attrs = {"kernel": tuple(kernel), "stride": (1, 1, 1), "dilation": dilation,
                 "pads": (*(t // 2 for t in total), *(t - t // 2 for t in total)),
                 "groups": int(a.get("groups", 1))}
        return self.add("conv", [self.act(a["input"])], attrs, params)

    def convolution(self, a: dict[str, Any]) -> str:
        return self.conv(a, transposed=bool(a["transposed"]))

    def batch_norm(self, a: dict[str, Any]) -> str:
        if a.get("training"):
            raise self.fail("batch_norm in training mode; znnx imports models in eval mode")
        x = self.act(a["input"])
        channels = self.b.type(x).channels
        weight, bias = a.get("weight"), a.get("bias")
        params = {
            "mean": self.const(a["running_mean"], "running_mean"),
            "var": self.const(a["running_var"], "running_var"),
            "gamma": np.ones(channels) if weight is None else self.const(weight, "batch_norm weight"),
            "beta": np.zeros(channels) if bias is None else self.const(bias, "batch_norm bias"),
        }
        return self.add("batchnorm", [x], {"eps": float(a["eps"])}, params)

    def elu(self, a: dict[str, Any]) -> str:
        if float(a.get("scale", 1)) != 1 or float(a.get("input_scale", 1)) != 1:
            raise self.fail("elu with scale or input_scale other than 1 (SELU/CELU) is not supported")
        return self.add("elu", [self.act(a["self"])], {"alpha": float(a["alpha"])})

    def gelu(self, a: dict[str, Any]) -> str:
        approximate = str(a.get("approximate", "none"))
        if approximate not in ("none", "tanh"):
            raise self.fail(f"gelu with approximate={approximate!r}; znnx supports 'none' and 'tanh'")
        return self.add("gelu" if approximate == "none" else "gelu_tanh", [self.act(a["self"])])

    def softplus(self, a: dict[str, Any]) -> str:
        if float(a.get("beta", 1)) != 1:
            raise self.fail(f"softplus with beta={a['beta']}; znnx supports beta=1")
        return self.add("softplus", [self.act(a["self"])])

    def prelu(self, a: dict[str, Any]) -> str:
        x = self.act(a["self"])
        channels = self.b.type(x).channels
        slope = self.const(a["weight"], "prelu weight").reshape(-1)
        if slope.size not in (1, channels):
            raise self.fail(f"prelu with {slope.size} slopes on {channels} channels; it needs 1 or one per channel")
        return self.add("prelu", [x], {}, {"slope": slope})

    def softmax(self, a: dict[str, Any]) -> str:
        x = self.act(a["self"])
        dim = int(a["dim"])
        if dim not in (1, 1 - (self.rank + 2)):
            raise self.fail(f"softmax over dim {dim}; znnx supports softmax over channels (dim=1)")
        return self.add("softmax", [x])

    def binary(self, op: str, a: dict[str, Any]) -> str:
        left, right = a["self"], a["other"]
        alpha = a.get("alpha", 1)
        if isinstance(right, _Const | int | float):
            value = right.array if isinstance(right, _Const) else right
            right = _Const(np.asarray(value, dtype=np.float64) * alpha)
        elif alpha != 1:
            raise self.fail(f"{op} with alpha={alpha} between two activations is not supported")
        if isinstance(left, str) and isinstance(right, str):
            if op == "sub":
                raise self.fail("subtracting one activation from another is not supported")
            return self.add(op, [left, right])
        if op == "sub":
            return self.add("add", [self.act(left)], params={"constant": self.channel_const(-right.array)})
        if isinstance(right, _Const) and isinstance(left, str):
            return self.add(op, [left], params={"constant": self.channel_const(right.array)})
        if op in ("add", "mul") and isinstance(left, _Const | int | float) and isinstance(right, str):
            array = left.array if isinstance(left, _Const) else np.asarray(left, dtype=np.float64)
            return self.add(op, [right], params={"constant": self.channel_const(array)})
        raise self.fail(f"{op} of these operands is not supported (constant divided by a tensor?)")

    def channel_const(self, array: np.ndarray) -> np.ndarray:
        """A broadcast constant as a 1D per-channel vector; spatial broadcasting is not supported."""
        full = np.asarray(array, dtype=np.float64).reshape((1,) * (self.rank + 2 - np.ndim(array)) + np.shape(array))
        if full.ndim > self.rank + 2 or full.shape[0] != 1 or any(s != 1 for s in full.shape[2:]):
            raise self.fail(f"a constant of shape {np.shape(array)} broadcasts over spatial axes; "
                            f"znnx supports scalars and per-channel (1, C, 1, ...) constants")
        return full.reshape(-1)

    def cat(self, a: dict[str, Any]) -> str:
        tensors = [self.act(t, "concatenated tensor") for t in a["tensors"]]
        dim = int(a["dim"])
        if dim not in (1, 1 - (self.rank + 2)):
            raise self.fail(f"cat over dim {dim}; znnx concatenates channels (dim=1)")
        return self.add("concat", tensors)

    def slice(self, a: dict[str, Any]) -> str:
        x = self.act(a["self"])
        axis = self.spatial_dim(int(a["dim"]), self.rank + 2, "slice")
        if int(a.get("step", 1)) != 1:
            raise self.fail(f"slice with step {a['step']}; only step 1 (a crop) is supported")
        size = self.b.type(x).spatial[axis]
        start, end = slice(a.get("start"), a.get("end")).indices(size)[:2]
        begin, stop = [0, 0, 0], [0, 0, 0]
        begin[axis], stop[axis] = start, size - max(end, start)
        if start == 0 and end >= size:
            return x
        return self.add("crop", [x], {"begin": tuple(begin), "end": tuple(stop)})

    def pool(self, op: str, a: dict[str, Any]) -> str:
        kernel = _triple(a["kernel_size"], self.rank, 1)
        stride = _triple(a["stride"], self.rank, 1) if a.get("stride") else kernel
        dilation = _triple(a.get("dilation", 1), self.rank, 1)
        if a.get("divisor_override") is not None:
            raise self.fail("avg_pool with divisor_override is not supported")
        pads = _triple(a.get("padding", 0), self.rank, 0)
        attrs: dict[str, Any] = {"kernel": kernel, "stride": stride, "pads": (*pads, *pads),
                                 "ceil_mode": bool(a.get("ceil_mode", False))}
        if any(d != 1 for d in dilation):
            attrs["dilation"] = dilation
        if op == "avg_pool":
            attrs["count_include_pad"] = bool(a.get("count_include_pad", True))
        return self.add(op, [self.act(a["self"])], attrs)

    def pad(self, a: dict[str, Any], mode: str) -> str:
        x = self.act(a["self"])
        pad = [int(p) for p in a.get("pad", a.get("padding", []))]
        value = float(a.get("value") or 0.0)
        mode = {"reflect": "reflect", "replicate": "replicate", "constant": "constant"}.get(mode, mode)
        if mode not in ("reflect", "replicate", "constant"):
            raise self.fail(f"pad mode {mode!r} is not supported (constant, reflect, replicate are)")
        pairs = [pad[i:i + 2] for i in range(0, len(pad), 2)]
        if len(pairs) > self.rank and any(any(p) for p in pairs[self.rank:]):
            raise self.fail(f"pad {pad} pads the batch or channel axis; znnx pads spatial axes only")
        if any(p < 0 for p in pad):
            raise self.fail(f"negative pad {pad} is not supported; use a slice to crop")
        pairs = (pairs[:self.rank] + [[0, 0]] * self.rank)[:self.rank][::-1]
        pads = lift_pads([p[0] for p in pairs], [p[1] for p in pairs])
        return self.add("pad", [x], {"pads": pads, "mode": mode, "value": value})

    def upsample(self, a: dict[str, Any], mode: str) -> str:
        x = self.act(a["input"])
        spatial = self.b.type(x).spatial[3 - self.rank:]
        factors = a.get("scale_factors")
        if factors is None and any(k in a for k in ("scales_d", "scales_h", "scales_w", "scales")):
            factors = [a.get(k) for k in ("scales_d", "scales_h", "scales_w", "scales") if k in a][-self.rank:]
        if factors is None or any(f is None for f in factors):
            sizes = [int(s) for s in a["output_size"]]
            factors = [s / i for s, i in zip(sizes, spatial)]
        scales = tuple(float(f) for f in [1.0] * (3 - self.rank) + list(factors))
        attrs = {"scales": scales, "mode": mode, "align_corners": bool(a.get("align_corners") or False)}
        return self.add("upsample", [x], attrs)

    # -- dispatch ----------------------------------------------------------------------------------
    def convert_call(self, node: torch.fx.Node) -> Any:
        if node.target is operator.getitem:
            source, index = self.arg(node.args[0]), node.args[1]
            if not isinstance(source, tuple) or index != 0:
                raise self.fail("only the first result of a multi-output op can be used")
            return source[0]
        if not isinstance(node.target, torch._ops.OpOverload):
            raise self.fail(f"call of {node.target!r} is not an ATen operator")
        name = node.target.overloadpacket.__name__.rstrip("_")
        a = {k: self.arg(v) for k, v in _bind(node).items()}
        if name in _IGNORED:
            return None
        if name in _ALIASES:
            if name.endswith("dropout") and a.get("train"):
                raise self.fail("dropout in training mode; znnx imports models in eval mode")
            return a.get("input", a.get("self"))
        converter = self.table.get(name)
        if name.lstrip("_").removeprefix("native_") in ("instance_norm", "group_norm", "layer_norm"):
            raise self.fail(f"aten.{name} {PATCH_STATISTICS}")
        if converter is None:
            raise self.fail(f"operator aten.{name} is not supported; znnx supports {sorted(self.table)}")
        return converter(a)

    def converters(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        unary = lambda op: lambda a: self.add(op, [self.act(a["self"])])
        return {
            **{f"conv{r}d": lambda a: self.conv(a, False) for r in (1, 2, 3)},
            **{f"conv_transpose{r}d": lambda a: self.conv(a, True) for r in (1, 2, 3)},
            "convolution": self.convolution,
            "batch_norm": self.batch_norm,
            "_native_batch_norm_legit_no_training": lambda a: (self.batch_norm(a),),
            "relu": unary("relu"),
            "sigmoid": unary("sigmoid"),
            "tanh": unary("tanh"),
            "elu": self.elu,
            "gelu": self.gelu,
            "silu": unary("silu"),
            "mish": unary("mish"),
            "softplus": self.softplus,
            "erf": unary("erf"),
            "prelu": self.prelu,
            "_prelu_kernel": self.prelu,
            "leaky_relu": lambda a: self.add("leaky_relu", [self.act(a["self"])],
                                             {"alpha": float(a["negative_slope"])}),
            "softmax": self.softmax,
            "_softmax": self.softmax,
            **{op: (lambda o: lambda a: self.binary(o, a))(op) for op in ("add", "sub", "mul", "div")},
            "cat": self.cat,
            "slice": self.slice,
            **{f"max_pool{r}d": lambda a: self.pool("max_pool", a) for r in (1, 2, 3)},
            **{f"max_pool{r}d_with_indices": lambda a: (self.pool("max_pool", a),) for r in (1, 2, 3)},
            **{f"avg_pool{r}d": lambda a: self.pool("avg_pool", a) for r in (1, 2, 3)},
            "pad": lambda a: self.pad(a, str(a.get("mode", "constant"))),
            "constant_pad_nd": lambda a: self.pad(a, "constant"),
            **{f"reflection_pad{r}d": lambda a: self.pad(a, "reflect") for r in (1, 2, 3)},
            **{f"replication_pad{r}d": lambda a: self.pad(a, "replicate") for r in (1, 2, 3)},
            **{f"upsample_nearest{r}d": lambda a: self.upsample(a, "nearest") for r in (1, 2, 3)},
            "upsample_linear1d": lambda a: self.upsample(a, "trilinear"),
            "upsample_bilinear2d": lambda a: self.upsample(a, "trilinear"),
            "upsample_trilinear3d": lambda a: self.upsample(a, "trilinear"),
        }

    def run(self, input_shape: Sequence[int]) -> Graph:
        signature = self.exported.graph_signature
        constants = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
                     **signature.inputs_to_lifted_tensor_constants}
        state = {**self.exported.state_dict, **self.exported.constants}
        outputs: list[str] = []
        for node in self.exported.graph_module.graph.nodes:
            self.node = node
            if node.op == "placeholder":
                if node.name in constants:
                    tensor = state[constants[node.name]]
                    self.env[node] = _Const(tensor.detach().to(torch.float64).cpu().numpy())
                else:
                    self.env[node] = self.b.add_input(node.name, int(input_shape[0]), input_shape[1:])
            elif node.op == "call_function":
                self.env[node] = self.convert_call(node)
            elif node.op == "output":
                outputs = [self.act(self.arg(v), "model output") for v in node.args[0]]
            else:
                raise self.fail(f"fx node kind {node.op!r} ({node.target}) is not supported")
        self.node = None
        return normalize_crops(self.b.finish(outputs))


def _export(module: torch.nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(module, (example,), strict=False)
    except Exception as error:  # torch.export raises many unrelated types; all mean "not capturable"
        text = str(error)
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.*)', text)
        where = f" at {frames[-1][0]}:{frames[-1][1]} `{frames[-1][3].strip()}`" if frames else ""
        if "data-dependent" in text or "GuardOnDataDependent" in type(error).__name__:
            raise ModelError(
                f"{COMPONENT}: the model has dynamic control flow{where}: a branch or loop depends on "
                f"tensor values, so no static graph exists; make it depend on shapes or attributes only"
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
        raise ModelError(f"{COMPONENT}: torch.export could not capture the model{where}: {first}") from None


def load_module(module: torch.nn.Module, input_shape: Sequence[int] | None) -> Graph:
    """Import `module` for inputs shaped (C, *spatial) with 0..3 spatial axes."""
    if input_shape is None:
        raise ModelError(f"{COMPONENT}: input_shape=(C, *spatial) is required to import a torch.nn.Module, "
                         f"e.g. znnx.load(model, input_shape=(1, 64, 64, 64))")
    shape = tuple(int(s) for s in input_shape)
    if not 1 <= len(shape) <= 4 or any(s < 1 for s in shape):
        raise ModelError(f"{COMPONENT}: input_shape must be (C, *spatial) with 0..3 positive spatial sizes, "
                         f"got {tuple(input_shape)}")
    was_training = module.training
    module.eval()
    try:
        exported = _export(module, torch.zeros((1, *shape)))
    finally:
        module.train(was_training)
    graph = _Converter(exported, len(shape) - 1).run(shape)
    del exported
    _release_export_memory()
    return graph


def _release_export_memory() -> None:
    """Free what `torch.export` left behind: the exported program lives in reference cycles (freed only
    by a collection) on the C heap (kept by glibc until trimmed). Importing the original benchmark U-Net
    (85 MB of weights) left 180 MB resident into the compile and the run: RSS 687 -> 508 MiB."""
    gc.collect()
    heap.release()


