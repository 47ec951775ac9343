/* AVX2 quantization kernels; identical results to qkernels_ref.c. */
#include "quant/quant_internal.h"

#include <float.h>
#include <immintrin.h>
#include <string.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Eight values of a F32, F16 or BF16 source from element i, widened exactly to f32. */
ALWAYS_INLINE __m256 load8(const void *x, mq_dtype dt, size_t i) {
    const char *p = (const char *)x;
    if (dt == MQ_F32) return _mm256_loadu_ps((const float *)(p + 4 * i));
    __m128i h = _mm_loadu_si128((const __m128i *)(p + 2 * i));
    if (dt == MQ_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

ALWAYS_INLINE const void *offset(const void *x, mq_dtype dt, size_t i) {
    return (const char *)x + (dt == MQ_F32 ? 4 : 2) * i;
}

/* NaNs are found by an unordered compare, infinities in the final min and max. The sign of a
 * zero min or max may differ from the reference's (lane order): no caller can tell, as
 * ranges are widened to include 0.0f. */
ALWAYS_INLINE bool minmax_t(const void *x, mq_dtype dt, size_t n, float *mn, float *mx) {
    if (n < 16) return mq__minmax_src_ref(x, dt, n, mn, mx);
    size_t i = 0;
    __m256 lo0 = load8(x, dt, 0), hi0 = lo0, lo1 = lo0, hi1 = lo0;
    __m256 nan = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m256 a = load8(x, dt, i), b = load8(x, dt, i + 8);
        lo0 = _mm256_min_ps(lo0, a);
        hi0 = _mm256_max_ps(hi0, a);
        lo1 = _mm256_min_ps(lo1, b);
        hi1 = _mm256_max_ps(hi1, b);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    }
    bool finite = _mm256_movemask_ps(nan) == 0;
    float l[8], h[8];
    _mm256_storeu_ps(l, _mm256_min_ps(lo0, lo1));
    _mm256_storeu_ps(h, _mm256_max_ps(hi0, hi1));
    float tl = l[0], th = h[0];
    if (i < n) finite = mq__minmax_src_ref(offset(x, dt, i), dt, n - i, &tl, &th) && finite;
    for (int k = 0; k < 8; k++) {
        tl = l[k] < tl ? l[k] : tl;
        th = h[k] > th ? h[k] : th;
    }
    *mn = tl;
    *mx = th;
    return finite && tl >= -FLT_MAX && th <= FLT_MAX;
}

static bool minmax_avx2(const float *x, size_t n, float *mn, float *mx) {
    return minmax_t(x, MQ_F32, n, mn, mx);
}

static bool minmax_src_avx2(const void *x, mq_dtype dt, size_t n, float *mn, float *mx) {
    if (dt == MQ_F16) return minmax_t(x, MQ_F16, n, mn, mx);
    if (dt == MQ_BF16) return minmax_t(x, MQ_BF16, n, mn, mx);
    return minmax_t(x, MQ_F32, n, mn, mx);
}

ALWAYS_INLINE __m256i round8(__m256 x, __m256 inv, __m256 lo, __m256 hi, __m256i add) {
    __m256 v = _mm256_mul_ps(x, inv);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    /* the conversion rounds in the current mode, as the reference's round does */
    return _mm256_add_epi32(_mm256_cvtps_epi32(v), add);
}

/* 32 codes from element i, in order, one per byte. Values lie in [-128, 263]: saturating
 * packs to 16 bits are exact, then the low byte of each is kept. */
ALWAYS_INLINE __m256i codes32(const void *x, mq_dtype dt, size_t i, __m256 inv, __m256 lo,
                              __m256 hi, __m256i add) {
    const __m256i low8 = _mm256_set1_epi16(0xff);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i a = round8(load8(x, dt, i), inv, lo, hi, add);
    __m256i b = round8(load8(x, dt, i + 8), inv, lo, hi, add);
    __m256i c = round8(load8(x, dt, i + 16), inv, lo, hi, add);
    __m256i d = round8(load8(x, dt, i + 24), inv, lo, hi, add);
    __m256i ab = _mm256_and_si256(_mm256_packs_epi32(a, b), low8);
    __m256i cd = _mm256_and_si256(_mm256_packs_epi32(c, d), low8);
    return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
}

ALWAYS_INLINE void quantize_t(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                              int32_t add, uint8_t *codes) {
    const __m256 inv = _mm256_set1_ps(p->inv), lo = _mm256_set1_ps(p->lo),
                 hi = _mm256_set1_ps(p->hi);
    const __m256i vadd = _mm256_set1_epi32(add);
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm256_storeu_si256((__m256i *)(codes + i), codes32(x, dt, i, inv, lo, hi, vadd));
    if (i < n) mq__quantize_src_ref(offset(x, dt, i), dt, n - i, p, add, codes + i);
}

static void quantize_avx2(const float *x, size_t n, const mq_qround *p, int32_t add,
                          uint8_t *codes) {
    quantize_t(x, MQ_F32, n, p, add, codes);
}

static void quantize_src_avx2(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                              int32_t add, uint8_t *codes) {
    if (dt == MQ_F16) quantize_t(x, MQ_F16, n, p, add, codes);
    else if (dt == MQ_BF16) quantize_t(x, MQ_BF16, n, p, add, codes);
    else quantize_t(x, MQ_F32, n, p, add, codes);
}

/* 64 codes (< 16) become 32 bytes in registers: pairs of bytes joined by a multiply-add
 * (even * 1 + odd * 16), the 16-bit results packed back to bytes. */
ALWAYS_INLINE void quantize4_t(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                               int32_t add, uint8_t *dst) {
    const __m256 inv = _mm256_set1_ps(p->inv), lo = _mm256_set1_ps(p->lo),
                 hi = _mm256_set1_ps(p->hi);
    const __m256i vadd = _mm256_set1_epi32(add), pair = _mm256_set1_epi16(0x1001);
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m256i a = _mm256_maddubs_epi16(codes32(x, dt, i, inv, lo, hi, vadd), pair);
        __m256i b = _mm256_maddubs_epi16(codes32(x, dt, i + 32, inv, lo, hi, vadd), pair);
        __m256i v = _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(dst + i / 2), v);
    }
    if (i < n) mq__quantize4_src_ref(offset(x, dt, i), dt, n - i, p, add, dst + i / 2);
}

static void quantize4_src_avx2(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                               int32_t add, uint8_t *dst) {
    if (dt == MQ_F16) quantize4_t(x, MQ_F16, n, p, add, dst);
    else if (dt == MQ_BF16) quantize4_t(x, MQ_BF16, n, p, add, dst);
    else quantize4_t(x, MQ_F32, n, p, add, dst);
}

static inline __m256 err8(__m256 x, __m256 scale, __m256 inv, __m256 lo, __m256 hi) {
    __m256 v = _mm256_mul_ps(x, inv);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    v = _mm256_round_ps(v, _MM_FROUND_CUR_DIRECTION);
    __m256 d = _mm256_sub_ps(x, _mm256_mul_ps(v, scale));
    return _mm256_mul_ps(d, d);
}

/* mq__sum_lanes16's tree in registers: lanes i + 8, then i + 4, i + 2, i + 1. */
static inline float sum_lanes16_avx2(__m256 lo, __m256 hi) {
    __m256 v = _mm256_add_ps(lo, hi);
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
}

/* Squared errors of nb <= 4 candidates in one pass over x: x is loaded once, and the
 * candidates' accumulators (lanes 0-7 and 8-15 each) are independent chains the core
 * overlaps. */
ALWAYS_INLINE void sqerr_batch(const float *x, const float *w, size_t n,
                               const mq_qround *const *q, int nb, float *out) {
    __m256 acc0[4], acc1[4];
    #pragma GCC unroll 4
    for (int k = 0; k < nb; k++) acc0[k] = acc1[k] = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
        #pragma GCC unroll 4
        for (int k = 0; k < nb; k++) {
            const __m256 scale = _mm256_set1_ps(q[k]->scale), inv = _mm256_set1_ps(q[k]->inv),
                         lo = _mm256_set1_ps(q[k]->lo), hi = _mm256_set1_ps(q[k]->hi);
            __m256 e0 = err8(x0, scale, inv, lo, hi), e1 = err8(x1, scale, inv, lo, hi);
            if (w) {
                e0 = _mm256_mul_ps(e0, _mm256_loadu_ps(w + i));
                e1 = _mm256_mul_ps(e1, _mm256_loadu_ps(w + i + 8));
            }
            acc0[k] = _mm256_add_ps(acc0[k], e0);
            acc1[k] = _mm256_add_ps(acc1[k], e1);
        }
    }
    if (i < n) { /* masked tail: absent elements are 0 and add exactly 0 */
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        int r = (int)(n - i);
        __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(r), idx);
        __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(r - 8), idx);
        __m256 x0 = _mm256_maskload_ps(x + i, m0), x1 = _mm256_maskload_ps(x + i + 8, m1);
        #pragma GCC unroll 4
        for (int k = 0; k < nb; k++) {
            const __m256 scale = _mm256_set1_ps(q[k]->scale), inv = _mm256_set1_ps(q[k]->inv),
                         lo = _mm256_set1_ps(q[k]->lo), hi = _mm256_set1_ps(q[k]->hi);
            __m256 e0 = err8(x0, scale, inv, lo, hi), e1 = err8(x1, scale, inv, lo, hi);
            if (w) {
                e0 = _mm256_mul_ps(e0, _mm256_maskload_ps(w + i, m0));
                e1 = _mm256_mul_ps(e1, _mm256_maskload_ps(w + i + 8, m1));
            }
            acc0[k] = _mm256_add_ps(acc0[k], e0);
            acc1[k] = _mm256_add_ps(acc1[k], e1);
        }
    }
    #pragma GCC unroll 4
    for (int k = 0; k < nb; k++) out[k] = sum_lanes16_avx2(acc0[k], acc1[k]);
}

static float sqerr_avx2(const float *x, const float *w, size_t n, const mq_qround *p) {
    float e;
    sqerr_batch(x, w, n, &p, 1, &e);
    return e;
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
    for (int h = 0; h < 16; h += 8) {
        __m256 vs = _mm256_loadu_ps(s + h), vi = _mm256_loadu_ps(inv + h),
               vl = _mm256_loadu_ps(lo + h), vh = _mm256_loadu_ps(hi + h),
               e = _mm256_setzero_ps();
        for (int k = 0; k < (mn == mx ? 1 : 2); k++) {
            __m256 x = _mm256_set1_ps(k ? mx : mn);
            __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(x, vi), vl), vh);
            v = _mm256_round_ps(v, _MM_FROUND_CUR_DIRECTION);
            __m256 d = _mm256_sub_ps(x, _mm256_mul_ps(v, vs));
            e = k ? _mm256_add_ps(e, _mm256_mul_ps(d, d)) : _mm256_mul_ps(d, d);
        }
        _mm256_storeu_ps(lb + h, e);
    }
}

/* sqerr_batch with nb a constant in each call, so that its loops unroll. */
static void batch_avx2(const float *x, const float *w, size_t n, const mq_qround *const *q,
                       int nb, float *e) {
    switch (nb) {
    case 4: sqerr_batch(x, w, n, q, 4, e); break;
    case 3: sqerr_batch(x, w, n, q, 3, e); break;
    case 2: sqerr_batch(x, w, n, q, 2, e); break;
    default: sqerr_batch(x, w, n, q, 1, e); break;
    }
}

static int search_avx2(const float *x, const float *w, size_t n, float mn, float mx,
                       const mq_qround *qr, int nc, float *err) {
    float lb[16];
    if (!w) bounds16(mn, mx, qr, nc, lb);
    return mq__search_batched(x, w, n, qr, nc, w ? NULL : lb, err, batch_avx2);
}

static void pack4_avx2(const uint8_t *codes, size_t n, uint8_t *dst) {
    const __m256i pair = _mm256_set1_epi16(0x1001); /* even code * 1 + odd code * 16 */
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m256i a = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(codes + i)), pair);
        __m256i b = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(codes + i + 32)), pair);
        __m256i v = _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(dst + i / 2), v);
    }
    if (i < n) mq__pack4_ref(codes + i, n - i, dst + i / 2);
}

static void dequantize_avx2(const uint8_t *codes, size_t n, uint8_t flip, float sub,
                            float scale, float *out) {
    const __m256 vsub = _mm256_set1_ps(sub), vscale = _mm256_set1_ps(scale);
    const __m128i vflip = _mm_set1_epi8((char)flip);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i b = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)(codes + i)), vflip);
        __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_sub_ps(v, vsub), vscale));
    }
    if (i < n) mq__dequantize_ref(codes + i, n - i, flip, sub, scale, out + i);
}

/* Fixed-point errors (mq_qfix) of NC candidates, 16 values per vector (the pair order of
 * the packs does not matter: the sums are exact); the 32-bit lanes (at most 2 * 2^26 per
 * vector) are widened every 128 values. */
ALWAYS_INLINE void sqerr_fix_t(const float *x, size_t n, float k, const mq_qfix *q, int NC,
                               int64_t *d) {
    __m256i vm[MQ_MAX_CANDIDATES], vl[MQ_MAX_CANDIDATES], vh[MQ_MAX_CANDIDATES];
    #pragma GCC unroll 16
    for (int c = 0; c < NC; c++) {
        vm[c] = _mm256_set1_epi16((short)q[c].m);
        vl[c] = _mm256_set1_epi16((short)q[c].lo);
        vh[c] = _mm256_set1_epi16((short)q[c].hi);
        d[c] = 0;
    }
    const __m256 vk = _mm256_set1_ps(k);
    const __m256i half = _mm256_set1_epi16(128), mask = _mm256_set1_epi16(-256);
    size_t full = n / 16 * 16;
    for (size_t b = 0; b < full; b += 128) {
        size_t end = full - b < 128 ? full : b + 128;
        __m256i acc[MQ_MAX_CANDIDATES];
        #pragma GCC unroll 16
        for (int c = 0; c < NC; c++) acc[c] = _mm256_setzero_si256();
        for (size_t i = b; i < end; i += 16) {
            __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vk));
            __m256i e = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vk));
            __m256i X = _mm256_packs_epi32(a, e); /* |X| <= 2^14: no saturation */
            #pragma GCC unroll 16
            for (int c = 0; c < NC; c++) {
                __m256i t = _mm256_mulhrs_epi16(X, vm[c]);
                __m256i v = _mm256_min_epi16(_mm256_max_epi16(t, vl[c]), vh[c]);
                v = _mm256_and_si256(_mm256_add_epi16(v, half), mask);
                __m256i e16 = _mm256_sub_epi16(t, v);
                acc[c] = _mm256_add_epi32(acc[c], _mm256_madd_epi16(e16, e16));
            }
        }
        #pragma GCC unroll 16
        for (int c = 0; c < NC; c++) {
            __m256i w = _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(acc[c])),
                                         _mm256_cvtepi32_epi64(_mm256_extracti128_si256(acc[c], 1)));
            __m128i h = _mm_add_epi64(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            d[c] += _mm_cvtsi128_si64(h) + _mm_extract_epi64(h, 1);
        }
    }
    if (full < n) {
        int64_t t[MQ_MAX_CANDIDATES];
        mq__sqerr_fix_ref(x + full, n - full, k, q, NC, t);
        for (int c = 0; c < NC; c++) d[c] += t[c];
    }
}

#define SQERR_FIX_CASE(c) \
    case c: sqerr_fix_t(x, n, k, q, c, d); break;

static void sqerr_fix_avx2(const float *x, size_t n, float k, const mq_qfix *q, int nc,
                           int64_t *d) {
    switch (nc) {
        SQERR_FIX_CASE(1) SQERR_FIX_CASE(2) SQERR_FIX_CASE(3) SQERR_FIX_CASE(4)
        SQERR_FIX_CASE(5) SQERR_FIX_CASE(6) SQERR_FIX_CASE(7) SQERR_FIX_CASE(8)
        SQERR_FIX_CASE(9) SQERR_FIX_CASE(10) SQERR_FIX_CASE(11) SQERR_FIX_CASE(12)
        SQERR_FIX_CASE(13) SQERR_FIX_CASE(14) SQERR_FIX_CASE(15) SQERR_FIX_CASE(16)
    default: mq__sqerr_fix_ref(x, n, k, q, nc, d); break;
    }
}

ALWAYS_INLINE bool minmax_groups_t(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                                   float *mx) {
    for (size_t g = 0; g < ng; g++)
        if (!minmax_t(offset(x, dt, g * gs), dt, gs, &mn[g], &mx[g])) return false;
    return true;
}

static bool minmax_groups_avx2(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                               float *mx) {
    if (dt == MQ_F16) return minmax_groups_t(x, MQ_F16, gs, ng, mn, mx);
    if (dt == MQ_BF16) return minmax_groups_t(x, MQ_BF16, gs, ng, mn, mx);
    return minmax_groups_t(x, MQ_F32, gs, ng, mn, mx);
}

/* mq__params_minmax_ref on 8 groups at a time, one group per lane: the same IEEE operations
 * in the same order (max(a, b) is a > b ? a : b, as the reference's conditions; the
 * conversion rounds as nearbyintf). */
static bool params_minmax_avx2(const mq_qformat *f, mq_scheme scheme, size_t ng,
                               const float *mn, const float *mx, float *scale, uint8_t *zp8,
                               mq_qround *qr, int32_t *add) {
    const __m256 zero = _mm256_setzero_ps(), big = _mm256_set1_ps(FLT_MAX),
                 nbig = _mm256_set1_ps(-FLT_MAX);
    const __m256i qmin = _mm256_set1_epi32(f->qmin), qmax = _mm256_set1_epi32(f->qmax);
    for (size_t g = 0; g < ng; g += 8) {
        size_t n = ng - g < 8 ? ng - g : 8;
        float bl[8] = {0}, bh[8] = {0};
        memcpy(bl, mn + g, n * sizeof(float));
        memcpy(bh, mx + g, n * sizeof(float));
        __m256 lo = _mm256_min_ps(_mm256_loadu_ps(bl), zero);
        __m256 hi = _mm256_max_ps(_mm256_loadu_ps(bh), zero);
        __m256 s;
        __m256i zp;
        if (scheme == MQ_SYMMETRIC) {
            __m256 amax = _mm256_max_ps(_mm256_xor_ps(lo, _mm256_set1_ps(-0.0f)), hi);
            s = _mm256_div_ps(amax, _mm256_set1_ps((float)(f->qmax - f->qmin) / 2.0f));
            s = _mm256_max_ps(s, _mm256_set1_ps(FLT_EPSILON));
            zp = _mm256_set1_epi32(f->qmin < 0 ? 0 : (f->qmin + f->qmax + 1) / 2);
        } else {
            s = _mm256_div_ps(_mm256_sub_ps(hi, lo), _mm256_set1_ps((float)(f->qmax - f->qmin)));
            s = _mm256_max_ps(s, _mm256_set1_ps(FLT_EPSILON));
            zp = _mm256_sub_epi32(qmin, _mm256_cvtps_epi32(_mm256_div_ps(lo, s)));
            zp = _mm256_min_epi32(_mm256_max_epi32(zp, qmin), qmax);
        }
        __m256 ql = _mm256_cvtepi32_ps(_mm256_sub_epi32(qmin, zp));
        __m256 qh = _mm256_cvtepi32_ps(_mm256_sub_epi32(qmax, zp));
        __m256 a = _mm256_mul_ps(ql, s), b = _mm256_mul_ps(qh, s);
        __m256 ok = _mm256_and_ps(_mm256_cmp_ps(s, zero, _CMP_GT_OQ),
                                  _mm256_cmp_ps(s, big, _CMP_LE_OQ));
        ok = _mm256_and_ps(ok, _mm256_and_ps(_mm256_cmp_ps(a, nbig, _CMP_GE_OQ),
                                             _mm256_cmp_ps(a, big, _CMP_LE_OQ)));
        ok = _mm256_and_ps(ok, _mm256_and_ps(_mm256_cmp_ps(b, nbig, _CMP_GE_OQ),
                                             _mm256_cmp_ps(b, big, _CMP_LE_OQ)));
        unsigned want = (1u << n) - 1;
        if (((unsigned)_mm256_movemask_ps(ok) & want) != want) return false;
        __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), s);
        float vs[8], vi[8], vl[8], vh[8];
        int32_t vz[8];
        _mm256_storeu_ps(vs, s);
        _mm256_storeu_ps(vi, inv);
        _mm256_storeu_ps(vl, ql);
        _mm256_storeu_ps(vh, qh);
        _mm256_storeu_si256((__m256i *)vz, zp);
        for (size_t k = 0; k < n; k++) {
            scale[g + k] = vs[k];
            if (zp8) zp8[g + k] = (uint8_t)vz[k];
            qr[g + k] = (mq_qround){vs[k], vi[k], vl[k], vh[k]};
            add[g + k] = vz[k] + f->code_offset;
        }
    }
    return true;
}

ALWAYS_INLINE void quantize_groups_t(const void *x, mq_dtype dt, size_t gs, size_t ng,
                                     const mq_qround *qr, const int32_t *add, bool packed4,
                                     uint8_t *dst) {
    for (size_t g = 0; g < ng; g++) {
        if (packed4) quantize4_t(offset(x, dt, g * gs), dt, gs, &qr[g], add[g], dst + g * gs / 2);
        else quantize_t(offset(x, dt, g * gs), dt, gs, &qr[g], add[g], dst + g * gs);
    }
}

static void quantize_groups_avx2(const void *x, mq_dtype dt, size_t gs, size_t ng,
                                 const mq_qround *qr, const int32_t *add, bool packed4,
                                 uint8_t *dst) {
    if (dt == MQ_F16) quantize_groups_t(x, MQ_F16, gs, ng, qr, add, packed4, dst);
    else if (dt == MQ_BF16) quantize_groups_t(x, MQ_BF16, gs, ng, qr, add, packed4, dst);
    else quantize_groups_t(x, MQ_F32, gs, ng, qr, add, packed4, dst);
}

const mq_qkernels *mq__qkernels_avx2(void) {
    static const mq_qkernels k = {minmax_avx2,       quantize_avx2,      sqerr_avx2,
                                  pack4_avx2,        dequantize_avx2,    minmax_src_avx2,
                                  quantize_src_avx2, quantize4_src_avx2, search_avx2,
                                  minmax_groups_avx2, params_minmax_avx2, quantize_groups_avx2,
                                  sqerr_fix_avx2,      NULL,
                                  NULL};
    return &k;
}
