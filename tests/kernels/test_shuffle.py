"""The C transposed convolution whose windows tile the output (kernel == stride) against the float64
reference: anisotropic kernels, channels around both vector widths, rows longer than one register
block, every fused epilogue in either order with a residual (in place too), the scale step, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.kernels.epilogue import ACTIVATIONS, ALPHA, channels_last, relative_error, steps_for
from znnx import reference
from znnx.kernels import shuffle

TOLERANCE = 1e-5


@pytest.mark.parametrize("seed", range(12))
def test_random_shapes_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 4, 3))
    spatial = (int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.choice([3, 7, 100, 130])))
    c_in, c_out = int(rng.choice([1, 5, 16, 33])), int(rng.choice([1, 3, 8, 13, 16, 24, 70]))
    batch, steps = 1 + seed % 2, steps_for(rng)
    x = rng.standard_normal((batch, c_in, *spatial))
    w = rng.standard_normal((c_in, c_out, *kernel)) / np.sqrt(c_in)
    b = rng.standard_normal(c_out)
    want = reference.conv_transpose(x, w, b, kernel, (1, 1, 1), (0,) * 6, (0, 0, 0), 1)
    residual = rng.standard_normal(want.shape)
    for step in steps:
        want = want + residual if step == "add" else ACTIVATIONS[step](want)
    conv = shuffle.ShuffleConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), steps, ALPHA)
    res = channels_last(residual)
    inplace = seed % 3 == 0 and "add" in steps
    y = conv(channels_last(x), out=res if inplace else None, residual=res if "add" in steps else None)
    assert y.data_ptr() == res.data_ptr() or not inplace
    assert relative_error(y, want) <= TOLERANCE, (kernel, spatial, c_in, c_out, steps)


def test_a_scale_after_the_add_and_an_ncdhw_output() -> None:
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((1, 6, 2, 3, 4)), rng.standard_normal((6, 5, 1, 2, 2)), rng.standard_normal(5)
    gamma, beta = rng.random(5) + 0.5, rng.standard_normal(5)
    residual = rng.standard_normal((1, 5, 2, 6, 8))
    want = reference.conv_transpose(x, w, b, (1, 2, 2), (1, 1, 1), (0,) * 6, (0, 0, 0), 1) + residual
    want = np.tanh(want * gamma.reshape(1, -1, 1, 1, 1) + beta.reshape(1, -1, 1, 1, 1))
    scale = (torch.from_numpy(gamma).float(), torch.from_numpy(beta).float())
    conv = shuffle.ShuffleConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), ("add", "scale", "tanh"),
                               0.0, scale=scale)
    out = torch.empty(1, 5, 2, 6, 8)
    y = conv(channels_last(x), out=out, residual=channels_last(residual))
    assert y is out and relative_error(y, want) <= TOLERANCE
