"""The implicit-GEMM direct convolution against the float64 reference: random kernels (1 to 7 per
axis, anisotropic), valid, same and asymmetric pads, input channels 1-5, output channels around
both vector widths (8 and 16 lanes), every fused epilogue with a residual, batches, rows longer
than one register block."""

from __future__ import annotations

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
from znnx import reference
from znnx.kernels import implicit

TOLERANCE = 1e-5


def random_case(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 8, 3))
    spatial = tuple(int(rng.integers(k, k + 9)) for k in kernel)
    pads = tuple(int(rng.integers(0, k)) for k in kernel * 2) if seed % 2 else (0,) * 6
    c_in = int(rng.integers(1, 6))
    c_out = int(rng.choice([1, 3, 8, 13, 16, 24, 40, 70]))
    return Case(c_in, c_out, kernel, spatial, pads, steps_for(rng))  # type: ignore[arg-type]


def run(case: Case, batch: int, seed: int, inplace: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    x, w, b = arrays(case, batch, seed)
    residual = np.random.default_rng(seed + 1).standard_normal(out_shape(case, batch)) if "add" in case.steps else None
    conv = implicit.ImplicitConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads, case.steps,
                                 ALPHA, case.spatial)
    res = None if residual is None else channels_last(residual)
    y = conv(channels_last(x), out=res if inplace else None, residual=res)
    if inplace:
        assert y.data_ptr() == res.data_ptr()
    return y, expected(case, x, w, b, residual)


@pytest.mark.parametrize("seed", range(20))
def test_random_shapes_match_the_reference(seed: int) -> None:
    case = random_case(seed)
    y, want = run(case, batch=1 + seed % 2, seed=seed)
    assert y.permute(0, 2, 3, 4, 1).is_contiguous()
    assert relative_error(y, want) <= TOLERANCE, case


def test_long_rows_and_residual_in_place() -> None:
    """Rows of 230 voxels (two full register-block runs and a part) accumulate into their residual."""
    case = Case(1, 28, (1, 5, 5), (2, 6, 234), (0, 2, 2, 0, 2, 2), ("add", "elu"))
    y, want = run(case, batch=2, seed=3, inplace=True)
    assert relative_error(y, want) <= TOLERANCE


@pytest.mark.parametrize("c_out, width", [(8, 8), (24, 8), (16, 16), (32, 16), (40, 16)])
def test_output_channels_pick_the_vector_width(c_out: int, width: int) -> None:
    assert implicit.lanes(c_out) == width


def test_applies_to_undilated_ungrouped_convs_of_few_input_channels_at_any_stride() -> None:
    assert implicit.applicable(implicit.CHANNELS, (1, 1, 1), (1, 1, 1), 1)
    assert not implicit.applicable(implicit.CHANNELS + 1, (1, 1, 1), (1, 1, 1), 1)
    assert implicit.applicable(1, (2, 2, 2), (1, 1, 1), 1)
    assert not implicit.applicable(1, (1, 1, 1), (2, 1, 1), 1)
    assert not implicit.applicable(1, (1, 1, 1), (1, 1, 1), 2)


def test_scale_step_between_the_add_and_the_activation() -> None:
    case = Case(2, 20, (3, 3, 3), (5, 7, 9), (1,) * 6, ("add",))
    x, w, b = arrays(case, 1, 6)
    rng = np.random.default_rng(6)
    residual = rng.standard_normal(out_shape(case, 1))
    gamma, beta = rng.random(20) + 0.5, rng.standard_normal(20)
    conv = implicit.ImplicitConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads,
                                 ("add", "scale", "relu"), ALPHA, case.spatial,
                                 scale=(torch.from_numpy(gamma).float(), torch.from_numpy(beta).float()))
    y = conv(channels_last(x), residual=channels_last(residual))
    want = np.maximum(expected(case, x, w, b, residual) * gamma.reshape(1, -1, 1, 1, 1)
                      + beta.reshape(1, -1, 1, 1, 1), 0)
    assert relative_error(y, want) <= TOLERANCE


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("c_out", [8, 40])
def test_every_activation_of_the_epilogue_matches_the_reference(act: str, c_out: int) -> None:
    case = Case(2, c_out, (3, 1, 3), (4, 5, 21), (1, 0, 1, 1, 0, 1), ("add", act))
    x, w, b = arrays(case, 1, seed=c_out)
    residual = 4 * np.random.default_rng(1).standard_normal(out_shape(case, 1))
    conv = implicit.ImplicitConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), case.pads, case.steps,
                                 ALPHA, case.spatial)
    y = conv(channels_last(x), residual=channels_last(residual))
    assert relative_error(y, expected(case, x, w, b, residual)) <= TOLERANCE


@pytest.mark.parametrize("c_in, c_out", [(1, 1), (2, 1), (1, 2), (2, 2), (4, 2), (3, 3), (4, 3), (1, 4), (4, 4)])
def test_few_output_channels_run_voxels_along_the_vector(c_in: int, c_out: int) -> None:
    """The narrow kernel: one and two-register shuffles, rows of full blocks and a part (70 = 4 x 16 +
    6 for one channel), a residual written in place, the epilogue after the add."""
    assert implicit.narrow(c_in, c_out)
    case = Case(c_in, c_out, (3, 2, 3), (5, 4, 72), (1, 0, 1, 1, 1, 1), ("add", "elu"))
    y, want = run(case, batch=2, seed=c_in * 10 + c_out, inplace=True)
    assert relative_error(y, want) <= TOLERANCE
    assert not implicit.narrow(3, 1) and not implicit.narrow(2, 8)


@pytest.mark.parametrize("seed", range(6))
def test_strided_convs_match_the_reference(seed: int) -> None:
    """Strides 1-3 per axis (MONAI's stride-2 first convs), pads, output channels on both kernels'
    sides (the narrow one runs stride 1 only)."""
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 5, 3))
    stride = tuple(int(s) for s in rng.integers(1, 4, 3))
    spatial = tuple(int(rng.integers(k, k + 12)) for k in kernel)
    pads = tuple(int(rng.integers(0, k)) for k in kernel * 2)
    c_in, c_out = int(rng.integers(1, 5)), int(rng.choice([2, 8, 16, 24]))
    x = rng.standard_normal((1 + seed % 2, c_in, *spatial))
    w = rng.standard_normal((c_out, c_in, *kernel)) / np.sqrt(c_in * np.prod(kernel))
    b = rng.standard_normal(c_out)
    want = reference.conv(x, w, b, stride, (1, 1, 1), pads, 1)
    conv = implicit.ImplicitConv(torch.from_numpy(w).float(), torch.from_numpy(b).float(), pads, ("elu",), ALPHA,
                                 spatial, stride=stride)
    assert relative_error(conv(channels_last(x)), ACTIVATIONS["elu"](want)) <= TOLERANCE, (kernel, stride, pads)
