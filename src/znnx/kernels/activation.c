/* ELU and PReLU in place over a float array, VB lanes at a time, split over threads with OpenMP.
 *
 * y = x for x > 0, alpha * expm1(x) otherwise; expm1 by its Taylor series to x^8 on (-0.5, 0] (exp(x) - 1
 * would cancel there: 6e-5 relative at x = -1e-3) and by exp_approx(x) - 1 below. The tail of fewer
 * than VB elements is loaded and stored masked (vector.h load_n / store_n).
 */

static inline vf expm1_approx(vf x) {
    vf p = 1.0f + x * (1.0f / 8.0f);
    p = 1.0f + x * (1.0f / 7.0f) * p;
    p = 1.0f + x * (1.0f / 6.0f) * p;
    p = 1.0f + x * (1.0f / 5.0f) * p;
    p = 1.0f + x * (1.0f / 4.0f) * p;
    p = 1.0f + x * (1.0f / 3.0f) * p;
    p = 1.0f + x * 0.5f * p;
    return sel(x > -0.5f, x * p, exp_approx(x) - 1.0f);
}

static inline vf elu(vf x, float alpha) { return sel(x > 0.0f, x, alpha * expm1_approx(x)); }

void elu_inplace(float *y, idx n, float alpha) {
    const idx full = n / VB * VB;
    #pragma omp parallel for schedule(static)
    for (idx i = 0; i < full; i += VB) store(y + i, elu(load(y + i), alpha));
    if (full < n) store_n(y + full, elu(load_n(y + full, (int)(n - full)), alpha), (int)(n - full));
}

/* PReLU in place over y laid out [outer][C][inner] (channels-last: inner 1; NCDHW: inner the voxels).
 * With inner 1, the array is taken in periods of `period` floats (a multiple of both C and VB), over
 * which `pattern` holds the slopes in order; else each (outer, channel) run of `inner` floats has one. */
void prelu_inplace(float *y, idx outer, idx C, idx inner, const float *slope, const float *pattern, idx period) {
    if (inner == 1) {
        const idx n = outer * C, runs = (n + period - 1) / period;
        #pragma omp parallel for schedule(static)
        for (idx r = 0; r < runs; r++)
            for (idx j = 0; j < period && r * period + j < n; j += VB) {
                float *p = y + r * period + j;
                const int live = n - (r * period + j) >= VB ? VB : (int)(n - (r * period + j));
                const vf v = load_n(p, live);
                store_n(p, sel(v > 0.0f, v, v * load(pattern + j)), live);
            }
        return;
    }
    #pragma omp parallel for schedule(static)
    for (idx b = 0; b < outer * C; b++) {
        float *p = y + b * inner;
        const vf s = splat(slope[b % C]);
        for (idx i = 0; i < inner; i += VB) {
            const int live = inner - i >= VB ? VB : (int)(inner - i);
            const vf v = load_n(p + i, live);
            store_n(p + i, sel(v > 0.0f, v, v * s), live);
        }
    }
}
