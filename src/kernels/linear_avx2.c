/* AVX2 + FMA Linear kernels. A block of sixteen output channels is two registers of eight.
 * Integer activations without VNNI: bytes are split into even and odd 16-bit halves and
 * multiplied with vpmaddwd, which is exact (vpmaddubsw would saturate). Each lane performs
 * the reference's operations in the reference's order, so results are bit-identical. */
#include "kernels/tile.h"

#include <immintrin.h>
#include <math.h>

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

/* Weight-only, one row, four channel blocks: eight independent fmaf chains (the reference's
 * chain per lane) keep both FMA pipes busy where one or two blocks wait on the FMA latency;
 * one block half at a time (its chain is independent of the others', so the out-of-order
 * window overlaps them with few live registers). Each weight stream is prefetched GV_PF bytes
 * ahead, near the end of the blocks the same stream of the next GV_NB blocks (the caller's
 * next tile), and each group's scales GV_SPF groups ahead (as the AVX-512 kernel).
 *
 * Weights as signed bytes (8-bit without zero points; 4-bit as nibble - zq, formed for eight
 * k at once): vpshufb moves byte i of every lane to the top byte with zeros below, which
 * reads as the integer w * 2^24 and converts exactly; the activation carries the 2^-24
 * instead (x * 2^-24 times w * 2^24 is the same product as x * w, so the fmaf chain is
 * unchanged). Three instructions per eight weights. 8-bit weights with zero points
 * ((w - zpw) * 2^24 may overflow) sign-extend with shifts. */
enum { GV_NB = 4, GV_NH = 2 * GV_NB, GV_PF = 1024 /* bytes ahead per stream */,
       GV_SPF = 4 /* groups ahead */, GV_CHUNK = 256 };

/* x * 2^-24 is exact for every x of the row: no nonzero |x| below 2^-102 (it would leave the
 * normal range and lose bits). */
static bool scale24_exact(const float *x, int64_t n) {
    const __m256 tiny = _mm256_set1_ps(0x1p-102f), zero = _mm256_setzero_ps();
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 bad = zero;
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + k), absmask);
        bad = _mm256_or_ps(bad, _mm256_and_ps(_mm256_cmp_ps(a, tiny, _CMP_LT_OQ),
                                              _mm256_cmp_ps(a, zero, _CMP_NEQ_OQ)));
    }
    if (_mm256_movemask_ps(bad)) return false;
    for (; k < n; k++) {
        float v = x[k] < 0 ? -x[k] : x[k];
        if (v != 0 && v < 0x1p-102f) return false;
    }
    return true;
}

/* top: the vpshufb form above (x scaled into xs by chunks of k); else 8-bit by shifts. */
INLINE void wonly_gemv_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                         const bool four, const bool zp, const bool top) {
    const float *x = A->xf + m * L->Kp;
    __m256i ctrl[4];
UNROLL
    for (int i = 0; i < 4; i++) {
        int8_t c[32];
        for (int l = 0; l < 8; l++)
            for (int q = 0; q < 4; q++) c[4 * l + q] = q == 3 ? (int8_t)(4 * (l % 4) + i) : (int8_t)0x80;
        ctrl[i] = _mm256_loadu_si256((const __m256i *)c);
    }
    const __m256 s24 = _mm256_set1_ps(0x1p-24f);
    const __m256i low4 = _mm256_set1_epi8(15);
    const int64_t words = four ? L->Kp / 8 : L->Kp / 4; /* 64-byte rows per block */
    const int step = four ? 8 : 4;
    __m256 acc[GV_NH];
UNROLL
    for (int j = 0; j < GV_NH; j++) acc[j] = _mm256_setzero_ps();
    __m256i zero[GV_NH]; /* 4-bit: zq in every byte; 8-bit: zpw */
    float xs[GV_CHUNK];
    for (int64_t g = 0; g < L->G; g++) {
        int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
        if (g == 0 || zp)
UNROLL
            for (int j = 0; j < GV_NH; j++) {
                if (four)
                    zero[j] = zp ? table_half(L->zq4, L, b + j / 2, g, j % 2)
                                 : _mm256_set1_epi8((char)L->zq_const);
                else if (zp)
                    zero[j] = table_half(L->zpw, L, b + j / 2, g, j % 2);
            }
        __m256 part[GV_NH];
UNROLL
        for (int j = 0; j < GV_NH; j++) part[j] = _mm256_setzero_ps();
        if (L->G > GV_SPF) /* may point past the table: a prefetch is only a hint */
UNROLL
            for (int j = 0; j < GV_NB; j++) {
                int64_t pg = g + GV_SPF, pb = b + j;
                if (pg >= L->G) pg -= L->G, pb += GV_NB;
                _mm_prefetch((const char *)(L->scale + mq__gidx(L, pb, pg)), _MM_HINT_T0);
            }
        for (int64_t c0 = k0; c0 < k1; c0 += GV_CHUNK) {
            int64_t c1 = c0 + GV_CHUNK < k1 ? c0 + GV_CHUNK : k1; /* c1 - c0: a multiple of 8 */
            if (top)
                for (int64_t k = c0; k < c1; k += 8)
                    _mm256_storeu_ps(xs + (k - c0), _mm256_mul_ps(_mm256_loadu_ps(x + k), s24));
            for (int64_t k = c0; k < c1; k += step) {
                const char *base = (const char *)L->w + (b * words + k / step) * 64;
                const int64_t pf = k / step + GV_PF / 64 < words
                                       ? GV_PF : GV_PF + (GV_NB - 1) * words * 64;
UNROLL
                for (int j = 0; j < GV_NB; j++) _mm_prefetch(base + j * words * 64 + pf, _MM_HINT_T0);
                const float *xk = top ? xs + (k - c0) : x + k;
UNROLL
                for (int j = 0; j < GV_NH; j++) {
                    __m256i v = _mm256_load_si256((const __m256i *)(base + (j / 2) * words * 64 +
                                                                    32 * (j % 2)));
                    if (four) {
                        /* signed bytes nibble - zq: k0..k3 in lo, k4..k7 in hi */
                        __m256i lo = _mm256_sub_epi8(_mm256_and_si256(v, low4), zero[j]);
                        __m256i hi = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(v, 4), low4),
                                                     zero[j]);
UNROLL
                        for (int i = 0; i < 8; i++)
                            part[j] = fma_acc(part[j], _mm256_broadcast_ss(xk + i),
                                              _mm256_cvtepi32_ps(_mm256_shuffle_epi8(i < 4 ? lo : hi,
                                                                                     ctrl[i % 4])));
                    } else if (top) {
UNROLL
                        for (int i = 0; i < 4; i++)
                            part[j] = fma_acc(part[j], _mm256_broadcast_ss(xk + i),
                                              _mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, ctrl[i])));
                    } else {
UNROLL
                        for (int i = 0; i < 4; i++) {
                            __m256i e = i == 3 ? _mm256_srai_epi32(v, 24)
                                               : _mm256_srai_epi32(_mm256_slli_epi32(v, 24 - 8 * i), 24);
                            if (zp) e = _mm256_sub_epi32(e, zero[j]);
                            part[j] = fma_acc(part[j], _mm256_broadcast_ss(xk + i), _mm256_cvtepi32_ps(e));
                        }
                    }
                }
            }
        }
UNROLL
        for (int j = 0; j < GV_NH; j++) {
            __m256 sc = _mm256_load_ps(L->scale + mq__gidx(L, b + j / 2, g) + 8 * (j % 2));
            acc[j] = _mm256_fmadd_ps(sc, part[j], acc[j]);
        }
    }
UNROLL
    for (int j = 0; j < GV_NH; j++)
        store_out(L, y, b + j / 2, j % 2, _mm256_add_ps(acc[j], bias_half(L, b + j / 2, j % 2)));
}

static void wo_gemv_1x2(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                        int64_t ldy);

static void wonly_gemv(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                       int64_t ldy) {
    bool four = L->kind == MQ__W_I4;
    bool top = (four || !L->has_zpw) && scale24_exact(A->xf + m * L->Kp, L->Kp);
    if (four && top && L->has_zq4) wonly_gemv_k(L, A, m, b, y, true, true, true);
    else if (four && top) wonly_gemv_k(L, A, m, b, y, true, false, true);
    else if (four) /* rows with tiny activations: the general tiles */
        for (int i = 0; i < GV_NB; i += 2) wo_gemv_1x2(L, A, m, b + i, y, ldy);
    else if (L->has_zpw) wonly_gemv_k(L, A, m, b, y, false, true, false);
    else if (top) wonly_gemv_k(L, A, m, b, y, false, false, true);
    else wonly_gemv_k(L, A, m, b, y, false, false, false);
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

/* Four bytes at p in every 32-bit lane. */
INLINE __m256i bcast4(const uint8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* Sum of n u8 values (n a multiple of 8). */
INLINE int32_t sum_u8(const uint8_t *p, int64_t n) {
    __m256i s = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        s = _mm256_add_epi64(s, _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(p + i)),
                                                _mm256_setzero_si256()));
    __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    for (; i < n; i += 8)
        t = _mm_add_epi64(t, _mm_sad_epu8(_mm_loadl_epi64((const __m128i *)(p + i)), _mm_setzero_si128()));
    return (int32_t)(_mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1));
}

INLINE void int_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                     int64_t ldy, const int MR, const int NB) {
    __m256 acc[4][4];
    __m256i dot[4][4];
    int32_t sxu[4] = {0};
    const uint8_t *xu = A->xu + m * L->Kp;
    const bool four = L->kind == MQ__W_I4;
    const bool dyn8 = !four && L->act == MQ_ACT_DYNAMIC;
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
            /* vpmaddubsw on u8 activations and the nibbles themselves (0..15): a pair sums
             * to at most 2 * 255 * 15, far from saturating; the zero point comes back
             * through the group sum of the activations */
            const __m256i ones = _mm256_set1_epi16(1);
UNROLL
            for (int r = 0; r < MR; r++) sxu[r] = sum_u8(xu + r * L->Kp + k0, k1 - k0);
            for (int64_t k = k0; k < k1; k += 8) {
                __m256i lo[4], hi[4];
UNROLL
                for (int j = 0; j < 2 * NB; j++) {
                    const uint32_t *p = (const uint32_t *)L->w +
                                        ((b + j / 2) * (L->Kp / 8) + k / 8) * MQ__LANES + 8 * (j % 2);
                    __m256i v = _mm256_load_si256((const __m256i *)p);
                    lo[j] = _mm256_and_si256(v, low4);
                    hi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    __m256i a0 = bcast4(xu + r * L->Kp + k), a1 = bcast4(xu + r * L->Kp + k + 4);
UNROLL
                    for (int j = 0; j < 2 * NB; j++) {
                        __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(a0, lo[j]),
                                                       _mm256_maddubs_epi16(a1, hi[j]));
                        dot[r][j] = _mm256_add_epi32(dot[r][j], _mm256_madd_epi16(p16, ones));
                    }
                }
            }
        } else if (dyn8) {
            /* dynamic activations are in [-127, 127] (xs = xu - 128): vpmaddubsw on |w| and
             * xs with the sign of w, a pair summing to at most 2 * 128 * 127, exact */
            const __m256i ones = _mm256_set1_epi16(1), bias8 = _mm256_set1_epi8((char)0x80);
            for (int64_t k = k0; k < k1; k += 4) {
                __m256i wv[4], wa[4];
UNROLL
                for (int j = 0; j < 2 * NB; j++) {
                    const int8_t *p = (const int8_t *)L->w +
                                      ((b + j / 2) * (L->Kp / 4) + k / 4) * MQ__LANES * 4 + 32 * (j % 2);
                    wv[j] = _mm256_load_si256((const __m256i *)p);
                    wa[j] = _mm256_abs_epi8(wv[j]);
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    __m256i a = _mm256_xor_si256(bcast4(xu + r * L->Kp + k), bias8);
UNROLL
                    for (int j = 0; j < 2 * NB; j++) {
                        __m256i p16 = _mm256_maddubs_epi16(wa[j], _mm256_sign_epi8(a, wv[j]));
                        dot[r][j] = _mm256_add_epi32(dot[r][j], _mm256_madd_epi16(p16, ones));
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
                /* dyn8: dot = sum(xs * w), and with xs = xu - 128 the reference's
                 * sum(xu * w) + k1 - zpw * sum(xu) is dot - zpw * (sum(xu) - 128 n);
                 * 4-bit: dot = sum(xu * nibble), so sum(xu * w) = dot - zq * sum(xu) */
                __m256i d = dot[r][j];
                int32_t xsum = L->has_zpw ? A->xusum[(m + r) * L->G + g] : 0;
                if (dyn8) {
                    xsum -= 128 * (int32_t)(k1 - k0);
                } else {
                    d = _mm256_add_epi32(d, k1v);
                    if (four && L->has_zq4)
                        d = _mm256_sub_epi32(d, _mm256_mullo_epi32(
                                                    _mm256_and_si256(table_half(L->zq4, L, b + j / 2, g, j % 2),
                                                                     _mm256_set1_epi32(15)),
                                                    _mm256_set1_epi32(sxu[r])));
                    else if (four)
                        d = _mm256_sub_epi32(d, _mm256_set1_epi32(L->zq_const * sxu[r]));
                }
                if (L->has_zpw)
                    d = _mm256_sub_epi32(d, _mm256_mullo_epi32(
                                                _mm256_load_si256((const __m256i *)(L->zpw + ti)),
                                                _mm256_set1_epi32(xsum)));
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

static void wo_gemv_1x2(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                        int64_t ldy) {
    wo_1x2(L, A, m, b, y, ldy);
}

/* Rows [m0, m1) x blocks [b0, b1): two blocks at a time for single rows, else 4 x 1. */
static void drive(const tile_body *tab, tile_body one_by_two, tile_body one_by_four,
                  const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                  int64_t b1, float *y, int64_t ldy) {
    int64_t b = b0;
    if (m1 - m0 == 1 && one_by_four)
        for (; b + GV_NB <= b1; b += GV_NB) one_by_four(L, A, m0, b, y, ldy);
    if (m1 - m0 == 1)
        for (; b + 2 <= b1; b += 2) one_by_two(L, A, m0, b, y, ldy);
    for (; b < b1; b++)
        for (int64_t m = m0; m < m1; m += 4) tab[m1 - m >= 4 ? 4 : m1 - m](L, A, m, b, y, ldy);
}

static void tile_float(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                       int64_t b1, float *y, int64_t ldy) {
    drive(flt_table, flt_1x2, NULL, L, A, m0, m1, b0, b1, y, ldy);
}
static void tile_wonly(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                       int64_t b1, float *y, int64_t ldy) {
    drive(wo_table, wo_1x2, wonly_gemv, L, A, m0, m1, b0, b1, y, ldy);
}
static void tile_integer(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                         int64_t b1, float *y, int64_t ldy) {
    drive(itg_table, itg_1x2, NULL, L, A, m0, m1, b0, b1, y, ldy);
}

/* The reference's activation quantization (kernels.h) eight lanes at a time: the same
 * division, clamps (vminps returns its second operand for NaN, as the scalar v < c ? v : c
 * does), rounding and conversion; the tail by the scalar code. */
static void quant_row(const mq__lin *L, const float *x, uint8_t *xu, float *sx) {
    const int64_t K = L->K;
    const __m256 magic = _mm256_set1_ps(0x1.8p23f);
    const bool dyn = L->act == MQ_ACT_DYNAMIC;
    float s;
    int64_t k = 0;
    if (dyn) {
        __m256 amax = _mm256_setzero_ps(); /* never NaN: vmaxps keeps it for a NaN input */
        const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        for (; k + 8 <= K; k += 8)
            amax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), absmask), amax);
        float lanes[8], a = 0;
        _mm256_storeu_ps(lanes, amax);
        for (int i = 0; i < 8; i++) a = fmaxf(a, lanes[i]);
        for (; k < K; k++) a = fmaxf(a, fabsf(x[k]));
        s = a > 0 ? a / 127.0f : 1.0f;
    } else {
        s = L->in_scale;
    }
    const __m256 sv = _mm256_set1_ps(s), zp = _mm256_set1_ps((float)L->za);
    const __m256 hi = _mm256_set1_ps(dyn ? 127.0f : 512.0f), lo = _mm256_set1_ps(dyn ? -127.0f : -512.0f);
    for (k = 0; k + 8 <= K; k += 8) {
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + k), sv);
        v = _mm256_max_ps(_mm256_min_ps(v, hi), lo);
        __m256 q = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
        __m256i u;
        if (dyn) {
            u = _mm256_add_epi32(_mm256_cvttps_epi32(q), _mm256_set1_epi32(128));
        } else {
            q = _mm256_max_ps(_mm256_min_ps(_mm256_add_ps(q, zp), _mm256_set1_ps(255.0f)),
                              _mm256_setzero_ps());
            u = _mm256_cvttps_epi32(q);
        }
        __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
        _mm_storel_epi64((__m128i *)(xu + k), _mm_packus_epi16(w, w));
    }
    for (; k < K; k++)
        xu[k] = dyn ? mq__quant_dyn1(x[k], s) : mq__quant_static1(x[k], s, (float)L->za);
    *sx = s;
}

static const mq__linear_fns fns = {tile_float, tile_wonly, tile_integer, quant_row};

const mq__linear_fns *mq__linear_fns_avx2(void) { return &fns; }
