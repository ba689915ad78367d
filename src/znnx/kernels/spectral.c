/* The frequency-domain products of the FFT convolution (kernels/fft.py), straight on tile-major spectra:
 *
 *     out[t][f][o] = sum_c a[t][f][c] * w[f][c][o]    (complex, interleaved re/im floats)
 *
 * for T tiles, F frequencies, C input and Co output channels; w's rows are padded to Cop (a multiple of
 * VB / 2 complex values, zeros beyond Co). torch.bmm needs the spectra frequency-major, which cost two
 * transposing copies of a slab's spectra per call (77 MB each for 16 tiles of an 80-channel 24^3-point
 * layer, far larger than the caches); here each frequency's kernel block (C x Cop, 51 KB for 80
 * channels) stays in L2 while every tile's row for that frequency is multiplied with it. (Reading the
 * spectra in rfftn's own layout, channel by channel, instead of the contiguous copy rfftn's `out=`
 * makes: broadcasts 60 KB apart, the 89^3 layer 1,527 -> 1,801 ms.)
 *
 * A register block of R tiles x NV vectors of VB / 2 outputs keeps two sums per output vector: of the
 * input's real part times the kernel (re*re, re*im pairs) and of its imaginary part times the kernel
 * (im*re, im*im); the product is the first plus the second with each pair swapped and its new first
 * element negated. The frequencies are split over threads.
 */
#include <omp.h>

static inline vf swapped(vf v) {
    vi order;
    for (int i = 0; i < VB; i++) order[i] = i ^ 1;
    return __builtin_shuffle(v, order);
}

static inline vf signs(void) {
    vf s;
    for (int i = 0; i < VB; i++) s[i] = i & 1 ? 1.0f : -1.0f;
    return s;
}

/* out rows r < rows (R at most) of vectors j < NV (the last one's first `tail` floats only): a rows
 * `lda` floats apart, w rows `ldw` floats apart, out rows `ldo` floats apart, sums over c < C. */
#define MICRO(R, NV)                                                                                       \
    static inline __attribute__((always_inline)) void micro_##R##_##NV(                                   \
        int rows, const float *restrict a, idx lda, const float *restrict w, idx ldw, float *restrict out,  \
        idx ldo, idx C, int tail) {                                                                        \
        vf re[R][NV], im[R][NV];                                                                           \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) re[r][j] = im[r][j] = splat(0.0f);        \
        for (idx c = 0; c < C; c++) {                                                                      \
            vf wv[NV];                                                                                     \
            _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) wv[j] = load(w + c * ldw + j * VB);       \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                          \
                if (r < rows) {                                                                            \
                    const vf ar = splat(a[r * lda + 2 * c]), ai = splat(a[r * lda + 2 * c + 1]);           \
                    _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) {                                 \
                        re[r][j] += ar * wv[j];                                                            \
                        im[r][j] += ai * wv[j];                                                            \
                    }                                                                                      \
                }                                                                                          \
            }                                                                                              \
        }                                                                                                  \
        const vf sign = signs();                                                                           \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                                \
            if (r < rows)                                                                                  \
                _Pragma("GCC unroll 4") for (int j = 0; j < NV; j++) {                                     \
                    const vf v = re[r][j] + swapped(im[r][j]) * sign;                                      \
                    if (j == NV - 1) store_n(out + r * ldo + j * VB, v, tail);                             \
                    else store(out + r * ldo + j * VB, v);                                                 \
                }                                                                                          \
    }
MICRO(4, 3)
MICRO(4, 2)
MICRO(4, 1)

void spectral_products(const float *a, const float *w, float *out, idx T, idx F, idx C, idx Co, idx Cop) {
    const idx lda = F * 2 * C, ldo = F * 2 * Co, ldw = 2 * Cop, width = 2 * Co;
    #pragma omp parallel for schedule(static)
    for (idx f = 0; f < F; f++) {
        const float *wf = w + f * C * ldw;
        for (idx t = 0; t < T; t += 4) {
            const int rows = T - t < 4 ? (int)(T - t) : 4;
            const float *at = a + t * lda + f * 2 * C;
            float *ot = out + t * ldo + f * 2 * Co;
            for (idx o = 0; o < width; o += 3 * VB) {
                const idx left = width - o;
                const int tail = (int)((left - 1) % VB) + 1;
                if (left > 2 * VB) micro_4_3(rows, at, lda, wf + o, ldw, ot + o, ldo, C, left >= 3 * VB ? VB : tail);
                else if (left > VB) micro_4_2(rows, at, lda, wf + o, ldw, ot + o, ldo, C, tail);
                else micro_4_1(rows, at, lda, wf + o, ldw, ot + o, ldo, C, tail);
            }
        }
    }
}
