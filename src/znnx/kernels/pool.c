/* Max pooling over channels-last 3D tensors (N, D, H, W, C), any kernel, stride, dilation and padding.
 *
 * Every output voxel is the channel-wise maximum over the input voxels of its (dilated) window that lie
 * inside the input (padding never wins, as if it were -inf); a NaN in the window wins, as in
 * PyTorch. Rows of output voxels (n, od, oh) are split over threads with OpenMP; the channels of a
 * voxel are contiguous, so the maximum is taken VB channels at a time (the last VB channels once
 * more where C is not a multiple of VB: a maximum may be taken twice), one at a time if C < VB.
 *
 * With a block b other than 1x1x1 the output is written as max-pooling fragments (ir/ops.py
 * `fragment`): output voxel (n, od, oh, ow) goes to batch entry ((od%bd*bh + oh%bh)*bw + ow%bw)*N + n
 * at (od/bd, oh/bh, ow/bw), each fragment (N, Do/bd, Ho/bh, Wo/bw, C).
 */
#include <stddef.h>
#include <stdint.h>

#define VB 16
typedef ptrdiff_t idx;
typedef float vf __attribute__((vector_size(VB * 4)));
typedef int32_t vi __attribute__((vector_size(VB * 4)));
typedef float vfu __attribute__((vector_size(VB * 4), aligned(4), may_alias));

static inline vf load(const float *p) { return *(const vfu *)p; }
static inline void store(float *p, vf v) { *(vfu *)p = v; }
static inline vf vmax(vf acc, vf v) {
    const vi take = (v > acc) | (v != v);
    return (vf)(((vi)v & take) | ((vi)acc & ~take));
}
static inline float smax(float acc, float v) { return v > acc || v != v ? v : acc; }

/* The taps j in [first, last) of a window starting at `start` with step `step` that land inside [0, size). */
static inline idx first(idx start, idx step) { return start < 0 ? (-start + step - 1) / step : 0; }
static inline idx last(idx start, idx k, idx step, idx size) {
    const idx n = size - start <= 0 ? 0 : (size - start + step - 1) / step;
    return n < k ? n : k;
}

void max_pool(const float *x, idx N, idx D, idx H, idx W, idx C, const int k[3], const int s[3],
              const int p[3], const int dl[3], const int b[3], float *y, idx Do, idx Ho, idx Wo) {
    const idx Fd = Do / b[0], Fh = Ho / b[1], Fw = Wo / b[2];
    #pragma omp parallel for schedule(static) collapse(3)
    for (idx n = 0; n < N; n++)
        for (idx od = 0; od < Do; od++)
            for (idx oh = 0; oh < Ho; oh++) {
                const idx d0 = od * s[0] - p[0], h0 = oh * s[1] - p[1];
                const idx da = first(d0, dl[0]), db = last(d0, k[0], dl[0], D);
                const idx ha = first(h0, dl[1]), hb = last(h0, k[1], dl[1], H);
                const float *xn = x + n * D * H * W * C;
                const idx part = (od % b[0] * b[1] + oh % b[1]) * b[2];
                for (idx ow = 0; ow < Wo; ow++) {
                    const idx w0 = ow * s[2] - p[2];
                    const idx wa = first(w0, dl[2]), wb = last(w0, k[2], dl[2], W);
                    const idx entry = (part + ow % b[2]) * N + n;
                    float *out = y + (((entry * Fd + od / b[0]) * Fh + oh / b[1]) * Fw + ow / b[2]) * C;
                    for (idx c0 = 0; c0 < C && C >= VB; c0 += VB) {
                        const idx c = c0 + VB <= C ? c0 : C - VB;
                        vf acc = (vf){0} - __builtin_inff();
                        for (idx i = da; i < db; i++)
                            for (idx j = ha; j < hb; j++)
                                for (idx l = wa; l < wb; l++)
                                    acc = vmax(acc, load(xn + (((d0 + i * dl[0]) * H + h0 + j * dl[1]) * W + w0 + l * dl[2]) * C + c));
                        store(out + c, acc);
                    }
                    for (idx c = 0; c < C && C < VB; c++) {
                        float acc = -__builtin_inff();
                        for (idx i = da; i < db; i++)
                            for (idx j = ha; j < hb; j++)
                                for (idx l = wa; l < wb; l++)
                                    acc = smax(acc, xn[(((d0 + i * dl[0]) * H + h0 + j * dl[1]) * W + w0 + l * dl[2]) * C + c]);
                        out[c] = acc;
                    }
                }
            }
}
