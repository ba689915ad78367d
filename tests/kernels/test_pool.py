"""The C pool kernel (max and average) against the reference executor: random kernels, strides,
dilations, asymmetric pads, ceil mode, count_include_pad, channel counts that are and are not
multiples of either vector width (16, 4), batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import triples
from znnx import reference
from znnx.ir import Graph, Node, TensorType, infer_node, verify
from znnx.kernels import pool


def _reference(x: np.ndarray, attrs: dict[str, object], op: str = "max_pool") -> np.ndarray:
    node = Node("p", op, ("x",), "p", attrs)
    x_type = TensorType(x.shape[1], x.shape[2:])
    graph = verify(Graph((node,), ("x",), ("p",), {"x": x_type, "p": infer_node(node, [x_type])}))
    return reference.run(graph, {"x": x})["p"]


@settings(max_examples=60, deadline=None)
@given(kernel=triples(1, 3), stride=triples(1, 3), dilation=triples(1, 2), spatial=triples(5, 9), ceil=st.booleans(),
       channels=st.sampled_from([1, 3, 4, 6, 12, 16, 17, 40]), batch=st.integers(1, 2),
       average=st.booleans(), include_pad=st.booleans(), data=st.data())
def test_random_shapes_match_the_reference(kernel: tuple[int, ...], stride: tuple[int, ...],
                                           dilation: tuple[int, ...], spatial: tuple[int, int, int], ceil: bool,
                                           channels: int, batch: int, average: bool, include_pad: bool,
                                           data: st.DataObject) -> None:
    pads = data.draw(st.tuples(*(st.integers(0, k - 1) for k in kernel * 2)))
    attrs: dict[str, object] = {"kernel": kernel, "stride": stride, "pads": pads, "ceil_mode": ceil,
                                "dilation": dilation}
    if average:
        attrs["count_include_pad"] = include_pad
    x = np.random.default_rng(0).standard_normal((batch, channels, *spatial)).astype(np.float32)
    want = _reference(x, attrs, "avg_pool" if average else "max_pool")
    y = pool.Pool(kernel, stride, pads, want.shape[2:], dilation, average=average,
                  count_include_pad=include_pad)(torch.from_numpy(x))
    assert y.permute(0, 2, 3, 4, 1).is_contiguous()
    if average:
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(y.numpy(), want.astype(np.float32))


@pytest.mark.parametrize("channels", [17, 12])
def test_nan_in_a_window_wins(channels: int) -> None:
    x = torch.zeros(1, channels, 2, 2, 2)
    x[0, channels - 1, 1, 1, 1] = float("nan")
    x[0, 3, 0, 0, 0] = float("nan")
    y = pool.Pool((2, 2, 2), (2, 2, 2), (0, 0, 0), (1, 1, 1))(x)
    assert torch.isnan(y[0, [3, channels - 1]]).all() and not torch.isnan(y[0, :3]).any()


@pytest.mark.parametrize("layout", ["ncdhw", "channels_last"])
def test_any_input_layout(layout: str) -> None:
    x = torch.randn(2, 5, 6, 6, 6)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last_3d)
    y = pool.Pool((2, 2, 2), (2, 2, 2), (0, 0, 0), (3, 3, 3))(x)
    torch.testing.assert_close(y, torch.nn.functional.max_pool3d(x, 2, 2), rtol=0, atol=0)


def test_writes_into_a_given_channels_last_output() -> None:
    x = torch.randn(1, 20, 4, 6, 6)
    out = torch.empty(1, 20, 2, 3, 3, memory_format=torch.channels_last_3d)
    y = pool.Pool((2, 2, 2), (2, 2, 2), (0, 0, 0), (2, 3, 3))(x, out=out)
    assert y.data_ptr() == out.data_ptr()
    torch.testing.assert_close(out, torch.nn.functional.max_pool3d(x, 2, 2), rtol=0, atol=0)
    with pytest.raises(ValueError, match="channels-last"):
        pool.Pool((2, 2, 2), (2, 2, 2), (0, 0, 0), (2, 3, 3))(x, out=torch.empty(1, 20, 2, 3, 3))


@pytest.mark.parametrize("block, window", [((2, 2, 2), (2, 2, 2)), ((2, 1, 3), (3, 1, 2)), ((1, 2, 2), (1, 1, 1))])
def test_depth_slabs_write_their_planes_of_every_fragment(block: tuple[int, ...], window: tuple[int, ...]) -> None:
    """`into`, as a streamed conv's slabs use it: each slab of input planes (a block per fragment
    plane plus the window's reach) writes those planes of every fragment of one batch entry."""
    n, depth = 2, 5  # fragment planes
    x = torch.randn(n, 17, depth * block[0] + window[0] - 1, 4 * block[1] + window[1] - 1, 3 * block[2] + window[2] - 1)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    pooled = [s - w + 1 for s, w in zip(x.shape[2:], window)]
    want = pool.Pool(window, (1, 1, 1), (0,) * 6, pooled, block=block)(x)
    got = torch.full_like(want, float("nan"))
    for item in range(n):
        for first, planes in ((0, 2), (2, 2), (4, 1)):
            slab = x[item:item + 1, :, first * block[0]:(first + planes) * block[0] + window[0] - 1]
            pool.Pool(window, (1, 1, 1), (0,) * 6, (planes * block[0], *pooled[1:]), block=block).into(
                slab, got, item, first)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="do not fit"):
        pool.Pool(window, (1, 1, 1), (0,) * 6, (2 * block[0], *pooled[1:]), block=block).into(
            x[:1, :, :2 * block[0] + window[0] - 1], got, 0, 4)
