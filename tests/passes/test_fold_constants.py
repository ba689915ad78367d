from __future__ import annotations

import numpy as np

from tests.passes.graphs import assert_same_numbers, builder, conv, ops, scale
from znnx.passes.fold_batchnorm import fold_batchnorm
from znnx.passes.fold_constants import fold_constants


def test_constant_arithmetic_becomes_one_scale() -> None:
    b, x = builder()
    y = b.add("mul", [x], {}, {"constant": np.array([2.0, -1.0, 0.5])})
    y = b.add("add", [y], {}, {"constant": np.array([0.25])})
    y = b.add("div", [y], {}, {"constant": np.array([4.0])})
    before = b.finish([scale(b, y)])
    after, count = fold_constants(before)
    assert ops(after) == ["scale"]
    assert count == 3 + 3
    assert_same_numbers(before, after)


def test_max_with_a_constant_stays_and_two_input_add_stays() -> None:
    b, x = builder()
    m = b.add("max", [x], {}, {"constant": np.array([0.1])})
    before = b.finish([b.add("add", [m, x])])
    after, count = fold_constants(before)
    assert (ops(after), count) == (["max", "add"], 0)


def test_scale_after_conv_then_folds_into_it() -> None:
    b, x = builder()
    before = b.finish([b.add("add", [conv(b, x, 2)], {}, {"constant": np.array([1.0, 2.0])})])
    folded, _ = fold_batchnorm(fold_constants(before)[0])
    assert ops(folded) == ["conv"]
    assert_same_numbers(before, folded)
