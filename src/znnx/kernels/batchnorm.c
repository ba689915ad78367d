/* BatchNorm in training mode fused with the activation after it, on channels-last tensors seen as
 * rows of C channels (rows = N * D * H * W).
 *
 * bn_sums:       per channel, the sum and the sum of squares of x.
 * bn_apply:      y = act(x * scale + shift).
 * bn_grad_sums:  per channel, the sums of g' and g' * x, g' = g * act'(y) (act' from the output y).
 * bn_grad_apply: dx = g' * a + x * b + c.
 * Rows are split over OpenMP threads; each row is processed in vectors of VB channels (the last
 * one masked through a staging copy), the activation chosen once per call (a loop per activation,
 * exp by kernels/vector.h's polynomial, so everything vectorizes). Sums are kept in float over blocks of BLOCK rows
 * and added into double per thread, then across threads.
 */
#include <stdlib.h>

#define BLOCK 64
enum { ACT_NONE = 0, ACT_RELU, ACT_LEAKY, ACT_ELU, ACT_SIGMOID, ACT_TANH };

static inline __attribute__((always_inline)) vf act(vf v, int op, float alpha) {
    switch (op) {
    case ACT_RELU: return sel(v > 0.0f, v, splat(0.0f));
    case ACT_LEAKY: return sel(v > 0.0f, v, alpha * v);
    case ACT_ELU: return sel(v > 0.0f, v, alpha * (exp_approx(v) - 1.0f));
    case ACT_SIGMOID: return 1.0f / (1.0f + exp_approx(-v));
    case ACT_TANH: return 2.0f / (1.0f + exp_approx(-2.0f * v)) - 1.0f;
    default: return v;
    }
}

static inline __attribute__((always_inline)) vf slope(vf y, int op, float alpha) {
    switch (op) {
    case ACT_RELU: return sel(y > 0.0f, splat(1.0f), splat(0.0f));
    case ACT_LEAKY: return sel(y > 0.0f, splat(1.0f), splat(alpha));
    case ACT_ELU: return sel(y > 0.0f, splat(1.0f), y + alpha);
    case ACT_SIGMOID: return y * (1.0f - y);
    case ACT_TANH: return 1.0f - y * y;
    default: return splat(1.0f);
    }
}

static void reduce_into(double *total, const double *part, idx n) {
    #pragma omp critical
    for (idx i = 0; i < n; i++) total[i] += part[i];
}

/* Per-thread float sums of BLOCK rows at a time, flushed into double. */
static void flush(double *s, double *q, float *fs, float *fq, idx C) {
    for (idx c = 0; c < C; c++) {
        s[c] += fs[c];
        q[c] += fq[c];
        fs[c] = fq[c] = 0.0f;
    }
}

#define SUMS(QUALIFIERS, NAME, ARGS, TERM_S, TERM_Q, OPSWITCH)                                    \
    QUALIFIERS void NAME ARGS {                                                                               \
        memset(total_s, 0, C * sizeof(double));                                                    \
        memset(total_q, 0, C * sizeof(double));                                                    \
        const idx cv = (C + VB - 1) / VB * VB;                                                     \
        _Pragma("omp parallel") {                                                                  \
            double *s = calloc(2 * C, sizeof(double)), *q = s + C;                                 \
            float *fs = aligned_alloc(64, 2 * cv * sizeof(float)), *fq = fs + cv;                  \
            memset(fs, 0, 2 * cv * sizeof(float));                                                 \
            idx done = 0;                                                                          \
            _Pragma("omp for schedule(static)") for (idx r = 0; r < rows; r++) {                   \
                for (idx c = 0; c < C; c += VB) {                                                  \
                    const int n = C - c >= VB ? VB : (int)(C - c);                                 \
                    OPSWITCH                                                                       \
                    *(vfu *)(fs + c) += TERM_S;                                                    \
                    *(vfu *)(fq + c) += TERM_Q;                                                    \
                }                                                                                  \
                if (++done % BLOCK == 0) flush(s, q, fs, fq, C);                                   \
            }                                                                                      \
            flush(s, q, fs, fq, C);                                                                \
            reduce_into(total_s, s, C);                                                            \
            reduce_into(total_q, q, C);                                                            \
            free(s);                                                                               \
            free(fs);                                                                              \
        }                                                                                          \
    }

SUMS(, bn_sums, (const float *x, idx rows, idx C, double *total_s, double *total_q),
     v, v * v, const vf v = load_n(x + r * C + c, n);)

SUMS(static inline __attribute__((always_inline)), grad_sums, (const float *g, const float *y, const float *x, idx rows, idx C, int op, float alpha,
                       double *total_s, double *total_q),
     gp, gp * load_n(x + r * C + c, n),
     const vf gp = load_n(g + r * C + c, n) * slope(load_n(y + r * C + c, n), op, alpha);)

/* The activation is a compile-time constant in each instance, so its switch folds away. */
#define BY_OP(CALL)                                                                                \
    switch (op) {                                                                                  \
    case ACT_RELU: CALL(ACT_RELU); break;                                                          \
    case ACT_LEAKY: CALL(ACT_LEAKY); break;                                                        \
    case ACT_ELU: CALL(ACT_ELU); break;                                                            \
    case ACT_SIGMOID: CALL(ACT_SIGMOID); break;                                                    \
    case ACT_TANH: CALL(ACT_TANH); break;                                                          \
    default: CALL(ACT_NONE); break;                                                                \
    }

void bn_grad_sums(const float *g, const float *y, const float *x, idx rows, idx C, int op, float alpha,
                  double *sum_g, double *sum_gx) {
#define SUM(OP) grad_sums(g, y, x, rows, C, OP, alpha, sum_g, sum_gx)
    BY_OP(SUM)
#undef SUM
}

static inline __attribute__((always_inline)) void apply_rows(const float *x, idx rows, idx C, const float *scale,
                                                             const float *shift, float *y, int op, float alpha) {
    #pragma omp parallel for schedule(static)
    for (idx r = 0; r < rows; r++)
        for (idx c = 0; c < C; c += VB) {
            const int n = C - c >= VB ? VB : (int)(C - c);
            const vf v = load_n(x + r * C + c, n) * load_n(scale + c, n) + load_n(shift + c, n);
            store_n(y + r * C + c, act(v, op, alpha), n);
        }
}

void bn_apply(const float *x, idx rows, idx C, const float *scale, const float *shift, float *y, int op,
              float alpha) {
#define APPLY(OP) apply_rows(x, rows, C, scale, shift, y, OP, alpha)
    BY_OP(APPLY)
#undef APPLY
}

static inline __attribute__((always_inline)) void grad_rows(const float *g, const float *y, const float *x, idx rows,
                                                            idx C, int op, float alpha, const float *a,
                                                            const float *b, const float *c0, float *dx) {
    #pragma omp parallel for schedule(static)
    for (idx r = 0; r < rows; r++)
        for (idx c = 0; c < C; c += VB) {
            const int n = C - c >= VB ? VB : (int)(C - c);
            const idx at = r * C + c;
            const vf gp = load_n(g + at, n) * slope(load_n(y + at, n), op, alpha);
            store_n(dx + at, gp * load_n(a + c, n) + load_n(x + at, n) * load_n(b + c, n) + load_n(c0 + c, n), n);
        }
}

void bn_grad_apply(const float *g, const float *y, const float *x, idx rows, idx C, int op, float alpha,
                   const float *a, const float *b, const float *c0, float *dx) {
#define GRAD(OP) grad_rows(g, y, x, rows, C, OP, alpha, a, b, c0, dx)
    BY_OP(GRAD)
#undef GRAD
}
