/* The FFT convolution's stages on the CPU (kernels/fft.py), on channels-last data: VB channels per
 * vector, so every transform step is plain vector arithmetic on whole channel vectors and never
 * shuffles.
 *
 * A line transform (a DFT of n points along one axis, kept rows only) is a list of stages from the
 * plan that fft.py `line_plan` writes (Cooley-Tukey, decimation in time, radices 8, 4, 2, 3, 5, 7; the
 * first stage reads the line where it lies, a column of a cube included, the last writes the rows the
 * next axis needs where they go): a stage of radix p combines, per block b < blocks and point k0 <
 * size / p, the points k0 of p sub-DFTs (blocks b + q blocks, q < p), each times its twiddle, by one
 * p-point DFT (radix 2, 4 and 8 as adds, subtracts and swaps; 3, 5, 7 from their DFT matrix) into points
 * k0 + j size / p of block b (no twiddles on point k0 = 0; an odd radix sums and differences the
 * points q and p - q first, which share their cosines: a 28-point layer's transforms 1.5x faster than
 * the whole DFT matrix). Complex vectors are split: VB real parts, then VB imaginary parts.
 *
 * `fft_forward`: per tile and group of VB input channels, the tile's n-point cube is transformed
 * along width (two real rows as one complex row, `split_rows`), height and depth in a scratch cube,
 * and written as spectra [tile][frequency][re | im][C], twice the true ones.
 * `spectral_products`: out[t][f] = a[t][f] (1 x C) @ w[f] (C x Cop), complex; w's rows padded to Cop
 * (a multiple of VB, zeros beyond Co); each frequency's kernel block stays in L2 while every tile of
 * the slab is multiplied with it; the frequencies are split over threads.
 * `fft_inverse`: per tile and group of VB output channels, the products transformed back along
 * depth, height and width keeping only the tile's m exact outputs per axis, the width step two rows'
 * half spectra as one complex row (`join_rows`; the kernel spectra carry 1 / 2N), written into the
 * channels-last output where the tile lies inside it.
 * The spectra, the products and the output are written past the caches (`put`): each is slab- or
 * layer-sized and read back only by the next stage, so reading every line before writing it wasted
 * memory bandwidth (80-channel FFT 24 layer, 99^3 input: forward 242 -> 180 ms, products 476 -> 437,
 * inverse 165 -> 142).
 */
#include <omp.h>
#include <stdlib.h>

enum { AXES = 3, MAX_RADIX = 8, STAGE = 5 };

typedef struct {
    const int *plan;     /* stages; per stage p, blocks, size, rows kept, first coefficient */
    const float *coef;   /* per stage: twiddles [p][size / p], then the p-point DFT [p][p] (re, im) */
} line_t;

/* The 4-point DFT of z (split complex) into y; turn: the imaginary part of w_4, +1 or -1. */
static inline __attribute__((always_inline)) void dft4(const vf *zr, const vf *zi, vf *yr, vf *yi, float turn) {
    const vf ar = zr[0] + zr[2], ai = zi[0] + zi[2], br = zr[0] - zr[2], bi = zi[0] - zi[2];
    const vf cr = zr[1] + zr[3], ci = zi[1] + zi[3], dr = (zr[1] - zr[3]) * turn, di = (zi[1] - zi[3]) * turn;
    yr[0] = ar + cr, yi[0] = ai + ci;
    yr[2] = ar - cr, yi[2] = ai - ci;
    yr[1] = br - di, yi[1] = bi + dr;
    yr[3] = br + di, yi[3] = bi - dr;
}

/* The 8-point DFT of z into y as two 4-point DFTs (even and odd points) and their butterflies, the
 * odd ones times w_8^j: (1 + turn i) / sqrt 2, turn i, (-1 + turn i) / sqrt 2. */
static inline __attribute__((always_inline)) void dft8(const vf *zr, const vf *zi, vf *yr, vf *yi, float turn) {
    const float half_root = 0.70710678118654752f;
    vf er[4], ei[4], orr[4], oi[4], fr[4], fi[4], gr[4], gi[4];
    _Pragma("GCC unroll 4") for (int q = 0; q < 4; q++) {
        er[q] = zr[2 * q], ei[q] = zi[2 * q];
        orr[q] = zr[2 * q + 1], oi[q] = zi[2 * q + 1];
    }
    dft4(er, ei, fr, fi, turn);
    dft4(orr, oi, gr, gi, turn);
    const vf tr[4] = {gr[0], (gr[1] - turn * gi[1]) * half_root, -turn * gi[2], (-gr[3] - turn * gi[3]) * half_root};
    const vf ti[4] = {gi[0], (gi[1] + turn * gr[1]) * half_root, turn * gr[2], (turn * gr[3] - gi[3]) * half_root};
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
        yr[j] = fr[j] + tr[j], yi[j] = fi[j] + ti[j];
        yr[j + 4] = fr[j] - tr[j], yi[j + 4] = fi[j] - ti[j];
    }
}

/* One stage of radix p (a constant where it is inlined, so that its loops unroll into registers):
 * `from` -> `to` (point r at from + 2 r fs, to + 2 r ts: a column of a cube is transformed where it
 * lies), the first `rows` points kept. */
static inline __attribute__((always_inline)) void stage(const int p, const vf *restrict from, idx fs,
                                                          vf *restrict to, idx ts, int blocks, int size, int rows,
                                                          const float *twiddle) {
    const int part = size / p;
    const float *dft = twiddle + 2 * p * part;
    const float turn = dft[2 * (p == 8 ? p + 2 : p + 1) + 1]; /* p = 4 or 8: the imaginary part of w_4, +-1 */
    for (int block = 0; block < blocks; block++)
        for (int k = 0; k < part; k++) {
            vf zr[MAX_RADIX], zi[MAX_RADIX], yr[MAX_RADIX], yi[MAX_RADIX];
            _Pragma("GCC unroll 8") for (int q = 0; q < p; q++) {
                const idx j = 2 * ((block + blocks * q) * part + k) * fs;
                zr[q] = from[j];
                zi[q] = from[j + 1];
            }
            if (k > 0) /* the twiddles of point 0 are 1 */
                _Pragma("GCC unroll 8") for (int q = 1; q < p; q++) {
                    const float cr = twiddle[2 * (q * part + k)], ci = twiddle[2 * (q * part + k) + 1];
                    const vf re = zr[q];
                    zr[q] = cr * re - ci * zi[q];
                    zi[q] = cr * zi[q] + ci * re;
                }
            if (p == 2) {
                yr[0] = zr[0] + zr[1], yi[0] = zi[0] + zi[1];
                yr[1] = zr[0] - zr[1], yi[1] = zi[0] - zi[1];
            } else if (p == 4) {
                dft4(zr, zi, yr, yi, turn);
            } else if (p == 8) {
                dft8(zr, zi, yr, yi, turn);
            } else { /* p odd: the pairs q, p - q share their cosines and negate their sines */
                vf sr[MAX_RADIX], si[MAX_RADIX], dr[MAX_RADIX], di[MAX_RADIX];
                yr[0] = zr[0], yi[0] = zi[0];
                _Pragma("GCC unroll 4") for (int q = 1; 2 * q < p; q++) {
                    sr[q] = zr[q] + zr[p - q], si[q] = zi[q] + zi[p - q];
                    dr[q] = zr[q] - zr[p - q], di[q] = zi[q] - zi[p - q];
                    yr[0] += sr[q], yi[0] += si[q];
                }
                _Pragma("GCC unroll 4") for (int j = 1; 2 * j < p; j++) {
                    vf cr = zr[0], ci = zi[0], er = splat(0.0f), ei = splat(0.0f);
                    _Pragma("GCC unroll 4") for (int q = 1; 2 * q < p; q++) {
                        const float c = dft[2 * (j * p + q)], s = dft[2 * (j * p + q) + 1];
                        cr += c * sr[q], ci += c * si[q];
                        er -= s * di[q], ei += s * dr[q];
                    }
                    yr[j] = cr + er, yi[j] = ci + ei;
                    yr[p - j] = cr - er, yi[p - j] = ci - ei;
                }
            }
            _Pragma("GCC unroll 8") for (int j = 0; j < p; j++) {
                const int r = block * size + k + j * part;
                if (r < rows) {
                    to[2 * r * ts] = yr[j];
                    to[2 * r * ts + 1] = yi[j];
                }
            }
        }
}

/* Transform the n points at `in` (point r at in + 2 r is) through the line's stages into `out` (point
 * r at out + 2 r os, the kept rows only): the first stage reads `in` where it lies, the last writes
 * `out`, those between ping-pong between a and b (a lone stage goes through a, so that a column may
 * be transformed in place; a line of one point is copied). */
static void transform(const line_t *line, const vf *in, idx is, vf *out, idx os, vf *a, vf *b) {
    const int stages = line->plan[0];
    const vf *from = in;
    idx fs = is;
    for (int s = 0; s < stages; s++) {
        const int *st = line->plan + 1 + STAGE * s;
        const float *twiddle = line->coef + 2 * st[4];
        const int last = s == stages - 1 && stages > 1;
        vf *to = last ? out : s % 2 ? b : a;
        const idx ts = last ? os : 1;
        switch (st[0]) {
            case 2: stage(2, from, fs, to, ts, st[1], st[2], st[3], twiddle); break;
            case 3: stage(3, from, fs, to, ts, st[1], st[2], st[3], twiddle); break;
            case 4: stage(4, from, fs, to, ts, st[1], st[2], st[3], twiddle); break;
            case 5: stage(5, from, fs, to, ts, st[1], st[2], st[3], twiddle); break;
            case 7: stage(7, from, fs, to, ts, st[1], st[2], st[3], twiddle); break;
            default: stage(8, from, fs, to, ts, st[1], st[2], st[3], twiddle); break;
        }
        from = to;
        fs = ts;
    }
    if (stages == 0) { /* a line of one point */
        out[0] = in[0];
        out[1] = in[1];
    } else if (stages == 1)
        for (int r = 0; r < line->plan[1 + 3]; r++) {
            out[2 * r * os] = a[2 * r];
            out[2 * r * os + 1] = a[2 * r + 1];
        }
}

static vf *scratch(idx floats) {
    return (vf *)aligned_alloc(64, (size_t)(floats * 4 + 63) / 64 * 64);
}

/* The height step of both directions on a scratch cube [planes][nh][half] of complex vectors: every
 * column (plane, width frequency) transformed in place along height (the line's kept rows written). */
static void along_height(const line_t *line, vf *cube, idx planes, idx nh, idx half, vf *a, vf *b) {
    for (idx d = 0; d < planes; d++)
        for (idx k = 0; k < half; k++) {
            vf *column = cube + 2 * (d * nh * half + k);
            transform(line, column, half, column, half, a, b);
        }
}

/* Two real rows' half spectra from the n-point DFT z of the rows packed as one complex row (the
 * first as real parts, the second as imaginary): x0[k] = z[k] + conj(z[n - k]), x1[k] = (z[k] -
 * conj(z[n - k])) / i, twice the rows' spectra (the kernel spectra carry the 1 / 2); x1 NULL where the
 * second row is absent. */
static void split_rows(const vf *z, idx n, idx half, vf *x0, vf *x1) {
    for (idx k = 0; k < half; k++) {
        const idx mirror = k ? n - k : 0;
        const vf zr = z[2 * k], zi = z[2 * k + 1], mr = z[2 * mirror], mi = z[2 * mirror + 1];
        x0[2 * k] = zr + mr;
        x0[2 * k + 1] = zi - mi;
        if (x1) {
            x1[2 * k] = zi + mi;
            x1[2 * k + 1] = mr - zr;
        }
    }
}

/* The inverse of `split_rows`: the n-point spectrum z whose inverse DFT holds two real rows, the
 * first in its real parts and the second in its imaginary ones, from their half spectra x0 and x1
 * (x1 NULL: zeros); the mean and Nyquist points' imaginary parts, zero in exact arithmetic, dropped. */
static void join_rows(const vf *x0, const vf *x1, idx n, idx half, vf *z) {
    const vf zero = splat(0.0f);
    for (idx k = 0; k < half; k++) {
        const vf ar = x0[2 * k], ai = x0[2 * k + 1], br = x1 ? x1[2 * k] : zero, bi = x1 ? x1[2 * k + 1] : zero;
        const idx mirror = n - k;
        if (k == 0 || mirror == k) {
            z[2 * k] = ar;
            z[2 * k + 1] = br;
            continue;
        }
        z[2 * k] = ar - bi;
        z[2 * k + 1] = ai + br;
        z[2 * mirror] = ar + bi;
        z[2 * mirror + 1] = br - ai;
    }
}

/* Store a vector's first `lanes` floats at p; a whole aligned vector bypasses the caches (an AVX-512
 * streaming store: no read of the line before it is written). */
static inline void put(float *p, vf v, int lanes) {
#if defined(__AVX512F__) && VB == 16
    if (lanes == VB && ((uintptr_t)p & 63) == 0) {
        _mm512_stream_ps(p, (__m512)v);
        return;
    }
#endif
    store_n(p, v, lanes);
}

/* Orders this thread's streaming stores before what other threads read after the parallel region. */
static inline void fence(void) {
#if defined(__AVX512F__) && VB == 16
    _mm_sfence();
#endif
}

/* x: channels-last input, sd, sh, sw: its strides in floats, C channels; origin[t]: where tile t's
 * first voxel would be (floats from x; it may lie in the padding, before x), bounds[6 t ...]: per axis
 * (d, h, w) the tile's points [lo, hi) that lie inside x, the others read as zeros (padding and the
 * last tiles' overhang, so no padded copy of x is made); n: FFT points per axis; lines: width (all n
 * points of two real rows packed as one complex row), height, depth. spec: [T][nd * nh * (nw / 2 +
 * 1)][2][C], twice the tiles' spectra. */
void fft_forward(const float *x, idx sd, idx sh, idx sw, idx C, const idx *origin, const idx *bounds, idx T,
                 const idx *n, const int *plan, const float *coef, const int *axes, float *spec) {
    const idx nd = n[0], nh = n[1], nw = n[2], half = nw / 2 + 1, F = nd * nh * half;
    const idx groups = (C + VB - 1) / VB, longest = nd > nh ? (nd > nw ? nd : nw) : (nh > nw ? nh : nw);
    line_t line[AXES];
    for (int a = 0; a < AXES; a++) line[a] = (line_t){plan + axes[a], coef};
    #pragma omp parallel
    {
        vf *cube = scratch(F * 2 * VB), *in = scratch(longest * 2 * VB), *z = scratch(longest * 2 * VB),
           *a = scratch(longest * 2 * VB), *b = scratch(longest * 2 * VB);
        const vf zero = splat(0.0f);
        #pragma omp for schedule(dynamic)
        for (idx job = 0; job < T * groups; job++) {
            const idx t = job / groups, g = job % groups;
            const int lanes = (int)(C - g * VB < VB ? C - g * VB : VB);
            const idx *bound = bounds + 6 * t, first = origin[t] + g * VB;
            for (idx w = 0; w < 2 * nw; w++) in[w] = zero;
            for (idx d = 0; d < nd; d++)
                for (idx h = 0; h < nh; h += 2) {
                    vf *row = cube + 2 * ((d * nh + h) * half), *next = h + 1 < nh ? row + 2 * half : NULL;
                    const int inside = d >= bound[0] && d < bound[1] && h >= bound[2] && h < bound[3],
                              after = next && d >= bound[0] && d < bound[1] && h + 1 >= bound[2] && h + 1 < bound[3];
                    if (!inside && !after) {
                        for (idx k = 0; k < 2 * half * (next ? 2 : 1); k++) row[k] = zero;
                        continue;
                    }
                    const float *at = x + (first + d * sd + h * sh);
                    for (idx w = bound[4]; w < bound[5]; w++) {
                        in[2 * w] = inside ? load_n(at + w * sw, lanes) : zero;
                        in[2 * w + 1] = after ? load_n(at + sh + w * sw, lanes) : zero;
                    }
                    transform(&line[0], in, 1, z, 1, a, b);
                    split_rows(z, nw, half, row, next);
                }
            along_height(&line[1], cube, nd, nh, half, a, b);
            float *st = spec + t * F * 2 * C + g * VB;
            for (idx h = 0; h < nh; h++)
                for (idx k = 0; k < half; k++) {
                    transform(&line[2], cube + 2 * (h * half + k), nh * half, z, 1, a, b);
                    for (idx d = 0; d < nd; d++) {
                        float *to = st + ((d * nh + h) * half + k) * 2 * C;
                        put(to, z[2 * d], lanes);
                        put(to + C, z[2 * d + 1], lanes);
                    }
                }
        }
        fence();
        free(cube);
        free(in);
        free(z);
        free(a);
        free(b);
    }
}

/* out rows r < rows (R at most) of output vectors j < NV: a rows `lda` floats apart ([re | im][C]),
 * w rows `ldw` floats apart ([re | im][Cop]), out rows `ldo` floats apart. */
#define MICRO(R, NV)                                                                                       \
    static inline __attribute__((always_inline)) void micro_##R##_##NV(                                   \
        int rows, const float *restrict a, idx lda, const float *restrict w, idx ldw, idx cop,             \
        float *restrict out, idx ldo, idx C) {                                                             \
        vf re[R][NV], im[R][NV];                                                                           \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) re[r][j] = im[r][j] = splat(0.0f);        \
        for (idx c = 0; c < C; c++) {                                                                      \
            vf wr[NV], wi[NV];                                                                             \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) {                                         \
                wr[j] = load(w + c * ldw + j * VB);                                                        \
                wi[j] = load(w + c * ldw + cop + j * VB);                                                  \
            }                                                                                              \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                          \
                if (r < rows) {                                                                            \
                    const vf ar = splat(a[r * lda + c]), ai = splat(a[r * lda + C + c]);                   \
                    _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) {                                 \
                        re[r][j] += ar * wr[j];                                                            \
                        re[r][j] -= ai * wi[j];                                                            \
                        im[r][j] += ar * wi[j];                                                            \
                        im[r][j] += ai * wr[j];                                                            \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                \
            if (r < rows)                                                                                  \
                _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) {                                     \
                    put(out + r * ldo + j * VB, re[r][j], VB);                                             \
                    put(out + r * ldo + cop + j * VB, im[r][j], VB);                                       \
                }                                                                                          \
    }
MICRO(6, 2)
MICRO(6, 1)

void spectral_products(const float *a, const float *w, float *out, idx T, idx F, idx C, idx Cop) {
    const idx lda = F * 2 * C, ldo = F * 2 * Cop, ldw = 2 * Cop;
    #pragma omp parallel
    {
        #pragma omp for schedule(static)
        for (idx f = 0; f < F; f++) {
            const float *wf = w + f * C * ldw;
            for (idx t = 0; t < T; t += 6) {
                const int rows = T - t < 6 ? (int)(T - t) : 6;
                const float *at = a + t * lda + f * 2 * C;
                float *ot = out + t * ldo + f * 2 * Cop;
                for (idx o = 0; o < Cop; o += 2 * VB) {
                    if (Cop - o >= 2 * VB) micro_6_2(rows, at, lda, wf + o, ldw, Cop, ot + o, ldo, C);
                    else micro_6_1(rows, at, lda, wf + o, ldw, Cop, ot + o, ldo, C);
                }
            }
        }
        fence();
    }
}

/* spec: [T][nd * nh * (nw / 2 + 1)][2][Cop] products; md: exact outputs along depth; y: channels-last
 * output, sd, sh, sw its strides in floats, Co channels; origin[t]: tile t's first output voxel
 * (floats from y), extent[3 t + axis]: how many of its m outputs lie inside y along each axis; bias
 * (Cop floats, zeros beyond Co) added to every output, then ReLU where `relu`. The width step
 * transforms two rows' half spectra as one complex row (`join_rows`). */
void fft_inverse(const float *spec, idx Cop, const idx *n, idx md, const float *bias, int relu, const int *plan,
                 const float *coef,
                 const int *axes, float *y, idx sd, idx sh, idx sw, idx Co, const idx *origin,
                 const idx *extent, idx T) {
    const idx nd = n[0], nh = n[1], nw = n[2], half = nw / 2 + 1, F = nd * nh * half;
    const idx groups = (Co + VB - 1) / VB, longest = nd > nh ? (nd > nw ? nd : nw) : (nh > nw ? nh : nw);
    line_t line[AXES];
    for (int a = 0; a < AXES; a++) line[a] = (line_t){plan + axes[a], coef};
    #pragma omp parallel
    {
        vf *cube = scratch(md * nh * half * 2 * VB), *in = scratch(longest * 2 * VB), *z = scratch(longest * 2 * VB),
           *a = scratch(longest * 2 * VB), *b = scratch(longest * 2 * VB);
        #pragma omp for schedule(dynamic)
        for (idx job = 0; job < T * groups; job++) {
            const idx t = job / groups, g = job % groups;
            const int lanes = (int)(Co - g * VB < VB ? Co - g * VB : VB);
            const idx ed = extent[3 * t], eh = extent[3 * t + 1], ew = extent[3 * t + 2];
            const float *st = spec + t * F * 2 * Cop + g * VB;
            const vf shift = load(bias + g * VB);
            for (idx h = 0; h < nh; h++)
                for (idx k = 0; k < half; k++) {
                    for (idx d = 0; d < nd; d++) {
                        const float *at = st + ((d * nh + h) * half + k) * 2 * Cop;
                        in[2 * d] = load(at);
                        in[2 * d + 1] = load(at + Cop);
                    }
                    transform(&line[2], in, 1, cube + 2 * (h * half + k), nh * half, a, b);
                }
            along_height(&line[1], cube, ed, nh, half, a, b);
            float *yt = y + origin[t] + g * VB;
            for (idx d = 0; d < ed; d++)
                for (idx h = 0; h < eh; h += 2) {
                    const vf *row = cube + 2 * ((d * nh + h) * half);
                    const int pair = h + 1 < eh;
                    join_rows(row, pair ? row + 2 * half : NULL, nw, half, in);
                    transform(&line[0], in, 1, z, 1, a, b);
                    float *at = yt + d * sd + h * sh;
                    for (idx w = 0; w < ew; w++)
                        for (int r = 0; r <= pair; r++) { /* the real parts row h, the imaginary row h + 1 */
                            vf v = z[2 * w + r] + shift;
                            if (relu) v = sel(v > 0.0f, v, splat(0.0f));
                            put(at + r * sh + w * sw, v, lanes);
                        }
                }
        }
        fence();
        free(cube);
        free(in);
        free(z);
        free(a);
        free(b);
    }
}
