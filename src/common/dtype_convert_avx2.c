/* AVX2 + F16C conversion paths. F16 uses the hardware conversions (exact widening; narrowing
 * with round-to-nearest-even, which also quiets NaN the way the reference does); BF16 uses
 * integer rounding so NaN and subnormal inputs behave exactly as the reference. Tails go
 * through the scalar reference. */
#include "common/convert.h"

#include <immintrin.h>

static void f16_to_f32_avx2(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 2 * i + 16));
        _mm256_storeu_ps((float *)(d + 4 * i), _mm256_cvtph_ps(a));
        _mm256_storeu_ps((float *)(d + 4 * i + 32), _mm256_cvtph_ps(b));
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps((float *)(d + 4 * i),
                         _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + 2 * i))));
    mq__f16_to_f32_ref(s + 2 * i, d + 4 * i, n - i);
}

static void f32_to_f16_avx2(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 a = _mm256_loadu_ps((const float *)(s + 4 * i));
        __m256 b = _mm256_loadu_ps((const float *)(s + 4 * i + 32));
        _mm_storeu_si128((__m128i *)(d + 2 * i), _mm256_cvtps_ph(a, _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128((__m128i *)(d + 2 * i + 16),
                         _mm256_cvtps_ph(b, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + 2 * i),
                         _mm256_cvtps_ph(_mm256_loadu_ps((const float *)(s + 4 * i)),
                                         _MM_FROUND_TO_NEAREST_INT));
    mq__f32_to_f16_ref(s + 4 * i, d + 2 * i, n - i);
}

static void bf16_to_f32_avx2(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(s + 2 * i));
        __m256i zero = _mm256_setzero_si256();
        /* interleave zeros below each value, then restore element order across lanes */
        __m256i lo = _mm256_unpacklo_epi16(zero, h), hi = _mm256_unpackhi_epi16(zero, h);
        _mm256_storeu_si256((__m256i *)(d + 4 * i), _mm256_permute2x128_si256(lo, hi, 0x20));
        _mm256_storeu_si256((__m256i *)(d + 4 * i + 32), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
    mq__bf16_to_f32_ref(s + 2 * i, d + 4 * i, n - i);
}

/* Eight f32 to bf16 in the low 16 bits of each 32-bit lane. */
static inline __m256i round_bf16_8(__m256i u) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(u, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(r, q, nan);
}

static void f32_to_bf16_avx2(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i a = round_bf16_8(_mm256_loadu_si256((const __m256i *)(s + 4 * i)));
        __m256i b = round_bf16_8(_mm256_loadu_si256((const __m256i *)(s + 4 * i + 32)));
        /* values fit in 16 bits, so the saturating pack is exact; it works per 128-bit lane */
        __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(d + 2 * i), p);
    }
    mq__f32_to_bf16_ref(s + 4 * i, d + 2 * i, n - i);
}

static const mq_convert_fns fns_avx2 = {f16_to_f32_avx2, f32_to_f16_avx2, bf16_to_f32_avx2,
                                        f32_to_bf16_avx2};

const mq_convert_fns *mq__convert_fns_avx2(void) { return &fns_avx2; }
