"""Tiled overlap-save FFT convolution against the reference executor's conv: any kernel size,
odd shapes, padding, epilogues, tile sizes that do and do not divide the output; the C stages'
line plans against NumPy's FFT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.kernels.epilogue import ALPHA, Case, arrays, channels_last, expected, out_shape, relative_error, steps_for
from znnx.kernels import fft

KERNELS = [(3, 3, 3), (1, 5, 5), (5, 5, 5), (3, 5, 1), (2, 3, 4)]


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("size", [8, 16, 15])
@pytest.mark.parametrize("seed", range(10))
def test_random_shapes_match_the_reference(size: int, seed: int, native: bool) -> None:
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
                       case.spatial, native=native)
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


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 12, 16, 24, 25, 27, 30, 32, 40, 42, 49, 64, 210])
@pytest.mark.parametrize("sign", [-1, 1])
def test_line_plans_are_the_dft(n: int, sign: int) -> None:
    """Each size's stages (radices 8, 4, 2, 3, 5, 7) equal NumPy's DFT on the rows kept."""
    x = np.random.default_rng(n).standard_normal((n, 2)) @ np.array([1, 1j])
    want = np.fft.fft(x) if sign < 0 else np.fft.ifft(x) * n
    for rows in {n, n // 2 + 1, max(1, n - 3)}:
        y = x
        for stage in fft.line_plan(n, sign, rows):
            y = stage(y)
        np.testing.assert_allclose(y, want[:rows], atol=1e-9 * n)


def test_sizes_with_other_primes_have_no_line_plan() -> None:
    assert fft.smooth(210) and not fft.smooth(22)
    with pytest.raises(ValueError, match="prime factor 11"):
        fft.line_plan(22, -1, 22)


@pytest.mark.parametrize(("c_in", "c_out", "kernel", "size", "spatial", "items"), [
    (1, 1, (3, 3, 3), 8, (9, 9, 9), 1),
    (80, 80, (9, 9, 9), 24, (30, 26, 28), 1),
    (17, 33, (1, 5, 5), 12, (3, 20, 17), 2),
    (5, 40, (5, 1, 3), 9, (13, 4, 11), 2),
    (24, 3, (2, 3, 4), 27, (7, 31, 6), 1),
    (16, 32, (3, 3, 3), 16, (19, 21, 18), 2),
    (32, 16, (7, 7, 7), 32, (40, 35, 37), 1),
    (20, 24, (5, 3, 5), 28, (31, 26, 29), 1),
    (7, 18, (3, 3, 3), 30, (33, 31, 32), 1),
])
def test_native_stages_equal_torch_ffts(c_in: int, c_out: int, kernel: tuple[int, int, int], size: int,
                                        spatial: tuple[int, int, int], items: int) -> None:
    """kernels/spectral.c against torch's FFTs and bmm: channel counts within one vector, over two and a
    partial third, whole vectors only (stored past the caches), axes of one point (k = 1), odd and
    composite sizes (stages of every radix, 8 to 7), odd row counts (a row without a partner in the width
    steps), tiles past every edge, several slabs (a slab of 16 tiles), item batches, an epilogue."""
    g = torch.Generator().manual_seed(c_in)
    w, b = torch.randn(c_out, c_in, *kernel, generator=g), torch.randn(c_out, generator=g)
    x = channels_last(torch.randn(items, c_in, *spatial, generator=g).numpy())
    pads = tuple(k // 2 for k in kernel) * 2
    convs = [fft.FFTConv(w, b, pads, size, ("relu",), 0.0, spatial, slab_bytes=0, native=native)
             for native in (True, False)]
    assert convs[0].native and not convs[1].native
    got, want = (conv(x) for conv in convs)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_without_a_compiler_torch_runs_every_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> None:
        raise fft.KernelUnavailable("kernels: no C compiler (test)")

    w, b = torch.randn(5, 3, 3, 3, 3), torch.randn(5)
    x = channels_last(np.random.default_rng(0).standard_normal((1, 3, 11, 12, 10)))
    with_c = fft.FFTConv(w, b, (1,) * 6, 8, ("relu",), 0.0, (11, 12, 10), native=True)(x)
    monkeypatch.setattr(fft, "_library", unavailable)
    conv = fft.FFTConv(w, b, (1,) * 6, 8, ("relu",), 0.0, (11, 12, 10), native=True)
    assert not conv.native
    torch.testing.assert_close(conv(x), with_c, rtol=1e-5, atol=1e-5)
