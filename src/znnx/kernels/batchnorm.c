/* BatchNorm in training mode fused with the activation after it, on channels-last tensors seen as
 * rows of C channels (rows = N * D * H * W).
 *
 * bn_sums:       per channel, the sum and the sum of squares of x (in double, per thread).
 * bn_apply:      y = act(x * scale + shift).
 * bn_grad_sums:  per channel, the sums of g' and g' * x, g' = g * act'(y) (act' from the output y).
 * bn_grad_apply: dx = g' * a + x * b + c.
 * The rows are split over OpenMP threads; the channel loops vectorize.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef ptrdiff_t idx;
enum { ACT_NONE = 0, ACT_RELU, ACT_LEAKY, ACT_ELU, ACT_SIGMOID, ACT_TANH };

static inline float act(float v, int op, float alpha) {
    switch (op) {
    case ACT_RELU: return v > 0.0f ? v : 0.0f;
    case ACT_LEAKY: return v > 0.0f ? v : alpha * v;
    case ACT_ELU: return v > 0.0f ? v : alpha * expm1f(v);
    case ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case ACT_TANH: return tanhf(v);
    default: return v;
    }
}

static inline float slope(float y, int op, float alpha) {
    switch (op) {
    case ACT_RELU: return y > 0.0f ? 1.0f : 0.0f;
    case ACT_LEAKY: return y > 0.0f ? 1.0f : alpha;
    case ACT_ELU: return y > 0.0f ? 1.0f : y + alpha;
    case ACT_SIGMOID: return y * (1.0f - y);
    case ACT_TANH: return 1.0f - y * y;
    default: return 1.0f;
    }
}

static void reduce_into(double *total, const double *part, idx n) {
    #pragma omp critical
    for (idx i = 0; i < n; i++) total[i] += part[i];
}

void bn_sums(const float *x, idx rows, idx C, double *sum, double *sumsq) {
    memset(sum, 0, C * sizeof(double));
    memset(sumsq, 0, C * sizeof(double));
    #pragma omp parallel
    {
        double *s = calloc(2 * C, sizeof(double)), *q = s + C;
        #pragma omp for schedule(static)
        for (idx r = 0; r < rows; r++) {
            const float *row = x + r * C;
            for (idx c = 0; c < C; c++) {
                const double v = row[c];
                s[c] += v;
                q[c] += v * v;
            }
        }
        reduce_into(sum, s, C);
        reduce_into(sumsq, q, C);
        free(s);
    }
}

void bn_apply(const float *x, idx rows, idx C, const float *scale, const float *shift, float *y, int op,
              float alpha) {
    #pragma omp parallel for schedule(static)
    for (idx r = 0; r < rows; r++) {
        const float *row = x + r * C;
        float *out = y + r * C;
        for (idx c = 0; c < C; c++) out[c] = act(row[c] * scale[c] + shift[c], op, alpha);
    }
}

void bn_grad_sums(const float *g, const float *y, const float *x, idx rows, idx C, int op, float alpha,
                  double *sum_g, double *sum_gx) {
    memset(sum_g, 0, C * sizeof(double));
    memset(sum_gx, 0, C * sizeof(double));
    #pragma omp parallel
    {
        double *s = calloc(2 * C, sizeof(double)), *q = s + C;
        #pragma omp for schedule(static)
        for (idx r = 0; r < rows; r++) {
            const float *gr = g + r * C, *yr = y + r * C, *xr = x + r * C;
            for (idx c = 0; c < C; c++) {
                const double gp = gr[c] * slope(yr[c], op, alpha);
                s[c] += gp;
                q[c] += gp * xr[c];
            }
        }
        reduce_into(sum_g, s, C);
        reduce_into(sum_gx, q, C);
        free(s);
    }
}

void bn_grad_apply(const float *g, const float *y, const float *x, idx rows, idx C, int op, float alpha,
                   const float *a, const float *b, const float *c0, float *dx) {
    #pragma omp parallel for schedule(static)
    for (idx r = 0; r < rows; r++) {
        const float *gr = g + r * C, *yr = y + r * C, *xr = x + r * C;
        float *out = dx + r * C;
        for (idx c = 0; c < C; c++) out[c] = gr[c] * slope(yr[c], op, alpha) * a[c] + xr[c] * b[c] + c0[c];
    }
}
