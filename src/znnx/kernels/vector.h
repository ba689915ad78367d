/* Vectors of VB floats for znnx's C kernels, pasted ahead of each kernel's source (kernels/native.py
 * `with_vectors`): the types, unaligned loads and stores, lane selection, and exp. VB is 16 unless the
 * source defines it first (Winograd's narrow layers: 8, kernels/winograd.py `lanes`). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifndef VB
#define VB 16
#endif
typedef ptrdiff_t idx;
typedef float vf __attribute__((vector_size(VB * 4)));
typedef int32_t vi __attribute__((vector_size(VB * 4)));
typedef float vfu __attribute__((vector_size(VB * 4), aligned(4), may_alias));

static inline vf load(const float *p) { return *(const vfu *)p; }
static inline void store(float *p, vf v) { *(vfu *)p = v; }
/* Load / store VB floats at p, or only the first n of them (the rest read as 0, not written): one
 * masked instruction where AVX-512 has one for this width, else through a buffer (a per-lane copy
 * loop there cost a 28-channel Winograd layer 12% against a 32-channel one). */
#if defined(__AVX512F__) && (VB == 16 || (VB == 8 && defined(__AVX512VL__)))
#include <immintrin.h>
static inline vf load_n(const float *p, int n) {
    if (n == VB) return load(p);
#if VB == 16
    return (vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#else
    return (vf)_mm256_maskz_loadu_ps((__mmask8)((1u << n) - 1), p);
#endif
}
static inline void store_n(float *p, vf v, int n) {
    if (n == VB) {
        store(p, v);
        return;
    }
#if VB == 16
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#else
    _mm256_mask_storeu_ps(p, (__mmask8)((1u << n) - 1), (__m256)v);
#endif
}
#else
static inline vf load_n(const float *p, int n) {
    if (n == VB) return load(p);
    float part[VB] = {0};
    memcpy(part, p, n * sizeof(float));
    return load(part);
}
static inline void store_n(float *p, vf v, int n) {
    if (n == VB) {
        store(p, v);
        return;
    }
    float part[VB];
    store(part, v);
    memcpy(p, part, n * sizeof(float));
}
#endif
static inline vf sel(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
/* A broadcast, written as a * 1 (exact for every float): (vf){0} + a is an addition the compiler must
 * keep (0 + -0.0 is +0.0), a scalar add and a register broadcast in every GEMM step where a * 1 folds
 * into the multiply-add as a broadcast load. */
static inline vf splat(float a) { return a * ((vf){0} + 1.0f); }

/* exp(x) to about 1 ulp (Cephes' polynomial after Cody-Waite range reduction), VB lanes at once: the
 * reduction's n by a rounding instruction and 2^n by vscalefps where AVX-512 has them for this width (x
 * clamped to +-104 only so that infinities reduce to finite r; scalef saturates to 0 and inf; min and max
 * with x second keep a NaN), else by float tricks within clamps to [-87, 88]. */
static inline vf exp_poly(vf x, vf n) {
    vf r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * r * r + r + 1.0f;
}
#if defined(__AVX512F__) && VB == 16
static inline vf exp_approx(vf x) {
    x = (vf)_mm512_min_ps((__m512)splat(104.0f), _mm512_max_ps((__m512)splat(-104.0f), (__m512)x));
    const vf n = (vf)_mm512_roundscale_ps((__m512)(x * 1.44269504088896341f), _MM_FROUND_TO_NEAREST_INT);
    return (vf)_mm512_scalef_ps((__m512)exp_poly(x, n), (__m512)n);
}
#elif defined(__AVX512F__) && VB == 8 && defined(__AVX512VL__)
static inline vf exp_approx(vf x) {
    x = (vf)_mm256_min_ps((__m256)splat(104.0f), _mm256_max_ps((__m256)splat(-104.0f), (__m256)x));
    const vf n = (vf)_mm256_roundscale_ps((__m256)(x * 1.44269504088896341f), _MM_FROUND_TO_NEAREST_INT);
    return (vf)_mm256_scalef_ps((__m256)exp_poly(x, n), (__m256)n);
}
#else
static inline vf exp_approx(vf x) {
    x = sel(x < -87.0f, splat(-87.0f), sel(x > 88.0f, splat(88.0f), x));
    const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
    return exp_poly(x, n) * (vf)bits;
}
#endif
