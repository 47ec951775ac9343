/* AVX2 quantization kernels; identical results to qkernels_ref.c. */
#include "quant/quant_internal.h"

#include <float.h>
#include <immintrin.h>

static bool minmax_avx2(const float *x, size_t n, float *mn, float *mx) {
    size_t i = 0;
    __m256 lo = _mm256_set1_ps(x[0]), hi = lo, bad = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f), fmax = _mm256_set1_ps(FLT_MAX);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_andnot_ps(sign, v), fmax, _CMP_NLE_UQ));
    }
    float l[8], h[8];
    _mm256_storeu_ps(l, lo);
    _mm256_storeu_ps(h, hi);
    bool finite = _mm256_movemask_ps(bad) == 0;
    float tl = l[0], th = h[0];
    if (i < n) finite = mq__minmax_ref(x + i, n - i, &tl, &th) && finite;
    for (int k = 0; k < 8; k++) {
        tl = l[k] < tl ? l[k] : tl;
        th = h[k] > th ? h[k] : th;
    }
    *mn = tl;
    *mx = th;
    return finite;
}

static inline __m256i round8(const float *x, __m256 inv, __m256 lo, __m256 hi, __m256i add) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x), inv);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    v = _mm256_round_ps(v, _MM_FROUND_CUR_DIRECTION);
    return _mm256_add_epi32(_mm256_cvttps_epi32(v), add);
}

static void quantize_avx2(const float *x, size_t n, const mq_qround *p, int32_t add,
                          uint8_t *codes) {
    const __m256 inv = _mm256_set1_ps(p->inv), lo = _mm256_set1_ps(p->lo),
                 hi = _mm256_set1_ps(p->hi);
    const __m256i vadd = _mm256_set1_epi32(add), low8 = _mm256_set1_epi16(0xff);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i a = round8(x + i, inv, lo, hi, vadd), b = round8(x + i + 8, inv, lo, hi, vadd);
        __m256i c = round8(x + i + 16, inv, lo, hi, vadd);
        __m256i d = round8(x + i + 24, inv, lo, hi, vadd);
        /* values lie in [-128, 263]: saturating packs to 16 bits are exact, then keep the
         * low byte of each */
        __m256i ab = _mm256_and_si256(_mm256_packs_epi32(a, b), low8);
        __m256i cd = _mm256_and_si256(_mm256_packs_epi32(c, d), low8);
        __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
        _mm256_storeu_si256((__m256i *)(codes + i), bytes);
    }
    if (i < n) mq__quantize_ref(x + i, n - i, p, add, codes + i);
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

static float sqerr_avx2(const float *x, const float *w, size_t n, const mq_qround *p) {
    const __m256 scale = _mm256_set1_ps(p->scale), inv = _mm256_set1_ps(p->inv),
                 lo = _mm256_set1_ps(p->lo), hi = _mm256_set1_ps(p->hi);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 e0 = err8(_mm256_loadu_ps(x + i), scale, inv, lo, hi);
        __m256 e1 = err8(_mm256_loadu_ps(x + i + 8), scale, inv, lo, hi);
        if (w) {
            e0 = _mm256_mul_ps(e0, _mm256_loadu_ps(w + i));
            e1 = _mm256_mul_ps(e1, _mm256_loadu_ps(w + i + 8));
        }
        acc0 = _mm256_add_ps(acc0, e0);
        acc1 = _mm256_add_ps(acc1, e1);
    }
    if (i < n) { /* masked tail: absent elements are 0 and add exactly 0 */
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        int r = (int)(n - i);
        __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(r), idx);
        __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(r - 8), idx);
        __m256 e0 = err8(_mm256_maskload_ps(x + i, m0), scale, inv, lo, hi);
        __m256 e1 = err8(_mm256_maskload_ps(x + i + 8, m1), scale, inv, lo, hi);
        if (w) {
            e0 = _mm256_mul_ps(e0, _mm256_maskload_ps(w + i, m0));
            e1 = _mm256_mul_ps(e1, _mm256_maskload_ps(w + i + 8, m1));
        }
        acc0 = _mm256_add_ps(acc0, e0);
        acc1 = _mm256_add_ps(acc1, e1);
    }
    return sum_lanes16_avx2(acc0, acc1);
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

const mq_qkernels *mq__qkernels_avx2(void) {
    static const mq_qkernels k = {minmax_avx2, quantize_avx2, sqerr_avx2, pack4_avx2,
                                  dequantize_avx2};
    return &k;
}
