"""The C float32 -> uint8 conversion against NumPy's four passes: values across and beyond [0, 1],
exact halves (rounded to even), slices of a (C, D, H, W) array as a block's output is, fewer axes,
NaN and infinities, layouts it does not take, and NumPy's passes where no compiler is at hand."""

from __future__ import annotations

import numpy as np
import pytest

from znnx.errors import KernelUnavailable
from znnx.kernels import convert


def values(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 1.3, shape).astype(np.float32)


@pytest.mark.parametrize("view", [
    lambda a: a,
    lambda a: a[:, 3:17, 2:19, 5:31],
    lambda a: a[1],
    lambda a: a[0, 4],
    lambda a: a[1, 2, 3],
    lambda a: a[:, ::2],
    lambda a: a[..., ::-1],
])
def test_same_bytes_as_numpy(view: object) -> None:
    x = view(values((2, 19, 23, 37), 0))  # type: ignore[operator]
    want = convert.to_uint8_numpy(x.copy())
    got = convert.to_uint8(x)
    assert got.dtype == np.uint8 and got.shape == x.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def test_halves_round_to_even_and_limits() -> None:
    x = np.array([0.5, 1.5, 2.5, 253.5, -1, 0, 255, 300, np.inf, -np.inf, np.nan], np.float32) / np.float32(255)
    assert list(x[:4] * np.float32(255)) == [0.5, 1.5, 2.5, 253.5]
    assert list(convert.to_uint8(x)) == [0, 2, 2, 254, 0, 0, 255, 255, 255, 0, 0]


def test_other_layouts_and_no_compiler_take_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    x = values((3, 5, 7, 9), 1)
    strided_last = x[..., ::2]
    want = convert.to_uint8_numpy(strided_last.copy())
    np.testing.assert_array_equal(convert.to_uint8(strided_last), want)
    doubles = x.astype(np.float64)
    assert convert.to_uint8(doubles.copy()).dtype == np.uint8

    def unavailable() -> None:
        raise KernelUnavailable("kernels: no C compiler")

    monkeypatch.setattr(convert, "_library", unavailable)
    np.testing.assert_array_equal(convert.to_uint8(x.copy()), convert.to_uint8_numpy(x.copy()))
