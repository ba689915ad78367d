"""Tiled overlap-save FFT convolution against the reference executor's conv: any kernel size,
odd shapes, padding, epilogues, tile sizes that do and do not divide the output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.kernels.epilogue import ALPHA, Case, arrays, channels_last, expected, out_shape, relative_error, steps_for
from znnx.kernels import fft

KERNELS = [(3, 3, 3), (1, 5, 5), (5, 5, 5), (3, 5, 1), (2, 3, 4)]


@pytest.mark.parametrize("c_products", [True, False])
@pytest.mark.parametrize("size", [8, 16])
@pytest.mark.parametrize("seed", range(10))
def test_random_shapes_match_the_reference(size: int, seed: int, c_products: bool) -> None:
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
                       case.spatial, c_products=c_products)
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


@pytest.mark.parametrize(("tiles", "c_in", "c_out"), [(1, 1, 1), (5, 3, 19), (16, 80, 80), (7, 24, 3), (9, 17, 40)])
def test_c_products_equal_bmm_on_every_block_and_tail(tiles: int, c_in: int, c_out: int) -> None:
    """kernels/spectral.c's products against torch.bmm's: tile counts that fill and do not fill its
    4-row block, output channels over one, two and three vectors, with and without a partial last vector."""
    w = torch.randn(c_out, c_in, 3, 3, 3)
    conv = fft.FFTConv(w, None, (0,) * 6, 8, (), 0.0, (9, 9, 9), c_products=True)
    g = torch.Generator().manual_seed(tiles)
    spec = torch.complex(torch.randn(tiles, conv.freqs, c_in, generator=g), torch.randn(tiles, conv.freqs, c_in,
                                                                                          generator=g))
    got = conv._c_products(spec, torch.empty((tiles, conv.freqs, c_out), dtype=torch.complex64))
    want = conv._bmm_products(spec, torch.empty((tiles, conv.freqs, c_out), dtype=torch.complex64))
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_without_a_compiler_the_products_run_as_bmm(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> None:
        raise fft.KernelUnavailable("kernels: no C compiler (test)")

    w, b = torch.randn(5, 3, 3, 3, 3), torch.randn(5)
    x = channels_last(np.random.default_rng(0).standard_normal((1, 3, 11, 12, 10)))
    with_c = fft.FFTConv(w, b, (1,) * 6, 8, ("relu",), 0.0, (11, 12, 10), c_products=True)(x)
    monkeypatch.setattr(fft, "_library", unavailable)
    conv = fft.FFTConv(w, b, (1,) * 6, 8, ("relu",), 0.0, (11, 12, 10), c_products=True)
    torch.testing.assert_close(conv(x), with_c, rtol=1e-5, atol=1e-5)
    assert conv.products == conv._bmm_products
