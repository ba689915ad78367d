/* Nearest and trilinear upsampling of channels-last 3D tensors (N, D, H, W, C) in one pass.
 *
 * Each output axis has a table of taps (kernels/resample.py from reference.interpolation_taps): the two
 * input indices an output index reads, lo and hi, and the weight f of hi (lo weighs 1 - f). Nearest
 * copies the voxel (lo_d, lo_h, lo_w) (its channels are contiguous); trilinear blends the eight
 * corners, the w axis first, then h, then d. Rows (n, od, oh) are split over threads
 * with OpenMP; channels go in vectors of 16, or 4 for narrow nets, the last vector once more where C is
 * not a multiple of it (the same value written twice).
 */
#include <stddef.h>
#include <string.h>

typedef ptrdiff_t idx;
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef float v4 __attribute__((vector_size(16)));
typedef float v4u __attribute__((vector_size(16), aligned(4), may_alias));
typedef float v1 __attribute__((vector_size(4)));
typedef float v1u __attribute__((vector_size(4), aligned(4), may_alias));

#define BLEND(V, vt, vtu)                                                                         \
    for (idx c0 = 0; c0 < C; c0 += V) {                                                           \
        const idx c = c0 + V <= C ? c0 : C - V;                                                   \
        vt r[4];                                                                                  \
        for (int k = 0; k < 4; k++) {                                                             \
            const float *row = k < 2 ? (k == 0 ? r00 : r01) : (k == 2 ? r10 : r11);              \
            const vt a = *(const vtu *)(row + lw * C + c), b = *(const vtu *)(row + hw * C + c);  \
            r[k] = a + (b - a) * fw;                                                              \
        }                                                                                         \
        const vt lo = r[0] + (r[1] - r[0]) * fh, hi = r[2] + (r[3] - r[2]) * fh;                  \
        *(vtu *)(out + c) = lo + (hi - lo) * fd;                                                  \
    }

void resample(int linear, const float *x, idx N, idx D, idx H, idx W, idx C, float *y, idx Do, idx Ho, idx Wo,
              const int *ld, const int *hd, const float *wd, const int *lh, const int *hh, const float *wh,
              const int *lw_, const int *hw_, const float *ww) {
    #pragma omp parallel for schedule(static) collapse(3)
    for (idx n = 0; n < N; n++)
        for (idx od = 0; od < Do; od++)
            for (idx oh = 0; oh < Ho; oh++) {
                const float *xn = x + n * D * H * W * C;
                float *row = y + ((n * Do + od) * Ho + oh) * Wo * C;
                if (!linear) {
                    const float *src = xn + (ld[od] * H + lh[oh]) * W * C;
                    for (idx ow = 0; ow < Wo; ow++) memcpy(row + ow * C, src + lw_[ow] * C, C * sizeof(float));
                    continue;
                }
                const float *r00 = xn + (ld[od] * H + lh[oh]) * W * C, *r01 = xn + (ld[od] * H + hh[oh]) * W * C;
                const float *r10 = xn + (hd[od] * H + lh[oh]) * W * C, *r11 = xn + (hd[od] * H + hh[oh]) * W * C;
                const float fd = wd[od], fh = wh[oh];
                for (idx ow = 0; ow < Wo; ow++) {
                    const idx lw = lw_[ow], hw = hw_[ow];
                    const float fw = ww[ow];
                    float *out = row + ow * C;
                    if (C >= 16) {
                        BLEND(16, v16, v16u)
                    } else if (C >= 4) {
                        BLEND(4, v4, v4u)
                    } else {
                        BLEND(1, v1, v1u)
                    }
                }
            }
}
