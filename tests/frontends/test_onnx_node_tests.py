"""The onnx package's backend node tests for every op znnx supports.

znnx binds weights at load time, so each case's weight-like inputs (conv weights, BN statistics,
pads, slice bounds, resize scales) become initializers before loading. A case outside the
supported feature set is skipped with the UnsupportedError message as its reason (see `pytest -rs`);
any other failure fails the test. Outputs are compared with each case's own tolerances.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
import pytest

import znnx
from znnx import reference

# The ONNX ops of the IR, and for each the input positions that hold weights or settings.
CONSTANT_INPUTS: dict[str, frozenset[int]] = {
    "Conv": frozenset({1, 2}), "ConvTranspose": frozenset({1, 2}),
    "BatchNormalization": frozenset({1, 2, 3, 4}), "Pad": frozenset({1, 2, 3}),
    "Slice": frozenset({1, 2, 3, 4}), "Resize": frozenset({1, 2, 3}), "Dropout": frozenset({1, 2}),
    "PRelu": frozenset({1}),
    **{op: frozenset() for op in ("Relu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Gelu", "Mish", "Softplus", "Erf",
                                  "Softmax", "Add", "Mul", "Div", "Concat", "MaxPool", "AveragePool", "Identity")},
}
# Fewer passing cases than this means a regression, not a newly skipped feature.
MIN_PASSING = 88


@functools.cache
def node_cases() -> dict[str, object]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collected = collect_testcases("")
    return {c.name: c for c in collected
            if c.model.graph.node and all(n.op_type in CONSTANT_INPUTS for n in c.model.graph.node)
            and not c.name.endswith("_expanded")}


def with_constant_weights(model: onnx.ModelProto, inputs: list[np.ndarray]) -> tuple[onnx.ModelProto, list]:
    """The model with weight-like graph inputs moved to initializers, and the remaining inputs."""
    constant = {name for node in model.graph.node for i, name in enumerate(node.input)
                if i in CONSTANT_INPUTS[node.op_type]}
    model = onnx.ModelProto.FromString(model.SerializeToString())
    kept, feeds = [], []
    for value, array in zip(list(model.graph.input), inputs):
        if value.name in constant:
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(array), value.name))
        else:
            kept.append(value)
            feeds.append(array)
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model, feeds


def run_case(name: str) -> None:
    case = node_cases()[name]
    inputs, expected = case.data_sets[0]  # type: ignore[attr-defined]
    model, feeds = with_constant_weights(case.model, list(inputs))  # type: ignore[attr-defined]
    try:
        graph = znnx.load(model)
    except znnx.UnsupportedError as error:
        pytest.skip(str(error))
    net = znnx.compile(graph)
    outputs = net(*[np.asarray(f, dtype=np.float32) for f in feeds])
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    rtol, atol = case.rtol, case.atol  # type: ignore[attr-defined]
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    lifted = {name: np.asarray(f).reshape(f.shape[:2] + graph.types[name].spatial)
              for name, f in zip(graph.inputs, feeds)}
    oracle = reference.run(net.graph, lifted)
    for value, want in zip(graph.outputs, expected):
        np.testing.assert_allclose(oracle[value].reshape(want.shape), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(node_cases()))
def test_node_case(name: str) -> None:
    run_case(name)


def test_enough_node_cases_pass() -> None:
    passed = []
    for name in sorted(node_cases()):
        try:
            run_case(name)
        except pytest.skip.Exception:
            continue
        passed.append(name)
    assert len(passed) >= MIN_PASSING, f"only {len(passed)} node cases pass: {passed}"
