"""Tiled overlap-save FFT convolution against the reference executor's conv: any kernel size,
odd shapes, padding, epilogues, tile sizes that do and do not divide the output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.kernels.epilogue import ALPHA, Case, arrays, channels_last, expected, out_shape, relative_error, steps_for
from znnx.kernels import fft

KERNELS = [(3, 3, 3), (1, 5, 5), (5, 5, 5), (3, 5, 1), (2, 3, 4)]


@pytest.mark.parametrize("size", [8, 16])
@pytest.mark.parametrize("seed", range(10))
def test_random_shapes_match_the_reference(size: int, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    kernel = KERNELS[seed % len(KERNELS)]
    spatial = tuple(int(rng.integers(k, k + 18)) for k in kernel)
    pads = (0,) * 6 if seed % 2 else tuple(k // 2 for k in kernel) + tuple((k - 1) // 2 for k in kernel)
    c_in, c_out = (int(c) for c in rng.choice([1, 3, 7, 17, 24], size=2))
    case = Case(c_in, c_out, kernel, spatial, pads, steps_for(rng))
    batch = 1 + seed % 2
    x, w, b = arrays(case, batch, seed)
    residual = rng.standard_normal(out_shape(case, batch)) if "add" in case.steps else None
    conv = fft.FFTConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads, size, case.steps, ALPHA,
                       case.spatial)
    res = None if residual is None else channels_last(residual)
    inplace = seed % 3 == 0 and res is not None
    y = conv(channels_last(x), out=res if inplace else None, residual=res)
    assert relative_error(y, expected(case, x, w, b, residual)) <= 1e-5, case
    if inplace:
        assert y.data_ptr() == res.data_ptr()


def test_applicable_to_stride_one_kernels_larger_than_one() -> None:
    assert fft.applicable((1, 5, 5), (1, 1, 1), (1, 1, 1), 1)
    assert not fft.applicable((1, 1, 1), (1, 1, 1), (1, 1, 1), 1)
    assert not fft.applicable((3, 3, 3), (1, 2, 2), (1, 1, 1), 1)
