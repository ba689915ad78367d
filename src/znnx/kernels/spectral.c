/* The FFT convolution's stages on the CPU (kernels/fft.py), on channels-last data: VB channels per
 * vector, so every transform step is plain vector arithmetic on whole channel vectors and never
 * shuffles.
 *
 * A line transform (a DFT of n points along one axis, kept rows only) is a list of stages from the
 * plan that fft.py `line_plan` writes (Cooley-Tukey, decimation in time, radices 4, 2, 3, 5, 7; the
 * first stage reads the line in natural order, the last keeps the rows the next axis needs): a stage
 * of radix p combines, per block b < blocks and point k0 < size / p, the points k0 of p sub-DFTs
 * (blocks b + q blocks, q < p), each times its twiddle, by one p-point DFT (radix 2 and 4 as adds,
 * subtracts and a swap; 3, 5, 7 by their DFT matrix) into points k0 + j size / p of block b.
 * Complex vectors are split: VB real parts, then VB imaginary parts.
 *
 * `fft_forward`: per tile and group of VB input channels, the tile's n-point cube is transformed
 * along width (real input, n / 2 + 1 rows kept), height and depth in a scratch cube of L2 size, and
 * written as spectra [tile][frequency][re | im][C].
 * `spectral_products`: out[t][f] = a[t][f] (1 x C) @ w[f] (C x Cop), complex; w's rows padded to Cop
 * (a multiple of VB, zeros beyond Co); each frequency's kernel block stays in L2 while every tile of
 * the slab is multiplied with it; the frequencies are split over threads.
 * `fft_inverse`: per tile and group of VB output channels, the products transformed back along
 * depth, height and width keeping only the tile's m exact outputs per axis, the width step taking
 * the real part of a complex DFT of the half spectrum (the kernel spectra carry 1 / N and the
 * doubled weight of the frequencies whose mirror image is absent), written into the channels-last
 * output where the tile lies inside it.
 */
#include <omp.h>
#include <stdlib.h>

enum { AXES = 3, MAX_RADIX = 7, STAGE = 5 };

typedef struct {
    const int *plan;     /* stages; per stage p, blocks, size, rows kept, first coefficient */
    const float *coef;   /* per stage: twiddles [p][size / p], then the p-point DFT [p][p] (re, im) */
} line_t;

/* One stage of radix p (a constant where it is inlined, so that its loops unroll into registers):
 * `from` -> `to`, the first `rows` points kept. */
static inline __attribute__((always_inline)) void stage(const int p, const vf *restrict from, vf *restrict to,
                                                          int blocks, int size, int rows, const float *twiddle) {
    const int part = size / p;
    const float *dft = twiddle + 2 * p * part;
    const float turn = dft[2 * (p + 1) + 1]; /* p = 4: the imaginary part of w_4, +1 or -1 */
    for (int block = 0; block < blocks; block++)
        for (int k = 0; k < part; k++) {
            vf zr[MAX_RADIX], zi[MAX_RADIX], yr[MAX_RADIX], yi[MAX_RADIX];
            zr[0] = from[2 * (block * part + k)];
            zi[0] = from[2 * (block * part + k) + 1];
            _Pragma("GCC unroll 8") for (int q = 1; q < p; q++) {
                const int j = (block + blocks * q) * part + k;
                const float cr = twiddle[2 * (q * part + k)], ci = twiddle[2 * (q * part + k) + 1];
                zr[q] = cr * from[2 * j] - ci * from[2 * j + 1];
                zi[q] = cr * from[2 * j + 1] + ci * from[2 * j];
            }
            if (p == 2) {
                yr[0] = zr[0] + zr[1], yi[0] = zi[0] + zi[1];
                yr[1] = zr[0] - zr[1], yi[1] = zi[0] - zi[1];
            } else if (p == 4) {
                const vf ar = zr[0] + zr[2], ai = zi[0] + zi[2], br = zr[0] - zr[2], bi = zi[0] - zi[2];
                const vf cr = zr[1] + zr[3], ci = zi[1] + zi[3], dr = (zr[1] - zr[3]) * turn,
                         di = (zi[1] - zi[3]) * turn;
                yr[0] = ar + cr, yi[0] = ai + ci;
                yr[2] = ar - cr, yi[2] = ai - ci;
                yr[1] = br - di, yi[1] = bi + dr;
                yr[3] = br + di, yi[3] = bi - dr;
            } else {
                _Pragma("GCC unroll 8") for (int j = 0; j < p; j++) {
                    vf re = zr[0], im = zi[0];
                    _Pragma("GCC unroll 8") for (int q = 1; q < p; q++) {
                        const float cr = dft[2 * (j * p + q)], ci = dft[2 * (j * p + q) + 1];
                        re += cr * zr[q] - ci * zi[q];
                        im += cr * zi[q] + ci * zr[q];
                    }
                    yr[j] = re, yi[j] = im;
                }
            }
            _Pragma("GCC unroll 8") for (int j = 0; j < p; j++) {
                const int r = block * size + k + j * part;
                if (r < rows) {
                    to[2 * r] = yr[j];
                    to[2 * r + 1] = yi[j];
                }
            }
        }
}

/* Transform the n points at `in` through the line's stages, ping-ponging between a and b; the
 * result's address in *out. */
static void transform(const line_t *line, const vf *in, vf *a, vf *b, const vf **out) {
    const int stages = line->plan[0];
    const vf *from = in;
    vf *to = a;
    for (int s = 0; s < stages; s++) {
        const int *st = line->plan + 1 + STAGE * s;
        const float *twiddle = line->coef + 2 * st[4];
        switch (st[0]) {
            case 2: stage(2, from, to, st[1], st[2], st[3], twiddle); break;
            case 3: stage(3, from, to, st[1], st[2], st[3], twiddle); break;
            case 4: stage(4, from, to, st[1], st[2], st[3], twiddle); break;
            case 5: stage(5, from, to, st[1], st[2], st[3], twiddle); break;
            default: stage(7, from, to, st[1], st[2], st[3], twiddle); break;
        }
        from = to;
        to = to == a ? b : a;
    }
    *out = from;
}

static vf *scratch(idx floats) {
    return (vf *)aligned_alloc(64, (size_t)(floats * 4 + 63) / 64 * 64);
}

/* The height step of both directions on a scratch cube [planes][nh][half] of complex vectors: every
 * column (plane, width frequency) transformed in place along height, the first `kept` rows written
 * back. */
static void along_height(const line_t *line, vf *cube, idx planes, idx nh, idx half, idx kept, vf *in, vf *a,
                         vf *b) {
    const vf *res;
    for (idx d = 0; d < planes; d++)
        for (idx k = 0; k < half; k++) {
            vf *column = cube + 2 * (d * nh * half + k);
            for (idx h = 0; h < nh; h++) {
                in[2 * h] = column[2 * h * half];
                in[2 * h + 1] = column[2 * h * half + 1];
            }
            transform(line, in, a, b, &res);
            for (idx h = 0; h < kept; h++) {
                column[2 * h * half] = res[2 * h];
                column[2 * h * half + 1] = res[2 * h + 1];
            }
        }
}

/* x: channels-last input, sd, sh, sw: its strides in floats, C channels; origin[t]: where tile t's
 * first voxel would be (floats from x; it may lie in the padding, before x), bounds[6 t ...]: per axis
 * (d, h, w) the tile's points [lo, hi) that lie inside x, the others read as zeros (padding and the
 * last tiles' overhang, so no padded copy of x is made); n: FFT points per axis; lines: width,
 * height, depth. spec: [T][nd * nh * (nw / 2 + 1)][2][C]. */
void fft_forward(const float *x, idx sd, idx sh, idx sw, idx C, const idx *origin, const idx *bounds, idx T,
                 const idx *n, const int *plan, const float *coef, const int *axes, float *spec) {
    const idx nd = n[0], nh = n[1], nw = n[2], half = nw / 2 + 1, F = nd * nh * half;
    const idx groups = (C + VB - 1) / VB, longest = nd > nh ? (nd > nw ? nd : nw) : (nh > nw ? nh : nw);
    line_t line[AXES];
    for (int a = 0; a < AXES; a++) line[a] = (line_t){plan + axes[a], coef};
    #pragma omp parallel
    {
        vf *cube = scratch(F * 2 * VB), *in = scratch(longest * 2 * VB), *a = scratch(longest * 2 * VB),
           *b = scratch(longest * 2 * VB);
        const vf *res;
        #pragma omp for schedule(dynamic)
        for (idx job = 0; job < T * groups; job++) {
            const idx t = job / groups, g = job % groups;
            const int lanes = (int)(C - g * VB < VB ? C - g * VB : VB);
            const idx *bound = bounds + 6 * t, first = origin[t] + g * VB;
            for (idx w = 0; w < 2 * nw; w++) in[w] = splat(0.0f);
            for (idx d = 0; d < nd; d++)
                for (idx h = 0; h < nh; h++) {
                    vf *row = cube + 2 * ((d * nh + h) * half);
                    if (d < bound[0] || d >= bound[1] || h < bound[2] || h >= bound[3]) {
                        for (idx k = 0; k < 2 * half; k++) row[k] = splat(0.0f);
                        continue;
                    }
                    for (idx w = bound[4]; w < bound[5]; w++)
                        in[2 * w] = load_n(x + (first + d * sd + h * sh + w * sw), lanes);
                    transform(&line[0], in, a, b, &res);
                    for (idx k = 0; k < 2 * half; k++) row[k] = res[k];
                }
            along_height(&line[1], cube, nd, nh, half, nh, in, a, b);
            float *st = spec + t * F * 2 * C + g * VB;
            for (idx h = 0; h < nh; h++)
                for (idx k = 0; k < half; k++) {
                    const vf *column = cube + 2 * (h * half + k);
                    for (idx d = 0; d < nd; d++) {
                        in[2 * d] = column[2 * d * nh * half];
                        in[2 * d + 1] = column[2 * d * nh * half + 1];
                    }
                    transform(&line[2], in, a, b, &res);
                    for (idx d = 0; d < nd; d++) {
                        float *at = st + ((d * nh + h) * half + k) * 2 * C;
                        store_n(at, res[2 * d], lanes);
                        store_n(at + C, res[2 * d + 1], lanes);
                    }
                }
        }
        free(cube);
        free(in);
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
                    store(out + r * ldo + j * VB, re[r][j]);                                               \
                    store(out + r * ldo + cop + j * VB, im[r][j]);                                         \
                }                                                                                          \
    }
MICRO(6, 2)
MICRO(6, 1)

void spectral_products(const float *a, const float *w, float *out, idx T, idx F, idx C, idx Cop) {
    const idx lda = F * 2 * C, ldo = F * 2 * Cop, ldw = 2 * Cop;
    #pragma omp parallel for schedule(static)
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
}

/* spec: [T][nd * nh * (nw / 2 + 1)][2][Cop] products; md: exact outputs along depth; y: channels-last
 * output, sd, sh, sw its strides in floats, Co channels; origin[t]: tile t's first output voxel
 * (floats from y), extent[3 t + axis]: how many of its m outputs lie inside y along each axis; bias
 * (Cop floats, zeros beyond Co) added to every output, then ReLU where `relu`. */
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
        vf *cube = scratch(md * nh * half * 2 * VB), *in = scratch(longest * 2 * VB), *a = scratch(longest * 2 * VB),
           *b = scratch(longest * 2 * VB);
        const vf *res;
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
                    transform(&line[2], in, a, b, &res);
                    for (idx d = 0; d < ed; d++) {
                        cube[2 * ((d * nh + h) * half + k)] = res[2 * d];
                        cube[2 * ((d * nh + h) * half + k) + 1] = res[2 * d + 1];
                    }
                }
            along_height(&line[1], cube, ed, nh, half, eh, in, a, b);
            for (idx w = 0; w < 2 * nw; w++) in[w] = splat(0.0f);
            float *yt = y + origin[t] + g * VB;
            for (idx d = 0; d < ed; d++)
                for (idx h = 0; h < eh; h++) {
                    const vf *row = cube + 2 * ((d * nh + h) * half);
                    for (idx k = 0; k < 2 * half; k++) in[k] = row[k];
                    transform(&line[0], in, a, b, &res);
                    for (idx w = 0; w < ew; w++) {
                        vf v = res[2 * w] + shift;
                        if (relu) v = sel(v > 0.0f, v, splat(0.0f));
                        store_n(yt + d * sd + h * sh + w * sw, v, lanes);
                    }
                }
        }
        free(cube);
        free(in);
        free(a);
        free(b);
    }
}
