"""The PyTorch eager backend agrees with the reference executor, node by node, on random shapes.

Tolerance 1e-5 relative: the backend computes in float32, the oracle in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.nets import rel_error
from tests.op_cases import OP_CASES, OpCase
from tests.strategies import ConvCase, conv_cases, triples
from znnx import reference
from znnx.backends import torch_eager
from znnx.ir import Graph, Node, TensorType, infer_node, verify

TOLERANCE = 1e-5


def _single(node: Node, *inputs: TensorType) -> Graph:
    names = [f"x{i}" for i in range(len(inputs))]
    types = dict(zip(names, inputs))
    types[node.output] = infer_node(node, list(inputs))
    return verify(Graph((node,), tuple(names), (node.output,), types))


def _compare(graph: Graph, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((2 * t.fragments, t.channels, *t.spatial)).astype(np.float32)
              for t in (graph.types[n] for n in graph.inputs)]
    want = reference.run(graph, dict(zip(graph.inputs, arrays)))[graph.outputs[0]]
    got = torch_eager.build(graph, torch.device("cpu"))([torch.from_numpy(a) for a in arrays])[0]
    assert rel_error(got.numpy(), want) < TOLERANCE


def _conv_attrs(case: ConvCase) -> dict[str, object]:
    return {"kernel": case.kernel, "stride": case.stride, "dilation": case.dilation, "pads": case.pads,
            "groups": case.groups}


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(), bias=st.booleans())
def test_conv_any_padding(case: ConvCase, bias: bool) -> None:
    rng = np.random.default_rng(1)
    params = {"weight": rng.standard_normal((case.c_out, case.c_in // case.groups, *case.kernel))}
    if bias:
        params["bias"] = rng.standard_normal(case.c_out)
    _compare(_single(Node("c", "conv", ("x0",), "c", _conv_attrs(case), params), TensorType(case.c_in, case.spatial)))


@settings(max_examples=30, deadline=None)
@given(case=conv_cases(transposed=True))
def test_conv_transpose_any_padding(case: ConvCase) -> None:
    rng = np.random.default_rng(2)
    params = {"weight": rng.standard_normal((case.c_in, case.c_out // case.groups, *case.kernel)),
              "bias": rng.standard_normal(case.c_out)}
    attrs = {**_conv_attrs(case), "output_padding": case.output_padding}
    out = [(s - 1) * st + d * (k - 1) + 1 + op - case.pads[i] - case.pads[i + 3]
           for i, (s, st, d, k, op) in enumerate(zip(case.spatial, case.stride, case.dilation, case.kernel,
                                                     case.output_padding))]
    assume(all(o >= 1 for o in out))
    _compare(_single(Node("t", "conv_transpose", ("x0",), "t", attrs, params), TensorType(case.c_in, case.spatial)))


@pytest.mark.parametrize("kernel, pads, output_padding", [((2, 2, 2), (0,) * 6, (0, 0, 0)),
                                                          ((3, 3, 3), (1, 0, 1, 1, 0, 1), (1, 0, 1))])
def test_conv_transpose_with_add_scale_and_activation(kernel: tuple[int, ...], pads: tuple[int, ...],
                                                      output_padding: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    attrs = {"kernel": kernel, "stride": (2, 2, 2), "dilation": (1, 1, 1), "pads": pads, "groups": 1,
             "output_padding": output_padding, "epilogue": ("add", "scale", "elu"), "alpha": 0.7}
    params = {"weight": rng.standard_normal((3, 5, *kernel)), "bias": rng.standard_normal(5),
              "scale_gamma": rng.random(5) + 0.5, "scale_beta": rng.standard_normal(5)}
    x = TensorType(3, (2, 3, 4))
    out = infer_node(Node("t", "conv_transpose", ("x0",), "t", {**attrs, "epilogue": ()},
                          {"weight": params["weight"]}), [x])
    _compare(_single(Node("t", "conv_transpose", ("x0", "x1"), "t", attrs, params), x, out))


@settings(max_examples=30, deadline=None)
@given(kernel=triples(1, 3), stride=triples(1, 3), spatial=triples(3, 8), ceil=st.booleans(), include=st.booleans(),
       op=st.sampled_from(["max_pool", "avg_pool"]), data=st.data())
def test_pool_asymmetric(kernel: tuple[int, ...], stride: tuple[int, ...], spatial: tuple[int, int, int], ceil: bool,
                         include: bool, op: str, data: st.DataObject) -> None:
    pads = data.draw(st.tuples(*(st.integers(0, k - 1) for k in kernel * 2)))
    attrs = {"kernel": kernel, "stride": stride, "pads": pads, "ceil_mode": ceil}
    if op == "avg_pool":
        attrs["count_include_pad"] = include
    _compare(_single(Node("p", op, ("x0",), "p", attrs), TensorType(3, spatial)))


@pytest.mark.parametrize("case", OP_CASES, ids=str)
def test_other_ops(case: OpCase) -> None:
    _compare(case.graph())
