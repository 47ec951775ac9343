/* Shared by the ARM64 Linear kernels (linear_neon.c, linear_dotprod.c): a block of sixteen
 * output channels is four registers ("quads") of four lanes; j indexes the quads of a tile
 * (block j / 4, quad j % 4). */
#ifndef MQ_KERNELS_TILE_NEON_H
#define MQ_KERNELS_TILE_NEON_H

#include "kernels/tile.h"

#include <arm_neon.h>

INLINE void store_quad(const mq__lin *L, float *y, int64_t b, int q, float32x4_t v) {
    int64_t n0 = b * MQ__LANES + 4 * q, left = L->N - n0;
    if (left >= 4) {
        vst1q_f32(y + n0, v);
    } else if (left > 0) {
        float t[4];
        vst1q_f32(t, v);
        for (int64_t i = 0; i < left; i++) y[n0 + i] = t[i];
    }
}

INLINE float32x4_t bias_quad(const mq__lin *L, int64_t b, int q) {
    return vld1q_f32(L->bias + b * MQ__LANES + 4 * q);
}

/* Index of quad q of channel block b, group g, in a [nblk][G][16] table. */
INLINE int64_t quad_idx(const mq__lin *L, int64_t b, int64_t g, int q) {
    return mq__gidx(L, b, g) + 4 * q;
}

/* Group g's integer sums d (sum of xu * w over the group, per lane) into the float
 * accumulator: acc = fma(scale, (float)(d + k1 - zpw * xusum), acc), as kernels.h states. */
INLINE float32x4_t int_group_acc(const mq__lin *L, const mq__act *A, int64_t m, int64_t b,
                                 int64_t g, int q, int32x4_t d, float32x4_t acc) {
    int64_t ti = quad_idx(L, b, g, q);
    d = vaddq_s32(d, vld1q_s32(L->k1 + ti));
    if (L->has_zpw) d = vmlsq_n_s32(d, vld1q_s32(L->zpw + ti), A->xusum[m * L->G + g]);
    return vfmaq_f32(acc, vld1q_f32(L->scale + ti), vcvtq_f32_s32(d));
}

/* Instantiations 1..4 rows x 1 block and 1 row x 2 blocks. */
#define INST_ALL(name, fn)                                                                      \
    INST(name, fn, 1, 1) INST(name, fn, 2, 1) INST(name, fn, 3, 1) INST(name, fn, 4, 1)        \
    INST(name, fn, 1, 2)                                                                        \
    static const tile_body name##_table[5] = {0, name##_1x1, name##_2x1, name##_3x1,           \
                                              name##_4x1};

/* Rows [m0, m1) x blocks [b0, b1): two blocks at a time for single rows, else 4 x 1. */
INLINE void drive(const tile_body *tab, tile_body one_by_two, const mq__lin *L, const mq__act *A,
                  int64_t m0, int64_t m1, int64_t b0, int64_t b1, float *y, int64_t ldy) {
    int64_t b = b0;
    if (m1 - m0 == 1)
        for (; b + 2 <= b1; b += 2) one_by_two(L, A, m0, b, y, ldy);
    for (; b < b1; b++)
        for (int64_t m = m0; m < m1; m += 4) tab[m1 - m >= 4 ? 4 : m1 - m](L, A, m, b, y, ldy);
}

#endif
