"""A fused PReLU (per-channel slopes carried where a scale step's gamma would be) in every conv kernel
against the float64 reference: Winograd on both vector widths, the implicit GEMM and its narrow
form, the FFT conv, the shuffling and the scattering transposed convs, after a residual add."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.kernels.epilogue import ALPHA, Case, arrays, channels_last, out_shape, relative_error
from znnx import reference
from znnx.kernels import fft, implicit, scatter, shuffle, winograd


def _prelu(y: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return np.where(y > 0, y, y * slope.reshape(1, -1, 1, 1, 1))


@pytest.mark.parametrize("kind, c_in, c_out", [("winograd", 5, 8), ("winograd", 16, 40), ("implicit", 2, 3),
                                               ("implicit", 3, 24), ("fft", 4, 6)])
def test_fused_prelu_in_the_convs(kind: str, c_in: int, c_out: int) -> None:
    case = Case(c_in, c_out, (3, 3, 3), (5, 6, 9), (1,) * 6, ("add", "prelu"))
    x, w, b = arrays(case, 2, seed=c_out)
    rng = np.random.default_rng(c_in)
    residual, slope = rng.standard_normal(out_shape(case, 2)), rng.uniform(-0.5, 0.5, c_out)
    args = (torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads)
    tensor = torch.from_numpy(slope).float()
    conv = {"winograd": lambda: winograd.WinogradConv(*args, 2, case.steps, ALPHA, case.spatial, slope=tensor),
            "implicit": lambda: implicit.ImplicitConv(*args, case.steps, ALPHA, case.spatial, slope=tensor),
            "fft": lambda: fft.FFTConv(*args, 16, case.steps, ALPHA, case.spatial, slope=tensor)}[kind]()
    y = conv(channels_last(x), residual=channels_last(residual))
    want = _prelu(reference.conv(x, w, b, (1, 1, 1), (1, 1, 1), case.pads, 1) + residual, slope)
    assert relative_error(y, want) <= 1e-5


@pytest.mark.parametrize("kind", ["shuffle", "scatter"])
def test_fused_prelu_in_the_transposed_convs(kind: str) -> None:
    rng = np.random.default_rng(3)
    c_out = 3
    x, w, b = rng.standard_normal((1, 5, 3, 4, 6)), rng.standard_normal((5, c_out, 2, 2, 2)), rng.standard_normal(3)
    slope = rng.uniform(-0.5, 0.5, c_out)
    stride, pads = ((2, 2, 2), (0, 0, 0)) if kind == "shuffle" else ((1, 2, 1), (1, 0, 1))
    want = reference.conv_transpose(x, w, b, stride, (1, 1, 1), (*pads, *pads), (0, 0, 0), 1)
    args = (torch.from_numpy(w).float(), torch.from_numpy(b).float())
    tensor = torch.from_numpy(slope).float()
    conv = shuffle.ShuffleConv(*args, ("prelu",), ALPHA, slope=tensor) if kind == "shuffle" else \
        scatter.ScatterConv(*args, stride, pads, want.shape[2:], ("prelu",), ALPHA, slope=tensor)
    assert relative_error(conv(channels_last(x)), _prelu(want, slope)) <= 1e-5
