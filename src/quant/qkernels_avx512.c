/* AVX-512 quantization kernels; identical results to qkernels_ref.c. Tails use masks. */
#include "quant/quant_internal.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>

#include "quant/qload_avx512.h"

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

/* v kept in a register: the compiler would otherwise read it again as the memory operand of
 * each use, and repeated loads of a line that comes from DRAM cost about a third of the
 * min/max speed. */
ALWAYS_INLINE __m512i in_register(__m512i v) {
    __asm__("" : "+v"(v));
    return v;
}

/* BF16 min/max in 16-bit integers: t(x) = x ^ ((x >> 15) & 0x7fff) maps the BF16 bits to
 * signed words in the order of their values (-0 just below +0; NaNs beyond the infinities,
 * positive ones above +Inf, negative ones below -Inf), and t(t(x)) = x. Two operations per
 * 32 values map them, a signed min and max take their range: no widening and no separate
 * NaN test (a NaN or an Inf is a max word >= t(+Inf) or a min word <= t(-Inf)). */
ALWAYS_INLINE __m512i bf16_order(__m512i v) {
    /* a ^ (b & c) */
    return _mm512_ternarylogic_epi32(v, _mm512_srai_epi16(v, 15), _mm512_set1_epi16(0x7fff), 0x78);
}

/* The BF16 many-group kernels prefetch the source PF_AHEAD bytes beyond what they read.
 * Groups of a row or more (per channel) spread it over both passes, one line for every two
 * lines read: the min/max pass of a span fetches the first half of the span, the codes pass
 * the second half (fetching the next span from the codes pass alone was 10-15 % slower).
 * Shorter groups fetch the whole span in the min/max pass, a line per line read: since that
 * pass takes max |x| (symmetric) it runs about three times as fast as the codes, and from
 * DRAM bf16 -> INT4 g128 (1 thread) went 22.1 -> 23.2 GB/s. */
enum { PF_AHEAD = 8192 };

/* The distance: 16 KB for groups of a row or more, whose single-group passes run faster
 * (from DRAM 16 KB was about 5 % faster than 8 KB for bf16 -> INT8 per channel, 1 thread;
 * 24 and 32 KB were slower, and groups of 128 lost with 16 KB). */
ALWAYS_INLINE size_t pf_ahead(size_t gs) { return gs >= 1024 ? 16384 : PF_AHEAD; }

/* 2 when the min/max pass fetches the whole span (group g's part at pf + 2 * g * gs), 1 when
 * the first half (at pf + g * gs). */
ALWAYS_INLINE size_t pf_share(size_t gs) { return gs >= 1024 ? 1 : 2; }

/* The ordered words' min (*lo) and max (*hi) of BF16 x[0, n), n >= 1, per word lane;
 * prefetches for each 128 bytes read a line at pf + i (f 1) or two at pf + 2 i (f 2; pf
 * NULL: none). */
ALWAYS_INLINE void range_bf16(const char *p, size_t n, __m512i *lo, __m512i *hi,
                              const char *pf, size_t f) {
    __m512i l0 = _mm512_set1_epi16(0x7fff), h0 = _mm512_set1_epi16((short)0x8000);
    __m512i l1 = l0, h1 = h0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        if (pf) {
            _mm_prefetch(pf + f * i, _MM_HINT_T0);
            if (f == 2) _mm_prefetch(pf + 2 * i + 64, _MM_HINT_T0);
        }
        __m512i a = bf16_order(in_register(_mm512_loadu_si512(p + 2 * i)));
        __m512i b = bf16_order(in_register(_mm512_loadu_si512(p + 2 * i + 64)));
        l0 = _mm512_min_epi16(l0, a);
        h0 = _mm512_max_epi16(h0, a);
        l1 = _mm512_min_epi16(l1, b);
        h1 = _mm512_max_epi16(h1, b);
    }
    for (; i < n; i += 32) {
        __mmask32 m = n - i >= 32 ? 0xffffffffu : (1u << (n - i)) - 1;
        __m512i a = bf16_order(_mm512_maskz_loadu_epi16(m, p + 2 * i));
        l0 = _mm512_mask_min_epi16(l0, m, l0, a);
        h0 = _mm512_mask_max_epi16(h0, m, h0, a);
    }
    *lo = _mm512_min_epi16(l0, l1);
    *hi = _mm512_max_epi16(h0, h1);
}

/* Ordered words lo (min) and hi (max) of one range: false when it holds a NaN or an Inf. */
ALWAYS_INLINE bool bf16_finite(__m512i lo, __m512i hi) {
    return (_mm512_cmpgt_epi16_mask(hi, _mm512_set1_epi16(0x7f7f)) |
            _mm512_cmplt_epi16_mask(lo, _mm512_set1_epi16((short)0x8080))) == 0;
}

/* An ordered word back to its BF16 value as f32, in the low 16 bits of each 32-bit lane. */
ALWAYS_INLINE __m512 bf16_value(__m512i t) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(bf16_order(t), 16));
}

ALWAYS_INLINE __m512i mm16(__m512i a, __m512i b, int max) {
    return max ? _mm512_max_epi16(a, b) : _mm512_min_epi16(a, b);
}
#define SHUF32(a, b, imm)                                                                     \
    _mm512_castps_si512(_mm512_shuffle_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b), imm))

/* min/max of 16 BF16 groups of gs elements: each group's 32 word lanes, then the tree of
 * minmax16_t on words leaves group g's two words in dword lane g (before the permutation).
 * Group g prefetches from pf + f * g * gs (range_bf16). */
ALWAYS_INLINE bool minmax16_bf16(const char *x, size_t gs, float *mn, float *mx,
                                 const char *pf, size_t f) {
    __m512i l2[4], h2[4];
    for (int q = 0; q < 4; q++) {
        __m512i l1[2], h1[2];
        for (int p = 0; p < 2; p++) {
            size_t g = (size_t)(4 * q + 2 * p);
            __m512i la, ha, lb, hb;
            range_bf16(x + 2 * g * gs, gs, &la, &ha, pf + f * g * gs, f);
            range_bf16(x + 2 * (g + 1) * gs, gs, &lb, &hb, pf + f * (g + 1) * gs, f);
            l1[p] = mm16(_mm512_shuffle_i32x4(la, lb, 0x44), _mm512_shuffle_i32x4(la, lb, 0xee), 0);
            h1[p] = mm16(_mm512_shuffle_i32x4(ha, hb, 0x44), _mm512_shuffle_i32x4(ha, hb, 0xee), 1);
        }
        l2[q] = mm16(_mm512_shuffle_i32x4(l1[0], l1[1], 0x88), _mm512_shuffle_i32x4(l1[0], l1[1], 0xdd), 0);
        h2[q] = mm16(_mm512_shuffle_i32x4(h1[0], h1[1], 0x88), _mm512_shuffle_i32x4(h1[0], h1[1], 0xdd), 1);
    }
    __m512i l3a = mm16(_mm512_unpacklo_epi64(l2[0], l2[1]), _mm512_unpackhi_epi64(l2[0], l2[1]), 0);
    __m512i l3b = mm16(_mm512_unpacklo_epi64(l2[2], l2[3]), _mm512_unpackhi_epi64(l2[2], l2[3]), 0);
    __m512i h3a = mm16(_mm512_unpacklo_epi64(h2[0], h2[1]), _mm512_unpackhi_epi64(h2[0], h2[1]), 1);
    __m512i h3b = mm16(_mm512_unpacklo_epi64(h2[2], h2[3]), _mm512_unpackhi_epi64(h2[2], h2[3]), 1);
    __m512i l = mm16(SHUF32(l3a, l3b, 0x88), SHUF32(l3a, l3b, 0xdd), 0);
    __m512i h = mm16(SHUF32(h3a, h3b, 0x88), SHUF32(h3a, h3b, 0xdd), 1);
    /* the two words of each dword, then lane 4k + i holds group k + 4i */
    l = _mm512_min_epi16(l, _mm512_rol_epi32(l, 16));
    h = _mm512_max_epi16(h, _mm512_rol_epi32(h, 16));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_storeu_ps(mn, _mm512_permutexvar_ps(order, bf16_value(l)));
    _mm512_storeu_ps(mx, _mm512_permutexvar_ps(order, bf16_value(h)));
    return bf16_finite(l, h);
}

/* min/max of one BF16 group of n elements (pf: range_bf16). */
ALWAYS_INLINE bool minmax1_bf16(const char *x, size_t n, float *mn, float *mx, const char *pf,
                                size_t f) {
    __m512i l, h;
    range_bf16(x, n, &l, &h, pf, f);
    __m256i l8 = _mm256_min_epi16(_mm512_castsi512_si256(l), _mm512_extracti64x4_epi64(l, 1));
    __m256i h8 = _mm256_max_epi16(_mm512_castsi512_si256(h), _mm512_extracti64x4_epi64(h, 1));
    __m128i l4 = _mm_min_epi16(_mm256_castsi256_si128(l8), _mm256_extracti128_si256(l8, 1));
    __m128i h4 = _mm_max_epi16(_mm256_castsi256_si128(h8), _mm256_extracti128_si256(h8, 1));
    l4 = _mm_min_epi16(l4, _mm_srli_si128(l4, 8));
    h4 = _mm_max_epi16(h4, _mm_srli_si128(h4, 8));
    l4 = _mm_min_epi16(l4, _mm_srli_si128(l4, 4));
    h4 = _mm_max_epi16(h4, _mm_srli_si128(h4, 4));
    l4 = _mm_min_epi16(l4, _mm_srli_si128(l4, 2));
    h4 = _mm_max_epi16(h4, _mm_srli_si128(h4, 2));
    __m512i lh = _mm512_castsi128_si512(_mm_unpacklo_epi16(l4, h4)); /* word 0: min, 1: max */
    __m512 v = bf16_value(_mm512_unpacklo_epi16(lh, lh));
    *mn = _mm512_cvtss_f32(v);
    *mx = _mm512_cvtss_f32(_mm512_castsi512_ps(_mm512_srli_epi64(_mm512_castps_si512(v), 32)));
    return bf16_finite(_mm512_set1_epi16((short)_mm_extract_epi16(l4, 0)),
                       _mm512_set1_epi16((short)_mm_extract_epi16(h4, 0)));
}

/* max |x| of BF16 x[0, n), n >= 1, per word lane, as magnitude words (x & 0x7fff: their order
 * is that of |x|, a NaN above +Inf): one AND (with the load) and one max per 32 values, half
 * of range_bf16's work. Prefetches as range_bf16. */
ALWAYS_INLINE __m512i absmax_bf16(const char *p, size_t n, const char *pf, size_t f) {
    const __m512i mag = _mm512_set1_epi16(0x7fff);
    if (n == 128) { /* the common group size: two chains of two */
        if (pf)
            for (size_t k = 0; k < 2 * f; k++) _mm_prefetch(pf + 64 * k, _MM_HINT_T0);
        __m512i a = _mm512_and_si512(_mm512_loadu_si512(p), mag);
        __m512i b = _mm512_and_si512(_mm512_loadu_si512(p + 64), mag);
        __m512i c = _mm512_and_si512(_mm512_loadu_si512(p + 128), mag);
        __m512i d = _mm512_and_si512(_mm512_loadu_si512(p + 192), mag);
        return _mm512_max_epi16(_mm512_max_epi16(a, b), _mm512_max_epi16(c, d));
    }
    __m512i m0 = _mm512_setzero_si512(), m1 = m0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        if (pf) {
            _mm_prefetch(pf + f * i, _MM_HINT_T0);
            if (f == 2) _mm_prefetch(pf + 2 * i + 64, _MM_HINT_T0);
        }
        m0 = _mm512_max_epi16(m0, _mm512_and_si512(_mm512_loadu_si512(p + 2 * i), mag));
        m1 = _mm512_max_epi16(m1, _mm512_and_si512(_mm512_loadu_si512(p + 2 * i + 64), mag));
    }
    for (; i < n; i += 32) { /* absent values are 0, below every magnitude */
        __mmask32 m = n - i >= 32 ? 0xffffffffu : (1u << (n - i)) - 1;
        m0 = _mm512_max_epi16(m0, _mm512_and_si512(_mm512_maskz_loadu_epi16(m, p + 2 * i), mag));
    }
    return _mm512_max_epi16(m0, m1);
}

/* max |x| of 16 BF16 groups of gs elements (minmax16_bf16's tree, max only) into mx, its
 * negation into mn; false when one holds a NaN or an Inf (a magnitude word above that of
 * FLT_MAX's BF16). */
ALWAYS_INLINE bool absmax16_bf16(const char *x, size_t gs, float *mn, float *mx, const char *pf,
                                 size_t f) {
    __m512i h2[4];
    for (int q = 0; q < 4; q++) {
        __m512i h1[2];
        for (int p = 0; p < 2; p++) {
            size_t g = (size_t)(4 * q + 2 * p);
            __m512i a = absmax_bf16(x + 2 * g * gs, gs, pf + f * g * gs, f);
            __m512i b = absmax_bf16(x + 2 * (g + 1) * gs, gs, pf + f * (g + 1) * gs, f);
            h1[p] = mm16(_mm512_shuffle_i32x4(a, b, 0x44), _mm512_shuffle_i32x4(a, b, 0xee), 1);
        }
        h2[q] = mm16(_mm512_shuffle_i32x4(h1[0], h1[1], 0x88), _mm512_shuffle_i32x4(h1[0], h1[1], 0xdd), 1);
    }
    __m512i h3a = mm16(_mm512_unpacklo_epi64(h2[0], h2[1]), _mm512_unpackhi_epi64(h2[0], h2[1]), 1);
    __m512i h3b = mm16(_mm512_unpacklo_epi64(h2[2], h2[3]), _mm512_unpackhi_epi64(h2[2], h2[3]), 1);
    __m512i h = mm16(SHUF32(h3a, h3b, 0x88), SHUF32(h3a, h3b, 0xdd), 1);
    h = _mm512_max_epi16(h, _mm512_rol_epi32(h, 16)); /* both words of a dword: its group's */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512i a = _mm512_permutexvar_epi32(order, _mm512_slli_epi32(h, 16));
    _mm512_storeu_si512(mx, a);
    _mm512_storeu_si512(mn, _mm512_xor_si512(a, _mm512_set1_epi32((int)0x80000000u)));
    return _mm512_cmpgt_epi16_mask(h, _mm512_set1_epi16(0x7f7f)) == 0;
}

/* max |x| of one BF16 group of n elements (pf: range_bf16). */
ALWAYS_INLINE bool absmax1_bf16(const char *x, size_t n, float *mn, float *mx, const char *pf,
                                size_t f) {
    __m512i h = absmax_bf16(x, n, pf, f);
    __m256i h8 = _mm256_max_epi16(_mm512_castsi512_si256(h), _mm512_extracti64x4_epi64(h, 1));
    __m128i h4 = _mm_max_epi16(_mm256_castsi256_si128(h8), _mm256_extracti128_si256(h8, 1));
    h4 = _mm_max_epi16(h4, _mm_srli_si128(h4, 8));
    h4 = _mm_max_epi16(h4, _mm_srli_si128(h4, 4));
    h4 = _mm_max_epi16(h4, _mm_srli_si128(h4, 2));
    uint32_t w = (uint16_t)_mm_extract_epi16(h4, 0);
    *mx = _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128((int)(w << 16))));
    *mn = -*mx;
    return w <= 0x7f7f;
}

static bool minmax_avx512(const float *x, size_t n, float *mn, float *mx) {
    return minmax_t(x, MQ_F32, n, mn, mx);
}

static bool minmax_src_avx512(const void *x, mq_dtype dt, size_t n, float *mn, float *mx) {
    if (dt == MQ_F16) return minmax_t(x, MQ_F16, n, mn, mx);
    if (dt == MQ_BF16) return minmax1_bf16((const char *)x, n, mn, mx, NULL, 1);
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

/* Prefetches the source lines of elements [i, i + 64) moved `ahead` bytes on (0: none): the
 * many-group kernels fetch the next block while they work on this one from L1. */
ALWAYS_INLINE void prefetch64(const void *x, mq_dtype dt, size_t i, size_t ahead) {
    if (!ahead) return;
    const char *p = (const char *)x + i * (dt == MQ_F32 ? 4 : 2) + ahead;
    for (int k = 0; k < (dt == MQ_F32 ? 4 : 2); k++) _mm_prefetch(p + 64 * k, _MM_HINT_T0);
}

ALWAYS_INLINE void quantize_t(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                              int32_t add, uint8_t *codes, size_t ahead) {
    const __m512 inv = _mm512_set1_ps(p->inv), lo = _mm512_set1_ps(p->lo),
                 hi = _mm512_set1_ps(p->hi);
    const __m512i vadd = _mm512_set1_epi32(add);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch64(x, dt, i, ahead);
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
    quantize_t(x, MQ_F32, n, p, add, codes, 0);
}

static void quantize_src_avx512(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                                int32_t add, uint8_t *codes) {
    if (dt == MQ_F16) quantize_t(x, MQ_F16, n, p, add, codes, 0);
    else if (dt == MQ_BF16) quantize_t(x, MQ_BF16, n, p, add, codes, 0);
    else quantize_t(x, MQ_F32, n, p, add, codes, 0);
}

/* Codes (< 16, absent ones 0) of each 32-bit pair joined in its low byte by a 64-bit shift
 * (odd code << 4 | even code), then eight such bytes narrowed out of the 64-bit lanes. */
ALWAYS_INLINE __m128i pack16(__m512i q) {
    return _mm512_cvtepi64_epi8(_mm512_or_si512(q, _mm512_srli_epi64(q, 28)));
}

ALWAYS_INLINE void quantize4_t(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                               int32_t add, uint8_t *dst, size_t ahead) {
    const __m512 inv = _mm512_set1_ps(p->inv), lo = _mm512_set1_ps(p->lo),
                 hi = _mm512_set1_ps(p->hi);
    const __m512i vadd = _mm512_set1_epi32(add);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        prefetch64(x, dt, i, ahead);
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
    if (dt == MQ_F16) quantize4_t(x, MQ_F16, n, p, add, dst, 0);
    else if (dt == MQ_BF16) quantize4_t(x, MQ_BF16, n, p, add, dst, 0);
    else quantize4_t(x, MQ_F32, n, p, add, dst, 0);
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

/* Squared errors of nb <= 4 candidates in one pass over x: x is loaded once, and the
 * candidates' accumulators are independent chains the core overlaps. */
ALWAYS_INLINE void sqerr_batch(const float *x, const float *w, size_t n,
                               const mq_qround *const *q, int nb, float *out) {
    __m512 scale[4], inv[4], lo[4], hi[4], acc[4];
    #pragma GCC unroll 4
    for (int k = 0; k < nb; k++) {
        scale[k] = _mm512_set1_ps(q[k]->scale);
        inv[k] = _mm512_set1_ps(q[k]->inv);
        lo[k] = _mm512_set1_ps(q[k]->lo);
        hi[k] = _mm512_set1_ps(q[k]->hi);
        acc[k] = _mm512_setzero_ps();
    }
    for (size_t i = 0; i < n; i += 16) {
        /* absent elements are 0 and add exactly 0 */
        __mmask16 m = tail_mask(n - i);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        __m512 wv = w ? _mm512_maskz_loadu_ps(m, w + i) : xv;
        #pragma GCC unroll 4
        for (int k = 0; k < nb; k++)
            acc[k] = _mm512_add_ps(acc[k], err16(xv, w, wv, scale[k], inv[k], lo[k], hi[k]));
    }
    #pragma GCC unroll 4
    for (int k = 0; k < nb; k++) out[k] = sum_lanes16(acc[k]);
}

/* mq__sqerr_bound of every candidate at once, one candidate per lane (the same operations,
 * so the same values). */
static void bounds16(float mn, float mx, const mq_qround *qr, int nc, float *lb) {
    float s[16], inv[16], lo[16], hi[16];
    for (int c = 0; c < 16; c++) {
        const mq_qround *q = &qr[c < nc ? c : 0];
        s[c] = q->scale;
        inv[c] = q->inv;
        lo[c] = q->lo;
        hi[c] = q->hi;
    }
    __m512 vs = _mm512_loadu_ps(s), vi = _mm512_loadu_ps(inv), vl = _mm512_loadu_ps(lo),
           vh = _mm512_loadu_ps(hi), e = _mm512_setzero_ps();
    for (int k = 0; k < (mn == mx ? 1 : 2); k++) {
        __m512 x = _mm512_set1_ps(k ? mx : mn);
        __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, vi), vl), vh);
        v = _mm512_roundscale_ps(v, _MM_FROUND_CUR_DIRECTION);
        __m512 d = _mm512_sub_ps(x, _mm512_mul_ps(v, vs));
        e = k ? _mm512_add_ps(e, _mm512_mul_ps(d, d)) : _mm512_mul_ps(d, d);
    }
    _mm512_storeu_ps(lb, e);
}

/* sqerr_batch with nb a constant in each call, so that its loops unroll. */
static void batch_avx512(const float *x, const float *w, size_t n, const mq_qround *const *q,
                         int nb, float *e) {
    switch (nb) {
    case 4: sqerr_batch(x, w, n, q, 4, e); break;
    case 3: sqerr_batch(x, w, n, q, 3, e); break;
    case 2: sqerr_batch(x, w, n, q, 2, e); break;
    default: sqerr_batch(x, w, n, q, 1, e); break;
    }
}

/* sqerr_all with the count a constant in each instance, so that its loops unroll. */
#define SQERR_ALL_CASE(k) \
    case k: w ? sqerr_all(x, w, n, qr, k, e) : sqerr_all(x, NULL, n, qr, k, e); break;

static int search_avx512(const float *x, const float *w, size_t n, float mn, float mx,
                         const mq_qround *qr, int nc, float *err) {
    /* long rows (per channel): four candidates per pass, leaving out those whose lower
     * bound cannot beat the best so far, saves more than the branches cost */
    if (n > 512 && !w) {
        float lb[16];
        bounds16(mn, mx, qr, nc, lb);
        return mq__search_batched(x, w, n, qr, nc, lb, err, batch_avx512);
    }
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

ALWAYS_INLINE const void *src_at(const void *x, mq_dtype dt, size_t i) {
    return (const char *)x + i * (dt == MQ_F32 ? 4 : 2);
}

/* Thirty-two F32 or F16 values (widened) from element i as two f32 vectors. (BF16 has its
 * own min/max in 16-bit integers below.) */
ALWAYS_INLINE void load32_raw(const void *x, mq_dtype dt, size_t i, __m512 *a, __m512 *b) {
    *a = _mm512_castsi512_ps(in_register(_mm512_castps_si512(load16(x, dt, i, 0xffff))));
    *b = _mm512_castsi512_ps(in_register(_mm512_castps_si512(load16(x, dt, i + 16, 0xffff))));
}

/* The largest magnitude's bits of a and b joined into *e. A NaN or an Inf has the largest
 * magnitude bits of all; min and max would drop a NaN in their first operand. */
ALWAYS_INLINE void bits_max(__m512i *e, __m512 a, __m512 b) {
    const __m512i abs = _mm512_set1_epi32(0x7fffffff);
    *e = _mm512_max_epu32(*e, _mm512_and_si512(_mm512_castps_si512(a), abs));
    *e = _mm512_max_epu32(*e, _mm512_and_si512(_mm512_castps_si512(b), abs));
}

/* No NaN and no Inf among the values bits_max saw. */
ALWAYS_INLINE bool bits_finite(__m512i e) {
    return _mm512_cmpge_epu32_mask(e, _mm512_set1_epi32(0x7f800000)) == 0;
}

/* Min and max of x[0, n) (F32 or F16), n >= 1, as 16 lanes each; *bad: bits_max of
 * every value. */
ALWAYS_INLINE void range_t(const void *x, mq_dtype dt, size_t n, __m512 *lo, __m512 *hi,
                           __m512i *bad) {
    __m512 l0 = _mm512_set1_ps(INFINITY), h0 = _mm512_set1_ps(-INFINITY), l1 = l0, h1 = h0;
    __m512i e = *bad;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a, b, c, d;
        load32_raw(x, dt, i, &a, &b);
        load32_raw(x, dt, i + 32, &c, &d);
        l0 = _mm512_min_ps(l0, _mm512_min_ps(a, b));
        h0 = _mm512_max_ps(h0, _mm512_max_ps(a, b));
        l1 = _mm512_min_ps(l1, _mm512_min_ps(c, d));
        h1 = _mm512_max_ps(h1, _mm512_max_ps(c, d));
        bits_max(&e, a, b);
        bits_max(&e, c, d);
    }
    if (i + 32 <= n) {
        __m512 a, b;
        load32_raw(x, dt, i, &a, &b);
        l0 = _mm512_min_ps(l0, _mm512_min_ps(a, b));
        h0 = _mm512_max_ps(h0, _mm512_max_ps(a, b));
        bits_max(&e, a, b);
        i += 32;
    }
    for (; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 a = load16(x, dt, i, m); /* widened exactly */
        l1 = _mm512_mask_min_ps(l1, m, l1, a);
        h1 = _mm512_mask_max_ps(h1, m, h1, a);
        bits_max(&e, a, a);
    }
    *lo = _mm512_min_ps(l0, l1);
    *hi = _mm512_max_ps(h0, h1);
    *bad = e;
}

/* Two vectors of 16 lanes reduced to one, each lane of the result the min (or max) of two
 * lanes of one input: the steps of a tree that leaves group g's reduction in lane
 * g of one vector (before the last permutation). */
ALWAYS_INLINE __m512 mm(__m512 a, __m512 b, int max) {
    return max ? _mm512_max_ps(a, b) : _mm512_min_ps(a, b);
}
ALWAYS_INLINE __m512 join1(__m512 a, __m512 b, int max) { /* 128-bit halves */
    return mm(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xee), max);
}
ALWAYS_INLINE __m512 join2(__m512 a, __m512 b, int max) { /* 128-bit quarters */
    return mm(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xdd), max);
}
ALWAYS_INLINE __m512 join3(__m512 a, __m512 b, int max) { /* 64-bit pairs */
    return mm(_mm512_shuffle_ps(a, b, 0x44), _mm512_shuffle_ps(a, b, 0xee), max);
}
ALWAYS_INLINE __m512 join4(__m512 a, __m512 b, int max) { /* single lanes */
    return mm(_mm512_shuffle_ps(a, b, 0x88), _mm512_shuffle_ps(a, b, 0xdd), max);
}

/* min/max of 16 groups of gs elements at once: each group's 16 lanes, then a tree of
 * shuffles leaves group g in lane g; the divisions that follow get 16 groups per vector. */
ALWAYS_INLINE bool minmax16_t(const void *x, mq_dtype dt, size_t gs, float *mn, float *mx) {
    __m512 l2[4], h2[4];
    __m512i bad = _mm512_setzero_si512();
    for (int q = 0; q < 4; q++) {
        __m512 l1[2], h1[2];
        for (int p = 0; p < 2; p++) {
            size_t g = (size_t)(4 * q + 2 * p);
            __m512 la, ha, lb, hb;
            range_t(src_at(x, dt, g * gs), dt, gs, &la, &ha, &bad);
            range_t(src_at(x, dt, (g + 1) * gs), dt, gs, &lb, &hb, &bad);
            l1[p] = join1(la, lb, 0);
            h1[p] = join1(ha, hb, 1);
        }
        l2[q] = join2(l1[0], l1[1], 0);
        h2[q] = join2(h1[0], h1[1], 1);
    }
    /* lane 4k + i now holds group k + 4i */
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512 l = join4(join3(l2[0], l2[1], 0), join3(l2[2], l2[3], 0), 0);
    __m512 h = join4(join3(h2[0], h2[1], 1), join3(h2[2], h2[3], 1), 1);
    _mm512_storeu_ps(mn, _mm512_permutexvar_ps(order, l));
    _mm512_storeu_ps(mx, _mm512_permutexvar_ps(order, h));
    return bits_finite(bad);
}

/* 16 groups: minmax16_bf16, or absmax16_bf16 when `absmax` (a constant in each instance). */
ALWAYS_INLINE bool range16_bf16(const char *x, size_t gs, float *mn, float *mx, const char *pf,
                                size_t f, const bool absmax) {
    return absmax ? absmax16_bf16(x, gs, mn, mx, pf, f) : minmax16_bf16(x, gs, mn, mx, pf, f);
}

/* minmax_groups_t (or with `absmax`, absmax_groups) on BF16 with pf_share(gs) == f; f and
 * absmax are constants in each instance. */
ALWAYS_INLINE bool range_groups_bf16(const char *p, size_t gs, size_t ng, float *mn, float *mx,
                                     size_t f, const bool absmax) {
    /* the span (or its first half) pf_ahead bytes on: group g's part at pf + f * g * gs */
    const char *pf = p + pf_ahead(gs);
    size_t g = 0;
    if (gs == 128) /* the common size, its loops unrolled */
        for (; g + 16 <= ng; g += 16)
            if (!range16_bf16(p + 2 * g * 128, 128, mn + g, mx + g, pf + f * g * 128, f, absmax))
                return false;
    for (; g + 16 <= ng; g += 16)
        if (!range16_bf16(p + 2 * g * gs, gs, mn + g, mx + g, pf + f * g * gs, f, absmax))
            return false;
    for (; g < ng; g++) {
        const char *x = p + 2 * g * gs, *pg = pf + f * g * gs;
        if (!(absmax ? absmax1_bf16(x, gs, &mn[g], &mx[g], pg, f)
                     : minmax1_bf16(x, gs, &mn[g], &mx[g], pg, f)))
            return false;
    }
    return true;
}

ALWAYS_INLINE bool minmax_groups_t(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                                   float *mx) {
    size_t g = 0;
    if (dt == MQ_BF16)
        return pf_share(gs) == 1 ? range_groups_bf16((const char *)x, gs, ng, mn, mx, 1, false)
                                 : range_groups_bf16((const char *)x, gs, ng, mn, mx, 2, false);
    if (gs == 128) /* the common size, its loops unrolled */
        for (; g + 16 <= ng; g += 16)
            if (!minmax16_t(src_at(x, dt, g * gs), dt, 128, mn + g, mx + g)) return false;
    if (gs % 32 == 0)
        for (; g + 16 <= ng; g += 16)
            if (!minmax16_t(src_at(x, dt, g * gs), dt, gs, mn + g, mx + g)) return false;
    /* single groups (per channel) as minmax_src: its NaN compare is cheaper than bits_max
     * on widened values */
    for (; g < ng; g++)
        if (!minmax_t(src_at(x, dt, g * gs), dt, gs, &mn[g], &mx[g])) return false;
    return true;
}

static bool minmax_groups_avx512(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                                 float *mx) {
    if (dt == MQ_F16) return minmax_groups_t(x, MQ_F16, gs, ng, mn, mx);
    if (dt == MQ_BF16) return minmax_groups_t(x, MQ_BF16, gs, ng, mn, mx);
    return minmax_groups_t(x, MQ_F32, gs, ng, mn, mx);
}

static bool absmax_groups_avx512(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                                 float *mx) {
    if (dt != MQ_BF16) { /* F32 and F16: from their min and max */
        if (!minmax_groups_avx512(x, dt, gs, ng, mn, mx)) return false;
        for (size_t g = 0; g < ng; g += 16) {
            __mmask16 m = tail_mask(ng - g);
            __m512 l = _mm512_maskz_loadu_ps(m, mn + g), h = _mm512_maskz_loadu_ps(m, mx + g);
            __m512 a = _mm512_max_ps(_mm512_xor_ps(l, _mm512_set1_ps(-0.0f)), h);
            _mm512_mask_storeu_ps(mx + g, m, a);
            _mm512_mask_storeu_ps(mn + g, m, _mm512_xor_ps(a, _mm512_set1_ps(-0.0f)));
        }
        return true;
    }
    return pf_share(gs) == 1 ? range_groups_bf16((const char *)x, gs, ng, mn, mx, 1, true)
                             : range_groups_bf16((const char *)x, gs, ng, mn, mx, 2, true);
}

/* mq__params_minmax_ref on up to 16 groups (lanes m), one group per lane: the same IEEE
 * operations in the same order (max(a, b) is a > b ? a : b, as the reference's conditions;
 * the conversion rounds as nearbyintf). */
static bool params_minmax_avx512(const mq_qformat *f, mq_scheme scheme, size_t ng,
                                 const float *mn, const float *mx, float *scale, uint8_t *zp8,
                                 mq_qround *qr, int32_t *add) {
    /* a few groups (per channel): the scalar rule is quicker than a vector of divisions */
    if (ng < 4) return mq__params_minmax_ref(f, scheme, ng, mn, mx, scale, zp8, qr, add);
    const __m512 zero = _mm512_setzero_ps(), big = _mm512_set1_ps(FLT_MAX);
    const __m512i qmin = _mm512_set1_epi32(f->qmin), qmax = _mm512_set1_epi32(f->qmax);
    for (size_t g = 0; g < ng; g += 16) {
        __mmask16 m = tail_mask(ng - g);
        __m512 lo = _mm512_min_ps(_mm512_maskz_loadu_ps(m, mn + g), zero);
        __m512 hi = _mm512_max_ps(_mm512_maskz_loadu_ps(m, mx + g), zero);
        __m512 s;
        __m512i zp;
        if (scheme == MQ_SYMMETRIC) {
            __m512 amax = _mm512_max_ps(_mm512_xor_ps(lo, _mm512_set1_ps(-0.0f)), hi); /* -lo > hi ? -lo : hi */
            s = _mm512_div_ps(amax, _mm512_set1_ps((float)(f->qmax - f->qmin) / 2.0f));
            s = _mm512_max_ps(s, _mm512_set1_ps(FLT_EPSILON));
            zp = _mm512_set1_epi32(f->qmin < 0 ? 0 : (f->qmin + f->qmax + 1) / 2);
        } else {
            s = _mm512_div_ps(_mm512_sub_ps(hi, lo), _mm512_set1_ps((float)(f->qmax - f->qmin)));
            s = _mm512_max_ps(s, _mm512_set1_ps(FLT_EPSILON));
            zp = _mm512_sub_epi32(qmin, _mm512_cvtps_epi32(_mm512_div_ps(lo, s)));
            zp = _mm512_min_epi32(_mm512_max_epi32(zp, qmin), qmax);
        }
        __m512 ql = _mm512_cvtepi32_ps(_mm512_sub_epi32(qmin, zp));
        __m512 qh = _mm512_cvtepi32_ps(_mm512_sub_epi32(qmax, zp));
        __m512 a = _mm512_mul_ps(ql, s), b = _mm512_mul_ps(qh, s);
        const __m512 nb = _mm512_set1_ps(-FLT_MAX);
        __mmask16 ok = _mm512_cmp_ps_mask(s, zero, _CMP_GT_OQ) &
                       _mm512_cmp_ps_mask(s, big, _CMP_LE_OQ) &
                       _mm512_cmp_ps_mask(a, nb, _CMP_GE_OQ) &
                       _mm512_cmp_ps_mask(a, big, _CMP_LE_OQ) &
                       _mm512_cmp_ps_mask(b, nb, _CMP_GE_OQ) & _mm512_cmp_ps_mask(b, big, _CMP_LE_OQ);
        if ((ok & m) != m) return false;
        __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), s);
        _mm512_mask_storeu_ps(scale + g, m, s);
        if (zp8) _mm512_mask_cvtepi32_storeu_epi8(zp8 + g, m, zp);
        _mm512_mask_storeu_epi32(add + g, m, _mm512_add_epi32(zp, _mm512_set1_epi32(f->code_offset)));
        /* {scale, inv, lo, hi} of each group: a 4 x 16 transpose */
        __m512 t0 = _mm512_unpacklo_ps(s, inv), t1 = _mm512_unpackhi_ps(s, inv);
        __m512 t2 = _mm512_unpacklo_ps(ql, qh), t3 = _mm512_unpackhi_ps(ql, qh);
        __m512d u0 = _mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2));
        __m512d u1 = _mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2));
        __m512d u2 = _mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3));
        __m512d u3 = _mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3));
        /* u0 holds groups 0, 4, 8, 12; u1 1, 5, 9, 13; u2 2, 6, ..; u3 3, 7, .. */
        __m512d v0 = _mm512_shuffle_f64x2(u0, u1, 0x44), v1 = _mm512_shuffle_f64x2(u2, u3, 0x44);
        __m512d v2 = _mm512_shuffle_f64x2(u0, u1, 0xee), v3 = _mm512_shuffle_f64x2(u2, u3, 0xee);
        __m512d o[4] = {_mm512_shuffle_f64x2(v0, v1, 0x88), _mm512_shuffle_f64x2(v0, v1, 0xdd),
                        _mm512_shuffle_f64x2(v2, v3, 0x88), _mm512_shuffle_f64x2(v2, v3, 0xdd)};
        size_t left = ng - g < 16 ? ng - g : 16;
        for (int k = 0; k < 4; k++) {
            size_t in = left > 4 * (size_t)k ? left - 4 * (size_t)k : 0;
            __mmask8 bm = (__mmask8)(in >= 4 ? 0xff : (1u << (2 * in)) - 1);
            _mm512_mask_storeu_pd((double *)(qr + g + 4 * (size_t)k), bm, o[k]);
        }
    }
    return true;
}

/* A run of codes stored in 64-byte pieces on whole cache lines: a destination 4-byte aligned
 * but not on a line gets each line from two pieces (one vpermt2d), the first and the last
 * line masked; a 64-byte store across two lines costs about as much as two. Others (odd
 * addresses) store the pieces as they are. */
typedef struct line_writer {
    uint8_t *at;     /* where the next piece goes */
    __m512i prev;    /* the last piece (its last s dwords are not stored yet) */
    __m512i idx;     /* lane i: i + 16 - s, from prev below 16, from the new piece above */
    unsigned s;      /* dwords from the line start to `at` */
    bool pending;    /* prev's tail waits for the next line */
} line_writer;

ALWAYS_INLINE void writer_init(line_writer *w, uint8_t *at) {
    unsigned off = (unsigned)((uintptr_t)at & 63);
    w->at = at;
    w->s = off % 4 ? 0 : off / 4;
    w->idx = _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32(16 - (int)w->s));
    w->prev = _mm512_setzero_si512();
    w->pending = false;
}

ALWAYS_INLINE void writer_put(line_writer *w, __m512i v) {
    if (!w->s) {
        _mm512_storeu_si512(w->at, v);
    } else {
        uint8_t *line = w->at - 4 * w->s;
        __m512i out = _mm512_permutex2var_epi32(w->prev, w->idx, v);
        if (w->pending) _mm512_store_si512(line, out);
        else _mm512_mask_storeu_epi32(line, (__mmask16)(0xffffu << w->s), out);
        w->prev = v;
        w->pending = true;
    }
    w->at += 64;
}

/* The tail of the last piece; the writer then stands at w->at with nothing pending. */
ALWAYS_INLINE void writer_flush(line_writer *w) {
    if (!w->pending) return;
    __m512i out = _mm512_permutex2var_epi32(w->prev, w->idx, w->prev);
    _mm512_mask_storeu_epi32(w->at - 4 * w->s, (__mmask16)((1u << w->s) - 1), out);
    w->pending = false;
}

/* 8-bit codes claim their lines for writing PW_AHEAD bytes before they are stored, so the
 * stores' read-for-ownership misses overlap with the work: from DRAM, bf16 -> INT8 per
 * channel was about 10 % faster; no gain for 4-bit codes, which write half as much. */
enum { PW_AHEAD = 2048 };

ALWAYS_INLINE void prefetch_write(const uint8_t *p) {
    __asm__ volatile("prefetchw %0" ::"m"(*(const char *)p)); /* never faults */
}

/* The 32-bit codes of the even and the odd elements of 32 BF16 values (one 64-byte load: the
 * even elements shifted up, the odd ones with the low bits cleared) as signed 16-bit words:
 * each 128-bit lane holds four even codes, then the four odd ones. Clamped above (a value at
 * or above 2^31 would convert to INT_MIN) on the words (`word`: min with wtop, see
 * word_top), else on the products (min with hi, an integer). */
ALWAYS_INLINE __m512i words_pairs(const char *p, __m512 inv, __m512 hi, __m512i wtop,
                                  bool word) {
    __m512i v = word ? _mm512_min_epi16(_mm512_loadu_si512(p), wtop)
                     : in_register(_mm512_loadu_si512(p));
    __m512 e = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), inv);
    __m512 o = _mm512_mul_ps(
        _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u))), inv);
    if (!word) {
        e = _mm512_min_ps(e, hi);
        o = _mm512_min_ps(o, hi);
    }
    /* the conversion rounds in the current mode, as the reference */
    return _mm512_packs_epi32(_mm512_cvtps_epi32(e), _mm512_cvtps_epi32(o));
}

/* The clamp above of the pack path on the BF16 words: min(word, top) as signed 16-bit
 * integers changes no negative value (their words are negative) and, inv > 0, keeps the
 * order of the positive ones and of their products. a = hi * scale is within 2^-23 of
 * hi / inv (inv = 1 / scale rounded), the value whose product is hi; let t0 be its BF16
 * truncation, normal: BF16 steps are 2^-8 to 2^-7 of the value, so the product of t0 - 1
 * lies in (hi (1 - 2^-6), hi] and that of t0 + 2 above hi. For hi in [1, 31] the codes of
 * t0 - 1 and of every larger value are hi's: top = t0 - 1. Where hi's code is the pack's
 * saturation (`sat`: 127 or 255, 8-bit), top = t0 + 2: the products above hi round to at
 * least hi and saturate to its code, and none reaches 2^31 (where the conversion gives
 * INT_MIN). One op per 32 values instead of two float min. -1: no word clamp. */
static inline int32_t word_top(float scale, float hi, bool sat) {
    float a = hi * scale;
    uint32_t ab;
    memcpy(&ab, &a, 4);
    int32_t t0 = (int32_t)(ab >> 16);
    if (t0 < 0x80 || t0 > (sat ? 0x7f7d : 0x7f7f) || !(hi >= 1.0f) || (!sat && !(hi <= 31.0f)))
        return -1; /* (top stays finite: an Inf is clamped too) */
    return sat ? t0 + 2 : t0 - 1;
}

/* A pack of words_pairs (a, b) holds in lane L a's even codes 4L..4L+3, a's odd ones, then
 * b's: the bytes of each lane interleaved, then a's 8-byte pieces before b's. */
#define PAIRS_BYTES                                                                       \
    _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15))
#define PAIRS_QWORDS _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7)

/* group_codes' pack path on BF16 from element 0 to the last whole piece: the next element. */
ALWAYS_INLINE size_t pack_codes(const char *px, size_t n, const mq_qround *p, int32_t add,
                                bool packed4, bool s8, __m512i wtop, bool word, line_writer *w,
                                const char *pf) {
    const __m512 inv = _mm512_set1_ps(p->inv), hi = _mm512_set1_ps(p->hi);
    const __m512i add16 = _mm512_set1_epi16((short)add); /* cl - lo: fits */
    size_t i = 0;
    if (packed4) {
        const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 16, 20, 24, 28,
                                                18, 22, 26, 30);
        for (; i + 128 <= n; i += 128) {
            if (pf) {
                _mm_prefetch(pf + i, _MM_HINT_T0);
                _mm_prefetch(pf + i + 64, _MM_HINT_T0);
            }
            const char *q = px + 2 * i;
            __m512i wa = _mm512_adds_epi16(words_pairs(q, inv, hi, wtop, word), add16);
            __m512i wb = _mm512_adds_epi16(words_pairs(q + 64, inv, hi, wtop, word), add16);
            __m512i wc = _mm512_adds_epi16(words_pairs(q + 128, inv, hi, wtop, word), add16);
            __m512i wd = _mm512_adds_epi16(words_pairs(q + 192, inv, hi, wtop, word), add16);
            /* lane L: a's even codes, a's odd ones, b's, each < 16; the odd ones joined
             * above the even ones in the low 4 bytes of each 64-bit lane */
            __m512i ab = _mm512_packus_epi16(wa, wb), cd = _mm512_packus_epi16(wc, wd);
            ab = _mm512_or_si512(ab, _mm512_srli_epi64(ab, 28));
            cd = _mm512_or_si512(cd, _mm512_srli_epi64(cd, 28));
            writer_put(w, _mm512_permutex2var_epi32(ab, order, cd));
        }
    } else {
        const __m512i bytes = PAIRS_BYTES;
        for (; i + 64 <= n; i += 64) {
            if (pf) _mm_prefetch(pf + i, _MM_HINT_T0);
            prefetch_write(w->at + PW_AHEAD);
            __m512i wa = words_pairs(px + 2 * i, inv, hi, wtop, word);
            __m512i wb = words_pairs(px + 2 * i + 64, inv, hi, wtop, word);
            if (add) {
                wa = _mm512_adds_epi16(wa, add16);
                wb = _mm512_adds_epi16(wb, add16);
            }
            __m512i r = s8 ? _mm512_packs_epi16(wa, wb) : _mm512_packus_epi16(wa, wb);
            r = _mm512_shuffle_epi8(r, bytes);
            writer_put(w, _mm512_permutexvar_epi64(PAIRS_QWORDS, r));
        }
    }
    return i;
}

/* One group of n values: codes at w->at, or packed two per byte (packed4); prefetches
 * `ahead` bytes on, or BF16 on the pack path a line at pf + i for each 128 bytes read
 * (pf_ahead; pf NULL: none). BF16 is read as pairs (words_pairs), and the clamp below is the
 * saturation of the packs: the code of a value under lo is lo + add, which is the least
 * value of the type packed to (0 for 4-bit and unsigned 8-bit codes, -128 for signed 8-bit
 * ones); values above hi are clamped on the words (top >= 0, word_top) or in float (the
 * packs' upper bounds are 15, 127 or 255 only for some). mode: codes_modes' answer (-1:
 * found here). F32 and F16, other offsets and the last values short of a piece
 * take the narrowing stores of quantize_t / quantize4_t, which are faster there. */
ALWAYS_INLINE void group_codes(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                               int32_t add, bool packed4, line_writer *w, size_t ahead,
                               int mode, const char *pf) {
    const char *px = (const char *)x;
    size_t i = 0;
    bool s8, u8, word = false;
    __m512i wtop = _mm512_setzero_si512();
    if (mode >= 0) { /* codes_modes' answer */
        s8 = mode == 2;
        u8 = mode == 1;
    } else {
        /* integer bounds whose codes pass the 16-bit words unsaturated */
        bool whole = p->lo >= -32000.0f && p->lo <= 32000.0f && p->hi >= -32000.0f &&
                     p->hi <= 32000.0f && (float)(int32_t)p->lo == p->lo &&
                     (float)(int32_t)p->hi == p->hi;
        /* sums that wrap as the vector ones do */
        int32_t cl = whole ? (int32_t)((uint32_t)(int32_t)p->lo + (uint32_t)add) : 1;
        int32_t ch = whole ? (int32_t)((uint32_t)(int32_t)p->hi + (uint32_t)add) : 1;
        s8 = whole && cl == -128 && ch >= cl && ch <= 127;
        u8 = whole && cl == 0 && ch >= 0 && ch <= (packed4 ? 15 : 255);
        /* long groups (per channel): the scalar rule's latency is spread over many values */
        if (dt == MQ_BF16 && (u8 || (s8 && !packed4)) && n >= 512) {
            int32_t top = word_top(p->scale, p->hi, !packed4 && ch == (s8 ? 127 : 255));
            word = top >= 0;
            wtop = _mm512_set1_epi16((short)top);
        }
    }
    if (dt == MQ_BF16 && (u8 || (s8 && !packed4))) {
        if (word) i = pack_codes(px, n, p, add, packed4, s8, wtop, true, w, pf);
        else i = pack_codes(px, n, p, add, packed4, s8, wtop, false, w, pf);
    }
    if (i == n) return;
    writer_flush(w);
    uint8_t *rest = w->at;
    if (packed4) quantize4_t(src_at(x, dt, i), dt, n - i, p, add, rest, ahead);
    else quantize_t(src_at(x, dt, i), dt, n - i, p, add, rest, ahead);
    writer_init(w, rest + (packed4 ? (n - i + 1) / 2 : n - i));
}

/* group_codes' choice for 16 groups at once, the same conditions in vectors: bit g of *u8 or
 * *s8 set when group g takes the unsigned or signed pack path. */
ALWAYS_INLINE void codes_modes(const mq_qround *qr, const int32_t *add, bool packed4,
                               __mmask16 *u8, __mmask16 *s8) {
    const __m512i sel = _mm512_setr_epi32(2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23,
                                          27, 31);
    const float *q = (const float *)qr;
    __m512 a = _mm512_permutex2var_ps(_mm512_loadu_ps(q), sel, _mm512_loadu_ps(q + 16));
    __m512 b = _mm512_permutex2var_ps(_mm512_loadu_ps(q + 32), sel, _mm512_loadu_ps(q + 48));
    __m512 lo = _mm512_shuffle_f32x4(a, b, 0x44), hi = _mm512_shuffle_f32x4(a, b, 0xee);
    const __m512 lim = _mm512_set1_ps(32000.0f), nlim = _mm512_set1_ps(-32000.0f);
    __mmask16 whole =
        _mm512_cmp_ps_mask(lo, nlim, _CMP_GE_OQ) & _mm512_cmp_ps_mask(lo, lim, _CMP_LE_OQ) &
        _mm512_cmp_ps_mask(hi, nlim, _CMP_GE_OQ) & _mm512_cmp_ps_mask(hi, lim, _CMP_LE_OQ) &
        _mm512_cmp_ps_mask(_mm512_roundscale_ps(lo, _MM_FROUND_TO_ZERO), lo, _CMP_EQ_OQ) &
        _mm512_cmp_ps_mask(_mm512_roundscale_ps(hi, _MM_FROUND_TO_ZERO), hi, _CMP_EQ_OQ);
    __m512i va = _mm512_loadu_si512(add);
    __m512i cl = _mm512_add_epi32(_mm512_cvttps_epi32(lo), va);
    __m512i ch = _mm512_add_epi32(_mm512_cvttps_epi32(hi), va);
    *s8 = whole & _mm512_cmpeq_epi32_mask(cl, _mm512_set1_epi32(-128)) &
          _mm512_cmpge_epi32_mask(ch, cl) & _mm512_cmple_epi32_mask(ch, _mm512_set1_epi32(127));
    *u8 = whole & _mm512_cmpeq_epi32_mask(cl, _mm512_setzero_si512()) &
          _mm512_cmpge_epi32_mask(ch, _mm512_setzero_si512()) &
          _mm512_cmple_epi32_mask(ch, _mm512_set1_epi32(packed4 ? 15 : 255));
}

/* Whole groups, their codes one run. F32 and F16: while group g is quantized from L1, the
 * same bytes of the next block (the source that follows this call's span) are prefetched;
 * BF16 groups of a row or more: the second half of the span pf_ahead bytes on
 * (minmax_groups_t fetched the first; it fetches all of shorter groups' spans). */
ALWAYS_INLINE void quantize_groups_t(const void *x, mq_dtype dt, size_t gs, size_t ng,
                                     const mq_qround *qr, const int32_t *add, bool packed4,
                                     uint8_t *dst) {
    size_t ahead = dt == MQ_BF16 ? 0 : ng * gs * (dt == MQ_F32 ? 4 : 2);
    /* BF16: group g's part at pf + g * gs, or none */
    const char *pf = pf_share(gs) == 1 ? (const char *)x + pf_ahead(gs) + ng * gs : NULL;
    line_writer w;
    writer_init(&w, dst);
    size_t g = 0;
    if (gs == 128 && dt == MQ_BF16) /* the common case: modes of 16 groups at once */
        for (; g + 16 <= ng; g += 16) {
            __mmask16 u8, s8;
            codes_modes(qr + g, add + g, packed4, &u8, &s8);
            for (size_t k = 0; k < 16; k++) {
                int mode = (u8 >> k) & 1 ? 1 : (s8 >> k) & 1 ? 2 : 0;
                group_codes(src_at(x, dt, (g + k) * 128), dt, 128, &qr[g + k], add[g + k],
                            packed4, &w, ahead, mode, pf ? pf + (g + k) * 128 : NULL);
            }
        }
    if (gs == 128) /* the common size, its loops unrolled */
        for (; g < ng; g++)
            group_codes(src_at(x, dt, g * 128), dt, 128, &qr[g], add[g], packed4, &w, ahead, -1,
                        pf ? pf + g * 128 : NULL);
    else
        for (; g < ng; g++)
            group_codes(src_at(x, dt, g * gs), dt, gs, &qr[g], add[g], packed4, &w, ahead, -1,
                        pf ? pf + g * gs : NULL);
    writer_flush(&w);
}

static void quantize_groups_avx512(const void *x, mq_dtype dt, size_t gs, size_t ng,
                                   const mq_qround *qr, const int32_t *add, bool packed4,
                                   uint8_t *dst) {
    if (dt == MQ_F16) quantize_groups_t(x, MQ_F16, gs, ng, qr, add, packed4, dst);
    else if (dt == MQ_BF16) quantize_groups_t(x, MQ_BF16, gs, ng, qr, add, packed4, dst);
    else quantize_groups_t(x, MQ_F32, gs, ng, qr, add, packed4, dst);
}

#define AVX512_TABLE(search_fix)                                                           \
    {minmax_avx512,        quantize_avx512,        sqerr_avx512,         pack4_avx512,         \
     dequantize_avx512,    minmax_src_avx512,      quantize_src_avx512,  quantize4_src_avx512, \
     search_avx512,        minmax_groups_avx512,   params_minmax_avx512, quantize_groups_avx512, \
     sqerr_fix_avx512,     search_fix,             absmax_groups_avx512}

const mq_qkernels *mq__qkernels_avx512(void) {
    static const mq_qkernels k = AVX512_TABLE(mq__search_fix_avx512);
    return &k;
}

const mq_qkernels *mq__qkernels_avx512_vbmi2(void) {
    static const mq_qkernels k = AVX512_TABLE(mq__search_fix_avx512_vbmi2);
    return &k;
}
