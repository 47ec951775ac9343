/* AVX2 + FMA Linear kernels. A block of sixteen output channels is two registers of eight.
 * Integer activations without VNNI: bytes are split into even and odd 16-bit halves and
 * multiplied with vpmaddwd, which is exact (vpmaddubsw would saturate). Each lane performs
 * the reference's operations in the reference's order, so results are bit-identical. */
#include "kernels/tile.h"

#include <immintrin.h>

/* acc + x * w, fused; the asm form keeps GCC from copying accumulators around. */
INLINE __m256 fma_acc(__m256 acc, __m256 x, __m256 w) {
#if defined(__clang__)
    return _mm256_fmadd_ps(x, w, acc);
#else
    __asm__("vfmadd231ps %2, %1, %0" : "+x"(acc) : "x"(x), "x"(w));
    return acc;
#endif
}

INLINE __m256 load_wf(const mq__lin *L, int64_t b, int64_t k, int h, const mq__wkind kind) {
    int64_t i = (b * L->K + k) * MQ__LANES + 8 * h;
    if (kind == MQ__W_F32) return _mm256_load_ps((const float *)L->w + i);
    __m128i v = _mm_load_si128((const __m128i *)((const uint16_t *)L->w + i));
    if (kind == MQ__W_F16) return _mm256_cvtph_ps(v);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
}

INLINE void store_out(const mq__lin *L, float *y, int64_t b, int h, __m256 v) {
    int64_t n0 = b * MQ__LANES + 8 * h, left = L->N - n0;
    if (left >= 8) {
        _mm256_storeu_ps(y + n0, v);
    } else if (left > 0) {
        float t[8];
        _mm256_storeu_ps(t, v);
        for (int64_t i = 0; i < left; i++) y[n0 + i] = t[i];
    }
}

INLINE __m256 bias_half(const mq__lin *L, int64_t b, int h) {
    return _mm256_load_ps(L->bias + b * MQ__LANES + 8 * h);
}

INLINE void float_tile_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                         int64_t ldy, const int MR, const int NB, const mq__wkind kind) {
    __m256 acc[4][4];
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 2 * NB; j++) acc[r][j] = _mm256_setzero_ps();
    const float *x = A->xf + m * L->Kp;
    for (int64_t k = 0; k < L->K; k++) {
        __m256 w[4];
UNROLL
        for (int j = 0; j < 2 * NB; j++) w[j] = load_wf(L, b + j / 2, k, j % 2, kind);
UNROLL
        for (int r = 0; r < MR; r++) {
            __m256 xv = _mm256_broadcast_ss(x + r * L->Kp + k);
UNROLL
            for (int j = 0; j < 2 * NB; j++) acc[r][j] = fma_acc(acc[r][j], xv, w[j]);
        }
    }
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 2 * NB; j++)
            store_out(L, y + (m + r) * ldy, b + j / 2, j % 2,
                      _mm256_add_ps(acc[r][j], bias_half(L, b + j / 2, j % 2)));
}

/* One instantiation per stored type, so the conversion is not chosen inside the k loop. */
INLINE void float_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                       int64_t ldy, const int MR, const int NB) {
    if (L->kind == MQ__W_F32) float_tile_k(L, A, m, b, y, ldy, MR, NB, MQ__W_F32);
    else if (L->kind == MQ__W_F16) float_tile_k(L, A, m, b, y, ldy, MR, NB, MQ__W_F16);
    else float_tile_k(L, A, m, b, y, ldy, MR, NB, MQ__W_BF16);
}

/* Loads the 8 lanes of half h of channel block b from a [nblk][G][16] table. */
INLINE __m256i table_half(const void *t, const mq__lin *L, int64_t b, int64_t g, int h) {
    return _mm256_load_si256((const __m256i *)((const int32_t *)t + mq__gidx(L, b, g) + 8 * h));
}

INLINE void wonly_tile_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                         int64_t ldy, const int MR, const int NB, const bool four) {
    __m256 acc[4][4], part[4][4];
    const float *x = A->xf + m * L->Kp;
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 2 * NB; j++) acc[r][j] = _mm256_setzero_ps();
    for (int64_t g = 0; g < L->G; g++) {
        int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
        __m256i zero[4];
UNROLL
        for (int j = 0; j < 2 * NB; j++) {
            if (four && L->has_zq4)
                zero[j] = _mm256_and_si256(table_half(L->zq4, L, b + j / 2, g, j % 2),
                                           _mm256_set1_epi32(15));
            else if (four) zero[j] = _mm256_set1_epi32(L->zq_const);
            else if (L->has_zpw) zero[j] = table_half(L->zpw, L, b + j / 2, g, j % 2);
            else zero[j] = _mm256_setzero_si256();
        }
UNROLL
        for (int r = 0; r < MR; r++)
UNROLL
            for (int j = 0; j < 2 * NB; j++) part[r][j] = _mm256_setzero_ps();
        const int step = four ? 8 : 4;
        for (int64_t k = k0; k < k1; k += step) {
            __m256i v[4];
UNROLL
            for (int j = 0; j < 2 * NB; j++) {
                int64_t bb = b + j / 2;
                const char *p = four ? (const char *)((const uint32_t *)L->w +
                                                      (bb * (L->Kp / 8) + k / 8) * MQ__LANES)
                                     : (const char *)((const int8_t *)L->w +
                                                      (bb * (L->Kp / 4) + k / 4) * MQ__LANES * 4);
                v[j] = _mm256_load_si256((const __m256i *)(p + 32 * (j % 2)));
            }
UNROLL
            for (int i = 0; i < step; i++) {
                __m256 w[4];
UNROLL
                for (int j = 0; j < 2 * NB; j++) {
                    __m256i e;
                    if (four)
                        e = _mm256_and_si256(_mm256_srli_epi32(v[j], 8 * (i % 4) + 4 * (i / 4)),
                                             _mm256_set1_epi32(15));
                    else
                        e = _mm256_srai_epi32(_mm256_slli_epi32(v[j], 24 - 8 * i), 24);
                    w[j] = _mm256_cvtepi32_ps(_mm256_sub_epi32(e, zero[j]));
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    __m256 xv = _mm256_broadcast_ss(x + r * L->Kp + k + i);
UNROLL
                    for (int j = 0; j < 2 * NB; j++)
                        part[r][j] = fma_acc(part[r][j], xv, w[j]);
                }
            }
        }
UNROLL
        for (int j = 0; j < 2 * NB; j++) {
            __m256 s = _mm256_load_ps(L->scale + mq__gidx(L, b + j / 2, g) + 8 * (j % 2));
UNROLL
            for (int r = 0; r < MR; r++) acc[r][j] = _mm256_fmadd_ps(s, part[r][j], acc[r][j]);
        }
    }
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 2 * NB; j++)
            store_out(L, y + (m + r) * ldy, b + j / 2, j % 2,
                      _mm256_add_ps(acc[r][j], bias_half(L, b + j / 2, j % 2)));
}

/* The step loop over a word's k values must have a constant trip count to unroll. */
INLINE void wonly_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                       int64_t ldy, const int MR, const int NB) {
    if (L->kind == MQ__W_I4) wonly_tile_k(L, A, m, b, y, ldy, MR, NB, true);
    else wonly_tile_k(L, A, m, b, y, ldy, MR, NB, false);
}

/* Exact sum over each 32-bit lane of u8 activations (a, the same four bytes in every lane)
 * times s8 weights (w): even and odd bytes widened to 16 bits, then vpmaddwd. */
typedef struct act4 {
    __m256i even, odd;
} act4;

INLINE act4 act_pairs(const uint8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    __m256i a = _mm256_set1_epi32(v);
    act4 r = {_mm256_and_si256(a, _mm256_set1_epi16(0xff)), _mm256_srli_epi16(a, 8)};
    return r;
}

INLINE __m256i dot4(__m256i acc, act4 a, __m256i w_even, __m256i w_odd) {
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a.even, w_even));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a.odd, w_odd));
}

INLINE void int_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                     int64_t ldy, const int MR, const int NB) {
    __m256 acc[4][4];
    __m256i dot[4][4];
    const uint8_t *xu = A->xu + m * L->Kp;
    const bool four = L->kind == MQ__W_I4;
    const __m256i low4 = _mm256_set1_epi8(15);
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < 2 * NB; j++) acc[r][j] = _mm256_setzero_ps();
    for (int64_t g = 0; g < L->G; g++) {
        int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
UNROLL
        for (int r = 0; r < MR; r++)
UNROLL
            for (int j = 0; j < 2 * NB; j++) dot[r][j] = _mm256_setzero_si256();
        if (four) {
            __m256i zq[4];
UNROLL
            for (int j = 0; j < 2 * NB; j++)
                zq[j] = L->has_zq4 ? table_half(L->zq4, L, b + j / 2, g, j % 2)
                                   : _mm256_set1_epi8((char)L->zq_const);
            for (int64_t k = k0; k < k1; k += 8) {
                __m256i lo_e[4], lo_o[4], hi_e[4], hi_o[4];
UNROLL
                for (int j = 0; j < 2 * NB; j++) {
                    const uint32_t *p = (const uint32_t *)L->w +
                                        ((b + j / 2) * (L->Kp / 8) + k / 8) * MQ__LANES + 8 * (j % 2);
                    __m256i v = _mm256_load_si256((const __m256i *)p);
                    __m256i lo = _mm256_sub_epi8(_mm256_and_si256(v, low4), zq[j]);
                    __m256i hi = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4), zq[j]);
                    lo_e[j] = _mm256_srai_epi16(_mm256_slli_epi16(lo, 8), 8);
                    lo_o[j] = _mm256_srai_epi16(lo, 8);
                    hi_e[j] = _mm256_srai_epi16(_mm256_slli_epi16(hi, 8), 8);
                    hi_o[j] = _mm256_srai_epi16(hi, 8);
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    act4 a0 = act_pairs(xu + r * L->Kp + k), a1 = act_pairs(xu + r * L->Kp + k + 4);
UNROLL
                    for (int j = 0; j < 2 * NB; j++) {
                        dot[r][j] = dot4(dot[r][j], a0, lo_e[j], lo_o[j]);
                        dot[r][j] = dot4(dot[r][j], a1, hi_e[j], hi_o[j]);
                    }
                }
            }
        } else {
            for (int64_t k = k0; k < k1; k += 4) {
                __m256i we[4], wo[4];
UNROLL
                for (int j = 0; j < 2 * NB; j++) {
                    const int8_t *p = (const int8_t *)L->w +
                                      ((b + j / 2) * (L->Kp / 4) + k / 4) * MQ__LANES * 4 + 32 * (j % 2);
                    __m256i v = _mm256_load_si256((const __m256i *)p);
                    we[j] = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8);
                    wo[j] = _mm256_srai_epi16(v, 8);
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    act4 a = act_pairs(xu + r * L->Kp + k);
UNROLL
                    for (int j = 0; j < 2 * NB; j++) dot[r][j] = dot4(dot[r][j], a, we[j], wo[j]);
                }
            }
        }
UNROLL
        for (int j = 0; j < 2 * NB; j++) {
            int64_t ti = mq__gidx(L, b + j / 2, g) + 8 * (j % 2);
            __m256 s = _mm256_load_ps(L->scale + ti);
            __m256i k1v = _mm256_load_si256((const __m256i *)(L->k1 + ti));
UNROLL
            for (int r = 0; r < MR; r++) {
                __m256i d = _mm256_add_epi32(dot[r][j], k1v);
                if (L->has_zpw)
                    d = _mm256_sub_epi32(d, _mm256_mullo_epi32(
                                                _mm256_load_si256((const __m256i *)(L->zpw + ti)),
                                                _mm256_set1_epi32(A->xusum[(m + r) * L->G + g])));
                acc[r][j] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(d), acc[r][j]);
            }
        }
    }
UNROLL
    for (int r = 0; r < MR; r++) {
        __m256 sx = _mm256_set1_ps(A->sx[m + r]);
UNROLL
        for (int j = 0; j < 2 * NB; j++)
            store_out(L, y + (m + r) * ldy, b + j / 2, j % 2,
                      _mm256_fmadd_ps(acc[r][j], sx, bias_half(L, b + j / 2, j % 2)));
    }
}

#define INST_ALL(name, fn)                                                                      \
    INST(name, fn, 1, 1) INST(name, fn, 2, 1) INST(name, fn, 3, 1) INST(name, fn, 4, 1)        \
    INST(name, fn, 1, 2)                                                                        \
    static const tile_body name##_table[5] = {0, name##_1x1, name##_2x1, name##_3x1,           \
                                              name##_4x1};

INST_ALL(flt, float_tile)
INST_ALL(wo, wonly_tile)
INST_ALL(itg, int_tile)

/* Rows [m0, m1) x blocks [b0, b1): two blocks at a time for single rows, else 4 x 1. */
static void drive(const tile_body *tab, tile_body one_by_two, const mq__lin *L, const mq__act *A,
                  int64_t m0, int64_t m1, int64_t b0, int64_t b1, float *y, int64_t ldy) {
    int64_t b = b0;
    if (m1 - m0 == 1)
        for (; b + 2 <= b1; b += 2) one_by_two(L, A, m0, b, y, ldy);
    for (; b < b1; b++)
        for (int64_t m = m0; m < m1; m += 4) tab[m1 - m >= 4 ? 4 : m1 - m](L, A, m, b, y, ldy);
}

static void tile_float(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                       int64_t b1, float *y, int64_t ldy) {
    drive(flt_table, flt_1x2, L, A, m0, m1, b0, b1, y, ldy);
}
static void tile_wonly(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                       int64_t b1, float *y, int64_t ldy) {
    drive(wo_table, wo_1x2, L, A, m0, m1, b0, b1, y, ldy);
}
static void tile_integer(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                         int64_t b1, float *y, int64_t ldy) {
    drive(itg_table, itg_1x2, L, A, m0, m1, b0, b1, y, ldy);
}

static const mq__linear_fns fns = {tile_float, tile_wonly, tile_integer};

const mq__linear_fns *mq__linear_fns_avx2(void) { return &fns; }
