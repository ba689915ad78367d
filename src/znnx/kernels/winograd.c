/* Winograd transforms for channels-last 3D convolution, one slab of tiles at a time.
 *
 * Tensors are channels-last (D, H, W, C). Each axis has a kernel size k (1, 3 or 5) and an output
 * tile m; a tile reads t = m + k - 1 input voxels along that axis (k = 1: t = m = 1, no transform).
 * A slab is `count` consecutive tiles (row-major over the tile grid, w fastest) starting at `first`.
 *
 * wino_input:  input tiles -> V[tile][p][Cp], p the Winograd point (d, h, w row-major); channels
 *              beyond C and voxels outside the input (the padding) read as zero. The input may be
 *              the channel concatenation of several sources (a concat fused into the conv): source
 *              j's channels start at the earlier sources' channel counts rounded up to VB, each.
 * wino_gemm:   M[tile][p][Cop] = V[tile][p][:C] @ U[p][:C][Cop] for every point p (the padded
 *              channels of V and U are zero, so the sum stops at the real C).
 * wino_output: M[tile][p][Cop] -> output tiles, + bias, then the epilogue steps in order (residual
 *              add, one activation), written straight into y (the residual may be y itself).
 *
 * The weight gradient (training) reuses wino_input for the input tiles and adds:
 * wino_grad_tiles: output-gradient tiles (m voxels per transformed axis, zero past the output) ->
 *              Gt[tile][p][Cop], transformed by A (the transposed output transform);
 * wino_wgrad_gemm: Mw[p][Cp][Cop] += V[tile][p][:]^T Gt[tile][p][:] summed over the slab's tiles;
 *              the caller turns Mw into dW = G^T Mw G (dL/dw = G^T [(A g) . (B^T x)] per tile).
 *
 * The slab is tile-major, so a tile's transform reads and writes one contiguous block instead of
 * one stream per point; the GEMM reads a point's rows with a stride (lda = P * Cp), which its
 * register-blocked micro-kernel does not mind.
 *
 * The transforms are split over tiles with OpenMP. A tile is transformed in chunks of up to CHMAX
 * channels, as a sequence of 1D line transforms along each transformed axis, vectorized over the
 * channels: the first pass reads the input in place (interior tiles) and the last writes straight
 * into V, so a chunk's intermediates (t^3 x CHMAX floats) stay in L1/L2. The line transforms are
 * generated from the transform matrices (see winograd.py) and pasted in below. The GEMM is split
 * over points and column blocks.
 */
#include <omp.h>

#define CHMAX 32
#define TMAX 8
typedef struct {
    idx s[3];
} strides;
typedef void (*along_fn)(int ax, const int n[3], const float *x, strides xs, float *y, strides ys, int nb,
                         int tail);


/*@LINES@*/

/* along_F: apply the line transform F along axis `ax` of an n[0] x n[1] x n[2] grid of points of
 * nb channel vectors, reading x (the last vector's first `tail` lanes, the rest as zero) and writing
 * y with the given strides (F inlined in the loops). */
#define ALONG(F)                                                                                   \
    static void along_##F(int ax, const int n[3], const float *x, strides xs, float *y, strides ys, \
                          int nb, int tail) {                                                      \
        const int o1 = ax == 0 ? 1 : 0, o2 = ax == 2 ? 1 : 2;                                      \
        for (int a = 0; a < n[o1]; a++)                                                            \
            for (int b = 0; b < n[o2]; b++)                                                        \
                F(x + a * xs.s[o1] + b * xs.s[o2], xs.s[ax], y + a * ys.s[o1] + b * ys.s[o2],       \
                  ys.s[ax], nb, tail);                                                             \
    }

typedef struct {
    int t, m;
    along_fn in, out, gin;
} axis;

/* The transforms of one axis: kernel size k, output tile m (the cases are generated). */
/*@AXES@*/

/* Strides of a packed [n0][n1][n2][ch] block. */
static strides packed(const int n[3], idx ch) {
    strides s = {{(idx)n[1] * n[2] * ch, (idx)n[2] * ch, ch}};
    return s;
}

/* Copy the tile's chunk [c0, c0 + nb * VB) into a packed block, zero outside the input and past C; x
 * is channels-last with depth and row strides sd and sh (a crop's view keeps its parent's). Vector by
 * vector, the channel tail by a masked load: memcpy and memset calls per point took a fifth of a
 * 12-channel layer, every tile of which comes here (its channels do not fill the vectors). */
static void gather(const float *x, idx sd, idx sh, idx D, idx H, idx W, idx C, idx d0, idx h0, idx w0,
                   const int n[3], idx c0, int nb, float *buf) {
    const idx ch = (idx)nb * VB;
    float *g = buf;
    for (int i = 0; i < n[0]; i++)
        for (int j = 0; j < n[1]; j++)
            for (int l = 0; l < n[2]; l++, g += ch) {
                const idx d = d0 + i, h = h0 + j, w = w0 + l;
                const int outside = d < 0 || d >= D || h < 0 || h >= H || w < 0 || w >= W;
                const float *src = x + d * sd + h * sh + w * C + c0;
                for (int b = 0; b < nb; b++) {
                    const idx left = outside ? 0 : C - c0 - (idx)b * VB;
                    store(g + b * VB, left >= VB ? load(src + b * VB) : left > 0 ? load_n(src + b * VB, (int)left)
                                                                                 : splat(0.0f));
                }
            }
}

enum { PICK_IN, PICK_OUT, PICK_GRAD };

/* The `pick` transform (in, out or gin) of every axis with t > 1, w first, applied in turn to a block
 * of nb channel vectors: `src` (strides ss; the first pass reads the first `tail` lanes of the last
 * vector, the rest as zero) holds n[0] x n[1] x n[2] points, each pass takes its axis
 * from n[a] to to[a] points (n is updated), the passes between alternate between buf0 and buf1
 * (packed); the last writes to dst with strides ds, or, dst NULL, stays in a buffer. The result:
 * where it is, with its strides in *rs. */
static inline __attribute__((always_inline)) const float *chain(const axis ax[3], int pick, int n[3],
                                                                const int to[3], const float *src, strides ss,
                                                                float *dst, strides ds, int nb, int tail,
                                                                float *buf0, float *buf1, strides *rs) {
    /* unrolled, so that n, out and the strides are registers: indexed by a variable axis they went through
     * the stack, a load spanning two stores that could not be forwarded (a fifth of a 12-channel layer's
     * time outside the GEMM and the line transforms) */
    _Pragma("GCC unroll 3") for (int a = 2, left = (ax[0].t > 1) + (ax[1].t > 1) + (ax[2].t > 1); a >= 0; a--) {
        if (ax[a].t == 1) continue;
        const int last = --left == 0 && dst;
        int out[3] = {n[0], n[1], n[2]};
        out[a] = to[a];
        float *next = last ? dst : (src == buf0 ? buf1 : buf0);
        const strides ns = last ? ds : packed(out, (idx)nb * VB);
        const along_fn f = pick == PICK_IN ? ax[a].in : pick == PICK_OUT ? ax[a].out : ax[a].gin;
        f(a, n, src, ss, next, ns, nb, tail);
        tail = VB;
        n[a] = out[a];
        src = next;
        ss = ns;
    }
    *rs = ss;
    return src;
}

/* Tile `tile` of the input to V (P points x Cp channels, strides vs), chunk by chunk of channels: an
 * interior tile is read in place, the channel tail by masked loads; a tile over the edge is gathered. */
static inline __attribute__((always_inline)) void input_tile(const axis ax[3], const float *x, idx sd, idx sh, idx D,
                                                             idx H, idx W, idx C, idx pd, idx ph, idx pw,
                                                             idx tiles_h, idx tiles_w, idx tile, float *V, strides vs,
                                                             idx Cp, float *buf0, float *buf1) {
    const int n[3] = {ax[0].t, ax[1].t, ax[2].t};
    const strides xs = {{sd, sh, C}};
    const idx tw = tile % tiles_w, th = (tile / tiles_w) % tiles_h, td = tile / (tiles_w * tiles_h);
    const idx d0 = td * ax[0].m - pd, h0 = th * ax[1].m - ph, w0 = tw * ax[2].m - pw;
    const int inside = d0 >= 0 && d0 + n[0] <= D && h0 >= 0 && h0 + n[1] <= H && w0 >= 0 && w0 + n[2] <= W;
    for (idx c0 = 0; c0 < Cp; c0 += CHMAX) {
        const int nb = (int)((Cp - c0 < CHMAX ? Cp - c0 : CHMAX) / VB);
        const strides pk = packed(n, (idx)nb * VB);
        const float *src;
        strides ss;
        const idx last = C - c0 - (idx)(nb - 1) * VB;
        int tail = VB;
        if (inside && last > 0) {
            src = x + d0 * sd + h0 * sh + w0 * C + c0;
            ss = xs;
            tail = last < VB ? (int)last : VB;
        } else {
            gather(x, sd, sh, D, H, W, C, d0, h0, w0, n, c0, nb, buf0);
            src = buf0;
            ss = pk;
        }
        int sizes[3] = {n[0], n[1], n[2]};
        chain(ax, PICK_IN, sizes, n, src, ss, V + c0, vs, nb, tail, buf0, buf1, &ss);
    }
}

/* Tile `tile` of every one of the `nsrc` sources (xs[j] with cs[j] channels, depth and row strides
 * ss[2j], ss[2j + 1]) to V. */
static inline __attribute__((always_inline)) void input_sources(const axis ax[3], int nsrc, const float *const *xs,
                                                                const idx *cs, const idx *ss, idx D, idx H, idx W,
                                                                idx pd, idx ph, idx pw, idx tiles_h, idx tiles_w,
                                                                idx tile, float *V, strides vs, float *buf0,
                                                                float *buf1) {
    for (int j = 0; j < nsrc; j++) {
        const idx padded = (cs[j] + VB - 1) / VB * VB;
        input_tile(ax, xs[j], ss[2 * j], ss[2 * j + 1], D, H, W, cs[j], pd, ph, pw, tiles_h, tiles_w, tile, V, vs,
                   padded, buf0, buf1);
        V += padded;
    }
}

/* The GEMM's depth over the sources: each source's channels rounded up to VB but the last's. */
static idx sources_depth(int nsrc, const idx *cs) {
    idx k = cs[nsrc - 1];
    for (int j = 0; j < nsrc - 1; j++) k += (cs[j] + VB - 1) / VB * VB;
    return k;
}

void wino_input(int nsrc, const float *const *xs, const idx *cs, const idx *ss, idx D, idx H, idx W, idx pd,
                idx ph, idx pw,
                int kd, int kh, int kw, int m, idx tiles_h, idx tiles_w,
                idx first, idx count, float *V, idx Cp) {
    const axis ax[3] = {make_axis(kd, m), make_axis(kh, m), make_axis(kw, m)};
    const int n[3] = {ax[0].t, ax[1].t, ax[2].t};
    const idx P = (idx)n[0] * n[1] * n[2];
    const strides vs = packed(n, Cp);
    #pragma omp parallel
    {
        float buf0[TMAX * TMAX * TMAX * CHMAX] __attribute__((aligned(64)));
        float buf1[TMAX * TMAX * TMAX * CHMAX] __attribute__((aligned(64)));
        #pragma omp for schedule(static)
        for (idx s = 0; s < count; s++)
            input_sources(ax, nsrc, xs, cs, ss, D, H, W, pd, ph, pw, tiles_h, tiles_w, first + s, V + s * P * Cp, vs,
                          buf0, buf1);
    }
}

/* c[r][0 : NV * VB] (+)= sum_k a[AT(r, k)] b[k][0 : NV * VB] for r < rows <= R: R x NV accumulators
 * in registers, one broadcast of a per row and NV loads of b per k; ACC: add to c (else overwrite it).
 * AT reads a with the stride sa along rows (a[r][k]: the forward GEMM) or down columns (a[k][r]: the
 * weight gradient's V^T). gemm_NAME picks the register block for a column block of `width`. */
#define MICRO(NAME, R, NV, AT, ACC)                                                                 \
    static inline __attribute__((always_inline)) void micro_##NAME##_##R##_##NV(                   \
        int rows, const float *restrict a, idx sa, const float *restrict b, idx ldb,               \
        float *restrict c, idx ldc, idx K) {                                                       \
        vf acc[R][NV];                                                                             \
        _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                                       \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++)                                   \
                acc[r][j] = ACC && r < rows ? load(c + r * ldc + j * VB) : splat(0.0f);            \
        for (idx k = 0; k < K; k++) {                                                              \
            vf bv[NV];                                                                             \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) bv[j] = load(b + k * ldb + j * VB); \
            _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {                                 \
                if (r < rows) {                                                                    \
                    const vf av = splat(a[AT(r, k)]);                                              \
                    _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) acc[r][j] += av * bv[j];  \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                                       \
            if (r < rows)                                                                          \
                _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) store(c + r * ldc + j * VB, acc[r][j]); \
    }                                                                                              \
    static void block_##NAME##_##R##_##NV(idx rows, const float *a, idx sa, const float *b, idx ldb, \
                                          float *c, idx ldc, idx K) {                              \
        idx r = 0;                                                                                 \
        for (; r + R <= rows; r += R)                                                              \
            micro_##NAME##_##R##_##NV(R, a + AT(r, 0), sa, b, ldb, c + r * ldc, ldc, K);           \
        if (r < rows) micro_##NAME##_##R##_##NV((int)(rows - r), a + AT(r, 0), sa, b, ldb, c + r * ldc, ldc, K); \
    }
#define GEMM(NAME, AT, ACC)                                                                         \
    MICRO(NAME, 6, 4, AT, ACC)                                                                     \
    MICRO(NAME, 8, 3, AT, ACC)                                                                     \
    MICRO(NAME, 12, 2, AT, ACC)                                                                    \
    MICRO(NAME, 16, 1, AT, ACC)                                                                    \
    static void gemm_##NAME(idx width, idx rows, const float *a, idx sa, const float *b, idx ldb, float *c, \
                            idx ldc, idx K) {                                                      \
        switch (width / VB) {                                                                      \
        case 4: block_##NAME##_6_4(rows, a, sa, b, ldb, c, ldc, K); break;                         \
        case 3: block_##NAME##_8_3(rows, a, sa, b, ldb, c, ldc, K); break;                         \
        case 2: block_##NAME##_12_2(rows, a, sa, b, ldb, c, ldc, K); break;                        \
        default: block_##NAME##_16_1(rows, a, sa, b, ldb, c, ldc, K); break;                       \
        }                                                                                          \
    }
#define ALONG_ROWS(r, k) ((r) * sa + (k))
#define DOWN_COLUMNS(r, k) ((r) + (k) * sa)
GEMM(rows, ALONG_ROWS, 0)
GEMM(columns, DOWN_COLUMNS, 1)

void wino_gemm(const float *V, const float *U, float *M, idx P, idx count, idx C, idx Cp, idx Cop) {
    const idx blocks = (Cop + 4 * VB - 1) / (4 * VB);
    #pragma omp parallel for schedule(static) collapse(2)
    for (idx p = 0; p < P; p++)
        for (idx nb = 0; nb < blocks; nb++) {
            const idx n0 = nb * 4 * VB, width = Cop - n0 < 4 * VB ? Cop - n0 : 4 * VB;
            const float *a = V + p * Cp, *b = U + p * Cp * Cop + n0;
            float *c = M + p * Cop + n0;
            gemm_rows(width, count, a, P * Cp, b, Cop, c, P * Cop, C);
        }
}

enum { OP_ADD = 1, OP_RELU, OP_LEAKY, OP_ELU, OP_SIGMOID, OP_TANH, OP_SCALE, OP_GELU, OP_GELU_TANH, OP_SILU, OP_MISH,
       OP_SOFTPLUS, OP_ERF, OP_PRELU };

/* erf(x) to 1.5e-7 (Abramowitz and Stegun 7.1.26), for the erf form of GELU. */
static inline vf erf_approx(vf x) {
    const vi negative = x < 0.0f;
    const vf a = sel(negative, -x, x), t = 1.0f / (1.0f + 0.3275911f * a);
    vf p = splat(1.061405429f);
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const vf e = 1.0f - p * t * exp_approx(-a * a);
    return sel(negative, -e, e);
}

/* log(1 + e^v) = max(v, 0) + log(1 + u), u = e^-|v| in (0, 1]: with s = u / (2 + u) <= 1/3,
 * log(1 + u) = 2 atanh(s), whose series to s^11 is within 1e-8. */
static inline vf softplus_approx(vf v) {
    const vf a = sel(v < 0.0f, -v, v), u = exp_approx(-a), s = u / (2.0f + u), s2 = s * s;
    vf p = splat(1.0f / 11.0f);
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return sel(v > 0.0f, v, splat(0.0f)) + 2.0f * s * p;
}

/* One epilogue step (not the residual add) on v; g and b: the scale step's gamma and beta vectors (g:
 * PReLU's slopes, which never meet a scale step). */
static inline __attribute__((always_inline)) vf step(int op, vf v, vf g, vf b, float alpha) {
    switch (op) {
    case OP_SCALE:
        return v * g + b;
    case OP_RELU:
        return sel(v > 0.0f, v, splat(0.0f));
    case OP_LEAKY:
        return sel(v > 0.0f, v, alpha * v);
    case OP_ELU:
        return sel(v > 0.0f, v, alpha * (exp_approx(v) - 1.0f));
    case OP_SIGMOID:
        return 1.0f / (1.0f + exp_approx(-v));
    case OP_TANH:
        return 2.0f / (1.0f + exp_approx(-2.0f * v)) - 1.0f;
    case OP_GELU:
        return 0.5f * v * (1.0f + erf_approx(v * 0.70710678118654752f));
    case OP_GELU_TANH: /* 0.5 v (1 + tanh(u)) = v / (1 + exp(-2u)) */
        return v / (1.0f + exp_approx(-1.5957691216057308f * (v + 0.044715f * v * v * v)));
    case OP_SILU:
        return v / (1.0f + exp_approx(-v));
    case OP_MISH: { /* tanh(log(1 + e)) = n / (n + 2) with n = e (e + 2); past 20, mish(v) is v in fp32 */
        const vf e = exp_approx(sel(v > 20.0f, splat(20.0f), v)), n = e * (e + 2.0f);
        return v * n / (n + 2.0f);
    }
    case OP_SOFTPLUS:
        return softplus_approx(v);
    case OP_ERF:
        return erf_approx(v);
    case OP_PRELU:
        return sel(v > 0.0f, v, v * g);
    }
    return v;
}

/* Step `op` (not the residual add) over n vectors of one channel vector's lanes, stride `stride`. */
static inline __attribute__((always_inline)) void step_over(int op, float *v, int n, idx stride, vf g, vf b,
                                                            float alpha) {
    switch (op) {
#define STEP_OVER(OP)                                                                                     \
    case OP:                                                                                              \
        for (int q = 0; q < n; q++) store(v + q * stride, step(OP, load(v + q * stride), g, b, alpha));   \
        break;
    STEP_OVER(OP_SCALE)
    STEP_OVER(OP_RELU)
    STEP_OVER(OP_LEAKY)
    STEP_OVER(OP_ELU)
    STEP_OVER(OP_SIGMOID)
    STEP_OVER(OP_TANH)
    STEP_OVER(OP_GELU)
    STEP_OVER(OP_GELU_TANH)
    STEP_OVER(OP_SILU)
    STEP_OVER(OP_MISH)
    STEP_OVER(OP_SOFTPLUS)
    STEP_OVER(OP_ERF)
    STEP_OVER(OP_PRELU)
#undef STEP_OVER
    }
}

/* Tile `tile` of M (P points x Cop channels, strides ms) to the output, + bias, then the epilogue. The
 * steps run one at a time over the tile's transformed block (in L1): per vector, dispatching the steps
 * cost an 8-channel layer (one vector per voxel) 7%. */
static inline __attribute__((always_inline)) void output_tile(const axis ax[3], const float *Mt, strides ms,
                                                              idx Cop, idx tiles_h, idx tiles_w, idx tile, float *y,
                                                              const float *res, idx D, idx H, idx W, idx C,
                                                              const float *bias, const float *gamma,
                                                              const float *beta, const int *ops, int nops,
                                                              float alpha, float *buf0, float *buf1) {
    const int t[3] = {ax[0].t, ax[1].t, ax[2].t}, m3[3] = {ax[0].m, ax[1].m, ax[2].m};
    const idx tw = tile % tiles_w, th = (tile / tiles_w) % tiles_h, td = tile / (tiles_w * tiles_h);
    const idx d0 = td * ax[0].m, h0 = th * ax[1].m, w0 = tw * ax[2].m;
    for (idx c0 = 0; c0 < C; c0 += CHMAX) {
        const int nb = (int)((Cop - c0 < CHMAX ? Cop - c0 : CHMAX) / VB);
        int n[3] = {t[0], t[1], t[2]};
        strides ss;
        /* the last pass of a transform with any axis > 1 leaves the block packed in buf0 or buf1 */
        float *val = (float *)chain(ax, PICK_OUT, n, m3, Mt + c0, ms, NULL, ms, nb, VB, buf0, buf1, &ss);
        const int points = n[0] * n[1] * n[2], di = n[0] < D - d0 ? n[0] : (int)(D - d0),
                  dj = n[1] < H - h0 ? n[1] : (int)(H - h0), dl = n[2] < W - w0 ? n[2] : (int)(W - w0);
        for (int b = 0; b < nb; b++) {
            const idx c = c0 + (idx)b * VB;
            const vf bb = load(bias + c), g = load(gamma + c), be = load(beta + c);
            float *v = val + b * VB;
            for (int q = 0; q < points; q++) store(v + q * ss.s[2], load(v + q * ss.s[2]) + bb);
            for (int s = 0; s < nops; s++) {
                if (ops[s] != OP_ADD) {
                    step_over(ops[s], v, points, ss.s[2], g, be, alpha);
                    continue;
                }
                const int nv = C - c >= VB ? VB : (int)(C - c);
                for (int i = 0; i < di; i++)
                    for (int j = 0; j < dj; j++)
                        for (int l = 0; l < dl; l++) {
                            float *at = v + i * ss.s[0] + j * ss.s[1] + l * ss.s[2];
                            store(at, load(at) + load_n(res + (((d0 + i) * H + h0 + j) * W + w0 + l) * C + c, nv));
                        }
            }
        }
        for (int i = 0; i < di; i++)
            for (int j = 0; j < dj; j++)
                for (int l = 0; l < dl; l++) {
                    const float *at = val + i * ss.s[0] + j * ss.s[1] + l * ss.s[2];
                    float *yv = y + (((d0 + i) * H + h0 + j) * W + w0 + l) * C;
                    for (int b = 0; b < nb; b++) {
                        const idx c = c0 + (idx)b * VB;
                        const int nv = C - c >= VB ? VB : (int)(C - c);
                        if (nv <= 0) break;
                        store_n(yv + c, load(at + b * VB), nv);
                    }
                }
    }
}

void wino_output(const float *M, idx Cop, int kd, int kh, int kw, int m, idx tiles_h, idx tiles_w,
                 idx first, idx count, float *y, const float *res, idx D, idx H, idx W, idx C,
                 const float *bias, const float *gamma, const float *beta, const int *ops, int nops, float alpha) {
    const axis ax[3] = {make_axis(kd, m), make_axis(kh, m), make_axis(kw, m)};
    const int t[3] = {ax[0].t, ax[1].t, ax[2].t};
    const idx P = (idx)t[0] * t[1] * t[2];
    const strides ms = packed(t, Cop);
    #pragma omp parallel
    {
        float buf0[TMAX * TMAX * TMAX * CHMAX] __attribute__((aligned(64)));
        float buf1[TMAX * TMAX * TMAX * CHMAX] __attribute__((aligned(64)));
        #pragma omp for schedule(static)
        for (idx s = 0; s < count; s++)
            output_tile(ax, M + s * P * Cop, ms, Cop, tiles_h, tiles_w, first + s, y, res, D, H, W, C, bias, gamma,
                        beta, ops, nops, alpha, buf0, buf1);
    }
}

/* The whole convolution with each thread running all three stages on its own runs of `chunk` tiles,
 * its V and M (chunk x P x (Cp + Cop) floats, at scratch + thread * that) sized to stay in its L2:
 * no barrier between the stages and no transformed tile streamed through L3 or memory (the slab
 * driver above, three parallel loops per slab, moved V and M through L3: for 8 -> 8 channels the GEMM
 * ran at 45 GFLOP/s, bound by that traffic). `threads` must be the OpenMP team size used. */
void wino_fused(int nsrc, const float *const *xs, const idx *cs, const idx *ss, idx D, idx H, idx W, idx pd,
                idx ph, idx pw,
                int kd, int kh, int kw, int m,
                idx tiles_h, idx tiles_w, idx tiles, idx Cp, const float *U, idx Cop, float *y, const float *res,
                idx Do, idx Ho, idx Wo, idx Co, const float *bias, const float *gamma, const float *beta,
                const int *ops, int nops, float alpha, idx chunk, float *scratch, int threads) {
    const axis ax[3] = {make_axis(kd, m), make_axis(kh, m), make_axis(kw, m)};
    const int n[3] = {ax[0].t, ax[1].t, ax[2].t};
    const idx P = (idx)n[0] * n[1] * n[2], blocks = (Cop + 4 * VB - 1) / (4 * VB), K = sources_depth(nsrc, cs);
    const strides vs = packed(n, Cp), ms = packed(n, Cop);
    #pragma omp parallel num_threads(threads)
    {
        float buf0[TMAX * TMAX * TMAX * CHMAX] __attribute__((aligned(64)));
        float buf1[TMAX * TMAX * TMAX * CHMAX] __attribute__((aligned(64)));
        float *V = scratch + (idx)omp_get_thread_num() * chunk * P * (Cp + Cop), *M = V + chunk * P * Cp;
        #pragma omp for schedule(dynamic, 1)
        for (idx first = 0; first < tiles; first += chunk) {
            const idx count = tiles - first < chunk ? tiles - first : chunk;
            for (idx s = 0; s < count; s++)
                input_sources(ax, nsrc, xs, cs, ss, D, H, W, pd, ph, pw, tiles_h, tiles_w, first + s, V + s * P * Cp,
                              vs, buf0, buf1);
            for (idx p = 0; p < P; p++)
                for (idx nb = 0; nb < blocks; nb++) {
                    const idx n0 = nb * 4 * VB, width = Cop - n0 < 4 * VB ? Cop - n0 : 4 * VB;
                    gemm_rows(width, count, V + p * Cp, P * Cp, U + p * Cp * Cop + n0, Cop, M + p * Cop + n0, P * Cop,
                              K);
                }
            for (idx s = 0; s < count; s++)
                output_tile(ax, M + s * P * Cop, ms, Cop, tiles_h, tiles_w, first + s, y, res, Do, Ho, Wo, Co, bias,
                            gamma, beta, ops, nops, alpha, buf0, buf1);
        }
    }
}

void wino_grad_tiles(const float *g, idx D, idx H, idx W, idx C, int kd, int kh, int kw, int m, idx tiles_h,
                     idx tiles_w, idx first, idx count, float *Gt, idx Cop) {
    const axis ax[3] = {make_axis(kd, m), make_axis(kh, m), make_axis(kw, m)};
    const int t[3] = {ax[0].t, ax[1].t, ax[2].t};
    const idx P = (idx)t[0] * t[1] * t[2];
    const strides gs = packed(t, Cop);
    #pragma omp parallel
    {
        float buf0[TMAX * TMAX * TMAX * CHMAX] __attribute__((aligned(64)));
        float buf1[TMAX * TMAX * TMAX * CHMAX] __attribute__((aligned(64)));
        #pragma omp for schedule(static)
        for (idx s = 0; s < count; s++) {
            const idx tile = first + s;
            const idx tw = tile % tiles_w, th = (tile / tiles_w) % tiles_h, td = tile / (tiles_w * tiles_h);
            const idx d0 = td * ax[0].m, h0 = th * ax[1].m, w0 = tw * ax[2].m;
            for (idx c0 = 0; c0 < Cop; c0 += CHMAX) {
                const int nb = (int)((Cop - c0 < CHMAX ? Cop - c0 : CHMAX) / VB);
                int n[3] = {ax[0].m, ax[1].m, ax[2].m};
                gather(g, H * W * C, W * C, D, H, W, C, d0, h0, w0, n, c0, nb, buf0);
                strides ss;
                chain(ax, PICK_GRAD, n, t, buf0, packed(n, (idx)nb * VB), Gt + s * P * Cop + c0, gs, nb, VB, buf0, buf1,
                      &ss);
            }
        }
    }
}

void wino_wgrad_gemm(const float *V, const float *Gt, float *Mw, idx P, idx count, idx C, idx Cp, idx Cop) {
    const idx blocks = (Cop + 4 * VB - 1) / (4 * VB);
    #pragma omp parallel for schedule(static) collapse(2)
    for (idx p = 0; p < P; p++)
        for (idx nb = 0; nb < blocks; nb++) {
            const idx n0 = nb * 4 * VB, width = Cop - n0 < 4 * VB ? Cop - n0 : 4 * VB;
            const float *a = V + p * Cp, *b = Gt + p * Cop + n0;
            float *c = Mw + p * Cp * Cop + n0;
            gemm_columns(width, C, a, P * Cp, b, P * Cop, c, Cop, count);
        }
}

/* Direct convolution as implicit GEMMs (kernels/implicit.py): any stride, undilated, on an input padded
 * beforehand, channels-last. Output voxels ow0 .. ow0 + ROWS of row (n, od, oh) are the rows of one GEMM
 * whose K runs over the kernel rows (i, j) and, within one, over k < kw * C: a[ow][(i, j), k] =
 * x[n, od*sd + i, oh*sh + j, (ow0 + ow)*sw, 0][k] (the kw taps of a kernel row and the input channels are
 * contiguous, rows rs = sw * C floats apart: overlapping at stride 1), b = Wt[i][j][k][co]. No im2col copy, no transform; the R x NV
 * accumulators stay in registers over every tap. The bias and the fused epilogue are applied as the block
 * is written. */
#define IMPLICIT_BLOCK(NAME, R, NV, LIVE)                                                                \
    static inline __attribute__((always_inline)) void NAME(int live, const float *restrict a, const idx *offs, \
                                                           int taps, idx rs, const float *restrict b, idx ldb, \
                                                           float *restrict c, idx ldc, idx K) {           \
        vf acc[R][NV];                                                                                   \
        _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                                             \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) acc[r][j] = splat(0.0f);                \
        for (int t = 0; t < taps; t++) {                                                                 \
            const float *at = a + offs[t], *bt = b + (idx)t * K * ldb;                                   \
            for (idx k = 0; k < K; k++) {                                                                \
                vf bv[NV];                                                                               \
                _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) bv[j] = load(bt + k * ldb + j * VB); \
                _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {                                   \
                    if (LIVE) {                                                                          \
                        const vf av = splat(at[r * rs + k]);                                             \
                        _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) acc[r][j] += av * bv[j];    \
                    }                                                                                    \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
        _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                                             \
            if (LIVE)                                                                                    \
                _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) store(c + r * ldc + j * VB, acc[r][j]); \
    }
#define IMPLICIT(R, NV)                                                                                   \
    IMPLICIT_BLOCK(implicit_full_##R##_##NV, R, NV, 1)                                                   \
    IMPLICIT_BLOCK(implicit_part_##R##_##NV, R, NV, r < live)                                            \
    static void implicit_##R##_##NV(idx rows, const float *a, const idx *offs, int taps, idx rs, const float *b, \
                                    idx ldb, float *c, idx ldc, idx K) {                                 \
        idx r0 = 0;                                                                                      \
        for (; r0 + R <= rows; r0 += R)                                                                  \
            implicit_full_##R##_##NV(R, a + r0 * rs, offs, taps, rs, b, ldb, c + r0 * ldc, ldc, K);      \
        if (r0 < rows)                                                                                   \
            implicit_part_##R##_##NV((int)(rows - r0), a + r0 * rs, offs, taps, rs, b, ldb, c + r0 * ldc, ldc, K); \
    }
IMPLICIT(6, 4)
IMPLICIT(8, 3)
IMPLICIT(12, 2)
IMPLICIT(16, 1)

#define ROWS 96
/* Rows r < rows of a GEMM result block (acc[r][0 : width], output channels n0 ..) to the output voxels
 * y + r * stride (and the residual's at the same offsets), with the bias and the fused epilogue. Column by
 * column, so the column's lane count, bias and scale are fixed over the rows (row by row, the per-vector
 * bounds and the masked-store test cost narrow layers more than the stores: 8 channels, 2.9 ms against
 * 1.0 for 1.2 M voxels). The steps stay per vector here: as passes over the block (output_tile's way) an
 * ELU cost 15-30% more. */
static inline __attribute__((always_inline)) void store_rows(const float *acc, idx rows, idx width, idx n0, idx Co,
                                                             float *y, const float *res, idx stride,
                                                             const float *bias, const float *gamma,
                                                             const float *beta, const int *ops, int nops,
                                                             float alpha) {
    const idx live = Co - n0 < width ? Co - n0 : width;
    for (idx c = 0; c < live; c += VB) {
        const int nv = live - c >= VB ? VB : (int)(live - c);
        const vf b = load(bias + n0 + c), g = load(gamma + n0 + c), be = load(beta + n0 + c);
        const float *rc = res ? res + n0 + c : 0;
        float *yc = y + n0 + c;
        for (idx r = 0; r < rows; r++) {
            vf v = load(acc + r * width + c) + b;
            for (int s = 0; s < nops; s++)
                v = ops[s] == OP_ADD ? v + load_n(rc + r * stride, nv) : step(ops[s], v, g, be, alpha);
            store_n(yc + r * stride, v, nv);
        }
    }
}

void implicit_conv(const float *x, idx N, idx D, idx H, idx W, idx C, const float *Wt, int kd, int kh, int kw,
                   int sd, int sh, int sw, idx Cop, float *y, const float *res, idx Do, idx Ho, idx Wo, idx Co,
                   const float *bias, const float *gamma, const float *beta, const int *ops, int nops, float alpha) {
    const idx K = (idx)kw * C, blocks = (Cop + 4 * VB - 1) / (4 * VB), rs = (idx)sw * C;
    const int taps = kd * kh;
    idx offs[taps];
    for (int i = 0; i < kd; i++)
        for (int j = 0; j < kh; j++) offs[i * kh + j] = ((idx)i * H + j) * W * C;
    #pragma omp parallel
    {
        float acc[ROWS * 4 * VB] __attribute__((aligned(64)));
        #pragma omp for schedule(static) collapse(3)
        for (idx n = 0; n < N; n++)
            for (idx od = 0; od < Do; od++)
                for (idx oh = 0; oh < Ho; oh++)
                    for (idx ow0 = 0; ow0 < Wo; ow0 += ROWS) {
                        const idx rows = Wo - ow0 < ROWS ? Wo - ow0 : ROWS;
                        const idx at = (((n * Do + od) * Ho + oh) * Wo + ow0) * Co;
                        const float *a = x + (((n * D + od * sd) * H + oh * sh) * W + ow0 * sw) * C;
                        for (idx nb = 0; nb < blocks; nb++) {
                            const idx n0 = nb * 4 * VB, width = Cop - n0 < 4 * VB ? Cop - n0 : 4 * VB;
                            const float *b = Wt + n0;
                            switch (width / VB) {
                            case 4: implicit_6_4(rows, a, offs, taps, rs, b, Cop, acc, width, K); break;
                            case 3: implicit_8_3(rows, a, offs, taps, rs, b, Cop, acc, width, K); break;
                            case 2: implicit_12_2(rows, a, offs, taps, rs, b, Cop, acc, width, K); break;
                            default: implicit_16_1(rows, a, offs, taps, rs, b, Cop, acc, width, K); break;
                            }
                            store_rows(acc, rows, width, n0, Co, y + at, res ? res + at : 0, Co, bias, gamma, beta,
                                       ops, nops, alpha);
                        }
                    }
    }
}

/* A stride-1 convolution of few input channels into few output channels (kernels/implicit.py, where
 * C * (VB / Co) <= 2 * VB): each vector holds V = VB / Co neighbouring output voxels of a row, all Co
 * channels (lanes V * Co onwards unused), so no lane is padding where Co divides VB. Per tap and input
 * channel c, one two-register shuffle of the input row (perm[c]: lane (k, o) takes x[k + l][c]) and one
 * multiply-add with the tap's weights spread the same way (Wp[tap][c]: lane (k, o) holds w[o][c][tap]);
 * NARROW_BLOCK vectors run at once. On an input padded beforehand, channels-last; the bias and the
 * fused epilogue (bias, gamma, beta spread like the weights) are applied as each vector is stored. */
#define NARROW_BLOCK 4
typedef int32_t viu __attribute__((vector_size(VB * 4), aligned(4), may_alias));
/* NARROW_BLOCK (or nb) vectors of a row at `row`; `two`: a vector's input voxels span more than VB
 * floats (C > Co), so each shuffle takes two registers; `full`: every load lies within the row, else
 * loads stop at `left` floats from `row` (the end of the last input row read). */
static inline __attribute__((always_inline)) void narrow_block(int nb, int full, int two, const float *row, idx left,
                                                               const int *perm, const float *Wp, const idx *offs,
                                                               int taps, idx C, idx V, idx Co, float *y,
                                                               const float *res, idx lanes_left, const float *bias,
                                                               const float *gamma, const float *beta, const int *ops,
                                                               int nops, float alpha) {
    vf acc[NARROW_BLOCK];
    for (int b = 0; b < NARROW_BLOCK; b++) acc[b] = splat(0.0f);
    for (int t = 0; t < taps; t++) {
        const float *src = row + offs[t];
        const idx avail = left - offs[t];
        for (int b = 0; b < NARROW_BLOCK; b++) {
            if (b >= nb) break;
            const idx at = b * V * C, n0 = avail - at, n1 = n0 - VB;
            const vf lo = full ? load(src + at) : load_n(src + at, n0 >= VB ? VB : n0 > 0 ? (int)n0 : 0);
            const vf hi = !two ? lo : full ? load(src + at + VB)
                                           : load_n(src + at + VB, n1 >= VB ? VB : n1 > 0 ? (int)n1 : 0);
            for (idx c = 0; c < C; c++) {
                const vi index = *(const viu *)(perm + c * VB);
                acc[b] += (two ? __builtin_shuffle(lo, hi, index) : __builtin_shuffle(lo, index))
                          * load(Wp + (t * C + c) * VB);
            }
        }
    }
    const vf bv = load(bias), g = load(gamma), be = load(beta);
    for (int b = 0; b < NARROW_BLOCK; b++) {
        if (b >= nb) break;
        const idx at = b * V * Co, remaining = lanes_left - at;
        const int live = remaining >= V * Co ? (int)(V * Co) : (int)remaining;
        vf v = acc[b] + bv;
        for (int s = 0; s < nops; s++)
            v = ops[s] == OP_ADD ? v + load_n(res + at, live) : step(ops[s], v, g, be, alpha);
        store_n(y + at, v, live);
    }
}

void narrow_conv(const float *x, idx N, idx D, idx H, idx W, idx C, const float *Wp, const int *perm, int kd, int kh,
                 int kw, float *y, const float *res, idx Do, idx Ho, idx Wo, idx Co, const float *bias,
                 const float *gamma, const float *beta, const int *ops, int nops, float alpha) {
    const idx V = VB / Co;
    const int taps = kd * kh * kw, two = V * C > VB;
    idx offs[taps];
    for (int t = 0; t < taps; t++)
        offs[t] = (((idx)(t / (kh * kw)) * H + t / kw % kh) * W + t % kw) * C;
    const idx reach = ((idx)(kd - 1) * H + kh - 1) * W * C;
    #pragma omp parallel for schedule(static) collapse(3)
    for (idx n = 0; n < N; n++)
        for (idx od = 0; od < Do; od++)
            for (idx oh = 0; oh < Ho; oh++) {
                const float *row = x + (((n * D + od) * H + oh) * W) * C;
                const idx at = ((n * Do + od) * Ho + oh) * Wo;
                for (idx ow = 0; ow < Wo; ow += NARROW_BLOCK * V) {
                    const idx voxels = Wo - ow < NARROW_BLOCK * V ? Wo - ow : NARROW_BLOCK * V;
                    const int nb = (int)((voxels + V - 1) / V);
                    /* floats of the input from this block's first voxel to the end of the last row it reads */
                    const idx left = reach + (W - ow) * C;
                    const int full = nb == NARROW_BLOCK &&
                                     (ow + (NARROW_BLOCK - 1) * V + kw - 1) * C + (two ? 2 : 1) * VB <= W * C;
                    float *yb = y + (at + ow) * Co;
                    const float *rb = res ? res + (at + ow) * Co : 0;
#define NARROW(NB, FULL, TWO, CIN)                                                                         \
    narrow_block(NB, FULL, TWO, row + ow * C, left, perm, Wp, offs, taps, CIN, V, Co, yb, rb, voxels * Co, bias, \
                 gamma, beta, ops, nops, alpha)
                    switch (full ? C + 8 * two : 0) {
                    case 1: NARROW(NARROW_BLOCK, 1, 0, 1); break;
                    case 2: NARROW(NARROW_BLOCK, 1, 0, 2); break;
                    case 3: NARROW(NARROW_BLOCK, 1, 0, 3); break;
                    case 4: NARROW(NARROW_BLOCK, 1, 0, 4); break;
                    case 8 + 2: NARROW(NARROW_BLOCK, 1, 1, 2); break;
                    case 8 + 3: NARROW(NARROW_BLOCK, 1, 1, 3); break;
                    case 8 + 4: NARROW(NARROW_BLOCK, 1, 1, 4); break;
                    default: NARROW(nb, 0, two, C); break;
                    }
#undef NARROW
                }
            }
}

/* A transposed convolution whose windows tile the output (kernel == stride, no pads; kernels/shuffle.py):
 * each input voxel's C channels times Wt[tap] (C x Cop per tap, taps = kd * kh * kw) are the output
 * voxels of its window. One GEMM per run of up to ROWS input voxels of a row and tap, rows read in
 * place (row stride C), the result written straight to the tap's output voxels with the bias and the
 * fused epilogue: no GEMM result buffer and no shuffle pass. */
void shuffle_conv(const float *x, idx N, idx D, idx H, idx W, idx C, const float *Wt, int kd, int kh, int kw,
                  idx Cop, float *y, const float *res, idx Co, const float *bias, const float *gamma,
                  const float *beta, const int *ops, int nops, float alpha) {
    const idx blocks = (Cop + 4 * VB - 1) / (4 * VB), Ho = H * kh, Wo = W * kw;
    const int taps = kd * kh * kw;
    #pragma omp parallel
    {
        float acc[ROWS * 4 * VB] __attribute__((aligned(64)));
        #pragma omp for schedule(static) collapse(3)
        for (idx n = 0; n < N; n++)
            for (idx d = 0; d < D; d++)
                for (idx h = 0; h < H; h++)
                    for (idx w0 = 0; w0 < W; w0 += ROWS) {
                        const idx rows = W - w0 < ROWS ? W - w0 : ROWS;
                        const float *a = x + (((n * D + d) * H + h) * W + w0) * C;
                        for (int t = 0; t < taps; t++) {
                            const int i = t / (kh * kw), j = t / kw % kh, l = t % kw;
                            const idx row = ((n * D * kd + d * kd + i) * Ho + h * kh + j) * Wo;
                            for (idx nb = 0; nb < blocks; nb++) {
                                const idx n0 = nb * 4 * VB, width = Cop - n0 < 4 * VB ? Cop - n0 : 4 * VB;
                                gemm_rows(width, rows, a, C, Wt + (idx)t * C * Cop + n0, Cop, acc, width, C);
                                const idx at = (row + w0 * kw + l) * Co;
                                store_rows(acc, rows, width, n0, Co, y + at, res ? res + at : 0, kw * Co, bias, gamma,
                                           beta, ops, nops, alpha);
                            }
                        }
                    }
    }
}

/* A transposed convolution whose windows overlap (kernels/scatter.py; one group, no dilation): for
 * each run of up to SCATTER_ROWS input voxels of a row, one GEMM of their C channels with every tap's
 * weights at once (Wt: C x Np, column ((i * kh + j) * kw + l) * Co + o, zero past taps * Co); then per
 * voxel and kernel row (i, j), its kw taps' sums, kw * Co contiguous floats, are added into the kw
 * neighbouring output voxels y[n, d*sd - pd + i, h*sh - ph + j, w*sw - pw + l] (channels-last, zeroed
 * beforehand). Input rows whose output rows may meet never run at once: rows run in ceil(kd / sd) x
 * ceil(kh / sh) phases of (d, h) residues. Then one pass adds the bias and applies the epilogue into
 * dst (y itself, or the residual's buffer), y read in periods of `period` floats (a multiple of Co and
 * VB) over which bias, gamma and beta hold each float's channel's value. */
#define SCATTER_ROWS 32
void scatter_conv(const float *x, idx N, idx D, idx H, idx W, idx C, const float *Wt, idx Np, int kd, int kh,
                  int kw, int sd, int sh, int sw, int pd, int ph, int pw, float *y, idx Do, idx Ho, idx Wo, idx Co,
                  float *dst, const float *res, const float *bias, const float *gamma, const float *beta, idx period,
                  const int *ops, int nops, float alpha) {
    const int fd = (kd + sd - 1) / sd, fh = (kh + sh - 1) / sh;
    for (int phase = 0; phase < fd * fh; phase++) {
        const int rd = phase / fh, rh = phase % fh;
        const idx nd = D > rd ? (D - rd + fd - 1) / fd : 0, nh = H > rh ? (H - rh + fh - 1) / fh : 0;
        #pragma omp parallel
        {
            float acc[SCATTER_ROWS * Np] __attribute__((aligned(64)));
            #pragma omp for schedule(static) collapse(3)
            for (idx n = 0; n < N; n++)
                for (idx id = 0; id < nd; id++)
                    for (idx ih = 0; ih < nh; ih++) {
                        const idx d = rd + id * fd, h = rh + ih * fh;
                        for (idx w0 = 0; w0 < W; w0 += SCATTER_ROWS) {
                            const idx rows = W - w0 < SCATTER_ROWS ? W - w0 : SCATTER_ROWS;
                            const float *a = x + (((n * D + d) * H + h) * W + w0) * C;
                            for (idx n0 = 0; n0 < Np; n0 += 4 * VB)
                                gemm_rows(Np - n0 < 4 * VB ? Np - n0 : 4 * VB, rows, a, C, Wt + n0, Np, acc + n0, Np,
                                          C);
                            for (idx r = 0; r < rows; r++) {
                                const idx ow0 = (w0 + r) * sw - pw;
                                const idx lo = ow0 < 0 ? -ow0 : 0, hi = Wo - ow0 < kw ? Wo - ow0 : kw;
                                if (lo >= hi) continue;
                                for (int i = 0; i < kd; i++) {
                                    const idx od = d * sd - pd + i;
                                    if (od < 0 || od >= Do) continue;
                                    for (int j = 0; j < kh; j++) {
                                        const idx oh = h * sh - ph + j;
                                        if (oh < 0 || oh >= Ho) continue;
                                        float *to = y + (((n * Do + od) * Ho + oh) * Wo + ow0 + lo) * Co;
                                        const float *src = acc + r * Np + (((idx)i * kh + j) * kw + lo) * Co;
                                        const idx len = (hi - lo) * Co;
                                        for (idx c = 0; c < len; c += VB) {
                                            const int nv = len - c < VB ? (int)(len - c) : VB;
                                            store_n(to + c, load_n(to + c, nv) + load_n(src + c, nv), nv);
                                        }
                                    }
                                }
                            }
                        }
                    }
        }
    }
    const idx total = N * Do * Ho * Wo * Co, runs = (total + period - 1) / period;
    #pragma omp parallel for schedule(static)
    for (idx r = 0; r < runs; r++)
        for (idx j = 0; j < period && r * period + j < total; j += VB) {
            const idx at = r * period + j;
            const int live = total - at >= VB ? VB : (int)(total - at);
            const vf g = load(gamma + j), b = load(beta + j);
            vf v = load_n(y + at, live) + load(bias + j);
            for (int s = 0; s < nops; s++)
                v = ops[s] == OP_ADD ? v + load_n(res + at, live) : step(ops[s], v, g, b, alpha);
            store_n(dst + at, v, live);
        }
}
