"""Overlap-save FFT convolution for stride-1 kernels of any size (ZNNi's FFT primitive, tiled).

The output is cut into tiles of m = n - k + 1 voxels per axis; each tile reads an n-voxel input
tile, whose real FFT is multiplied with the kernel's spectrum (computed once, at build time) as one
complex GEMM per frequency over the channels: Y[f] (tiles x C') = X[f] (tiles x C) @ conj(W[f])
(C x C'). The inverse FFT's first m voxels per axis are exact (cross-correlation, no wrap-around).
Tiles of every item and depth row go slab by slab (`slab_tiles`), so each frequency's kernel block
serves a slab's tiles. The products run in C on the spectra as they are (kernels/spectral.c) where
the CPU backend asks for it, else (CUDA, or no C compiler) as torch.bmm on frequency-major copies.
Error is that of float32 FFTs, about 1e-6 relative. `weight_gradient` is training's weight gradient
on the same tiles.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import numpy as np
import torch

from znnx.errors import KernelUnavailable
from znnx.ir.ops import conv_spatial
from znnx.kernels import native
from znnx.kernels.epilogue import Scale, epilogue_step

SLAB_BYTES = 16 << 20
MIN_TILES = 16
LANES = 8
"""Complex values per vector of the C products: the kernel spectra's output channels are padded to
a multiple of it (zeros)."""


@functools.cache
def _library() -> ctypes.CDLL:
    from importlib.resources import files

    lib = native.load("spectral", native.with_vectors(files("znnx.kernels").joinpath("spectral.c").read_text()))
    lib.spectral_products.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_ssize_t] * 5
    lib.spectral_products.restype = None
    return lib


def _padded_channels(c_out: int) -> int:
    return -(-c_out // LANES) * LANES


def applicable(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], groups: int) -> bool:
    return (tuple(stride) == (1, 1, 1) and tuple(dilation) == (1, 1, 1) and groups == 1
            and any(k > 1 for k in kernel))


def _tile(kernel: Sequence[int], size: int) -> tuple[int, ...]:
    """FFT size per axis: `size` (at least the kernel) along axes with k > 1, else 1."""
    return tuple(max(size, k) if k > 1 else 1 for k in kernel)


def slab_tiles(freqs: int, c_in: int, c_out: int, slab_bytes: int = SLAB_BYTES) -> int:
    """Tiles transformed and multiplied together: as many as `slab_bytes` of spectra hold, at least
    MIN_TILES, since each frequency's kernel block (C x C' complex) is read once per slab: one tile
    per slab made a 24^3-point FFT layer of 80 channels a string of matrix-vector products (383 MB
    of kernel spectra streamed per tile: 21.7 s, slower than direct)."""
    return max(MIN_TILES, slab_bytes // (freqs * (c_in + c_out) * 8))


def footprint(c_in: int, c_out: int, kernel: Sequence[int], size: int, in_spatial: Sequence[int]) -> tuple[int, int]:
    """(kernel spectra bytes, scratch bytes: the padded input and a slab's spectra, about three times)."""
    n = _tile(kernel, size)
    freqs = n[0] * n[1] * (n[2] // 2 + 1)
    padded = c_in * int(np.prod([s + n_ for s, n_ in zip(in_spatial, n)])) * 4
    slab = slab_tiles(freqs, c_in, c_out) * freqs * (c_in + c_out) * 8
    return freqs * c_in * _padded_channels(c_out) * 8, padded + 3 * slab


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
                 scale: Scale | None = None, c_products: bool = False, slope: torch.Tensor | None = None) -> None:
        """`c_products`: the frequency products by kernels/spectral.c, a CPU kernel (the CPU backend
        asks for it), else by torch.bmm on the weights' device."""
        c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
        self.kernel = tuple(int(k) for k in weight.shape[2:])
        self.c_in, self.c_out = c_in, c_out
        self.n = _tile(self.kernel, size)
        self.m = tuple(n - k + 1 for n, k in zip(self.n, self.kernel))
        self.pads = tuple(int(p) for p in pads)
        self.spatial = tuple(int(s) for s in spatial)
        self.out_spatial = conv_spatial(self.spatial, self.kernel, self.pads)
        self.grid = tuple(-(-o // m) for o, m in zip(self.out_spatial, self.m))
        spectrum = torch.fft.rfftn(weight.detach().float(), s=self.n, dim=(2, 3, 4))
        self.freqs = spectrum.shape[2] * spectrum.shape[3] * spectrum.shape[4]
        self.w = torch.zeros((self.freqs, c_in, _padded_channels(c_out)), dtype=torch.complex64, device=weight.device)
        self.w[:, :, :c_out] = torch.conj_physical(spectrum).permute(2, 3, 4, 1, 0).reshape(-1, c_in, c_out)
        self.products = self._c_products if c_products else self._bmm_products
        self.bias = None if bias is None else bias.detach().float()
        add_first = tuple(steps[:1]) == ("add",)
        self.add_first = add_first
        self.actions = [epilogue_step(s, alpha, inplace=True, scale=scale, slope=slope) for s in steps[add_first:]]
        self.count = slab_tiles(self.freqs, c_in, c_out, slab_bytes)

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
        prod = self.products(spec, prod_buffer.view(count, self.freqs, self.c_out))
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
        return out.copy_(torch.bmm(spec.transpose(0, 1).contiguous(), self.w[:, :, :self.c_out]).transpose(0, 1))

    def _c_products(self, spec: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """`out` (T, F, C') = products of (T, F, C) spectra by kernels/spectral.c, reading them where
        they are; torch.bmm's way where no C compiler is at hand."""
        try:
            lib = _library()
        except KernelUnavailable:
            self.products = self._bmm_products
            return self._bmm_products(spec, out)
        lib.spectral_products(spec.data_ptr(), self.w.data_ptr(), out.data_ptr(), spec.shape[0], self.freqs,
                              self.c_in, self.c_out, self.w.shape[2])
        return out

    def __call__(self, x: torch.Tensor, *, out: torch.Tensor | None = None,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
        n_items = x.shape[0]
        (md, mh, mw), (gd, gh, gw) = self.m, self.grid
        xl = _padded(x, self.pads[:3], self.kernel, self.grid, self.m, self.spatial)
        aliased = out is not None and residual is not None and out.data_ptr() == residual.data_ptr()
        y = out if out is not None and not aliased else torch.empty(
            (n_items, self.c_out, *self.out_spatial), device=x.device, dtype=x.dtype,
            memory_format=torch.channels_last_3d)
        yl = y.permute(0, 2, 3, 4, 1)
        do = self.out_spatial[0]
        per_plane = gh * gw
        planes = [(i, td) for i in range(n_items) for td in range(gd)]
        group = max(1, -(-self.count // per_plane))
        tile_rows = torch.empty((group * per_plane, *self.n, self.c_in), dtype=x.dtype, device=x.device)
        output_rows = torch.empty((group * per_plane, md, mh, mw, self.c_out), dtype=x.dtype, device=x.device)
        work = self._work(x.device)
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
        if self.bias is not None:
            y.add_(self.bias.view(1, -1, 1, 1, 1))
        if self.add_first:
            assert residual is not None
            y.add_(residual)
        xs = [x] if residual is None else [x, residual]
        for action in self.actions:
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
