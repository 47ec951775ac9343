/* AVX-512 quantization kernels; identical results to qkernels_ref.c. Tails use masks. */
#include "quant/quant_internal.h"

#include <float.h>
#include <immintrin.h>

static inline __mmask16 tail_mask(size_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Sixteen values of a F32, F16 or BF16 source from element i (lanes outside m: 0), widened
 * exactly to f32. */
ALWAYS_INLINE __m512 load16(const void *x, mq_dtype dt, size_t i, __mmask16 m) {
    const char *p = (const char *)x;
    if (dt == MQ_F32) return _mm512_maskz_loadu_ps(m, p + 4 * i);
    __m256i h = _mm256_maskz_loadu_epi16(m, p + 2 * i);
    if (dt == MQ_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* NaNs are found by an unordered compare, infinities in the final min and max. The sign of a
 * zero min or max may differ from the reference's (lane order): no caller can tell, as
 * ranges are widened to include 0.0f. */
ALWAYS_INLINE bool minmax_t(const void *x, mq_dtype dt, size_t n, float *mn, float *mx) {
    __m512 lo0 = _mm512_set1_ps(_mm512_cvtss_f32(load16(x, dt, 0, 1)));
    __m512 hi0 = lo0, lo1 = lo0, hi1 = lo0;
    __mmask16 nan = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 a = load16(x, dt, i, 0xffff), b = load16(x, dt, i + 16, 0xffff);
        lo0 = _mm512_min_ps(lo0, a);
        hi0 = _mm512_max_ps(hi0, a);
        lo1 = _mm512_min_ps(lo1, b);
        hi1 = _mm512_max_ps(hi1, b);
        nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 a = load16(x, dt, i, m);
        lo0 = _mm512_mask_min_ps(lo0, m, lo0, a);
        hi0 = _mm512_mask_max_ps(hi0, m, hi0, a);
        nan |= _mm512_mask_cmp_ps_mask(m, a, a, _CMP_UNORD_Q);
    }
    float l = _mm512_reduce_min_ps(_mm512_min_ps(lo0, lo1));
    float h = _mm512_reduce_max_ps(_mm512_max_ps(hi0, hi1));
    *mn = l;
    *mx = h;
    return nan == 0 && l >= -FLT_MAX && h <= FLT_MAX;
}

static bool minmax_avx512(const float *x, size_t n, float *mn, float *mx) {
    return minmax_t(x, MQ_F32, n, mn, mx);
}

static bool minmax_src_avx512(const void *x, mq_dtype dt, size_t n, float *mn, float *mx) {
    if (dt == MQ_F16) return minmax_t(x, MQ_F16, n, mn, mx);
    if (dt == MQ_BF16) return minmax_t(x, MQ_BF16, n, mn, mx);
    return minmax_t(x, MQ_F32, n, mn, mx);
}

/* Codes of 16 values (lanes outside m: 0). */
ALWAYS_INLINE __m512i round16(const void *x, mq_dtype dt, size_t i, __mmask16 m, __m512 inv,
                              __m512 lo, __m512 hi, __m512i add) {
    __m512 v = _mm512_mul_ps(load16(x, dt, i, m), inv);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    /* the conversion rounds in the current mode, as the reference's round does */
    return _mm512_maskz_add_epi32(m, _mm512_cvtps_epi32(v), add);
}

ALWAYS_INLINE void quantize_t(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                              int32_t add, uint8_t *codes) {
    const __m512 inv = _mm512_set1_ps(p->inv), lo = _mm512_set1_ps(p->lo),
                 hi = _mm512_set1_ps(p->hi);
    const __m512i vadd = _mm512_set1_epi32(add);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm512_cvtepi32_epi8(round16(x, dt, i, 0xffff, inv, lo, hi, vadd));
        __m128i b = _mm512_cvtepi32_epi8(round16(x, dt, i + 16, 0xffff, inv, lo, hi, vadd));
        __m128i c = _mm512_cvtepi32_epi8(round16(x, dt, i + 32, 0xffff, inv, lo, hi, vadd));
        __m128i d = _mm512_cvtepi32_epi8(round16(x, dt, i + 48, 0xffff, inv, lo, hi, vadd));
        _mm256_storeu_si256((__m256i *)(codes + i), _mm256_set_m128i(b, a));
        _mm256_storeu_si256((__m256i *)(codes + i + 32), _mm256_set_m128i(d, c));
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512i q = round16(x, dt, i, m, inv, lo, hi, vadd);
        _mm512_mask_cvtepi32_storeu_epi8(codes + i, m, q); /* keeps the low byte */
    }
}

static void quantize_avx512(const float *x, size_t n, const mq_qround *p, int32_t add,
                            uint8_t *codes) {
    quantize_t(x, MQ_F32, n, p, add, codes);
}

static void quantize_src_avx512(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                                int32_t add, uint8_t *codes) {
    if (dt == MQ_F16) quantize_t(x, MQ_F16, n, p, add, codes);
    else if (dt == MQ_BF16) quantize_t(x, MQ_BF16, n, p, add, codes);
    else quantize_t(x, MQ_F32, n, p, add, codes);
}

/* Codes (< 16, absent ones 0) of each 32-bit pair joined in its low byte by a 64-bit shift
 * (odd code << 4 | even code), then eight such bytes narrowed out of the 64-bit lanes. */
ALWAYS_INLINE __m128i pack16(__m512i q) {
    return _mm512_cvtepi64_epi8(_mm512_or_si512(q, _mm512_srli_epi64(q, 28)));
}

ALWAYS_INLINE void quantize4_t(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                               int32_t add, uint8_t *dst) {
    const __m512 inv = _mm512_set1_ps(p->inv), lo = _mm512_set1_ps(p->lo),
                 hi = _mm512_set1_ps(p->hi);
    const __m512i vadd = _mm512_set1_epi32(add);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m128i a = pack16(round16(x, dt, i, 0xffff, inv, lo, hi, vadd));
        __m128i b = pack16(round16(x, dt, i + 16, 0xffff, inv, lo, hi, vadd));
        __m128i c = pack16(round16(x, dt, i + 32, 0xffff, inv, lo, hi, vadd));
        __m128i d = pack16(round16(x, dt, i + 48, 0xffff, inv, lo, hi, vadd));
        __m256i v = _mm256_set_m128i(_mm_unpacklo_epi64(c, d), _mm_unpacklo_epi64(a, b));
        _mm256_storeu_si256((__m256i *)(dst + i / 2), v);
    }
    for (; i < n; i += 16) {
        size_t left = n - i;
        __mmask16 m = tail_mask(left);
        __m512i q = round16(x, dt, i, m, inv, lo, hi, vadd);
        __mmask8 bytes = (__mmask8)(left >= 16 ? 0xff : (1u << ((left + 1) / 2)) - 1);
        _mm512_mask_cvtepi64_storeu_epi8(dst + i / 2, bytes,
                                         _mm512_or_si512(q, _mm512_srli_epi64(q, 28)));
    }
}

static void quantize4_src_avx512(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                                 int32_t add, uint8_t *dst) {
    if (dt == MQ_F16) quantize4_t(x, MQ_F16, n, p, add, dst);
    else if (dt == MQ_BF16) quantize4_t(x, MQ_BF16, n, p, add, dst);
    else quantize4_t(x, MQ_F32, n, p, add, dst);
}

/* Error terms of 16 values xv (weights wv, or NULL w). */
ALWAYS_INLINE __m512 err16(__m512 xv, const float *w, __m512 wv, __m512 scale, __m512 inv,
                           __m512 lo, __m512 hi) {
    __m512 v = _mm512_mul_ps(xv, inv);
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    v = _mm512_roundscale_ps(v, _MM_FROUND_CUR_DIRECTION);
    __m512 d = _mm512_sub_ps(xv, _mm512_mul_ps(v, scale));
    __m512 e = _mm512_mul_ps(d, d);
    if (w) e = _mm512_mul_ps(e, wv);
    return e;
}

/* mq__sum_lanes16's tree in registers: lanes i + 8, then i + 4, i + 2, i + 1. */
ALWAYS_INLINE float sum_lanes16(__m512 acc) {
    __m256 v = _mm256_add_ps(_mm512_castps512_ps256(acc),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* Errors of all NC candidates in one pass over x: each vector of x is loaded once and meets
 * every candidate (NC independent accumulator chains, parameters as vectors in memory), with
 * no per-candidate branches; each accumulator is then reduced by the reference's tree. */
ALWAYS_INLINE void sqerr_all(const float *x, const float *w, size_t n, const mq_qround *qr,
                             int NC, float *out) {
    __m512 acc[MQ_MAX_CANDIDATES], vs[MQ_MAX_CANDIDATES], vi[MQ_MAX_CANDIDATES],
        vl[MQ_MAX_CANDIDATES], vh[MQ_MAX_CANDIDATES];
    #pragma GCC unroll 16
    for (int c = 0; c < NC; c++) {
        acc[c] = _mm512_setzero_ps();
        vs[c] = _mm512_set1_ps(qr[c].scale);
        vi[c] = _mm512_set1_ps(qr[c].inv);
        vl[c] = _mm512_set1_ps(qr[c].lo);
        vh[c] = _mm512_set1_ps(qr[c].hi);
    }
    for (size_t i = 0; i < n; i += 16) {
        /* absent elements are 0 and add exactly 0 */
        __mmask16 m = tail_mask(n - i);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        __m512 wv = w ? _mm512_maskz_loadu_ps(m, w + i) : xv;
        #pragma GCC unroll 16
        for (int c = 0; c < NC; c++)
            acc[c] = _mm512_add_ps(acc[c], err16(xv, w, wv, vs[c], vi[c], vl[c], vh[c]));
    }
    #pragma GCC unroll 16
    for (int c = 0; c < NC; c++) out[c] = sum_lanes16(acc[c]);
}

static float sqerr_avx512(const float *x, const float *w, size_t n, const mq_qround *p) {
    float e;
    if (w) sqerr_all(x, w, n, p, 1, &e);
    else sqerr_all(x, NULL, n, p, 1, &e);
    return e;
}

/* sqerr_all with the count a constant in each instance, so that its loops unroll. */
#define SQERR_ALL_CASE(k) \
    case k: w ? sqerr_all(x, w, n, qr, k, e) : sqerr_all(x, NULL, n, qr, k, e); break;

static int search_avx512(const float *x, const float *w, size_t n, float mn, float mx,
                         const mq_qround *qr, int nc, float *err) {
    (void)mn;
    (void)mx;
    float e[MQ_MAX_CANDIDATES];
    switch (nc) {
        SQERR_ALL_CASE(1) SQERR_ALL_CASE(2) SQERR_ALL_CASE(3) SQERR_ALL_CASE(4)
        SQERR_ALL_CASE(5) SQERR_ALL_CASE(6) SQERR_ALL_CASE(7) SQERR_ALL_CASE(8)
        SQERR_ALL_CASE(9) SQERR_ALL_CASE(10) SQERR_ALL_CASE(11) SQERR_ALL_CASE(12)
        SQERR_ALL_CASE(13) SQERR_ALL_CASE(14) SQERR_ALL_CASE(15) SQERR_ALL_CASE(16)
    default: return -1;
    }
    return mq__search_pick(e, nc, err);
}

/* Fixed-point errors (mq_qfix) of NC candidates, 32 values per vector; the 32-bit lanes
 * (at most 2 * 2^26 per vector) are widened every 256 values. */
ALWAYS_INLINE void sqerr_fix_t(const float *x, size_t n, float k, const mq_qfix *q, int NC,
                               int64_t *d) {
    __m512i vm[MQ_MAX_CANDIDATES], vl[MQ_MAX_CANDIDATES], vh[MQ_MAX_CANDIDATES];
    #pragma GCC unroll 16
    for (int c = 0; c < NC; c++) {
        vm[c] = _mm512_set1_epi16((short)q[c].m);
        vl[c] = _mm512_set1_epi16((short)q[c].lo);
        vh[c] = _mm512_set1_epi16((short)q[c].hi);
        d[c] = 0;
    }
    const __m512 vk = _mm512_set1_ps(k);
    const __m512i half = _mm512_set1_epi16(128), mask = _mm512_set1_epi16(-256);
    for (size_t b = 0; b < n; b += 256) {
        size_t end = n - b < 256 ? n : b + 256;
        __m512i acc[MQ_MAX_CANDIDATES];
        #pragma GCC unroll 16
        for (int c = 0; c < NC; c++) acc[c] = _mm512_setzero_si512();
        for (size_t i = b; i < end; i += 32) {
            /* absent values are X = 0, whose term is 0 */
            __m512 a = _mm512_maskz_loadu_ps(tail_mask(end - i), x + i);
            __m512 e = _mm512_maskz_loadu_ps(i + 16 < end ? tail_mask(end - i - 16) : 0,
                                             x + i + 16);
            __m256i xa = _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(a, vk)));
            __m256i xe = _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(_mm512_mul_ps(e, vk)));
            __m512i X = _mm512_inserti64x4(_mm512_castsi256_si512(xa), xe, 1);
            #pragma GCC unroll 16
            for (int c = 0; c < NC; c++) {
                __m512i t = _mm512_mulhrs_epi16(X, vm[c]);
                __m512i v = _mm512_min_epi16(_mm512_max_epi16(t, vl[c]), vh[c]);
                v = _mm512_and_si512(_mm512_add_epi16(v, half), mask);
                __m512i e16 = _mm512_sub_epi16(t, v);
                acc[c] = _mm512_add_epi32(acc[c], _mm512_madd_epi16(e16, e16));
            }
        }
        #pragma GCC unroll 16
        for (int c = 0; c < NC; c++) {
            __m512i w = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc[c])),
                                         _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc[c], 1)));
            d[c] += _mm512_reduce_add_epi64(w);
        }
    }
}

#define SQERR_FIX_CASE(c) \
    case c: sqerr_fix_t(x, n, k, q, c, d); break;

static void sqerr_fix_avx512(const float *x, size_t n, float k, const mq_qfix *q, int nc,
                             int64_t *d) {
    switch (nc) {
        SQERR_FIX_CASE(1) SQERR_FIX_CASE(2) SQERR_FIX_CASE(3) SQERR_FIX_CASE(4)
        SQERR_FIX_CASE(5) SQERR_FIX_CASE(6) SQERR_FIX_CASE(7) SQERR_FIX_CASE(8)
        SQERR_FIX_CASE(9) SQERR_FIX_CASE(10) SQERR_FIX_CASE(11) SQERR_FIX_CASE(12)
        SQERR_FIX_CASE(13) SQERR_FIX_CASE(14) SQERR_FIX_CASE(15) SQERR_FIX_CASE(16)
    default: mq__sqerr_fix_ref(x, n, k, q, nc, d); break;
    }
}

static void pack4_avx512(const uint8_t *codes, size_t n, uint8_t *dst) {
    const __m512i pair = _mm512_set1_epi16(0x1001); /* even code * 1 + odd code * 16 */
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i v = _mm512_maddubs_epi16(_mm512_loadu_si512(codes + i), pair);
        _mm256_storeu_si256((__m256i *)(dst + i / 2), _mm512_cvtepi16_epi8(v));
    }
    if (i < n) mq__pack4_ref(codes + i, n - i, dst + i / 2);
}

static void dequantize_avx512(const uint8_t *codes, size_t n, uint8_t flip, float sub,
                              float scale, float *out) {
    const __m512 vsub = _mm512_set1_ps(sub), vscale = _mm512_set1_ps(scale);
    const __m128i vflip = _mm_set1_epi8((char)flip);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m128i b = _mm_xor_si128(_mm_maskz_loadu_epi8(m, codes + i), vflip);
        __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_sub_ps(v, vsub), vscale));
    }
}

const mq_qkernels *mq__qkernels_avx512(void) {
    static const mq_qkernels k = {minmax_avx512,       quantize_avx512,
                                  sqerr_avx512,        pack4_avx512,
                                  dequantize_avx512,   minmax_src_avx512,
                                  quantize_src_avx512, quantize4_src_avx512,
                                  search_avx512, sqerr_fix_avx512};
    return &k;
}
