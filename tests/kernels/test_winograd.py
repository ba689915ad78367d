"""Winograd F(2,r) and F(4,r) (r = 3, 5) against the reference executor's conv on random shapes:
odd sizes, channel counts not multiples of 16, anisotropic kernels, valid / same / asymmetric
padding, every epilogue order, batches, and the residual written in place; the transform matrices
in exact arithmetic."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch

from tests.kernels.epilogue import (
    ACTIVATIONS,
    ALPHA,
    Case,
    arrays,
    channels_last,
    expected,
    out_shape,
    relative_error,
    steps_for,
)
from znnx.errors import KernelUnavailable
from znnx.kernels import native, winograd

TOLERANCE = {2: 1e-5, 4: 1e-4}
KERNELS = [(3, 3, 3), (1, 3, 3), (3, 1, 1), (3, 3, 1), (1, 1, 3), (1, 5, 5), (5, 1, 3)]


def random_case(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    kernel = KERNELS[seed % len(KERNELS)]
    spatial = tuple(int(rng.integers(k, k + 11)) for k in kernel)
    padding = ["valid", "same", "asymmetric"][seed % 3]
    if padding == "valid":
        pads = (0,) * 6
    elif padding == "same":
        pads = tuple(k // 2 for k in kernel) * 2
    else:
        pads = tuple(int(rng.integers(0, k)) if k > 1 else 0 for k in kernel * 2)
    c_in, c_out = (int(c) for c in rng.choice([1, 3, 5, 8, 16, 17, 19, 24, 33, 40], size=2))
    return Case(c_in, c_out, kernel, spatial, pads, steps_for(rng))


def run(case: Case, m: int, batch: int, seed: int, inplace: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    x, w, b = arrays(case, batch, seed)
    residual = np.random.default_rng(seed + 1).standard_normal(out_shape(case, batch)) if "add" in case.steps else None
    conv = winograd.WinogradConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads, m, case.steps,
                                 ALPHA, case.spatial)
    res = None if residual is None else channels_last(residual)
    out = res if inplace else None
    y = conv(channels_last(x), out=out, residual=res)
    if inplace:
        assert y.data_ptr() == res.data_ptr()
    return y, expected(case, x, w, b, residual)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("seed", range(15))
def test_random_shapes_match_the_reference(m: int, seed: int) -> None:
    case = random_case(seed)
    y, want = run(case, m, batch=1 + seed % 2, seed=seed)
    assert relative_error(y, want) <= TOLERANCE[m], case


@pytest.mark.parametrize("m", [2, 4])
def test_residual_accumulates_in_place(m: int) -> None:
    case = Case(19, 21, (3, 3, 3), (7, 9, 11), (1,) * 6, ("add", "elu"))
    y, want = run(case, m, batch=2, seed=3, inplace=True)
    assert relative_error(y, want) <= TOLERANCE[m]


@pytest.mark.parametrize("c_in, c_out, width", [(24, 24, 8), (24, 8, 8), (5, 3, 8), (32, 32, 16), (12, 12, 16),
                                                (40, 40, 16)])
def test_narrow_layers_run_eight_lanes_wide(c_in: int, c_out: int, width: int) -> None:
    """Channels that padding to 16 would inflate by a quarter or more run on 8-float vectors."""
    assert winograd.lanes(c_in, c_out) == width
    case = Case(c_in, c_out, (3, 3, 3), (6, 9, 10), (1, 1, 1, 1, 0, 1), ("add", "elu"))
    for m in (2, 4):
        y, want = run(case, m, batch=2, seed=5)
        assert relative_error(y, want) <= TOLERANCE[m], (case, m)


@pytest.mark.parametrize("fused", [False, True])
def test_one_tile_slabs_match_the_reference(fused: bool) -> None:
    """Slab (or a thread's run) boundaries fall inside tile rows; the GEMM's summation order changes,
    not the result."""
    case = Case(17, 18, (3, 3, 3), (10, 11, 12), (1,) * 6, ("relu",))
    x, w, b = arrays(case, 1, 0)
    args = (torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads, 4, case.steps, ALPHA, case.spatial)
    whole, small = winograd.WinogradConv(*args, fused=fused), winograd.WinogradConv(*args, slab_bytes=1, fused=fused)
    assert small.count == 1 and whole.count > 1 and whole.fused == small.fused == fused
    want = expected(case, x, w, b, None)
    assert relative_error(small(channels_last(x)), want) <= TOLERANCE[4]
    assert relative_error(whole(channels_last(x)), want) <= TOLERANCE[4]


@pytest.mark.parametrize("seed", range(6))
def test_both_drivers_agree_on_random_shapes(seed: int) -> None:
    """The fused driver (each thread all stages on its runs of tiles) and the slab driver compute the
    same sums in the same order per tile: identical outputs, residual and batch included."""
    case = random_case(seed + 100)
    x, w, b = arrays(case, 2, seed)
    residual = channels_last(np.random.default_rng(seed).standard_normal(out_shape(case, 2)))
    args = (torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads, 2 + 2 * (seed % 2), case.steps,
            ALPHA, case.spatial)
    outputs = [winograd.WinogradConv(*args, fused=fused, slab_bytes=1 << 14)(channels_last(x), residual=residual)
               for fused in (False, True)]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.parametrize("parts, fused", [((5, 12), True), ((16, 8, 3), False), ((24, 24), True), ((1, 40), False),
                                           ((17, 19), None)])
@pytest.mark.parametrize("m", [2, 4])
def test_sources_of_a_fused_concat_match_the_concatenated_input(parts: tuple[int, ...], fused: bool | None,
                                                                  m: int) -> None:
    """The input given as the sources of a concat (each transformed into its own rows, with padding
    rows between) equals the convolution of their concatenation, in both drivers and batched."""
    case = Case(sum(parts), 13, (3, 3, 3) if m == 4 else (1, 3, 3), (7, 9, 10), (1, 1, 1, 1, 0, 1), ("add", "relu"))
    x, w, b = arrays(case, 2, 7)
    residual = np.random.default_rng(8).standard_normal(out_shape(case, 2))
    conv = winograd.WinogradConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads, m, case.steps,
                                 ALPHA, case.spatial, fused=fused, slab_bytes=1 << 15, parts=parts)
    bounds = np.cumsum((0, *parts))
    sources = [channels_last(x[:, a:z]) for a, z in itertools.pairwise(bounds)]
    y = conv(sources, residual=channels_last(residual))
    assert relative_error(y, expected(case, x, w, b, residual)) <= TOLERANCE[m]
    framed = [torch.nn.functional.pad(s, (2, 1, 0, 3, 1, 1)) for s in sources]  # crops' views are read in place
    views = [f[:, :, 1:-1, :-3, 2:-1] for f in framed]
    assert all(winograd._source(v) is v for v in views)
    torch.testing.assert_close(conv(views, residual=channels_last(residual)), y, rtol=0, atol=0)
    with pytest.raises(ValueError, match="sources of"):
        conv([channels_last(x)])


def test_narrow_layers_run_fused_and_wide_ones_by_slabs() -> None:
    assert winograd.fused_chunk_bytes(216 * 32 * 32 * 4) == 1 << 20
    assert winograd.fused_chunk_bytes(216 * 64 * 64 * 4) == 2 << 20
    assert winograd.fused_chunk_bytes(216 * 128 * 128 * 4) is None


def test_kernel_transform_is_exact_for_a_one_voxel_kernel_centre() -> None:
    """G w G^T of a kernel that is 1 at the centre, in exact arithmetic: the F(2,3) rows of G's middle column."""
    w = np.zeros((1, 1, 3, 3, 3))
    w[0, 0, 1, 1, 1] = 1.0
    u = winograd.transform_weight(w, 2).reshape(4, 4, 4)
    middle = np.array([0, 0.5, -0.5, 0])
    np.testing.assert_allclose(u, np.einsum("i,j,k->ijk", middle, middle, middle))


def test_no_compiler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("ZNNX_CACHE_DIR", str(tmp_path))
    native.load.cache_clear()
    try:
        with pytest.raises(KernelUnavailable, match="no C compiler"):
            native.load("winograd", winograd.source())
    finally:
        native.load.cache_clear()


def test_applicable_only_to_stride_one_kernels_of_sizes_one_three_and_five() -> None:
    assert winograd.applicable((1, 3, 3), (1, 1, 1), (1, 1, 1), 1)
    assert winograd.applicable((1, 5, 5), (1, 1, 1), (1, 1, 1), 1)
    assert winograd.applicable((5, 5, 5), (1, 1, 1), (1, 1, 1), 1)
    assert not winograd.applicable((1, 1, 1), (1, 1, 1), (1, 1, 1), 1)
    assert not winograd.applicable((3, 3, 3), (2, 2, 2), (1, 1, 1), 1)
    assert not winograd.applicable((1, 4, 4), (1, 1, 1), (1, 1, 1), 1)
    assert not winograd.applicable((3, 3, 3), (1, 1, 1), (1, 1, 1), 2)


@pytest.mark.parametrize("r", winograd.SIZES)
@pytest.mark.parametrize("m", winograd.TILES)
def test_transforms_compute_the_correlation_exactly(r: int, m: int) -> None:
    """A^T [(G w) . (B^T x)] = the m outputs of correlating x (t values) with w (r values), in Fractions."""
    b_t, g, a_t = winograd.transforms(r, m)
    rng = np.random.default_rng(r * 10 + m)
    for _ in range(5):
        x = [Fraction(int(v)) for v in rng.integers(-9, 10, m + r - 1)]
        w = [Fraction(int(v)) for v in rng.integers(-9, 10, r)]
        u = [sum(gi * wk for gi, wk in zip(row, w)) for row in g]
        v = [sum(bi * xj for bi, xj in zip(row, x)) for row in b_t]
        y = [sum(a * ui * vi for a, ui, vi in zip(row, u, v)) for row in a_t]
        assert y == [sum(w[k] * x[i + k] for k in range(r)) for i in range(m)]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("seed", range(4))
def test_weight_gradient_matches_onednn(m: int, seed: int) -> None:
    """Training's weight gradient by Winograd: random channels (padded and not), kernels of 1, 3 and 5
    per axis, pads, odd sizes, two items; F(2,r) within 1e-5 of oneDNN's backward (F(2,5) 3e-5),
    F(4,r) within 1e-4."""
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.choice([1, 3, 5], 3, p=[0.2, 0.6, 0.2]))
    if kernel == (1, 1, 1):
        kernel = (3, 1, 3)
    pads = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
    c_in, c_out = (int(c) for c in rng.integers(1, 40, 2))
    spatial = tuple(int(k + rng.integers(0, 9)) for k in kernel)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c_in, *spatial, generator=gen)
    weight = torch.randn(c_out, c_in, *kernel, generator=gen)
    g = torch.randn_like(torch.nn.functional.conv3d(x, weight, padding=pads))
    reference = torch.ops.aten.convolution_backward(g, x, weight, None, [1, 1, 1], list(pads), [1, 1, 1], False,
                                                    [0, 0, 0], 1, [False, True, False])[1]
    got = winograd.weight_gradient(x, g, kernel, pads, m)
    bound = 1e-4 if m == 4 else 3e-5 if 5 in kernel else 1e-5
    assert float((got - reference).abs().max() / reference.abs().max()) < bound


@pytest.mark.parametrize("fused", [False, True])
def test_scale_step_between_the_add_and_the_activation(fused: bool) -> None:
    """epilogue (add, scale, elu): y = elu(gamma * (conv + residual) + beta) per channel, both drivers."""
    case = Case(5, 28, (3, 3, 3), (6, 9, 10), (1,) * 6, ("add",))
    x, w, b = arrays(case, 2, 4)
    rng = np.random.default_rng(4)
    residual = rng.standard_normal(out_shape(case, 2))
    gamma, beta = rng.random(28) + 0.5, rng.standard_normal(28)
    conv = winograd.WinogradConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads, 4,
                                 ("add", "scale", "elu"), ALPHA, case.spatial, fused=fused,
                                 scale=(torch.from_numpy(gamma).float(), torch.from_numpy(beta).float()))
    y = conv(channels_last(x), residual=channels_last(residual))
    pre = expected(case, x, w, b, residual) * gamma.reshape(1, -1, 1, 1, 1) + beta.reshape(1, -1, 1, 1, 1)
    want = np.where(pre > 0, pre, ALPHA * np.expm1(np.minimum(pre, 0)))
    assert relative_error(y, want) <= TOLERANCE[4]


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("c_out, fused", [(8, True), (24, False), (40, True)])
def test_every_activation_of_the_epilogue_matches_the_reference(act: str, c_out: int, fused: bool) -> None:
    """Each activation in the C epilogue on both vector widths and both drivers, inputs well into
    both tails (|x| up to about 12: exp's and erf's approximations, mish's cut at 20)."""
    case = Case(5, c_out, (3, 3, 3), (6, 7, 9), (1,) * 6, ("add", act))
    x, w, b = arrays(case, 2, seed=c_out)
    residual = 4 * np.random.default_rng(1).standard_normal(out_shape(case, 2))
    conv = winograd.WinogradConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads, 2, case.steps,
                                 ALPHA, case.spatial, fused=fused)
    y = conv(channels_last(x), residual=channels_last(residual))
    assert relative_error(y, expected(case, x, w, b, residual)) <= TOLERANCE[2]
