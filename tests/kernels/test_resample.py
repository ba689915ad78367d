"""The C upsampling kernel (nearest, trilinear) against the reference executor: random sizes and
scales per axis, align_corners, channel counts around both vector widths (16, 4), batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import triples
from znnx import reference
from znnx.kernels import resample


@settings(max_examples=40, deadline=None)
@given(spatial=triples(1, 7), scales=st.tuples(*[st.sampled_from([1.0, 2.0, 3.0, 1.5, 2.5])] * 3),
       linear=st.booleans(), align_corners=st.booleans(), channels=st.sampled_from([1, 3, 4, 6, 12, 16, 17, 33]),
       batch=st.integers(1, 2))
def test_random_shapes_match_the_reference(spatial: tuple[int, int, int], scales: tuple[float, float, float],
                                           linear: bool, align_corners: bool, channels: int, batch: int) -> None:
    mode = "trilinear" if linear else "nearest"
    x = np.random.default_rng(0).standard_normal((batch, channels, *spatial)).astype(np.float32)
    want = reference.upsample(x, scales, mode, linear and align_corners)
    y = resample.Upsample(spatial, scales, mode, linear and align_corners)(torch.from_numpy(x))
    assert y.permute(0, 2, 3, 4, 1).is_contiguous()
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "trilinear"])
def test_matches_pytorch_and_writes_into_a_given_output(mode: str) -> None:
    x = torch.randn(1, 12, 3, 5, 6)
    out = torch.empty(1, 12, 3, 10, 12, memory_format=torch.channels_last_3d)
    y = resample.Upsample((3, 5, 6), (1.0, 2.0, 2.0), mode, False)(x, out=out)
    assert y.data_ptr() == out.data_ptr()
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    want = torch.nn.functional.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode=mode, **kwargs)
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="channels-last"):
        resample.Upsample((3, 5, 6), (1.0, 2.0, 2.0), mode, False)(x, out=torch.empty(1, 12, 3, 10, 12))
