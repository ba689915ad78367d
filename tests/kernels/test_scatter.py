"""The C transposed convolution with overlapping windows into few channels against the float64
reference: strides below, equal to and above the kernel, pads and output padding, anisotropic
kernels, one to four output channels, every epilogue order with a residual (in place too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.kernels.epilogue import ACTIVATIONS, ALPHA, channels_last, relative_error, steps_for
from znnx import reference
from znnx.kernels import scatter

TOLERANCE = 1e-5


@pytest.mark.parametrize("seed", range(12))
def test_random_shapes_match_the_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 6, 3))
    stride = tuple(int(s) for s in rng.integers(1, 4, 3))
    pads = tuple(int(rng.integers(0, (k + 1) // 2)) for k in kernel)
    output_padding = tuple(int(rng.integers(0, s)) for s in stride)
    spatial = (int(rng.integers(1, 5)), int(rng.integers(1, 7)), int(rng.choice([3, 9, 40, 70])))
    c_in, c_out = int(rng.choice([1, 5, 16, 33])), int(rng.integers(1, scatter.CHANNELS + 1))
    batch, steps = 1 + seed % 2, steps_for(rng)
    x = rng.standard_normal((batch, c_in, *spatial))
    w = rng.standard_normal((c_in, c_out, *kernel)) / np.sqrt(c_in)
    b = rng.standard_normal(c_out)
    want = reference.conv_transpose(x, w, b, stride, (1, 1, 1), (*pads, *pads), output_padding, 1)
    residual = rng.standard_normal(want.shape)
    for step in steps:
        want = want + residual if step == "add" else ACTIVATIONS[step](want)
    conv = scatter.ScatterConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), stride, pads,
                               want.shape[2:], steps, ALPHA)
    res = channels_last(residual)
    inplace = seed % 3 == 0 and "add" in steps
    y = conv(channels_last(x), out=res if inplace else None, residual=res if "add" in steps else None)
    assert y.data_ptr() == res.data_ptr() or not inplace
    assert relative_error(y, want) <= TOLERANCE, (kernel, stride, pads, output_padding, spatial, c_in, c_out, steps)


def test_a_scale_step_and_an_ncdhw_output() -> None:
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((1, 6, 4, 5, 6)), rng.standard_normal((6, 3, 3, 3, 3)), rng.standard_normal(3)
    gamma, beta = rng.uniform(0.5, 2, 3), rng.standard_normal(3)
    want = reference.conv_transpose(x, w, b, (2, 2, 2), (1, 1, 1), (1,) * 6, (1, 1, 1), 1)
    want = np.tanh(want * gamma.reshape(1, -1, 1, 1, 1) + beta.reshape(1, -1, 1, 1, 1))
    conv = scatter.ScatterConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), (2, 2, 2), (1, 1, 1),
                               want.shape[2:], ("scale", "tanh"), ALPHA,
                               scale=(torch.from_numpy(gamma).float(), torch.from_numpy(beta).float()))
    out = torch.empty(want.shape)
    y = conv(channels_last(x), out=out)
    assert y.data_ptr() == out.data_ptr() and relative_error(y, want) <= TOLERANCE


def test_applies_to_few_output_channels_of_one_undilated_group() -> None:
    assert scatter.applicable(4, (1, 1, 1), 1)
    assert not scatter.applicable(5, (1, 1, 1), 1)
    assert not scatter.applicable(2, (2, 1, 1), 1)
    assert not scatter.applicable(2, (1, 1, 1), 2)


@pytest.mark.parametrize("seed", range(8))
def test_a_forward_conv_as_the_scatter_of_its_flipped_kernel(seed: int) -> None:
    """Stride-1 convs into 1-4 channels (a score layer), asymmetric pads, anisotropic kernels."""
    rng = np.random.default_rng(100 + seed)
    kernel = tuple(int(k) for k in rng.integers(1, 6, 3))
    pads = tuple(int(rng.integers(0, k)) for k in kernel * 2)
    spatial = tuple(int(rng.integers(k, k + 9)) for k in kernel)
    c_in, c_out = int(rng.choice([3, 8, 28])), int(rng.integers(1, scatter.CHANNELS + 1))
    x = rng.standard_normal((1 + seed % 2, c_in, *spatial))
    w = rng.standard_normal((c_out, c_in, *kernel)) / np.sqrt(c_in * np.prod(kernel))
    b = rng.standard_normal(c_out)
    want = ACTIVATIONS["sigmoid"](reference.conv(x, w, b, (1, 1, 1), (1, 1, 1), pads, 1))
    conv = scatter.forward_conv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), pads, want.shape[2:],
                                ("sigmoid",), ALPHA)
    assert relative_error(conv(channels_last(x)), want) <= TOLERANCE, (kernel, pads, spatial, c_in, c_out)
