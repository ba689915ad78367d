"""Overlap-save FFT convolution for stride-1 kernels of any size (ZNNi's FFT primitive, tiled).

The output is cut into tiles of m = n - k + 1 voxels per axis; each tile reads an n-voxel input
tile, whose real FFT is multiplied with the kernel's spectrum (computed once, at build time) as one
complex GEMM per frequency over the channels: Y[f] (tiles x C') = X[f] (tiles x C) @ conj(W[f])
(C x C'). The inverse FFT's first m voxels per axis are exact (cross-correlation, no wrap-around).
Tiles of every item and depth row go slab by slab (`slab_tiles`), so each frequency's kernel block
serves a slab's tiles. Where the CPU backend asks for it (`native`), every stage runs in C
(kernels/spectral.c): the transforms vectorized over channels on the channels-last input, line plans
from `line_plan`, the products, and the inverse written straight into the output; else (CUDA,
training, or no C compiler) torch's FFTs and torch.bmm on frequency-major copies. Error is that of
float32 FFTs, about 1e-6 relative. `weight_gradient` is training's weight gradient on the same tiles.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from znnx.errors import KernelUnavailable
from znnx.ir.ops import conv_spatial
from znnx.kernels import native, scratch
from znnx.kernels.epilogue import Scale, epilogue_step

SLAB_BYTES = 16 << 20
MIN_TILES = 16
NATIVE_MIN_TILES = 48
"""The C path's least tiles per slab: its kernel spectra stream from memory once per slab (602 MB for an
80-channel 28-point layer), so more tiles per slab read them less often: two 107^3 fragments of n926's
largest layer at FFT 28 ran 2.6-2.7 s with 16, 2.2 with 32, 2.05-2.09 with 48, 2.0 with 64 and 2.3 with 96
(slab buffers beyond the caches' reach); 48 holds a slab's spectra and products in 0.7-0.9 GB there."""
LANES = 16
"""Channels per vector of the C stages: the kernel spectra's output channels are padded to a multiple
of it (zeros)."""
FACTORS = (8, 4, 2, 3, 5, 7)
"""The radices a line plan splits its size by, in this order (sizes with other prime factors have none)."""

_POINTER, _SIZE = ctypes.c_void_p, ctypes.c_ssize_t


@functools.cache
def _library() -> ctypes.CDLL:
    from importlib.resources import files

    lib = native.load("spectral", native.with_vectors(files("znnx.kernels").joinpath("spectral.c").read_text()))
    lib.fft_forward.argtypes = [_POINTER, _SIZE, _SIZE, _SIZE, _SIZE, _POINTER, _POINTER, _SIZE, _POINTER, _POINTER,
                                _POINTER, _POINTER, _POINTER]
    lib.spectral_products.argtypes = [_POINTER] * 3 + [_SIZE] * 4
    lib.fft_inverse.argtypes = [_POINTER, _SIZE, _POINTER, _SIZE, _POINTER, ctypes.c_int, _POINTER, _POINTER, _POINTER,
                                _POINTER, _SIZE, _SIZE, _SIZE, _SIZE, _POINTER, _POINTER, _SIZE]
    for function in (lib.fft_forward, lib.spectral_products, lib.fft_inverse):
        function.restype = None
    return lib


def available() -> bool:
    """Whether kernels/spectral.c builds here (a C compiler is at hand)."""
    try:
        _library()
    except KernelUnavailable:
        return False
    return True


def _factors(n: int) -> tuple[list[int], int]:
    """n split into FACTORS, in their order, and what is left (1 where n is a product of them)."""
    radices, rest = [], n
    for p in FACTORS:
        while rest % p == 0:
            radices.append(p)
            rest //= p
    return radices, rest


def smooth(n: int) -> bool:
    """Whether an FFT of n points has a line plan (n a product of FACTORS)."""
    return _factors(n)[1] == 1


@dataclass(frozen=True)
class Stage:
    """One stage of a line plan: radix `p`, `blocks` DFTs of `size` points out, the first `rows`
    points kept; `twiddles` (p, size / p) and the p-point DFT `dft` (p, p)."""

    p: int
    blocks: int
    size: int
    rows: int
    twiddles: np.ndarray
    dft: np.ndarray

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """NumPy's version of kernels/spectral.c `transform` for this stage, on the points of `y`."""
        z = self.twiddles[:, None, :] * y.reshape(self.p, self.blocks, self.size // self.p)
        return np.einsum("jq,qbk->bjk", self.dft, z).reshape(-1)[:self.rows]


def line_plan(n: int, sign: int, rows: int) -> list[Stage]:
    """The stages of an n-point DFT (exp(sign 2 pi i j k / n), unnormalized) that keeps its first `rows`
    points, in the order they run. Decimation in time over the radices r_0 ... r_s-1: level t holds
    DFTs of N_t = r_t ... r_s-1 points of the input's every (r_0 ... r_t-1)-th point from offset b
    (block b); point k0 + j N_t / r_t of block b is the r_t-point DFT (index j) of the points k0 of the
    blocks b + q r_0 ... r_t-1 one level down, each times exp(sign 2 pi i q k0 / N_t); the deepest
    level's blocks are the input's points in natural order."""
    radices, rest = _factors(n)
    if rest > 1:
        raise ValueError(f"fft: {n} points have the prime factor {rest}; FFT sizes must be products of {FACTORS}")
    stages = []
    for t in reversed(range(len(radices))):
        p, blocks, size = radices[t], int(np.prod(radices[:t])), int(np.prod(radices[t:]))
        q, k = np.meshgrid(np.arange(p), np.arange(size // p), indexing="ij")
        twiddles = np.exp(sign * 2j * np.pi * q * k / size)
        dft = np.exp(sign * 2j * np.pi * np.outer(np.arange(p), np.arange(p)) / p)
        stages.append(Stage(p, blocks, size, rows if t == 0 else blocks * size, twiddles, dft))
    return stages


def _line_plans(lines: Sequence[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`lines` ((n, sign, rows) each) packed for kernels/spectral.c: the int plan (per line: stages, then
    p, blocks, size, rows and first coefficient per stage), where each line starts in it, and the
    coefficients (per stage its twiddles then its DFT, as re, im floats)."""
    plan: list[int] = []
    starts, coefficients = [], []
    first = 0
    for n, sign, rows in lines:
        stages = line_plan(n, sign, rows)
        starts.append(len(plan))
        plan.append(len(stages))
        for stage in stages:
            plan += [stage.p, stage.blocks, stage.size, stage.rows, first]
            coefficients += [stage.twiddles.reshape(-1), stage.dft.reshape(-1)]
            first += stage.twiddles.size + stage.dft.size
    return (np.array(plan, dtype=np.int32), np.array(starts, dtype=np.int32),
            np.concatenate([*coefficients, np.zeros(0)]).astype(np.complex64).view(np.float32))


def _address(a: np.ndarray) -> int:
    return int(a.ctypes.data)


def _padded_channels(c_out: int) -> int:
    return -(-c_out // LANES) * LANES


def applicable(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], groups: int) -> bool:
    return (tuple(stride) == (1, 1, 1) and tuple(dilation) == (1, 1, 1) and groups == 1
            and any(k > 1 for k in kernel))


def _tile(kernel: Sequence[int], size: int) -> tuple[int, ...]:
    """FFT size per axis: `size` (at least the kernel) along axes with k > 1, else 1."""
    return tuple(max(size, k) if k > 1 else 1 for k in kernel)


def slab_tiles(freqs: int, c_in: int, c_out: int, slab_bytes: int = SLAB_BYTES, least: int = MIN_TILES) -> int:
    """Tiles transformed and multiplied together: as many as `slab_bytes` of spectra hold, at least
    `least`, since each frequency's kernel block (C x C' complex) is read once per slab: one tile
    per slab made a 24^3-point FFT layer of 80 channels a string of matrix-vector products (383 MB
    of kernel spectra streamed per tile: 21.7 s, slower than direct)."""
    return max(least, slab_bytes // (freqs * (c_in + c_out) * 8))


def footprint(c_in: int, c_out: int, kernel: Sequence[int], size: int, in_spatial: Sequence[int],
              native: bool = False) -> tuple[int, int]:
    """(kernel spectra bytes, scratch bytes): torch's way (`native` False) needs the padded input and a
    slab's spectra about three times, kernels/spectral.c a slab's spectra and products only (it reads
    the input where it is)."""
    n = _tile(kernel, size)
    freqs = n[0] * n[1] * (n[2] // 2 + 1)
    if native:
        slab = slab_tiles(freqs, c_in, c_out, least=NATIVE_MIN_TILES) * freqs * (c_in + _padded_channels(c_out)) * 8
        return freqs * c_in * _padded_channels(c_out) * 8, slab
    slab = slab_tiles(freqs, c_in, c_out) * freqs * (c_in + c_out) * 8
    padded = c_in * int(np.prod([s + n_ for s, n_ in zip(in_spatial, n)])) * 4
    return freqs * c_in * c_out * 8, padded + 3 * slab


def _padded(x: torch.Tensor, pads: Sequence[int], kernel: Sequence[int], grid: Sequence[int], m: Sequence[int],
            spatial: Sequence[int]) -> torch.Tensor:
    """`x` (N, C, D, H, W) zero-padded by `pads` (d, h, w) in front and behind to cover a `grid` of tiles
    of `m` outputs for `kernel`, as an (N, D, H, W, C) view of a channels-last tensor."""
    full = [g * t + k - 1 for g, t, k in zip(grid, m, kernel)]
    xp = torch.empty((x.shape[0], x.shape[1], *full), dtype=x.dtype, device=x.device,
                     memory_format=torch.channels_last_3d).zero_()
    pd, ph, pw = pads
    d, h, w = spatial
    xp[:, :, pd:pd + d, ph:ph + h, pw:pw + w].copy_(x)
    return xp.permute(0, 2, 3, 4, 1)


def _plane_tiles(t: torch.Tensor, item: int, row: int, size: Sequence[int], step: Sequence[int],
                 grid: Sequence[int]) -> torch.Tensor:
    """Tile row `row` (depth) of item `item` of `t` (N, D, H, W, C): the grid[1] x grid[2] windows of
    `size` voxels every `step` voxels, as a strided (grid[1], grid[2], *size, C) view."""
    sd, sh, sw, sc = t.stride()[1:]
    window = t[item, row * step[0]:row * step[0] + size[0]]
    return window.as_strided((grid[1], grid[2], *size, t.shape[4]), (sh * step[1], sw * step[2], sd, sh, sw, sc))


def _store(outputs: torch.Tensor, target: torch.Tensor, grid: Sequence[int], m: Sequence[int]) -> None:
    """Copy one tile row's `outputs` (grid[1] * grid[2] tiles of m voxels per axis, C) into `target`
    (its depth rows of the output, (d, H, W, C)) in place: whole tiles and the partial last tile along
    height and width as up to four strided copies, each output moved once (a reshape to the row's
    layout and then a copy into the output had moved each twice)."""
    _, gh, gw = grid
    md, mh, mw = m
    depth, height, width = target.shape[:3]
    tiles = outputs.view(gh, gw, md, mh, mw, outputs.shape[-1])
    whole_h, rest_h = divmod(height, mh)
    whole_w, rest_w = divmod(width, mw)
    for first_h, count_h, rows in ((0, whole_h, mh), (whole_h, 1, rest_h)):
        for first_w, count_w, cols in ((0, whole_w, mw), (whole_w, 1, rest_w)):
            if count_h * rows == 0 or count_w * cols == 0:
                continue
            region = target[:, first_h * mh:first_h * mh + count_h * rows, first_w * mw:first_w * mw + count_w * cols]
            region.unflatten(2, (count_w, cols)).unflatten(1, (count_h, rows)).copy_(
                tiles[first_h:first_h + count_h, first_w:first_w + count_w, :depth, :rows, :cols].permute(
                    2, 0, 3, 1, 4, 5))


class FFTConv:
    """One stride-1 convolution by tiled FFTs of `size` voxels per axis (1 along axes where k = 1)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pads: Sequence[int], size: int,
                 steps: Sequence[str], alpha: float, spatial: Sequence[int], slab_bytes: int = SLAB_BYTES,
                 scale: Scale | None = None, native: bool = False, slope: torch.Tensor | None = None) -> None:
        """`native`: every stage by kernels/spectral.c, a CPU kernel (the CPU backend asks for it; torch's
        way where no C compiler is at hand or a tile size has a prime factor above 7), else torch's FFTs
        and torch.bmm on the weights' device."""
        c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
        self.kernel = tuple(int(k) for k in weight.shape[2:])
        self.c_in, self.c_out = c_in, c_out
        self.n = _tile(self.kernel, size)
        self.m = tuple(n - k + 1 for n, k in zip(self.n, self.kernel))
        self.pads = tuple(int(p) for p in pads)
        self.spatial = tuple(int(s) for s in spatial)
        self.out_spatial = conv_spatial(self.spatial, self.kernel, self.pads)
        self.grid = tuple(-(-o // m) for o, m in zip(self.out_spatial, self.m))
        spectrum = torch.conj_physical(torch.fft.rfftn(weight.detach().float(), s=self.n, dim=(2, 3, 4)))
        self.freqs = spectrum.shape[2] * spectrum.shape[3] * spectrum.shape[4]
        self.native = native and all(smooth(n) for n in self.n) and available()
        self.w = self._native_weights(spectrum) if self.native else spectrum.permute(2, 3, 4, 1, 0).reshape(
            -1, c_in, c_out)
        nd, nh, nw = self.n
        self.lines = _line_plans([(nw, -1, nw), (nh, -1, nh), (nd, -1, nd), (nw, 1, self.m[2]),
                                  (nh, 1, self.m[1]), (nd, 1, self.m[0])]) if self.native else None
        self.bias = None if bias is None else bias.detach().float()
        add_first = tuple(steps[:1]) == ("add",)
        self.add_first = add_first
        self.actions = [epilogue_step(s, alpha, inplace=True, scale=scale, slope=slope) for s in steps[add_first:]]
        # The C inverse adds the bias (`shift`) and, where the whole epilogue is one (`relu`), the ReLU as
        # it stores: two passes over the output fewer (0.5 s on n926's largest fragment layer).
        self.relu = tuple(steps) == ("relu",)
        self.shift = torch.zeros(_padded_channels(c_out))
        if self.bias is not None:
            self.shift[:c_out] = self.bias
        self.count = slab_tiles(self.freqs, c_in, c_out, slab_bytes, NATIVE_MIN_TILES if self.native else MIN_TILES)

    def _native_weights(self, spectrum: torch.Tensor) -> torch.Tensor:
        """The kernel spectra for kernels/spectral.c: (F, C, re | im, C' padded to LANES), scaled by the
        inverse transform's 1 / N and the 1 / 2 of the forward transform's doubled spectra."""
        scaled = (spectrum / (2 * math.prod(self.n))).permute(2, 3, 4, 1, 0).reshape(self.freqs, self.c_in,
                                                                                       self.c_out)
        w = torch.zeros((self.freqs, self.c_in, 2, _padded_channels(self.c_out)), device=spectrum.device)
        w[:, :, 0, :self.c_out] = scaled.real
        w[:, :, 1, :self.c_out] = scaled.imag
        return w

    def _products(self, tiles: torch.Tensor, work: Sequence[torch.Tensor]) -> torch.Tensor:
        """The exact (first m per axis) outputs of input `tiles` (T, nd, nh, nw, C): their spectra times
        the kernel's, one complex GEMM per frequency over the T tiles, transformed back along depth and
        height, and only the rows kept along width (one irfftn: 19% slower). Every stage writes into
        `work` (`_work`: spectra, products, planes, rows for a slab), reused slab after slab, so that no
        slab-sized tensor is page-faulted in per slab (with 4 KiB pages that was a third of an
        80-channel layer's time; znnx/preload.py asks for huge pages too)."""
        nd, nh, nw = self.n
        md, mh, mw = self.m
        count = tiles.shape[0]
        spec_buffer, prod_buffer, plane_buffer, row_buffer = (buffer[:count] for buffer in work)
        spec = torch.fft.rfftn(tiles, dim=(1, 2, 3), out=spec_buffer).view(count, self.freqs, self.c_in)
        prod = self._bmm_products(spec, prod_buffer.view(count, self.freqs, self.c_out))
        planes = torch.fft.ifftn(prod.view(count, nd, nh, -1, self.c_out), dim=(1, 2), out=plane_buffer)
        return torch.fft.irfft(planes[:, :md, :mh], n=nw, dim=3, out=row_buffer)[:, :, :, :mw]

    def _work(self, device: torch.device) -> list[torch.Tensor]:
        """Buffers for one slab of `_products`: spectra, products, inverse planes, inverse rows."""
        (nd, nh, nw), (md, mh, _) = self.n, self.m
        half, complex64 = nw // 2 + 1, torch.complex64
        return [torch.empty((self.count, nd, nh, half, self.c_in), dtype=complex64, device=device),
                torch.empty((self.count, nd, nh, half, self.c_out), dtype=complex64, device=device),
                torch.empty((self.count, nd, nh, half, self.c_out), dtype=complex64, device=device),
                torch.empty((self.count, md, mh, nw, self.c_out), device=device)]

    def _bmm_products(self, spec: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`out` (T, F, C') = products of (T, F, C) spectra: torch.bmm per frequency on frequency-major
        copies."""
        return out.copy_(torch.bmm(spec.transpose(0, 1).contiguous(), self.w).transpose(0, 1))

    def _native(self, xl: torch.Tensor, yl: torch.Tensor) -> None:
        """Every tile of `xl` (the unpadded input, (N, D, H, W, C), channels contiguous) into `yl`
        ((N, D', H', W', C'), channels contiguous) by kernels/spectral.c, slab by slab: forward
        transforms reading zeros wherever a tile reaches past the input (padding, last tiles), products,
        inverse transforms written into `yl` (with the bias, and the ReLU where it is the epilogue)
        where each tile lies inside it."""
        lib = _library()
        assert self.lines is not None
        plan, starts, coefficients = self.lines
        items, tiles = xl.shape[0], int(np.prod(self.grid))
        index = np.stack(np.unravel_index(np.arange(items * tiles), (items, *self.grid)), axis=1)
        first = index[:, 1:] * np.array(self.m)
        start = first - np.array(self.pads[:3])
        in_origin = index[:, 0] * xl.stride(0) + start @ np.array(xl.stride()[1:4])
        bounds = np.stack([np.clip(-start, 0, None), np.minimum(np.array(self.n), np.array(self.spatial) - start)],
                          axis=2).reshape(-1, 6)
        out_origin = index[:, 0] * yl.stride(0) + first @ np.array(yl.stride()[1:4])
        extent = np.minimum(np.array(self.m), np.array(self.out_spatial) - first)
        n = np.array(self.n, dtype=np.int64)
        count = min(self.count, len(index))
        cop = int(self.w.shape[3])
        spec = scratch.buffer("v", count * self.freqs * 2 * self.c_in)
        prod = scratch.buffer("m", count * self.freqs * 2 * cop)
        forward, inverse = (np.ascontiguousarray(axes) for axes in (starts[:3], starts[3:]))
        for chunk in (slice(s, s + count) for s in range(0, len(index), count)):
            tiles_in, tile_bounds, tiles_out, extents = (np.ascontiguousarray(a[chunk], dtype=np.int64)
                                                         for a in (in_origin, bounds, out_origin, extent))
            t = len(tiles_in)
            lib.fft_forward(xl.data_ptr(), *xl.stride()[1:4], self.c_in, _address(tiles_in), _address(tile_bounds), t,
                            _address(n), _address(plan), _address(coefficients), _address(forward), spec.data_ptr())
            lib.spectral_products(spec.data_ptr(), self.w.data_ptr(), prod.data_ptr(), t, self.freqs, self.c_in, cop)
            lib.fft_inverse(prod.data_ptr(), cop, _address(n), self.m[0], self.shift.data_ptr(), int(self.relu),
                            _address(plan), _address(coefficients),
                            _address(inverse), yl.data_ptr(), *yl.stride()[1:4], self.c_out, _address(tiles_out),
                            _address(extents), t)

    def _torch(self, xl: torch.Tensor, yl: torch.Tensor) -> None:
        """Every tile of `xl` (the padded input, (N, D, H, W, C)) into `yl` by torch's FFTs: a slab's
        tiles copied out depth row by depth row, `_products`, the exact outputs stored."""
        (md, mh, mw), (gd, gh, gw) = self.m, self.grid
        do = self.out_spatial[0]
        per_plane = gh * gw
        planes = [(i, td) for i in range(xl.shape[0]) for td in range(gd)]
        group = max(1, -(-self.count // per_plane))
        tile_rows = torch.empty((group * per_plane, *self.n, self.c_in), dtype=xl.dtype, device=xl.device)
        output_rows = torch.empty((group * per_plane, md, mh, mw, self.c_out), dtype=xl.dtype, device=xl.device)
        work = self._work(xl.device)
        for start in range(0, len(planes), group):
            chosen = planes[start:start + group]
            tiles, outputs = tile_rows[:len(chosen) * per_plane], output_rows[:len(chosen) * per_plane]
            for k, (i, td) in enumerate(chosen):
                tiles[k * per_plane:(k + 1) * per_plane].view(gh, gw, *self.n, self.c_in).copy_(
                    _plane_tiles(xl, i, td, self.n, self.m, self.grid))
            for first in range(0, tiles.shape[0], self.count):
                outputs[first:first + self.count].copy_(self._products(tiles[first:first + self.count], work))
            for k, (i, td) in enumerate(chosen):
                _store(outputs[k * per_plane:(k + 1) * per_plane], yl[i, td * md:min(td * md + md, do)],
                       self.grid, self.m)

    def __call__(self, x: torch.Tensor, *, out: torch.Tensor | None = None,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
        aliased = out is not None and out.data_ptr() in {x.data_ptr(), *(() if residual is None else
                                                                          (residual.data_ptr(),))}
        y = out if out is not None and not aliased else torch.empty(
            (x.shape[0], self.c_out, *self.out_spatial), device=x.device, dtype=x.dtype,
            memory_format=torch.channels_last_3d)
        yl = y.permute(0, 2, 3, 4, 1)
        native = self.native and yl.stride(4) == 1
        if native:
            self._native(x.contiguous(memory_format=torch.channels_last_3d).permute(0, 2, 3, 4, 1), yl)
        else:
            self._torch(_padded(x, self.pads[:3], self.kernel, self.grid, self.m, self.spatial), yl)
            if self.bias is not None:
                y.add_(self.bias.view(1, -1, 1, 1, 1))
        if self.add_first:
            assert residual is not None
            y.add_(residual)
        xs = [x] if residual is None else [x, residual]
        for action in self.actions[native and self.relu:]:
            y = action(y, xs)
        return out.copy_(y) if aliased and out is not None else y


def weight_gradient(x: torch.Tensor, g: torch.Tensor, kernel: Sequence[int], pads: Sequence[int],
                    size: int, slab_bytes: int = SLAB_BYTES) -> torch.Tensor:
    """dL/dW (C_out, C_in, *kernel) of the stride-1 convolution of `x` (N, C_in, D, H, W) with
    symmetric `pads` (d, h, w) whose output gradient is `g` (N, C_out, *out), by tiled FFTs (ZNN's
    FFT weight update): dW[a] = sum_o g[o] x[o + a] is, per output tile of m = n - k + 1 voxels per
    axis, the correlation of the tile's gradient (zero-padded to n) with the n-voxel input tile from
    the same origin, exact for a < k without wrap-around. Spectra are multiplied and summed over
    every tile of every item as one complex GEMM per frequency (C_in x tiles @ tiles x C_out), slab by
    slab into one sum, transformed back once."""
    kernel = tuple(int(k) for k in kernel)
    n = _tile(kernel, size)
    m = tuple(a - k + 1 for a, k in zip(n, kernel))
    n_items, c_in = int(x.shape[0]), int(x.shape[1])
    c_out, out_spatial = int(g.shape[1]), tuple(int(s) for s in g.shape[2:])
    grid = tuple(-(-o // t) for o, t in zip(out_spatial, m))
    xp = _padded(x.float(), pads, kernel, grid, m, x.shape[2:])
    gp = _padded(g.float(), (0, 0, 0), (1, 1, 1), grid, m, out_spatial)
    freqs = n[0] * n[1] * (n[2] // 2 + 1)
    per_plane = grid[1] * grid[2]
    group = max(1, -(-slab_tiles(freqs, c_in, c_out, slab_bytes) // per_plane))
    total = torch.zeros((freqs, c_in, c_out), dtype=torch.complex64)
    planes = [(i, td) for i in range(n_items) for td in range(grid[0])]
    for start in range(0, len(planes), group):
        chosen = planes[start:start + group]
        x_tiles = torch.cat([_plane_tiles(xp, i, td, n, m, grid).flatten(0, 1) for i, td in chosen])
        g_tiles = torch.cat([_plane_tiles(gp, i, td, m, m, grid).flatten(0, 1) for i, td in chosen])
        # spatial axes first, so each frequency's (C_in x tiles) and (tiles x C_out) blocks are contiguous
        xf = torch.fft.rfftn(x_tiles.permute(1, 2, 3, 4, 0).contiguous(), dim=(0, 1, 2)).reshape(freqs, c_in, -1)
        gf = torch.fft.rfftn(g_tiles.permute(1, 2, 3, 0, 4).contiguous(), s=n, dim=(0, 1, 2))
        total.baddbmm_(xf, torch.conj_physical(gf).reshape(freqs, -1, c_out))
    spectrum = total.reshape(n[0], n[1], n[2] // 2 + 1, c_in, c_out)
    full = torch.fft.irfftn(spectrum, s=n, dim=(0, 1, 2))
    return full[:kernel[0], :kernel[1], :kernel[2]].permute(4, 3, 0, 1, 2).float().contiguous()
