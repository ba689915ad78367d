"""The C in-place ELU against PyTorch's in float64: values across the range (tiny negatives, where
exp(x) - 1 would cancel, large negatives, positives), lengths that are not multiples of the vector
width, channels-last tensors, alpha other than 1, and the fallback for layouts it does not take. The C
in-place PReLU against PyTorch's: shared and per-channel slopes, channel counts below, at and above the
vector width, channels-last and NCDHW, a batch, and the fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from znnx.kernels import activation


@pytest.mark.parametrize("n", [1, 15, 16, 17, 1000, 4099])
@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_matches_pytorch_to_float_precision(n: int, alpha: float) -> None:
    rng = np.random.default_rng(n)
    x = np.concatenate([rng.standard_normal(n) * 4, -(10.0 ** rng.uniform(-8, 2, n)), rng.uniform(-0.6, 0.1, n)])
    y = torch.from_numpy(x.astype(np.float32))
    want = torch.nn.functional.elu(y.double(), alpha)
    got = activation.elu_(alpha)(y)
    assert got.data_ptr() == y.data_ptr()
    np.testing.assert_allclose(got.double().numpy(), want.numpy(), rtol=1e-6, atol=1e-30)


def test_channels_last_in_place_and_other_layouts_through_pytorch() -> None:
    x = torch.randn(2, 5, 3, 4, 6).contiguous(memory_format=torch.channels_last_3d)
    want = torch.nn.functional.elu(x.double())
    activation.elu_(1.0)(x)
    torch.testing.assert_close(x.double(), want, rtol=1e-6, atol=1e-7)
    strided = torch.randn(4, 8)[:, ::2]
    want = torch.nn.functional.elu(strided.double())
    torch.testing.assert_close(activation.elu_(1.0)(strided).double(), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("channels", [1, 3, 8, 16, 24, 40])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("last", [False, True])
def test_prelu_matches_pytorch_in_place(channels: int, shared: bool, last: bool) -> None:
    x = torch.randn(2, channels, 3, 5, 7)
    x = x.contiguous(memory_format=torch.channels_last_3d) if last else x
    slope = torch.rand(1 if shared else channels) * 2 - 0.5
    want = torch.nn.functional.prelu(x, slope)
    got = activation.prelu_(slope)(x)
    assert got.data_ptr() == x.data_ptr()
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_prelu_of_a_strided_view_goes_through_pytorch() -> None:
    x = torch.randn(1, 4, 3, 4, 10)[..., ::2]
    slope = torch.rand(4)
    want = torch.nn.functional.prelu(x, slope)
    torch.testing.assert_close(activation.prelu_(slope)(x), want, rtol=0, atol=0)
