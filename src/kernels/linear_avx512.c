/* AVX-512 Linear kernels (VNNI vpdpbusd for integer activations). Sixteen output channels
 * per register; tiles of MR rows x NB channel blocks keep their accumulators in registers.
 * Each lane performs the reference's operations in the reference's order (kernels.h), so
 * results are bit-identical to linear_ref.c. */
#include "kernels/tile.h"

#include <immintrin.h>

/* acc + x * w, fused; the asm form keeps GCC from copying accumulators around (as dpbusd). */
INLINE __m512 fma_acc(__m512 acc, __m512 x, __m512 w) {
#if defined(__clang__)
    return _mm512_fmadd_ps(x, w, acc);
#else
    __asm__("vfmadd231ps %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
    return acc;
#endif
}

/* acc + w * (*x broadcast), fused, the broadcast folded into the instruction. */
INLINE __m512 fma_bcast(__m512 acc, __m512 w, const float *x) {
#if defined(__clang__)
    return _mm512_fmadd_ps(w, _mm512_set1_ps(*x), acc);
#else
    __asm__("vfmadd231ps %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*x));
    return acc;
#endif
}

INLINE __m512 load_wf(const mq__lin *L, int64_t b, int64_t k, const mq__wkind kind) {
    int64_t i = (b * L->K + k) * MQ__LANES;
    if (kind == MQ__W_F32) return _mm512_load_ps((const float *)L->w + i);
    __m256i h = _mm256_load_si256((const __m256i *)((const uint16_t *)L->w + i));
    if (kind == MQ__W_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE void store_out(const mq__lin *L, float *y, int64_t b, __m512 v) {
    int64_t n0 = b * MQ__LANES, left = L->N - n0;
    if (left >= MQ__LANES) _mm512_storeu_ps(y + n0, v);
    else _mm512_mask_storeu_ps(y + n0, (__mmask16)((1u << left) - 1u), v);
}

INLINE void float_tile_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                         int64_t ldy, const int MR, const int NB, const mq__wkind kind) {
    __m512 acc[4][4];
    const bool first = A->k0 == 0, last = A->k1 == L->K;
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < NB; j++) {
            int64_t n0 = (b + j) * MQ__LANES, left = L->N - n0;
            __mmask16 keep = left >= MQ__LANES ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
            acc[r][j] = first ? _mm512_setzero_ps()
                              : _mm512_maskz_loadu_ps(keep, y + (m + r) * ldy + n0);
        }
    const float *x = A->xf + m * L->Kp;
    for (int64_t k = A->k0; k < A->k1; k++) {
        __m512 w[4];
UNROLL
        for (int j = 0; j < NB; j++) w[j] = load_wf(L, b + j, k, kind);
UNROLL
        for (int r = 0; r < MR; r++) {
            __m512 xv = _mm512_set1_ps(x[r * L->Kp + k]);
UNROLL
            for (int j = 0; j < NB; j++) acc[r][j] = fma_acc(acc[r][j], xv, w[j]);
        }
    }
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < NB; j++)
            store_out(L, y + (m + r) * ldy, b + j,
                      last ? _mm512_add_ps(acc[r][j], _mm512_load_ps(L->bias + (b + j) * MQ__LANES))
                           : acc[r][j]);
}

/* One instantiation per stored type, so the conversion is not chosen inside the k loop. */
INLINE void float_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                       int64_t ldy, const int MR, const int NB) {
    if (L->kind == MQ__W_F32) float_tile_k(L, A, m, b, y, ldy, MR, NB, MQ__W_F32);
    else if (L->kind == MQ__W_F16) float_tile_k(L, A, m, b, y, ldy, MR, NB, MQ__W_F16);
    else float_tile_k(L, A, m, b, y, ldy, MR, NB, MQ__W_BF16);
}

/* Zero point (nibble value of w = 0) of the 4-bit group, as 32-bit lanes. */
INLINE __m512i zq4_lanes(const mq__lin *L, int64_t b, int64_t g) {
    if (L->has_zq4) return _mm512_and_si512(_mm512_load_si512(L->zq4 + mq__gidx(L, b, g)),
                                            _mm512_set1_epi32(15));
    return _mm512_set1_epi32(L->zq_const);
}

INLINE void wonly_tile_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                         int64_t ldy, const int MR, const int NB, const bool four) {
    __m512 acc[4][4], part[4][4];
    const float *x = A->xf + m * L->Kp;
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < NB; j++) acc[r][j] = _mm512_setzero_ps();
    for (int64_t g = 0; g < L->G; g++) {
        int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
        __m512i zero[4];
UNROLL
        for (int j = 0; j < NB; j++) {
            if (four) zero[j] = zq4_lanes(L, b + j, g);
            else if (L->has_zpw) zero[j] = _mm512_load_si512(L->zpw + mq__gidx(L, b + j, g));
            else zero[j] = _mm512_setzero_si512();
        }
UNROLL
        for (int r = 0; r < MR; r++)
UNROLL
            for (int j = 0; j < NB; j++) part[r][j] = _mm512_setzero_ps();
        const int step = four ? 8 : 4;
        for (int64_t k = k0; k < k1; k += step) {
            __m512i v[4];
UNROLL
            for (int j = 0; j < NB; j++) {
                if (four)
                    v[j] = _mm512_load_si512((const uint32_t *)L->w +
                                             ((b + j) * (L->Kp / 8) + k / 8) * MQ__LANES);
                else
                    v[j] = _mm512_load_si512((const int8_t *)L->w +
                                             ((b + j) * (L->Kp / 4) + k / 4) * MQ__LANES * 4);
            }
UNROLL
            for (int i = 0; i < step; i++) {
                __m512 w[4];
UNROLL
                for (int j = 0; j < NB; j++) {
                    __m512i e;
                    if (four)
                        e = _mm512_and_si512(_mm512_srli_epi32(v[j], 8 * (i % 4) + 4 * (i / 4)),
                                             _mm512_set1_epi32(15));
                    else
                        e = _mm512_srai_epi32(_mm512_slli_epi32(v[j], 24 - 8 * i), 24);
                    w[j] = _mm512_cvtepi32_ps(_mm512_sub_epi32(e, zero[j]));
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    __m512 xv = _mm512_set1_ps(x[r * L->Kp + k + i]);
UNROLL
                    for (int j = 0; j < NB; j++)
                        part[r][j] = fma_acc(part[r][j], xv, w[j]);
                }
            }
        }
UNROLL
        for (int j = 0; j < NB; j++) {
            __m512 s = _mm512_load_ps(L->scale + mq__gidx(L, b + j, g));
UNROLL
            for (int r = 0; r < MR; r++) acc[r][j] = _mm512_fmadd_ps(s, part[r][j], acc[r][j]);
        }
    }
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < NB; j++)
            store_out(L, y + (m + r) * ldy, b + j,
                      _mm512_add_ps(acc[r][j], _mm512_load_ps(L->bias + (b + j) * MQ__LANES)));
}

/* The step loop over a word's k values must have a constant trip count to unroll. */
INLINE void wonly_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                       int64_t ldy, const int MR, const int NB) {
    if (L->kind == MQ__W_I4) wonly_tile_k(L, A, m, b, y, ldy, MR, NB, true);
    else wonly_tile_k(L, A, m, b, y, ldy, MR, NB, false);
}

/* Weight-only, one row, NB channel blocks (NB independent fmaf chains, the reference's chain
 * per lane, so both FMA pipes stay busy): the words of all NB blocks loaded, then each k
 * of the word over all blocks, so consecutive FMAs are independent; the activation is a
 * broadcast operand of the FMA (no register per k). Every weight stream is prefetched GV_PF
 * bytes ahead, 8-bit stream j GV_PF + j * GV_STAG: the blocks are equally long, so with one
 * distance the NB prefetches of a step would go to the same offset in NB blocks at once
 * (8-bit weights from DRAM about 10 % slower so; 4-bit ones, bound by their decode, ran
 * 1-2 % slower staggered). In the last GV_PF bytes of the blocks the prefetches move on to
 * the same streams of the next NB blocks (the caller's next tile; the first j * GV_STAG bytes
 * of stream j are left to the loads there: a condition per stream measured slower), and each
 * group's scales are prefetched GV_SPF groups ahead: otherwise those lines are demand misses
 * from memory, which the long loop body cannot hide. Decoding costs one instruction per 16
 * weights before the convert:
 *  - 4-bit: vpermps reads only the low four bits of each index lane, so the word shifted
 *    right by the nibble's position picks (float)(nibble - zq) from a 16-entry table directly
 *    (no convert); with per-group zero points the table holds (float)nibble and the lane's
 *    (float)zq is subtracted (exact for these small integers). The nibble at bit 16 of the
 *    same (shifted) word needs no shift of its own: vpermw reads bits 16..20 as the index
 *    of the high half of each float (their low halves are zero), the low half zeroed by the
 *    mask; so three shifts per eight nibbles instead of seven. Without zero points, the top
 *    nibble as a signed integer (xor 8 for INT4) converts to (nibble - zq) * 2^28 exactly and
 *    x * 2^-28 is used instead of x (rows with a nonzero |x| < 2^-98 skip this): a convert on
 *    the shift ports instead of a permute, which shares a port with the FMAs.
 *  - 8-bit without zero points: byte i of every lane moved to the top byte with zeros below
 *    (vpslld, vpshufb or vpandd) reads as the integer w * 2^24 and converts exactly; the
 *    activation carries the 2^-24 instead (x * 2^-24 times w * 2^24 is the same product as
 *    x * w, so the fmaf chain is unchanged). */
enum {
    GV_PF = 1024,  /* bytes ahead per weight stream... */
    GV_STAG = 256, /* ...plus this much per stream index (8-bit) */
    GV_SPF = 4,    /* groups ahead for the scales */
    GV_CHUNK = 256
};
enum { GV_I8, GV_I4, GV_I4Z, GV_I4T };

/* x * 2^-24 is exact for every x of the row: no nonzero |x| below 2^-102 (it would leave the
 * normal range and lose bits). */
static bool scale_exact(const float *x, int64_t n, float lowest) {
    const __m512 tiny = _mm512_set1_ps(lowest);
    __mmask16 bad = 0;
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) {
        __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + k));
        bad |= _mm512_cmp_ps_mask(a, tiny, _CMP_LT_OQ) & _mm512_cmp_ps_mask(a, _mm512_setzero_ps(),
                                                                             _CMP_NEQ_OQ);
    }
    if (bad) return false;
    for (; k < n; k++) {
        float v = x[k] < 0 ? -x[k] : x[k];
        if (v != 0 && v < lowest) return false;
    }
    return true;
}

/* y: the row's outputs. */
INLINE void wonly_gemv_k(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                         const int NB, const int mode) {
    const float *x = A->xf + m * L->Kp;
    const bool four = mode != GV_I8;
    const int64_t words = four ? L->Kp / 8 : L->Kp / 4; /* 64-byte words per block */
    const int step = four ? 8 : 4;
    const __m512 table = _mm512_sub_ps(
        _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_ps(mode == GV_I4 || mode == GV_I4T ? (float)L->zq_const : 0.0f));
    const __m512i top4 = _mm512_set1_epi32((int)0xf0000000u), sign = _mm512_set1_epi32(INT32_MIN);
    const __m256i hi16 = _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(table), 16));
    const __m512i table16 = _mm512_inserti64x4(_mm512_castsi256_si512(hi16), hi16, 1);
    __m512i ctrl[4]; /* vpshufb: byte i of each lane to the top byte, zeros below */
    for (int i = 1; i < 3; i++) {
        int8_t c[64];
        for (int l = 0; l < 16; l++)
            for (int q = 0; q < 4; q++) c[4 * l + q] = q == 3 ? (int8_t)(4 * (l % 4) + i) : (int8_t)0x80;
        ctrl[i] = _mm512_loadu_si512(c);
    }
    const __m512 s24 = _mm512_set1_ps(0x1p-24f);
    const __m512i top = _mm512_set1_epi32((int)0xff000000u);
    __m512 acc[8], zf[8];
UNROLL
    for (int j = 0; j < NB; j++) acc[j] = _mm512_setzero_ps();
    __attribute__((aligned(64))) float xs[GV_CHUNK];
    for (int64_t g = 0; g < L->G; g++) {
        int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
        __m512 part[8];
UNROLL
        for (int j = 0; j < NB; j++) {
            part[j] = _mm512_setzero_ps();
            if (L->G > GV_SPF) { /* may point past the table: a prefetch is only a hint */
                int64_t pg = g + GV_SPF, pb = b + j;
                if (pg >= L->G) pg -= L->G, pb += NB;
                _mm_prefetch((const char *)(L->scale + mq__gidx(L, pb, pg)), _MM_HINT_T0);
            }
            if (mode == GV_I4Z)
                zf[j] = _mm512_cvtepi32_ps(_mm512_and_si512(
                    _mm512_load_si512(L->zq4 + mq__gidx(L, b + j, g)), _mm512_set1_epi32(15)));
        }
        for (int64_t c0 = k0; c0 < k1; c0 += GV_CHUNK) {
            int64_t c1 = c0 + GV_CHUNK < k1 ? c0 + GV_CHUNK : k1; /* c1 - c0: a multiple of 8 */
            if (!four)
                for (int64_t k = c0; k < c1; k += 8) /* k1 - c0 may not be a multiple of 16 */
                    _mm256_store_ps(xs + (k - c0), _mm256_mul_ps(_mm256_loadu_ps(x + k),
                                                                 _mm512_castps512_ps256(s24)));
            if (mode == GV_I4T) /* x[k + 7] * 2^-28 of every step */
                for (int64_t k = c0; k < c1; k += 8) xs[(k - c0) / 8] = x[k + 7] * 0x1p-28f;
            for (int64_t k = c0; k < c1; k += step) {
                const char *base = (const char *)L->w + (b * words + k / step) * 64;
                const float *xk = four ? x + k : xs + (k - c0);
                const int64_t pf = k / step + GV_PF / 64 < words ? GV_PF
                                                                  : GV_PF + (NB - 1) * words * 64;
                __m512i v[8];
UNROLL
                for (int j = 0; j < NB; j++) {
                    const char *p = base + j * words * 64;
                    _mm_prefetch(p + pf + (four ? 0 : j * GV_STAG), _MM_HINT_T0);
                    v[j] = _mm512_load_si512(p);
                }
UNROLL
                for (int i = 0; i < step; i++)
UNROLL
                    for (int j = 0; j < NB; j++) {
                        __m512 w;
                        if (four) {
                            int sh = 8 * (i % 4) + 4 * (i / 4);
                            __m512i src = sh % 16 ? _mm512_srli_epi32(v[j], sh % 16) : v[j];
                            w = sh < 16 ? _mm512_permutexvar_ps(src, table)
                                        : _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(
                                              (__mmask32)0xaaaaaaaau, src, table16));
                            if (mode == GV_I4T && i == 7) /* the top nibble: (nibble - zq) * 2^28 */
                                w = L->zq_const ? _mm512_cvtepi32_ps(_mm512_ternarylogic_epi32(
                                                      v[j], top4, sign, 0x6a)) /* (v & top4) ^ sign */
                                                : _mm512_cvtepu32_ps(_mm512_and_si512(v[j], top4));
                            if (mode == GV_I4Z) w = _mm512_sub_ps(w, zf[j]);
                        } else {
                            __m512i e = i == 0 ? _mm512_slli_epi32(v[j], 24)
                                      : i == 3 ? _mm512_and_si512(v[j], top)
                                               : _mm512_shuffle_epi8(v[j], ctrl[i]);
                            w = _mm512_cvtepi32_ps(e);
                        }
                        part[j] = fma_bcast(part[j], w, mode == GV_I4T && i == 7 ? xs + (k - c0) / 8
                                                                                 : xk + i);
                    }
            }
        }
UNROLL
        for (int j = 0; j < NB; j++)
            acc[j] = _mm512_fmadd_ps(_mm512_load_ps(L->scale + mq__gidx(L, b + j, g)), part[j],
                                     acc[j]);
    }
UNROLL
    for (int j = 0; j < NB; j++)
        store_out(L, y, b + j,
                  _mm512_add_ps(acc[j], _mm512_load_ps(L->bias + (b + j) * MQ__LANES)));
}

/* acc += u8 a x s8 w per 32-bit lane (vpdpbusd). GCC 12 surrounds the builtin with register
 * copies and spills in these tiles; the asm form with a tied operand avoids them. */
INLINE __m512i dpbusd(__m512i acc, __m512i a, __m512i w) {
#if defined(__clang__)
    return _mm512_dpbusd_epi32(acc, a, w);
#else
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(w));
    return acc;
#endif
}

INLINE __m512i bcast32(const uint8_t *p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

INLINE void int_tile(const mq__lin *L, const mq__act *A, int64_t m, int64_t b, float *y,
                     int64_t ldy, const int MR, const int NB) {
    __m512 acc[4][4];
    __m512i dot[4][4];
    const uint8_t *xu = A->xu + m * L->Kp;
    const bool four = L->kind == MQ__W_I4;
    const __m512i low4 = _mm512_set1_epi8(15);
UNROLL
    for (int r = 0; r < MR; r++)
UNROLL
        for (int j = 0; j < NB; j++) acc[r][j] = _mm512_setzero_ps();
    for (int64_t g = 0; g < L->G; g++) {
        int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
UNROLL
        for (int r = 0; r < MR; r++)
UNROLL
            for (int j = 0; j < NB; j++) dot[r][j] = _mm512_setzero_si512();
        if (four) {
            __m512i zq[4];
UNROLL
            for (int j = 0; j < NB; j++)
                zq[j] = L->has_zq4 ? _mm512_load_si512(L->zq4 + mq__gidx(L, b + j, g))
                                   : _mm512_set1_epi8((char)L->zq_const);
            const uint32_t *w = (const uint32_t *)L->w + k0 / 8 * MQ__LANES;
            for (int64_t k = k0; k < k1; k += 8, w += MQ__LANES) {
                __m512i lo[4], hi[4];
UNROLL
                for (int j = 0; j < NB; j++) {
                    __m512i v = _mm512_load_si512(w + (b + j) * (L->Kp / 8) * MQ__LANES);
                    lo[j] = _mm512_sub_epi8(_mm512_and_si512(v, low4), zq[j]);
                    hi[j] = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4), zq[j]);
                }
UNROLL
                for (int r = 0; r < MR; r++) {
                    __m512i a0 = bcast32(xu + r * L->Kp + k), a1 = bcast32(xu + r * L->Kp + k + 4);
UNROLL
                    for (int j = 0; j < NB; j++) {
                        dot[r][j] = dpbusd(dot[r][j], a0, lo[j]);
                        dot[r][j] = dpbusd(dot[r][j], a1, hi[j]);
                    }
                }
            }
        } else {
            const int8_t *w = (const int8_t *)L->w + k0 / 4 * MQ__LANES * 4;
            for (int64_t k = k0; k < k1; k += 4, w += MQ__LANES * 4) {
                __m512i v[4];
UNROLL
                for (int j = 0; j < NB; j++)
                    v[j] = _mm512_load_si512(w + (b + j) * (L->Kp / 4) * MQ__LANES * 4);
UNROLL
                for (int r = 0; r < MR; r++) {
                    __m512i a = bcast32(xu + r * L->Kp + k);
UNROLL
                    for (int j = 0; j < NB; j++) dot[r][j] = dpbusd(dot[r][j], a, v[j]);
                }
            }
        }
UNROLL
        for (int j = 0; j < NB; j++) {
            int64_t ti = mq__gidx(L, b + j, g);
            __m512 s = _mm512_load_ps(L->scale + ti);
            __m512i k1v = _mm512_load_si512(L->k1 + ti);
UNROLL
            for (int r = 0; r < MR; r++) {
                __m512i d = _mm512_add_epi32(dot[r][j], k1v);
                if (L->has_zpw)
                    d = _mm512_sub_epi32(d, _mm512_mullo_epi32(
                                                _mm512_load_si512(L->zpw + ti),
                                                _mm512_set1_epi32(A->xusum[(m + r) * L->G + g])));
                acc[r][j] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(d), acc[r][j]);
            }
        }
    }
UNROLL
    for (int r = 0; r < MR; r++) {
        __m512 sx = _mm512_set1_ps(A->sx[m + r]);
UNROLL
        for (int j = 0; j < NB; j++)
            store_out(L, y + (m + r) * ldy, b + j,
                      _mm512_fmadd_ps(acc[r][j], sx, _mm512_load_ps(L->bias + (b + j) * MQ__LANES)));
    }
}

/* Instantiations: MR rows x NB channel blocks. */
#define INST_ALL(name, fn)                                                                      \
    INST(name, fn, 1, 1) INST(name, fn, 2, 1) INST(name, fn, 3, 1) INST(name, fn, 4, 1)        \
    INST(name, fn, 1, 2) INST(name, fn, 2, 2) INST(name, fn, 3, 2) INST(name, fn, 4, 2)        \
    INST(name, fn, 1, 4) INST(name, fn, 2, 4) INST(name, fn, 3, 4) INST(name, fn, 4, 4)        \
    static const tile_body name##_table[5][3] = {                                              \
        {0, 0, 0},                                                                              \
        {name##_1x1, name##_1x2, name##_1x4},                                                   \
        {name##_2x1, name##_2x2, name##_2x4},                                                   \
        {name##_3x1, name##_3x2, name##_3x4},                                                   \
        {name##_4x1, name##_4x2, name##_4x4}};

INST_ALL(flt, float_tile)
INST_ALL(wo, wonly_tile)
INST_ALL(itg, int_tile)

/* Covers rows [m0, m1) x blocks [b0, b1): four blocks at a time for single rows (more
 * independent accumulators while streaming weights), else 4 x 2 tiles. */
static void drive(const tile_body (*tab)[3], const mq__lin *L, const mq__act *A, int64_t m0,
                  int64_t m1, int64_t b0, int64_t b1, float *y, int64_t ldy) {
    int64_t b = b0;
    for (; b + 4 <= b1; b += 4)
        for (int64_t m = m0; m < m1; m += 4) {
            int mr = m1 - m >= 4 ? 4 : (int)(m1 - m);
            tab[mr][2](L, A, m, b, y, ldy);
        }
    for (; b < b1; b += 2) {
        int nb = b + 2 <= b1 ? 2 : 1;
        for (int64_t m = m0; m < m1; m += 4) {
            int mr = m1 - m >= 4 ? 4 : (int)(m1 - m);
            tab[mr][nb - 1](L, A, m, b, y, ldy);
        }
    }
}

/* With several row tiles, passes over k blocks keep the weights of the channel tile in L1/L2
 * while every row tile uses them (the sums continue exactly across passes). */
static void tile_float(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                       int64_t b1, float *y, int64_t ldy) {
    mq__act P = *A;
    int64_t kb = m1 - m0 > 4 ? 256 : L->K;
    for (P.k0 = 0; P.k0 < L->K; P.k0 = P.k1) {
        P.k1 = L->K - P.k0 > kb ? P.k0 + kb : L->K;
        drive(flt_table, L, &P, m0, m1, b0, b1, y, ldy);
    }
}
#define GEMV(NB, mode)                                                                          \
    static void gv_##NB##_##mode(const mq__lin *L, const mq__act *A, int64_t m, int64_t b,     \
                                 float *y) {                                                    \
        wonly_gemv_k(L, A, m, b, y, NB, mode);                                                  \
    }
GEMV(8, GV_I8) GEMV(4, GV_I8) GEMV(8, GV_I4) GEMV(4, GV_I4) GEMV(8, GV_I4Z) GEMV(4, GV_I4Z) GEMV(8, GV_I4T) GEMV(4, GV_I4T)

/* Single rows: eight blocks at a time, then four, the rest (and rows that cannot take the
 * 2^-24 form) by the general tiles. */
static void tile_wonly(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                       int64_t b1, float *y, int64_t ldy) {
    if (m1 - m0 == 1 && b1 - b0 >= 4) {
        void (*f8)(const mq__lin *, const mq__act *, int64_t, int64_t, float *) = NULL, (*f4)(
            const mq__lin *, const mq__act *, int64_t, int64_t, float *) = NULL;
        if (L->kind == MQ__W_I4 && L->has_zq4) f8 = gv_8_GV_I4Z, f4 = gv_4_GV_I4Z;
        else if (L->kind == MQ__W_I4 && scale_exact(A->xf + m0 * L->Kp, L->Kp, 0x1p-98f))
            f8 = gv_8_GV_I4T, f4 = gv_4_GV_I4T;
        else if (L->kind == MQ__W_I4) f8 = gv_8_GV_I4, f4 = gv_4_GV_I4;
        else if (!L->has_zpw && scale_exact(A->xf + m0 * L->Kp, L->Kp, 0x1p-102f))
            f8 = gv_8_GV_I8, f4 = gv_4_GV_I8;
        if (f8) {
            float *yr = y + m0 * ldy;
            for (; b0 + 8 <= b1; b0 += 8) f8(L, A, m0, b0, yr);
            for (; b0 + 4 <= b1; b0 += 4) f4(L, A, m0, b0, yr);
        }
    }
    drive(wo_table, L, A, m0, m1, b0, b1, y, ldy);
}
static void tile_integer(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                         int64_t b1, float *y, int64_t ldy) {
    drive(itg_table, L, A, m0, m1, b0, b1, y, ldy);
}

/* The reference's activation quantization (kernels.h) sixteen lanes at a time: the same
 * division, clamps (vminps returns its second operand for NaN, as the scalar v < c ? v : c
 * does), rounding and conversion; the tail under a mask. */
static void quant_row(const mq__lin *L, const float *x, uint8_t *xu, float *sx) {
    const int64_t K = L->K;
    const __m512 magic = _mm512_set1_ps(0x1.8p23f);
    float s;
    __m512 hi, lo, zp = _mm512_setzero_ps(), qmax = _mm512_set1_ps(255.0f);
    if (L->act == MQ_ACT_DYNAMIC) {
        __m512 amax = _mm512_setzero_ps(); /* never NaN: vmaxps keeps it for a NaN input */
        for (int64_t k = 0; k < K; k += 16) {
            __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1u);
            amax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + k)), amax);
        }
        float a = _mm512_reduce_max_ps(amax);
        s = a > 0 ? a / 127.0f : 1.0f;
        hi = _mm512_set1_ps(127.0f), lo = _mm512_set1_ps(-127.0f);
    } else {
        s = L->in_scale;
        zp = _mm512_set1_ps((float)L->za);
        hi = _mm512_set1_ps(512.0f), lo = _mm512_set1_ps(-512.0f);
    }
    const __m512 sv = _mm512_set1_ps(s);
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1u);
        __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + k), sv);
        v = _mm512_max_ps(_mm512_min_ps(v, hi), lo);
        __m512 q = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
        __m512i u;
        if (L->act == MQ_ACT_DYNAMIC) {
            u = _mm512_add_epi32(_mm512_cvttps_epi32(q), _mm512_set1_epi32(128));
        } else {
            q = _mm512_max_ps(_mm512_min_ps(_mm512_add_ps(q, zp), qmax), _mm512_setzero_ps());
            u = _mm512_cvttps_epi32(q);
        }
        _mm512_mask_cvtepi32_storeu_epi8(xu + k, m, u);
    }
    *sx = s;
}

static const mq__linear_fns fns = {tile_float, tile_wonly, tile_integer, quant_row};

const mq__linear_fns *mq__linear_fns_avx512(void) { return &fns; }
