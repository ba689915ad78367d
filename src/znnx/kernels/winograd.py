"""Winograd convolution F(m, r) for stride-1 kernels whose sizes are 1, 3 or 5: 3x3x3, (1,3,3),
(3,1,1), (1,5,5), ...

y = A^T [ (G w G^T) . (B^T x B) ] A along every axis of size r > 1 (Lavin & Gray): the input tiles
(t = m + r - 1 voxels per transformed axis) go to the Winograd domain V[tile][p][c], each of the P
points is one GEMM V[p] (tiles x C) @ U[p] (C x C') with the kernel transformed once at build time,
and the output transform writes m voxels per axis with bias and the fused epilogue applied. A
slab of tiles is transformed, multiplied and written back before the next, so the transformed data
stay in cache (PERFORMANCE_NOTES: transforms that stream through memory erase the gain).

Multiplications per output voxel, relative to direct: (t/m)^3 / 27 = 0.30 for F(2,3), 0.125 for
F(4,3) in 3D; (8/4)^2 / 25 = 0.16 for F(4,5) on (1,5,5). F(4,3) loses more precision (points 0,
+-1, +-2, inf): its error bound is 1e-4 relative, F(2,3)'s 1e-5. F(m,3) use Lavin & Gray's
matrices; F(m,5) are built by `cook_toom` on the points 0, +-1, +-2, +-1/2, inf (F(4,5) needs all
eight) and held to the same bounds by the autotuner, which drops them where they miss.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch

from znnx.ir.ops import conv_spatial
from znnx.kernels import native, scratch

F = Fraction
Table = dict[int, list[list[int | Fraction]]]
B_T: Table = {
    2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    4: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
}
G: Table = {
    2: [[1, 0, 0], [F(1, 2), F(1, 2), F(1, 2)], [F(1, 2), F(-1, 2), F(1, 2)], [0, 0, 1]],
    4: [[F(1, 4), 0, 0], [F(-1, 6), F(-1, 6), F(-1, 6)], [F(-1, 6), F(1, 6), F(-1, 6)],
        [F(1, 24), F(1, 12), F(1, 6)], [F(1, 24), F(-1, 12), F(1, 6)], [0, 0, 1]],
}
A_T: Table = {
    2: [[1, 1, 1, 0], [0, 1, -1, -1]],
    4: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
}
POINTS = (F(0), F(1), F(-1), F(2), F(-2), F(1, 2), F(-1, 2))
TILES = (2, 4)
SIZES = (3, 5)
OPS = {"add": 1, "relu": 2, "leaky_relu": 3, "elu": 4, "sigmoid": 5, "tanh": 6, "scale": 7, "gelu": 8, "gelu_tanh": 9,
       "silu": 10, "mish": 11, "softplus": 12, "erf": 13, "prelu": 14}
VB = 16
SLAB_BYTES = 6 << 20
FUSED_WEIGHT_BYTES = 4 << 20
TRANSFORM_SLAB = 1 << 13
"""Channel pairs per slab of `transform_weight`: its float64 temporaries (points x pairs, ~14 MB for
F(4,3)) stay small. At 1 << 15 (57 MB each) they set MONAI's UNet's peak RSS while its 256-channel layers
were tuned (599 MiB, its run 526; now 519) and a 512 x 512 3x3x3 kernel took 0.85 s (now 0.48)."""
Matrix = list[list[Fraction]]


def _solve(rows: Matrix, rhs: list[Fraction]) -> list[Fraction]:
    """A solution of the consistent linear system rows @ v = rhs, by exact Gaussian elimination."""
    width = len(rows[0])
    work = [[*row, b] for row, b in zip(rows, rhs)]
    pivots: list[int] = []
    for col in range(width):
        pick = next((i for i in range(len(pivots), len(work)) if work[i][col] != 0), None)
        if pick is None:
            continue
        r = len(pivots)
        work[r], work[pick] = work[pick], work[r]
        work[r] = [v / work[r][col] for v in work[r]]
        for i in range(len(work)):
            if i != r and work[i][col] != 0:
                work[i] = [a - work[i][col] * b for a, b in zip(work[i], work[r])]
        pivots.append(col)
    if any(row[-1] != 0 for row in work[len(pivots):]):
        raise ValueError("winograd: inconsistent transform system")
    solution = [F(0)] * width
    for r, col in enumerate(pivots):
        solution[col] = work[r][-1]
    return solution


def cook_toom(m: int, r: int) -> tuple[Matrix, Matrix, Matrix]:
    """(B^T, G, A^T) of F(m, r) on the first t - 1 of POINTS and infinity (t = m + r - 1): A^T
    evaluates the product polynomial's coefficients, G the kernel's at each point divided by the
    point's Lagrange denominator, and B^T is solved from sum_p A^T[i,p] G[p,k] B^T[p,j] = [j == i + k]
    (the correlation every tile computes)."""
    t = m + r - 1
    points = POINTS[:t - 1]
    a_t = [[p ** i for p in points] + [F(int(i == m - 1))] for i in range(m)]
    g = [[p ** k / math.prod(p - q for q in points if q != p) for k in range(r)] for p in points]
    g.append([F(int(k == r - 1)) for k in range(r)])
    rows = [[a_t[i][p] * g[p][k] for p in range(t)] for i in range(m) for k in range(r)]
    columns = [_solve(rows, [F(int(j == i + k)) for i in range(m) for k in range(r)]) for j in range(t)]
    return [list(row) for row in zip(*columns)], g, a_t


@functools.cache
def transforms(r: int, m: int) -> tuple[Matrix, Matrix, Matrix]:
    """(B^T, G, A^T) of F(m, r): Lavin & Gray's for r = 3, Cook-Toom's for r = 5 (exact, built once
    per process: every layer's weight transform and the C source read them)."""
    if r == 3:
        b_t, g, a_t = ([[F(c) for c in row] for row in table[m]] for table in (B_T, G, A_T))
        return b_t, g, a_t
    return cook_toom(m, r)


Terms = list[tuple[Fraction, str]]


def _sum(terms: Terms) -> str:
    """C for sum(c * name) over `terms` (vectors), coefficients +-1 without a multiplication."""
    text = " + ".join(name if c == 1 else f"-{name}" if c == -1 else f"{float(c)!r}f * {name}" for c, name in terms)
    return text.replace("+ -", "- ")


def _cost(exprs: Sequence[Terms]) -> int:
    """Vector operations of `exprs`, a multiply-add counting as one."""
    return sum(len(t) - (t[0][0] in (1, -1)) for t in exprs if t)


def _naive(matrix: Sequence[Sequence[Fraction]]) -> tuple[list[tuple[str, Terms]], list[Terms]]:
    """Every row as its own sum: no temporaries."""
    return [], [[(F(c), f"x{j}") for j, c in enumerate(row) if c] for row in matrix]


def _row_pairs(matrix: Sequence[Sequence[Fraction]]) -> tuple[list[tuple[str, Terms]], list[Terms]]:
    """Rows i, j that differ only in the signs of some coefficients share their halves:
    y_i = e + o, y_j = e - o (e: the columns of equal sign, o: the others); Lavin & Gray's trick for
    the points +-p."""
    temps, rows = _naive(matrix)
    done: set[int] = set()
    for i, a in enumerate(matrix):
        for j in range(i + 1, len(matrix)):
            b = matrix[j]
            if i in done or j in done or list(a) == list(b) or any(abs(x) != abs(y) for x, y in zip(a, b)):
                continue
            even = [(F(x), f"x{c}") for c, (x, y) in enumerate(zip(a, b)) if x and x == y]
            odd = [(F(x), f"x{c}") for c, (x, y) in enumerate(zip(a, b)) if x and x == -y]
            if even and odd:
                temps += [(f"e{i}", even), (f"o{i}", odd)]
                rows[i], rows[j] = [(F(1), f"e{i}"), (F(1), f"o{i}")], [(F(1), f"e{i}"), (F(-1), f"o{i}")]
                done |= {i, j}
    return temps, rows


def _column_pairs(matrix: Sequence[Sequence[Fraction]]) -> tuple[list[tuple[str, Terms]], list[Terms]]:
    """Columns a, b whose coefficients agree up to a sign in every row are added and subtracted once:
    each row then takes c * (x_a + x_b) or c * (x_a - x_b)."""
    temps: list[tuple[str, Terms]] = []
    cols = list(zip(*matrix))
    used: dict[int, tuple[int, int]] = {}
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            if a in used or b in used or not all(x and abs(x) == abs(y) for x, y in zip(cols[a], cols[b]) if x or y):
                continue
            temps += [(f"s{a}", [(F(1), f"x{a}"), (F(1), f"x{b}")]), (f"d{a}", [(F(1), f"x{a}"), (F(-1), f"x{b}")])]
            used[a], used[b] = (a, b), (a, b)
    rows = []
    for row in matrix:
        terms: Terms = []
        for c, x in enumerate(row):
            if not x:
                continue
            if c not in used:
                terms.append((F(x), f"x{c}"))
            elif used[c][0] == c:
                terms.append((F(x), f"{'s' if row[used[c][1]] == x else 'd'}{c}"))
        rows.append(terms)
    return temps, rows


def _line(name: str, matrix: Sequence[Sequence[int | Fraction]]) -> str:
    """C for y[i] = sum_j matrix[i][j] x[j] on nb vectors of VB channels (x[j] at x + j * sx; of the
    last vector, the first `tail` lanes, the rest read as zero), with the common subexpressions of
    whichever of `_row_pairs` / `_column_pairs` needs fewer operations."""
    exact = [[F(c) for c in row] for row in matrix]
    temps, rows = min((form(exact) for form in (_naive, _row_pairs, _column_pairs)),
                      key=lambda form: _cost([t for _, t in form[0]] + form[1]))
    loads = ", ".join(f"x{j} = load_n(x + {j} * sx, n)" for j in range(len(matrix[0])))
    signature = "(const float *restrict x, idx sx, float *restrict y, idx sy, int nb, int tail)"
    return "\n".join([f"static inline __attribute__((always_inline)) void {name}{signature} {{",
                      "    for (int b = 0; b < nb; b++, x += VB, y += VB) {",
                      "        const int n = b == nb - 1 ? tail : VB;", f"        const vf {loads};",
                      *(f"        const vf {t} = {_sum(terms)};" for t, terms in temps),
                      *(f"        store(y + {i} * sy, {_sum(terms)});" for i, terms in enumerate(rows)),
                      "    }", "}"])


@functools.cache
def source(lanes: int = VB) -> str:
    """The C source of the kernels on vectors of `lanes` floats (16, or 8 for narrow layers)."""
    from importlib.resources import files

    template = files("znnx.kernels").joinpath("winograd.c").read_text()
    lines, along, cases = [], [], []
    for r in SIZES:
        for m in TILES:
            b_t, _, a_t = transforms(r, m)
            a = [list(col) for col in zip(*a_t)]
            lines += [_line(f"bt{r}{m}", b_t), _line(f"at{r}{m}", a_t), _line(f"a{r}{m}", a)]
            along += [f"ALONG(bt{r}{m})", f"ALONG(at{r}{m})", f"ALONG(a{r}{m})"]
            cases.append(f"    if (k == {r} && m == {m}) {{ a.t = {m + r - 1}; a.m = {m}; a.in = along_bt{r}{m}; "
                         f"a.out = along_at{r}{m}; a.gin = along_a{r}{m}; }}")
    axes = [*along, "", "static axis make_axis(int k, int m) {", "    axis a = {1, 1, 0, 0, 0};", *cases,
            "    return a;", "}"]
    body = template.replace("/*@LINES@*/", "\n\n".join(lines)).replace("/*@AXES@*/", "\n".join(axes))
    return f"#define VB {lanes}\n" + native.with_vectors(body)


@functools.cache
def _library(lanes: int = VB) -> object:
    lib = native.load(f"winograd{lanes}", source(lanes))
    i, p, f = ctypes.c_ssize_t, ctypes.c_void_p, ctypes.c_float
    c = ctypes.c_int
    lib.wino_input.argtypes = [c, p, p, p, i, i, i, i, i, i, c, c, c, c, i, i, i, i, p, i]
    lib.wino_input.restype = None
    lib.wino_output.argtypes = [p, i, c, c, c, c, i, i, i, i, p, p, i, i, i, i, p, p, p, p, c, f]
    lib.wino_output.restype = None
    lib.wino_gemm.argtypes = [p, p, p, i, i, i, i, i]
    lib.wino_gemm.restype = None
    lib.wino_grad_tiles.argtypes = [p, i, i, i, i, c, c, c, c, i, i, i, i, p, i]
    lib.wino_grad_tiles.restype = None
    lib.wino_wgrad_gemm.argtypes = [p, p, p, i, i, i, i, i]
    lib.wino_wgrad_gemm.restype = None
    lib.wino_fused.argtypes = [c, p, p, p, i, i, i, i, i, i, c, c, c, c, i, i, i, i, p, i, p, p, i, i, i, i, p, p, p,
                               p, c, f, i, p, c]
    lib.wino_fused.restype = None
    lib.implicit_conv.argtypes = [p, i, i, i, i, i, p, c, c, c, c, c, c, i, p, p, i, i, i, i, p, p, p, p, c, f]
    lib.implicit_conv.restype = None
    lib.shuffle_conv.argtypes = [p, i, i, i, i, i, p, c, c, c, i, p, p, i, p, p, p, p, c, f]
    lib.shuffle_conv.restype = None
    lib.narrow_conv.argtypes = [p, i, i, i, i, i, p, p, c, c, c, p, p, i, i, i, i, p, p, p, p, c, f]
    lib.narrow_conv.restype = None
    lib.scatter_conv.argtypes = [p, i, i, i, i, i, p, i, c, c, c, c, c, c, c, c, c, p, i, i, i, i, p, p, p, p, p, i,
                                 p, c, f]
    lib.scatter_conv.restype = None
    return lib


def applicable(kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], groups: int) -> bool:
    return (all(k in (1, *SIZES) for k in kernel) and any(k > 1 for k in kernel) and tuple(stride) == (1, 1, 1)
            and tuple(dilation) == (1, 1, 1) and groups == 1)


def transform_weight(weight: np.ndarray, m: int) -> np.ndarray:
    """U[p, c_in, c_out] (float32) for weight (c_out, c_in, kd, kh, kw), computed in float64: G
    applied along one kernel axis at a time over a slab of channel pairs (a single einsum over all
    three axes took 1.4 s on a 256x256 3x3x3 layer, this 0.36 s), slab by slab so that the float64
    temporaries stay small (a 512x512 layer's whole float64 U is 450 MiB). Plain einsum on this
    thread on purpose: BLAS products left NumPy's threads spinning after a build, which slowed the
    autotuner's next timed call several-fold, and products on torch's threads left 80 MiB more
    resident memory after compiling the symmetric net."""
    c_out, c_in = weight.shape[:2]
    kernel = weight.shape[2:]
    mats = [np.array(transforms(k, m)[1], dtype=np.float64) if k > 1 else np.ones((1, 1)) for k in kernel]
    points = math.prod(g.shape[0] for g in mats)
    pairs = np.ascontiguousarray(weight.transpose(2, 3, 4, 1, 0)).reshape(*kernel, c_in * c_out)
    out = np.empty((points, c_in * c_out), np.float32)
    for first in range(0, c_in * c_out, TRANSFORM_SLAB):
        u = pairs[..., first:first + TRANSFORM_SLAB].astype(np.float64)[None]
        for k, g in zip(kernel, mats):
            u = np.einsum("pk,akx->apx", g, u.reshape(u.shape[0], k, -1)).reshape(-1, *u.shape[2:])
        out[:, first:first + TRANSFORM_SLAB] = u.reshape(points, -1)
    return out.reshape(points, c_in, c_out)


@functools.cache
def _kron_g(kernel: tuple[int, ...], m: int) -> torch.Tensor:
    """G of every axis (1 where k = 1) as one (points x kernel voxels) matrix: kron(G_d, G_h, G_w)."""
    mats = [np.array(transforms(k, m)[1], dtype=np.float64) if k > 1 else np.ones((1, 1)) for k in kernel]
    return torch.from_numpy(np.kron(np.kron(mats[0], mats[1]), mats[2]).astype(np.float32))


def transform_weight_float32(weight: torch.Tensor, m: int) -> torch.Tensor:
    """`transform_weight` in float32 as one GEMM on torch's threads, U (points, C_in * C_out) =
    kron(G_d, G_h, G_w) @ W (kernel voxels, C_in * C_out): 9 ms instead of 0.36 s for a 256x256
    3x3x3 kernel, within 1e-6 relative of the float64 transform."""
    c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
    kernel = tuple(int(k) for k in weight.shape[2:])
    pairs = weight.detach().float().reshape(c_out, c_in, -1).permute(2, 1, 0).reshape(-1, c_in * c_out)
    return (_kron_g(kernel, m) @ pairs).view(-1, c_in, c_out)


def _round(n: int, lanes: int = VB) -> int:
    return -(-n // lanes) * lanes


def padded(parts: Sequence[int], lanes: int = VB) -> int:
    """The transformed input's channels for an input made of sources of `parts` channels (a concat
    fused into the conv): each source rounded up to whole vectors."""
    return sum(_round(c, lanes) for c in parts)


def lanes(c_in: int, c_out: int, parts: Sequence[int] = ()) -> int:
    """The vector width of a layer's kernels: 16 floats, or 8 where padding the channels to 16 would
    waste a quarter or more of the work (24 -> 24: 64 padded channels against 48; measured 11.6 ms
    against 14.9 for 24 -> 24 at 30x74x74, 75 against 104 for 24 -> 8 at 64x128x128, F(4,3); at
    32 -> 32 the 16-wide kernels are faster, 13.6 against 15.5). `parts`: the input's sources'
    channels, where it is a fused concat's (default: one source of `c_in`)."""
    parts = tuple(parts) or (c_in,)
    wide, narrow = padded(parts) + _round(c_out), padded(parts, 8) + _round(c_out, 8)
    return 8 if 4 * (wide - narrow) >= wide else VB


class CEpilogue:
    """A conv's bias and fused steps as the C kernels take them (the last six arguments of
    `wino_output`, `wino_fused`, `implicit_conv`, `narrow_conv` and `shuffle_conv`; `scatter_conv` takes
    the vectors spread over its period, kernels/scatter.py): bias, scale gamma and beta as
    `padded`-float vectors (0, 1, 0 where absent), the step codes, their count and alpha. A PReLU's
    slopes take gamma's place (the IR never fuses a PReLU beside a scale)."""

    def __init__(self, steps: Sequence[str], alpha: float, c_out: int, padded: int, bias: torch.Tensor | None,
                 scale: tuple[torch.Tensor, torch.Tensor] | None, slope: torch.Tensor | None = None) -> None:
        self.vectors = [torch.zeros(padded), torch.ones(padded), torch.zeros(padded)]
        gamma, beta = scale or (slope, None)
        for vector, given in zip(self.vectors, (bias, gamma, beta)):
            if given is not None:
                vector[:c_out] = given.detach().float().reshape(-1)
        self.ops = np.array([OPS[s] for s in steps] or [0], dtype=np.int32)
        self.nops, self.alpha, self.add = len(steps), float(alpha), "add" in steps

    def args(self) -> tuple[int, int, int, int, int, float]:
        bias, gamma, beta = (v.data_ptr() for v in self.vectors)
        return bias, gamma, beta, self.ops.ctypes.data, self.nops, self.alpha


def _channels_last(t: torch.Tensor) -> bool:
    return t.permute(0, 2, 3, 4, 1).is_contiguous()


def _source(t: torch.Tensor) -> torch.Tensor:
    """`t` as the kernels read an input: channels-last voxels (channels, then width, contiguous) with
    any depth, row and item strides, as a crop's view of a channels-last tensor has; else a copy."""
    if t.stride(4) == t.shape[1] and (t.shape[1] == 1 or t.stride(1) == 1) and t.dtype == torch.float32:
        return t
    return t.contiguous(memory_format=torch.channels_last_3d)


def _strides(xs: Sequence[torch.Tensor]) -> ctypes.Array[ctypes.c_ssize_t]:
    """Each source's depth and row strides, in floats."""
    return (ctypes.c_ssize_t * (2 * len(xs)))(*(s for x in xs for s in (x.stride(2), x.stride(3))))


def _grid(kernel: Sequence[int], m: int, out_spatial: Sequence[int]) -> tuple[int, ...]:
    """Tiles per axis: m output voxels per tile along transformed axes, 1 along the others."""
    return tuple(-(-o // (m if k > 1 else 1)) for o, k in zip(out_spatial, kernel))


def _slab_tiles(per_tile: int, tiles: int, slab_bytes: int | None = None) -> int:
    """Tiles per slab of the slab driver: `slab_bytes` (default SLAB_BYTES) of transformed tiles."""
    return max(1, min(tiles, (slab_bytes or SLAB_BYTES) // per_tile))


def fused_chunk_bytes(weight_bytes: int) -> int | None:
    """Bytes of transformed tiles (V and M) each thread keeps in its L2 when a layer runs fused (C
    `wino_fused`), or None for the slab driver: fused where the transformed weights take at most
    FUSED_WEIGHT_BYTES, whose panels each thread then rereads per run of tiles. Measured (F(4,3),
    2 threads, ms slab -> fused): 8 -> 8 at 106^3 39.4 -> 26.7, 28 -> 28 (1,3,3) at 18x192x192 47.6 ->
    30.9, 32 -> 32 at 32x64x64 13.6 -> 10.0, 64 -> 64 33.4 -> 30.5 (2 MB runs; 1 MB: 33.0), 128 -> 128
    at 16x32x32 13.8 -> 16.7 (14 MB of weights: slab)."""
    if weight_bytes > FUSED_WEIGHT_BYTES:
        return None
    return 1 << 20 if weight_bytes <= 1 << 20 else 2 << 20


def _schedule(points: int, cp: int, cop: int, tiles: int, slab_bytes: int | None = None,
              fused: bool | None = None) -> tuple[bool, int]:
    """Whether a layer runs fused (None: as `fused_chunk_bytes` decides) and its tiles per slab, or per
    thread's run (before `_run_tiles` caps it for the thread count)."""
    per_tile = points * (cp + cop) * 4
    chunk = fused_chunk_bytes(points * cp * cop * 4)
    if chunk is not None if fused is None else fused:
        return True, max(1, (slab_bytes or chunk or SLAB_BYTES) // per_tile)
    return False, _slab_tiles(per_tile, tiles, slab_bytes)


def _run_tiles(count: int, tiles: int, threads: int) -> int:
    """A fused layer's tiles per thread's run: at most its share, so that every thread has work."""
    return min(count, -(-tiles // threads))


def footprint(c_in: int, c_out: int, kernel: Sequence[int], m: int, out_spatial: Sequence[int],
              slab_bytes: int | None = None, parts: Sequence[int] = ()) -> tuple[int, int, int]:
    """(transformed weight bytes, scratch bytes, tiles per slab or per thread's run) of a layer; the
    scratch of a fused layer is every thread's run (torch's thread count). `parts` as for `lanes`."""
    points = int(np.prod([m + k - 1 if k > 1 else 1 for k in kernel]))
    tiles = int(np.prod(_grid(kernel, m, out_spatial)))
    width = lanes(c_in, c_out, parts)
    cp, cop = padded(tuple(parts) or (c_in,), width), _round(c_out, width)
    per_tile = points * (cp + cop) * 4
    fused, count = _schedule(points, cp, cop, tiles, slab_bytes)
    if not fused:
        return points * cp * cop * 4, count * per_tile, count
    threads = torch.get_num_threads()
    count = _run_tiles(count, tiles, threads)
    return points * cp * cop * 4, threads * count * per_tile, count


class WinogradConv:
    """One stride-1 convolution by Winograd F(m, r), for one input spatial shape.

    Call it with a channels-last (N, C, D, H, W) input, or with the sources whose channel
    concatenation is the input (`parts` channels each, a concat fused into the conv: each source is
    transformed straight into its rows of the transformed tiles, no concatenated copy is made);
    `out` (channels-last, the output's shape) receives the result if given, `residual` is added where
    the epilogue says so (it may be `out`).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pads: Sequence[int], m: int,
                 steps: Sequence[str], alpha: float, spatial: Sequence[int], slab_bytes: int | None = None,
                 fast_transform: bool = False, fused: bool | None = None,
                 scale: tuple[torch.Tensor, torch.Tensor] | None = None, parts: Sequence[int] = (),
                 slope: torch.Tensor | None = None) -> None:
        """`fast_transform`: the kernel transformed in float32 on torch's threads (training, whose
        weights change every call) instead of once in float64 (`transform_weight`). `fused`: each
        thread runs all three stages on its own tiles (C `wino_fused`), or the stages run slab by slab
        over all threads; None: as `fused_chunk_bytes` decides. `slab_bytes`: the slab's, or a fused
        thread's run's, bytes of transformed tiles (None: the default of either). `scale`: the gamma
        and beta of a "scale" step. `parts`: the input sources' channels (default: one source)."""
        c_out, c_in = int(weight.shape[0]), int(weight.shape[1])
        self.parts = tuple(int(c) for c in parts) or (c_in,)
        if sum(self.parts) != c_in:
            raise ValueError(f"winograd: sources of {self.parts} channels do not make the weight's {c_in}")
        self.lanes = lanes(c_in, c_out, self.parts)
        self.lib = _library(self.lanes)
        self.kernel = tuple(int(k) for k in weight.shape[2:])
        self.m, self.c_in, self.c_out = m, c_in, c_out
        self.cp, self.cop = padded(self.parts, self.lanes), _round(c_out, self.lanes)
        self.channels = (ctypes.c_ssize_t * len(self.parts))(*self.parts)
        u = transform_weight_float32(weight, m) if fast_transform else \
            torch.from_numpy(transform_weight(weight.detach().cpu().numpy(), m))
        self.points = u.shape[0]
        if (self.cp, self.cop) == (c_in, c_out):
            self.u = u
        else:
            self.u = torch.zeros((self.points, self.cp, self.cop))
            row = 0
            for first, c in zip(itertools.accumulate(self.parts, initial=0), self.parts):
                self.u[:, row:row + c, :c_out] = u[:, first:first + c]
                row += _round(c, self.lanes)
        self.depth = self.cp - _round(self.parts[-1], self.lanes) + self.parts[-1]
        self.epilogue = CEpilogue(steps, alpha, c_out, self.cop, bias, scale, slope)
        self.pads = tuple(int(p) for p in pads)
        self.spatial = tuple(int(s) for s in spatial)
        self.out_spatial = conv_spatial(self.spatial, self.kernel, self.pads)
        self.grid = _grid(self.kernel, m, self.out_spatial)
        self.tiles = int(np.prod(self.grid))
        self.fused, self.count = _schedule(self.points, self.cp, self.cop, self.tiles, slab_bytes, fused)

    @staticmethod
    def _sources(xs: Sequence[torch.Tensor], i: int) -> ctypes.Array[ctypes.c_void_p]:
        """Pointers to item `i` of every source."""
        return (ctypes.c_void_p * len(xs))(*(x.data_ptr() + i * x.stride(0) * 4 for x in xs))

    def _fused(self, xs: Sequence[torch.Tensor], y: torch.Tensor, residual: torch.Tensor | None) -> None:
        threads = torch.get_num_threads()
        chunk = _run_tiles(self.count, self.tiles, threads)
        work = scratch.buffer("fused", threads * chunk * self.points * (self.cp + self.cop)).data_ptr()
        (d, h, w), (kd, kh, kw), (do, ho, wo) = self.spatial, self.kernel, self.out_spatial
        _, gh, gw = self.grid
        item_out = self.c_out * do * ho * wo * 4
        for i in range(y.shape[0]):
            rp = residual.data_ptr() + i * item_out if residual is not None else None
            self.lib.wino_fused(len(xs), self._sources(xs, i), self.channels, _strides(xs), d, h, w,  # type: ignore[attr-defined]
                                *self.pads[:3], kd, kh, kw, self.m, gh, gw, self.tiles, self.cp, self.u.data_ptr(),
                                self.cop,
                                y.data_ptr() + i * item_out, rp, do, ho, wo, self.c_out, *self.epilogue.args(),
                                chunk, work, threads)

    def __call__(self, x: torch.Tensor | Sequence[torch.Tensor], *, out: torch.Tensor | None = None,
                 residual: torch.Tensor | None = None) -> torch.Tensor:
        if out is not None and not _channels_last(out):
            return out.copy_(self(x, residual=residual))
        xs = [_source(t) for t in ([x] if isinstance(x, torch.Tensor) else x)]
        if tuple(t.shape[1] for t in xs) != self.parts:
            raise ValueError(f"winograd: sources of {[t.shape[1] for t in xs]} channels, built for {list(self.parts)}")
        n = xs[0].shape[0]
        y = out if out is not None else torch.empty((n, self.c_out, *self.out_spatial),
                                                    memory_format=torch.channels_last_3d)
        if self.epilogue.add:
            assert residual is not None
            residual = residual.contiguous(memory_format=torch.channels_last_3d)
        if self.fused:
            self._fused(xs, y, residual)
            return y
        lib, (d, h, w), (kd, kh, kw) = self.lib, self.spatial, self.kernel
        do, ho, wo = self.out_spatial
        _, gh, gw = self.grid
        item_out = self.c_out * do * ho * wo * 4
        epilogue = self.epilogue.args()
        v = scratch.buffer("v", self.points * self.count * self.cp).data_ptr()
        mm = scratch.buffer("m", self.points * self.count * self.cop).data_ptr()
        u = self.u.data_ptr()
        strides = _strides(xs)
        for i in range(n):
            sources, yp = self._sources(xs, i), y.data_ptr() + i * item_out
            rp = residual.data_ptr() + i * item_out if residual is not None else None
            for first in range(0, self.tiles, self.count):
                count = min(self.count, self.tiles - first)
                lib.wino_input(len(xs), sources, self.channels, strides, d, h, w, *self.pads[:3], kd, kh, kw,  # type: ignore[attr-defined]
                               self.m, gh, gw, first, count, v, self.cp)
                lib.wino_gemm(v, u, mm, self.points, count, self.depth, self.cp, self.cop)  # type: ignore[attr-defined]
                lib.wino_output(mm, self.cop, kd, kh, kw, self.m, gh, gw, first, count,  # type: ignore[attr-defined]
                                yp, rp, do, ho, wo, self.c_out, *epilogue)
        return y


def weight_gradient(x: torch.Tensor, g: torch.Tensor, kernel: Sequence[int], pads: Sequence[int],
                    m: int) -> torch.Tensor:
    """dL/dW (C_out, C_in, *kernel) of the stride-1 convolution of `x` (N, C_in, D, H, W) with
    symmetric `pads` (d, h, w) whose output gradient is `g` (N, C_out, *out): per tile and point,
    the input transform (B^T x B) times the output gradient transformed by A, summed over tiles and
    items by one GEMM per point (C_in x tiles @ tiles x C_out), then G^T . G back to the kernel.
    Each slab's sums are added up in float64: summed in float32 over a whole volume's tiles, F(4,3)
    missed its 1e-4 bound on large layers."""
    lib = _library()
    n, c_in, d, h, w = x.shape
    c_out, out_spatial = int(g.shape[1]), tuple(int(s) for s in g.shape[2:])
    kernel = tuple(int(k) for k in kernel)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    g = g.contiguous(memory_format=torch.channels_last_3d)
    cp, cop = _round(c_in), _round(c_out)
    kd, kh, kw = kernel
    t = [m + k - 1 if k > 1 else 1 for k in kernel]
    points = math.prod(t)
    grid = _grid(kernel, m, out_spatial)
    tiles = math.prod(grid)
    count = _slab_tiles(points * (cp + cop) * 4, tiles)
    v = scratch.buffer("v", points * count * cp).data_ptr()
    gt = scratch.buffer("m", points * count * cop).data_ptr()
    slab = torch.empty(points * cp * cop)
    total = torch.zeros(points * cp * cop, dtype=torch.float64)
    do, ho, wo = out_spatial
    item_in, item_out = c_in * d * h * w * 4, c_out * do * ho * wo * 4
    for i in range(n):
        xp, gp = x.data_ptr() + i * item_in, g.data_ptr() + i * item_out
        for first in range(0, tiles, count):
            size = min(count, tiles - first)
            lib.wino_input(1, (ctypes.c_void_p * 1)(xp), (ctypes.c_ssize_t * 1)(c_in), _strides([x]), d, h, w,  # type: ignore[attr-defined]
                           *pads[:3], kd, kh, kw, m, grid[1], grid[2], first, size, v, cp)
            lib.wino_grad_tiles(gp, do, ho, wo, c_out, kd, kh, kw, m, grid[1], grid[2],  # type: ignore[attr-defined]
                                first, size, gt, cop)
            slab.zero_()
            lib.wino_wgrad_gemm(v, gt, slab.data_ptr(), points, size, c_in, cp, cop)  # type: ignore[attr-defined]
            total += slab
    result = total.view(*t, cp, cop)[..., :c_in, :c_out]
    for axis, k in enumerate(kernel):
        if k > 1:
            g_matrix = torch.tensor([[float(v) for v in row] for row in transforms(k, m)[1]], dtype=torch.float64)
            result = torch.movedim(torch.tensordot(result, g_matrix, dims=([axis], [0])), -1, axis)
    return result.float().permute(4, 3, 0, 1, 2).contiguous()
