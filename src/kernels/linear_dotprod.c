/* ARM64 dot-product Linear kernels (armv8.2-a SDOT) for integer activations; float and
 * weight-only tiles are the NEON level's. SDOT multiplies signed bytes only, so activations
 * enter as xu - 128 (exact in a signed byte) and each lane adds back 128 * sum(w) over the
 * group, an SDOT of the weights with ones: the same exact sum(xu * w) as the reference,
 * then the same float steps (kernels.h), so results are bit-identical to linear_ref.c. */
#include "kernels/tile_neon.h"

/* xu[k..k+3] - 128 as signed bytes, the same four in every 32-bit lane. */
INLINE int8x16_t act4(const uint8_t *p) {
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    return vreinterpretq_s8_u32(vdupq_n_u32(v ^ 0x80808080u));
}

INLINE void int_tile_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                       int64_t ldy, const int MR, const int NB, const bool four) {
    float32x4_t acc[4][8];
    int32x4_t dot[4][8], wsum[8];
    const uint8_t *xu = A->xu + m * L->Kp;
    const int8x16_t ones = vdupq_n_s8(1);
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 4 * NB; j++) acc[r][j] = vdupq_n_f32(0);
    for (int64_t g = 0; g < L->G; g++) {
        int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
        uint8x16_t zq[8];
UNROLL
        for (int j = 0; j < 4 * NB; j++) {
            wsum[j] = vdupq_n_s32(0);
            /* the 4-bit zero point of each lane in its four bytes */
            if (four && L->has_zq4)
                zq[j] = vreinterpretq_u8_u32(vmulq_n_u32(
                    vandq_u32(vld1q_u32(L->zq4 + quad_idx(L, b + j / 4, g, j % 4)),
                              vdupq_n_u32(15)), 0x01010101u));
            else zq[j] = vdupq_n_u8(four ? (uint8_t)L->zq_const : 0);
        }
UNROLL
        for (int r = 0; r < MR; r++)
UNROLL
            for (int j = 0; j < 4 * NB; j++) dot[r][j] = vdupq_n_s32(0);
        if (four) {
            for (int64_t k = k0; k < k1; k += 8) {
                int8x16_t lo[8], hi[8];
UNROLL
                for (int j = 0; j < 4 * NB; j++) {
                    const uint32_t *p = (const uint32_t *)L->w +
                                        ((b + j / 4) * (L->Kp / 8) + k / 8) * MQ__LANES + 4 * (j % 4);
                    uint8x16_t v = vld1q_u8((const uint8_t *)p);
                    /* nibble - zq in [-15, 15]: k0..k3 in the low nibbles, k4..k7 high */
                    lo[j] = vreinterpretq_s8_u8(vsubq_u8(vandq_u8(v, vdupq_n_u8(15)), zq[j]));
                    hi[j] = vreinterpretq_s8_u8(vsubq_u8(vshrq_n_u8(v, 4), zq[j]));
                    wsum[j] = vdotq_s32(vdotq_s32(wsum[j], lo[j], ones), hi[j], ones);
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    int8x16_t a0 = act4(xu + r * L->Kp + k), a1 = act4(xu + r * L->Kp + k + 4);
UNROLL
                    for (int j = 0; j < 4 * NB; j++)
                        dot[r][j] = vdotq_s32(vdotq_s32(dot[r][j], lo[j], a0), hi[j], a1);
                }
            }
        } else {
            for (int64_t k = k0; k < k1; k += 4) {
                int8x16_t w[8];
UNROLL
                for (int j = 0; j < 4 * NB; j++) {
                    w[j] = vld1q_s8((const int8_t *)L->w +
                                    ((b + j / 4) * (L->Kp / 4) + k / 4) * MQ__LANES * 4 + 16 * (j % 4));
                    wsum[j] = vdotq_s32(wsum[j], w[j], ones);
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    int8x16_t a = act4(xu + r * L->Kp + k);
UNROLL
                    for (int j = 0; j < 4 * NB; j++) dot[r][j] = vdotq_s32(dot[r][j], w[j], a);
                }
            }
        }
UNROLL
        for (int r = 0; r < MR; r++)
UNROLL
            for (int j = 0; j < 4 * NB; j++)
                acc[r][j] = int_group_acc(L, A, m + r, b + j / 4, g, j % 4,
                                          vmlaq_n_s32(dot[r][j], wsum[j], 128), acc[r][j]);
    }
UNROLL
    for (int r = 0; r < MR; r++) {
        float32x4_t sx = vdupq_n_f32(A->sx[m + r]);
UNROLL
        for (int j = 0; j < 4 * NB; j++)
            store_quad(L, y + (m + r) * ldy, b + j / 4, j % 4,
                       vfmaq_f32(bias_quad(L, b + j / 4, j % 4), acc[r][j], sx));
    }
}

INLINE void int_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                     int64_t ldy, const int MR, const int NB) {
    if (L->kind == MQ__W_I4) int_tile_k(L, A, m, b, y, ldy, MR, NB, true);
    else int_tile_k(L, A, m, b, y, ldy, MR, NB, false);
}

INST_ALL(itg, int_tile)

static void tile_integer(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                         int64_t b1, float *y, int64_t ldy) {
    drive(itg_table, itg_1x2, L, A, m0, m1, b0, b1, y, ldy);
}

static const mq__linear_fns fns = {mq__neon_tile_float, mq__neon_tile_wonly, tile_integer,
                                   NULL /* the reference's activation quantization */};

const mq__linear_fns *mq__linear_fns_dotprod(void) { return &fns; }
