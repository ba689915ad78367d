from __future__ import annotations

import numpy as np
import pytest

from tests.passes.graphs import assert_same_numbers, batchnorm, builder, conv, ops, scale
from znnx.passes.fold_batchnorm import batchnorm_affine, fold_affine, fold_batchnorm


def test_batchnorm_affine_matches_formula() -> None:
    mean, var, gamma, beta = np.array([1.0, -2.0]), np.array([4.0, 0.25]), np.array([2.0, 3.0]), np.array([0.5, 0])
    s, t = batchnorm_affine(mean, var, 0.0, gamma, beta)
    x = np.array([3.0, 5.0])
    np.testing.assert_allclose(x * s + t, (x - mean) / np.sqrt(var) * gamma + beta)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_fold_affine_scales_each_output_channel(transposed: bool, groups: int) -> None:
    rng = np.random.default_rng(0)
    c_in, c_out = 4, 6
    weight = rng.standard_normal((c_in, c_out // groups, 2, 1, 1) if transposed else (c_out, c_in // groups, 2, 1, 1))
    s, t = rng.random(c_out) + 0.5, rng.standard_normal(c_out)
    w, b = fold_affine(weight, None, s, t, transposed, groups)
    if transposed:
        for g in range(groups):
            block = slice(g * c_in // groups, (g + 1) * c_in // groups)
            outs = s[g * c_out // groups:(g + 1) * c_out // groups].reshape(1, -1, 1, 1, 1)
            np.testing.assert_allclose(w[block], weight[block] * outs, rtol=1e-6)
    else:
        np.testing.assert_allclose(w, weight * s.reshape(-1, 1, 1, 1, 1), rtol=1e-6)
    np.testing.assert_allclose(b, t, rtol=1e-6)


@pytest.mark.parametrize("transposed", [False, True])
def test_batchnorm_and_scale_fold_into_conv(transposed: bool) -> None:
    b, x = builder()
    stride = (2, 2, 2) if transposed else (1, 1, 1)
    y = conv(b, x, 4, kernel=(2, 2, 2), pads=(0,) * 6, transposed=transposed, stride=stride)
    y = scale(b, batchnorm(b, y))
    before = b.finish([b.add("elu", [y], {"alpha": 1.0})])
    after, count = fold_batchnorm(before)
    assert count == 2
    assert ops(after) == [("conv_transpose" if transposed else "conv"), "elu"]
    assert_same_numbers(before, after)


def test_batchnorm_without_a_conv_becomes_a_scale() -> None:
    b, x = builder()
    before = b.finish([batchnorm(b, b.add("relu", [x]))])
    after, count = fold_batchnorm(before)
    assert (ops(after), count) == (["relu", "scale"], 1)
    assert_same_numbers(before, after)


def test_conv_with_another_reader_is_not_folded() -> None:
    b, x = builder()
    c = conv(b, x, 3)
    before = b.finish([b.add("add", [batchnorm(b, c), c])])
    after, _ = fold_batchnorm(before)
    assert ops(after) == ["conv", "scale", "add"]
    assert_same_numbers(before, after)


def test_graph_output_of_the_conv_is_kept() -> None:
    b, x = builder()
    c = conv(b, x, 3)
    before = b.finish([c, batchnorm(b, c)])
    after, _ = fold_batchnorm(before)
    assert ops(after) == ["conv", "scale"]
    assert_same_numbers(before, after)
