/* AVX-512 quantization kernels; identical results to qkernels_ref.c. Tails use masks. */
#include "quant/quant_internal.h"

#include <float.h>
#include <immintrin.h>

static inline __mmask16 tail_mask(size_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

static bool minmax_avx512(const float *x, size_t n, float *mn, float *mx) {
    __m512 lo = _mm512_set1_ps(x[0]), hi = lo;
    const __m512 fmax = _mm512_set1_ps(FLT_MAX);
    __mmask16 bad = 0;
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_mask_loadu_ps(lo, m, x + i); /* absent lanes repeat lo */
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, _mm512_mask_mov_ps(hi, m, v));
        bad |= _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(v), fmax, _CMP_NLE_UQ);
    }
    *mn = _mm512_reduce_min_ps(lo);
    *mx = _mm512_reduce_max_ps(hi);
    return bad == 0;
}

static void quantize_avx512(const float *x, size_t n, const mq_qround *p, int32_t add,
                            uint8_t *codes) {
    const __m512 inv = _mm512_set1_ps(p->inv), lo = _mm512_set1_ps(p->lo),
                 hi = _mm512_set1_ps(p->hi);
    const __m512i vadd = _mm512_set1_epi32(add);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        v = _mm512_roundscale_ps(v, _MM_FROUND_CUR_DIRECTION);
        __m512i q = _mm512_add_epi32(_mm512_cvttps_epi32(v), vadd);
        _mm512_mask_cvtepi32_storeu_epi8(codes + i, m, q); /* keeps the low byte */
    }
}

static float sqerr_avx512(const float *x, const float *w, size_t n, const mq_qround *p) {
    const __m512 scale = _mm512_set1_ps(p->scale), inv = _mm512_set1_ps(p->inv),
                 lo = _mm512_set1_ps(p->lo), hi = _mm512_set1_ps(p->hi);
    __m512 acc = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i); /* absent elements are 0 and add exactly 0 */
        __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
        __m512 v = _mm512_mul_ps(xv, inv);
        v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
        v = _mm512_roundscale_ps(v, _MM_FROUND_CUR_DIRECTION);
        __m512 d = _mm512_sub_ps(xv, _mm512_mul_ps(v, scale));
        __m512 e = _mm512_mul_ps(d, d);
        if (w) e = _mm512_mul_ps(e, _mm512_maskz_loadu_ps(m, w + i));
        acc = _mm512_add_ps(acc, e);
    }
    /* mq__sum_lanes16's tree in registers: lanes i + 8, then i + 4, i + 2, i + 1 */
    __m256 v = _mm256_add_ps(_mm512_castps512_ps256(acc),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    q = _mm_add_ss(q, _mm_movehdup_ps(q));
    return _mm_cvtss_f32(q);
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
    static const mq_qkernels k = {minmax_avx512, quantize_avx512, sqerr_avx512,
                                  pack4_avx512, dequantize_avx512};
    return &k;
}
