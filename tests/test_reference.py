"""The NumPy oracle agrees with PyTorch's functional ops on random shapes (1e-10 in float64)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import ConvCase, conv_cases, triples
from znnx import reference

TOLERANCE = 1e-10


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array)


def _torch_pad(pads: tuple[int, ...]) -> list[int]:
    return [pads[2], pads[5], pads[1], pads[4], pads[0], pads[3]]


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_conv(case: ConvCase, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.batch, case.c_in, *case.spatial))
    w = rng.standard_normal((case.c_out, case.c_in // case.groups, *case.kernel))
    b = rng.standard_normal(case.c_out)
    got = reference.conv(x, w, b, case.stride, case.dilation, case.pads, case.groups)
    want = F.conv3d(F.pad(_t(x), _torch_pad(case.pads)), _t(w), _t(b), case.stride, 0, case.dilation, case.groups)
    np.testing.assert_allclose(got, want.numpy(), atol=TOLERANCE * 100)


@settings(max_examples=40, deadline=None)
@given(case=conv_cases(symmetric=True, transposed=True), seed=st.integers(0, 2**16))
def test_conv_transpose(case: ConvCase, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.batch, case.c_in, *case.spatial))
    w = rng.standard_normal((case.c_in, case.c_out // case.groups, *case.kernel))
    b = rng.standard_normal(case.c_out)
    want = F.conv_transpose3d(_t(x), _t(w), _t(b), case.stride, case.pads[:3], case.output_padding, case.groups,
                              case.dilation)
    got = reference.conv_transpose(x, w, b, case.stride, case.dilation, case.pads, case.output_padding, case.groups)
    np.testing.assert_allclose(got, want.numpy(), atol=TOLERANCE * 100)


@settings(max_examples=40, deadline=None)
@given(kernel=triples(1, 3), stride=triples(1, 3), spatial=triples(3, 9), ceil=st.booleans(),
       include=st.booleans(), kind=st.sampled_from(["max", "avg"]), data=st.data())
def test_pool(kernel: tuple[int, ...], stride: tuple[int, ...], spatial: tuple[int, ...], ceil: bool, include: bool,
              kind: str, data: st.DataObject) -> None:
    pads = data.draw(st.tuples(*(st.integers(0, k // 2) for k in kernel)))
    x = np.random.default_rng(0).standard_normal((2, 3, *spatial))
    got = reference.pool(x, kind, kernel, stride, (*pads, *pads), ceil, include)
    if kind == "max":
        want = F.max_pool3d(_t(x), kernel, stride, pads, ceil_mode=ceil)
    else:
        want = F.avg_pool3d(_t(x), kernel, stride, pads, ceil_mode=ceil, count_include_pad=include)
    np.testing.assert_allclose(got, want.numpy(), atol=TOLERANCE)


@settings(max_examples=40, deadline=None)
@given(spatial=triples(1, 7), scales=st.tuples(*(st.sampled_from([1.0, 2.0, 3.0, 1.5, 0.5, 2.5]),) * 3),
       mode=st.sampled_from(["nearest", "trilinear"]), align=st.booleans())
def test_upsample(spatial: tuple[int, ...], scales: tuple[float, ...], mode: str, align: bool) -> None:
    if any(np.floor(s * f) < 1 for s, f in zip(spatial, scales)):
        return
    x = np.random.default_rng(0).standard_normal((1, 2, *spatial))
    align = align and mode == "trilinear"
    got = reference.upsample(x, scales, mode, align)
    want = F.interpolate(_t(x), scale_factor=scales, mode=mode, align_corners=align if mode != "nearest" else None)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)


def test_pad_modes() -> None:
    from znnx.ir.graph import Node

    x = np.random.default_rng(0).standard_normal((1, 2, 4, 5, 6))
    for mode, torch_mode in (("constant", "constant"), ("replicate", "replicate"), ("reflect", "reflect")):
        node = Node("p", "pad", ("x",), "p", {"pads": (1, 0, 2, 3, 1, 0), "mode": mode, "value": 0.0})
        got = reference._pad(node, x)
        want = F.pad(_t(x), _torch_pad(node.attrs["pads"]), mode=torch_mode)
        np.testing.assert_allclose(got, want.numpy(), atol=TOLERANCE)


def test_softmax_and_elu() -> None:
    x = np.random.default_rng(0).standard_normal((2, 5, 3, 3, 3)) * 10
    np.testing.assert_allclose(reference.softmax(x), torch.softmax(_t(x), 1).numpy(), atol=TOLERANCE)
    np.testing.assert_allclose(reference.activation("elu", x, 0.7), F.elu(_t(x), 0.7).numpy(), atol=TOLERANCE)
