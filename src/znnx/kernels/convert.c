/* float32 -> uint8 as a volume run writes it: rint(clamp(x * 255, 0, 255)), one pass, one thread.
 *
 * x is an (n0, n1, n2, n) array with strides s0, s1, s2 (in floats) and its last axis contiguous (a
 * block's output sliced from the net's); y is contiguous. NaN becomes 0 (the comparisons are false for
 * it). The order of the operations is NumPy's (multiply, clip, rint: halves to even), so the bytes
 * equal `np.rint(np.clip(x * np.float32(255), 0, 255)).astype(np.uint8)` for finite x. The inner loop
 * vectorizes (-O3 -march=native; -fno-math-errno lets rintf be one rounding instruction).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

static void row_to_uint8(const float *restrict x, ptrdiff_t n, uint8_t *restrict y) {
    for (ptrdiff_t i = 0; i < n; i++) {
        float v = x[i] * 255.0f;
        v = v > 0.0f ? v : 0.0f;
        v = v < 255.0f ? v : 255.0f;
        y[i] = (uint8_t)rintf(v);
    }
}

void to_uint8(const float *x, ptrdiff_t n0, ptrdiff_t n1, ptrdiff_t n2, ptrdiff_t n, ptrdiff_t s0, ptrdiff_t s1,
              ptrdiff_t s2, uint8_t *y) {
    for (ptrdiff_t a = 0; a < n0; a++)
        for (ptrdiff_t b = 0; b < n1; b++)
            for (ptrdiff_t c = 0; c < n2; c++, y += n) row_to_uint8(x + a * s0 + b * s1 + c * s2, n, y);
}
