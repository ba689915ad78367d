/* Max and average pooling over channels-last 3D tensors (N, D, H, W, C), any kernel, stride,
 * dilation and padding.
 *
 * Max: every output voxel is the channel-wise maximum over the input voxels of its (dilated) window
 * that lie inside the input (padding never wins, as if it were -inf); a NaN in the window wins, as in
 * PyTorch. Average: the sum over those voxels divided by their number, or, with include_pad, by the
 * number of window taps inside the padded input (leading pads p, trailing pads q), as PyTorch's
 * count_include_pad (taps past the trailing pads, from ceil mode, never count).
 *
 * Rows of output voxels (n, od, oh) are split over threads with OpenMP; the channels of a voxel are
 * contiguous, so a window is reduced V channels at a time with V = 16 where C >= 16, and below 16
 * channels (narrow nets: 8, 12) as one vector of C lanes under an AVX-512 mask, or without AVX-512
 * V = 4 where C >= 4, one at a time below; the last V channels are done once more where C is not
 * a multiple of V (a channel may be reduced twice, to the same value). The window's bounds take no
 * division without dilation (a division per voxel and axis took half of a 12-channel (1,3,3) pool).
 *
 * With a block b other than 1x1x1 the output is written as max-pooling fragments (ir/ops.py
 * `fragment`): output voxel (n, od, oh, ow) goes to batch entry ((od%bd*bh + oh%bh)*bw + ow%bw)*No + n0 + n
 * at (od/bd, oh/bh, ow/bw), each fragment (Fs, Ho/bh, Wo/bw, C): No entries per offset and Fs planes per
 * entry (N and Do/bd for a whole output; more where y points into a larger one, as a depth slab of
 * the input writes planes of every fragment of one batch entry n0 of No).
 */
#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t idx;
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t i16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef float v4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));
typedef float v4u __attribute__((vector_size(16), aligned(4), may_alias));
typedef float v1 __attribute__((vector_size(4)));
typedef int32_t i1 __attribute__((vector_size(4)));
typedef float v1u __attribute__((vector_size(4), aligned(4), may_alias));

/* The maximum that lets a NaN win, for any of the vector types (one lane for the channels of C < 4). */
#define VMAX(vt, it, acc, v) ({ const it take_ = (it)(((v) > (acc)) | ((v) != (v))); \
                               (vt)((*(it *)&(v) & take_) | (*(it *)&(acc) & ~take_)); })

/* The taps j in [first, last) of a window starting at `start` with step `step` that land inside [lo, hi). */
static inline idx steps(idx n, idx step) { return step == 1 ? n : (n + step - 1) / step; }
static inline idx first(idx start, idx step, idx lo) { return start < lo ? steps(lo - start, step) : 0; }
static inline idx last(idx start, idx k, idx step, idx hi) {
    const idx n = hi - start <= 0 ? 0 : steps(hi - start, step);
    return n < k ? n : k;
}
static inline idx counted(idx start, idx k, idx step, idx lo, idx hi) {
    const idx a = first(start, step, lo), b = last(start, k, step, hi);
    return b > a ? b - a : 0;
}

/* Reduce the window [da,db) x [ha,hb) x [wa,wb) at (d0, h0, w0) of xn into out, V channels at a time. */
#define REDUCE(V, vt, it, vtu)                                                                           \
    for (idx c0 = 0; c0 < C; c0 += V) {                                                                  \
        const idx c = c0 + V <= C ? c0 : C - V;                                                          \
        vt acc = average ? (vt){0} : (vt){0} - __builtin_inff();                                         \
        for (idx i = da; i < db; i++)                                                                    \
            for (idx j = ha; j < hb; j++)                                                                \
                for (idx l = wa; l < wb; l++) {                                                          \
                    vt v = *(const vtu *)(xn + (((d0 + i * dl[0]) * H + h0 + j * dl[1]) * W + w0 + l * dl[2]) * C + c); \
                    acc = average ? acc + v : VMAX(vt, it, acc, v);                                      \
                }                                                                                        \
        *(vtu *)(out + c) = average ? acc * scale : acc;                                                 \
    }

#if defined(__AVX512F__)
#include <immintrin.h>
/* Reduce the window as REDUCE does, the C < 16 channels as one vector under a mask (lanes past C
 * load as zero and are never stored). */
#define REDUCE_MASKED                                                                                    \
    {                                                                                                    \
        const __mmask16 mask = (__mmask16)((1u << C) - 1);                                               \
        v16 acc = average ? (v16){0} : (v16){0} - __builtin_inff();                                      \
        for (idx i = da; i < db; i++)                                                                    \
            for (idx j = ha; j < hb; j++)                                                                \
                for (idx l = wa; l < wb; l++) {                                                          \
                    v16 v = (v16)_mm512_maskz_loadu_ps(                                                  \
                        mask, xn + (((d0 + i * dl[0]) * H + h0 + j * dl[1]) * W + w0 + l * dl[2]) * C);   \
                    acc = average ? acc + v : VMAX(v16, i16, acc, v);                                    \
                }                                                                                        \
        _mm512_mask_storeu_ps(out, mask, (__m512)(average ? acc * scale : acc));                         \
    }
#else
#define REDUCE_MASKED                                                                                    \
    if (C >= 4) {                                                                                        \
        REDUCE(4, v4, i4, v4u)                                                                           \
    } else {                                                                                             \
        REDUCE(1, v1, i1, v1u)                                                                           \
    }
#endif

void pool(int average, int include_pad, const float *x, idx N, idx D, idx H, idx W, idx C, const int k[3],
          const int s[3], const int p[3], const int q[3], const int dl[3], const int b[3], float *y, idx Do,
          idx Ho, idx Wo, idx No, idx n0, idx Fs) {
    const idx Fh = Ho / b[1], Fw = Wo / b[2];
    #pragma omp parallel for schedule(static) collapse(3)
    for (idx n = 0; n < N; n++)
        for (idx od = 0; od < Do; od++)
            for (idx oh = 0; oh < Ho; oh++) {
                const idx d0 = od * s[0] - p[0], h0 = oh * s[1] - p[1];
                const idx da = first(d0, dl[0], 0), db = last(d0, k[0], dl[0], D);
                const idx ha = first(h0, dl[1], 0), hb = last(h0, k[1], dl[1], H);
                const idx dh = include_pad ? counted(d0, k[0], dl[0], -p[0], D + q[0]) *
                                             counted(h0, k[1], dl[1], -p[1], H + q[1])
                                           : (db - da) * (hb - ha);
                const float *xn = x + n * D * H * W * C;
                const idx part = (od % b[0] * b[1] + oh % b[1]) * b[2];
                for (idx ow = 0; ow < Wo; ow++) {
                    const idx w0 = ow * s[2] - p[2];
                    const idx wa = first(w0, dl[2], 0), wb = last(w0, k[2], dl[2], W);
                    const idx taps = dh * (include_pad ? counted(w0, k[2], dl[2], -p[2], W + q[2]) : wb - wa);
                    const float scale = taps > 0 ? 1.0f / (float)taps : __builtin_nanf("");
                    const idx entry = (part + ow % b[2]) * No + n0 + n;
                    float *out = y + (((entry * Fs + od / b[0]) * Fh + oh / b[1]) * Fw + ow / b[2]) * C;
                    if (C >= 16) {
                        REDUCE(16, v16, i16, v16u)
                    } else
                        REDUCE_MASKED
                }
            }
}
