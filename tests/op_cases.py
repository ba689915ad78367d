"""One small single-node graph per IR op (two where an op has modes), for the tests that every
backend, table and the reference executor cover every op."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from znnx.ir import Graph, Node, TensorType, infer_node, verify

CONV = {"kernel": (3, 1, 3), "stride": (1, 1, 2), "dilation": (1, 1, 1), "pads": (1, 0, 1, 1, 0, 0), "groups": 1}


@dataclass(frozen=True)
class OpCase:
    op: str
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    inputs: tuple[TensorType, ...] = (TensorType(2, (4, 5, 6)),)
    label: str = ""

    def __str__(self) -> str:
        return self.op + (f"-{self.label}" if self.label else "")

    def graph(self) -> Graph:
        rng = np.random.default_rng(3)
        params = {k: np.asarray(v, dtype=np.float64) if not isinstance(v, tuple) else rng.standard_normal(v)
                  for k, v in self.params.items()}
        names = tuple(f"x{i}" for i in range(len(self.inputs)))
        node = Node("n", self.op, names, "n", self.attrs, params)
        types = {**dict(zip(names, self.inputs)), "n": infer_node(node, list(self.inputs))}
        return verify(Graph((node,), names, ("n",), types))


POOL = {"kernel": (2, 2, 2), "stride": (2, 2, 1), "pads": (0, 1, 0, 0, 0, 1), "ceil_mode": True}
OP_CASES = (
    OpCase("conv", CONV, {"weight": (3, 2, 3, 1, 3), "bias": (3,)}),
    OpCase("conv", {**CONV, "epilogue": ("add", "elu"), "alpha": 1.0}, {"weight": (2, 2, 3, 1, 3)},
           (TensorType(2, (4, 5, 6)), TensorType(2, (4, 5, 3))), "fused"),
    OpCase("conv", {**CONV, "epilogue": ("add", "scale", "elu"), "alpha": 0.5},
           {"weight": (2, 2, 3, 1, 3), "bias": (2,), "scale_gamma": (2,), "scale_beta": (2,)},
           (TensorType(2, (4, 5, 6)), TensorType(2, (4, 5, 3))), "scaled"),
    OpCase("conv_transpose", {"kernel": (2, 2, 2), "stride": (2, 2, 2), "dilation": (1, 1, 1), "pads": (0,) * 6,
                              "output_padding": (0, 0, 0), "groups": 1}, {"weight": (2, 3, 2, 2, 2), "bias": (3,)}),
    OpCase("batchnorm", {"eps": 1e-3}, {"mean": [0.1, -0.2], "var": [0.5, 2.0], "gamma": [1.5, 0.5],
                                        "beta": [0.0, 1.0]}),
    OpCase("scale", {}, {"gamma": [2.0, -1.0], "beta": [0.5, 0.0]}),
    OpCase("scale", {}, {"gamma": [2.0, -1.0]}, label="no-beta"),
    OpCase("relu"),
    OpCase("leaky_relu", {"alpha": 0.1}),
    OpCase("elu", {"alpha": 0.5}),
    OpCase("sigmoid"),
    OpCase("tanh"),
    *(OpCase(op) for op in ("gelu", "gelu_tanh", "silu", "mish", "softplus", "erf")),
    OpCase("prelu", {}, {"slope": [0.25, -0.5]}),
    OpCase("prelu", {}, {"slope": [0.1]}, label="shared"),
    OpCase("softmax"),
    OpCase("add", inputs=(TensorType(2, (4, 5, 6)),) * 2),
    OpCase("max", inputs=(TensorType(2, (4, 5, 6)),) * 2),
    OpCase("mul", {}, {"constant": [3.0]}),
    OpCase("div", {}, {"constant": [2.0, 4.0]}),
    OpCase("concat", inputs=(TensorType(2, (4, 5, 6)), TensorType(1, (4, 5, 6)), TensorType(3, (4, 5, 6)))),
    OpCase("crop", {"begin": (1, 0, 2), "end": (0, 2, 1)}),
    OpCase("center_crop", inputs=(TensorType(2, (5, 6, 7)), TensorType(3, (2, 3, 6)))),
    OpCase("pad", {"pads": (1, 2, 0, 0, 1, 3), "mode": "reflect", "value": 0.0}),
    OpCase("pad", {"pads": (1, 2, 0, 0, 1, 3), "mode": "constant", "value": 1.5}, label="constant"),
    OpCase("max_pool", POOL),
    OpCase("max_pool", {**POOL, "dilation": (2, 1, 3), "ceil_mode": False}, inputs=(TensorType(20, (7, 5, 9)),),
           label="dilated"),
    OpCase("avg_pool", {**POOL, "count_include_pad": False}),
    OpCase("avg_pool", {**POOL, "dilation": (1, 2, 2), "count_include_pad": True}, label="dilated"),
    OpCase("fragment", {"block": (2, 1, 3)}, inputs=(TensorType(3, (6, 5, 9)),)),
    OpCase("fragment", {"block": (2, 2, 1), "window": (3, 2, 2)}, inputs=(TensorType(19, (6, 5, 4)),),
           label="max-window"),
    OpCase("defragment", {"block": (2, 2, 1)}, inputs=(TensorType(17, (3, 2, 4), 8),)),
    OpCase("upsample", {"scales": (1.0, 2.0, 3.0), "mode": "nearest", "align_corners": False}),
    OpCase("upsample", {"scales": (2.0, 1.5, 2.0), "mode": "trilinear", "align_corners": True}, label="trilinear"),
    OpCase("identity"),
)
