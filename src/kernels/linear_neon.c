/* NEON Linear kernels (ARM64 baseline). Weights are de-interleaved on load (vld4), which
 * turns a block's four k values per lane into four registers of one k each; integer products
 * are widened to 16 bits and accumulated exactly in 32 (vmlal). Each lane performs the
 * reference's operations in the reference's order (kernels.h), so results are bit-identical
 * to linear_ref.c. The float and weight-only tiles are shared with the dotprod level. */
#include "kernels/tile_neon.h"

INLINE float32x4_t load_wf(const mq__lin *L, int64_t b, int64_t k, int q, const mq__wkind kind) {
    int64_t i = (b * L->K + k) * MQ__LANES + 4 * q;
    if (kind == MQ__W_F32) return vld1q_f32((const float *)L->w + i);
    uint16x4_t h = vld1_u16((const uint16_t *)L->w + i);
    if (kind == MQ__W_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

INLINE void float_tile_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                         int64_t ldy, const int MR, const int NB, const mq__wkind kind) {
    float32x4_t acc[4][8];
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 4 * NB; j++) acc[r][j] = vdupq_n_f32(0);
    const float *x = A->xf + m * L->Kp;
    for (int64_t k = 0; k < L->K; k++) {
        float32x4_t w[8];
UNROLL
        for (int j = 0; j < 4 * NB; j++) w[j] = load_wf(L, b + j / 4, k, j % 4, kind);
UNROLL
        for (int r = 0; r < MR; r++) {
            float32x4_t xv = vdupq_n_f32(x[r * L->Kp + k]);
UNROLL
            for (int j = 0; j < 4 * NB; j++) acc[r][j] = vfmaq_f32(acc[r][j], xv, w[j]);
        }
    }
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 4 * NB; j++)
            store_quad(L, y + (m + r) * ldy, b + j / 4, j % 4,
                       vaddq_f32(acc[r][j], bias_quad(L, b + j / 4, j % 4)));
}

/* One instantiation per stored type, so the conversion is not chosen inside the k loop. */
INLINE void float_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                       int64_t ldy, const int MR, const int NB) {
    if (L->kind == MQ__W_F32) float_tile_k(L, A, m, b, y, ldy, MR, NB, MQ__W_F32);
    else if (L->kind == MQ__W_F16) float_tile_k(L, A, m, b, y, ldy, MR, NB, MQ__W_F16);
    else float_tile_k(L, A, m, b, y, ldy, MR, NB, MQ__W_BF16);
}

/* The weights of one k step of block b: 8-bit, four k (w[i] = k0 + i of the 16 lanes, signed);
 * 4-bit, eight k as nibbles (w[i] = byte i of each lane word: k0 + i low, k0 + 4 + i high). */
INLINE int8x16x4_t load_w8(const mq__lin *L, int64_t b, int64_t k) {
    return vld4q_s8((const int8_t *)L->w + (b * (L->Kp / 4) + k / 4) * MQ__LANES * 4);
}
INLINE uint8x16x4_t load_w4(const mq__lin *L, int64_t b, int64_t k) {
    return vld4q_u8((const uint8_t *)((const uint32_t *)L->w + (b * (L->Kp / 8) + k / 8) * MQ__LANES));
}
/* Nibble i (0..7) of the step for the 16 lanes. */
INLINE uint8x16_t nibble(uint8x16x4_t v, int i) {
    return i < 4 ? vandq_u8(v.val[i], vdupq_n_u8(15)) : vshrq_n_u8(v.val[i - 4], 4);
}
/* Quad q (lanes 4q..4q+3) of 16 signed 16-bit lanes held as two registers. */
INLINE int16x4_t quad16(const int16x8_t h[2], int q) {
    return q % 2 ? vget_high_s16(h[q / 2]) : vget_low_s16(h[q / 2]);
}

/* The 4-bit zero point of each lane of block b, group g (the byte of the replicated table). */
INLINE uint8x16_t zq_bytes(const mq__lin *L, int64_t b, int64_t g) {
    if (!L->has_zq4) return vdupq_n_u8((uint8_t)L->zq_const);
    uint8x16x4_t t = vld4q_u8((const uint8_t *)(L->zq4 + mq__gidx(L, b, g)));
    return vandq_u8(t.val[0], vdupq_n_u8(15));
}

INLINE void wonly_tile_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                         int64_t ldy, const int MR, const int NB, const bool four) {
    float32x4_t acc[4][8], part[4][8];
    const float *x = A->xf + m * L->Kp;
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 4 * NB; j++) acc[r][j] = vdupq_n_f32(0);
    for (int64_t g = 0; g < L->G; g++) {
        int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
        int32x4_t zero[8];
UNROLL
        for (int j = 0; j < 4 * NB; j++) {
            int64_t ti = quad_idx(L, b + j / 4, g, j % 4);
            if (four && L->has_zq4)
                zero[j] = vandq_s32(vld1q_s32((const int32_t *)L->zq4 + ti), vdupq_n_s32(15));
            else if (four) zero[j] = vdupq_n_s32(L->zq_const);
            else if (L->has_zpw) zero[j] = vld1q_s32(L->zpw + ti);
            else zero[j] = vdupq_n_s32(0);
        }
UNROLL
        for (int r = 0; r < MR; r++)
UNROLL
            for (int j = 0; j < 4 * NB; j++) part[r][j] = vdupq_n_f32(0);
        const int step = four ? 8 : 4;
        for (int64_t k = k0; k < k1; k += step) {
            int8x16x4_t v8[2];
            uint8x16x4_t v4[2];
UNROLL
            for (int nb = 0; nb < NB; nb++) {
                if (four) v4[nb] = load_w4(L, b + nb, k);
                else v8[nb] = load_w8(L, b + nb, k);
            }
UNROLL
            for (int i = 0; i < step; i++) {
                float32x4_t w[8];
UNROLL
                for (int nb = 0; nb < NB; nb++) {
                    int16x8_t h[2];
                    if (four) {
                        uint8x16_t n = nibble(v4[nb], i);
                        h[0] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(n)));
                        h[1] = vreinterpretq_s16_u16(vmovl_high_u8(n));
                    } else {
                        h[0] = vmovl_s8(vget_low_s8(v8[nb].val[i]));
                        h[1] = vmovl_high_s8(v8[nb].val[i]);
                    }
UNROLL
                    for (int q = 0; q < 4; q++)
                        w[4 * nb + q] = vcvtq_f32_s32(
                            vsubq_s32(vmovl_s16(quad16(h, q)), zero[4 * nb + q]));
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    float32x4_t xv = vdupq_n_f32(x[r * L->Kp + k + i]);
UNROLL
                    for (int j = 0; j < 4 * NB; j++) part[r][j] = vfmaq_f32(part[r][j], xv, w[j]);
                }
            }
        }
UNROLL
        for (int j = 0; j < 4 * NB; j++) {
            float32x4_t s = vld1q_f32(L->scale + quad_idx(L, b + j / 4, g, j % 4));
UNROLL
            for (int r = 0; r < MR; r++) acc[r][j] = vfmaq_f32(acc[r][j], s, part[r][j]);
        }
    }
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 4 * NB; j++)
            store_quad(L, y + (m + r) * ldy, b + j / 4, j % 4,
                       vaddq_f32(acc[r][j], bias_quad(L, b + j / 4, j % 4)));
}

/* The step loop over a word's k values must have a constant trip count to unroll. */
INLINE void wonly_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                       int64_t ldy, const int MR, const int NB) {
    if (L->kind == MQ__W_I4) wonly_tile_k(L, A, m, b, y, ldy, MR, NB, true);
    else wonly_tile_k(L, A, m, b, y, ldy, MR, NB, false);
}

/* Integer activations: per lane, sum of xu * w over the group (exact: |xu * w| < 2^15 and a
 * group is at most 32768 long), then int_group_acc. */
INLINE void int_tile_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                       int64_t ldy, const int MR, const int NB, const bool four) {
    float32x4_t acc[4][8];
    int32x4_t dot[4][8];
    const uint8_t *xu = A->xu + m * L->Kp;
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 4 * NB; j++) acc[r][j] = vdupq_n_f32(0);
    for (int64_t g = 0; g < L->G; g++) {
        int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
        uint8x16_t zq[2];
UNROLL
        for (int nb = 0; nb < NB; nb++) zq[nb] = four ? zq_bytes(L, b + nb, g) : vdupq_n_u8(0);
UNROLL
        for (int r = 0; r < MR; r++)
UNROLL
            for (int j = 0; j < 4 * NB; j++) dot[r][j] = vdupq_n_s32(0);
        const int step = four ? 8 : 4;
        for (int64_t k = k0; k < k1; k += step) {
            int8x16x4_t v8[2];
            uint8x16x4_t v4[2];
UNROLL
            for (int nb = 0; nb < NB; nb++) {
                if (four) v4[nb] = load_w4(L, b + nb, k);
                else v8[nb] = load_w8(L, b + nb, k);
            }
UNROLL
            for (int i = 0; i < step; i++) {
                int16x8_t h[2][2];
UNROLL
                for (int nb = 0; nb < NB; nb++) {
                    /* 4-bit: nibble - zq in [-15, 15], exact in a signed byte */
                    int8x16_t w = four ? vreinterpretq_s8_u8(vsubq_u8(nibble(v4[nb], i), zq[nb]))
                                       : v8[nb].val[i];
                    h[nb][0] = vmovl_s8(vget_low_s8(w));
                    h[nb][1] = vmovl_high_s8(w);
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    int16_t xk = (int16_t)xu[r * L->Kp + k + i];
UNROLL
                    for (int j = 0; j < 4 * NB; j++)
                        dot[r][j] = vmlal_n_s16(dot[r][j], quad16(h[j / 4], j % 4), xk);
                }
            }
        }
UNROLL
        for (int r = 0; r < MR; r++)
UNROLL
            for (int j = 0; j < 4 * NB; j++)
                acc[r][j] = int_group_acc(L, A, m + r, b + j / 4, g, j % 4, dot[r][j], acc[r][j]);
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

INST_ALL(flt, float_tile)
INST_ALL(wo, wonly_tile)
INST_ALL(itg, int_tile)

void mq__neon_tile_float(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                         int64_t b1, float *y, int64_t ldy) {
    drive(flt_table, flt_1x2, L, A, m0, m1, b0, b1, y, ldy);
}
void mq__neon_tile_wonly(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                         int64_t b1, float *y, int64_t ldy) {
    drive(wo_table, wo_1x2, L, A, m0, m1, b0, b1, y, ldy);
}
static void tile_integer(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                         int64_t b1, float *y, int64_t ldy) {
    drive(itg_table, itg_1x2, L, A, m0, m1, b0, b1, y, ldy);
}

static const mq__linear_fns fns = {mq__neon_tile_float, mq__neon_tile_wonly, tile_integer,
                                   NULL /* the reference's activation quantization */};

const mq__linear_fns *mq__linear_fns_neon(void) { return &fns; }
