/* AVX-512 conversion paths (F + BW). F16 uses the hardware conversions; BF16 narrowing uses
 * integer rounding rather than vcvtneps2bf16, which flushes subnormal inputs to zero and so
 * would differ from the reference. Heads and tails use masked loads and stores; the head
 * aligns the wider (f32) side to 64 bytes, since cache-line-splitting 64-byte accesses halve
 * streaming throughput. */
#include "common/convert.h"

#include <immintrin.h>

#define RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

static inline __mmask16 first_k(size_t k) {
    return k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << k) - 1u);
}

/* Elements (< 16, <= n) to process before the f32 pointer p is 64-byte aligned. */
static inline size_t head_count(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p;
    size_t k = (a & 3) ? 0 : ((64 - (a & 63)) & 63) / 4;
    return k < n ? k : n;
}

static inline void f16_to_f32_16(const char *s, char *d, __mmask16 m) {
    _mm512_mask_storeu_ps(d, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, s)));
}

static void f16_to_f32_avx512(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = head_count(d, n);
    if (i) f16_to_f32_16(s, d, first_k(i));
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(s + 2 * i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + 2 * i + 32));
        _mm512_storeu_ps(d + 4 * i, _mm512_cvtph_ps(a));
        _mm512_storeu_ps(d + 4 * i + 64, _mm512_cvtph_ps(b));
    }
    for (; i < n; i += 16) f16_to_f32_16(s + 2 * i, d + 4 * i, first_k(n - i));
}

static inline void f32_to_f16_16(const char *s, char *d, __mmask16 m) {
    _mm256_mask_storeu_epi16(d, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, s), RNE));
}

static void f32_to_f16_avx512(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = head_count(s, n);
    if (i) f32_to_f16_16(s, d, first_k(i));
    for (; i + 32 <= n; i += 32) {
        __m512 a = _mm512_loadu_ps(s + 4 * i), b = _mm512_loadu_ps(s + 4 * i + 64);
        _mm256_storeu_si256((__m256i *)(d + 2 * i), _mm512_cvtps_ph(a, RNE));
        _mm256_storeu_si256((__m256i *)(d + 2 * i + 32), _mm512_cvtps_ph(b, RNE));
    }
    for (; i < n; i += 16) f32_to_f16_16(s + 4 * i, d + 2 * i, first_k(n - i));
}

static inline void bf16_to_f32_16(const char *s, char *d, __mmask16 m) {
    __m256i h = _mm256_maskz_loadu_epi16(m, s);
    _mm512_mask_storeu_epi32(d, m, _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static void bf16_to_f32_avx512(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    size_t i = head_count(d, n);
    if (i) bf16_to_f32_16(s, d, first_k(i));
    for (; i + 32 <= n; i += 32) {
        __m512i h = _mm512_loadu_si512(s + 2 * i), zero = _mm512_setzero_si512();
        /* zeros below each value, then restore element order across the 128-bit lanes */
        __m512i lo = _mm512_unpacklo_epi16(zero, h), hi = _mm512_unpackhi_epi16(zero, h);
        _mm512_storeu_si512(d + 4 * i, _mm512_permutex2var_epi64(lo, first, hi));
        _mm512_storeu_si512(d + 4 * i + 64, _mm512_permutex2var_epi64(lo, second, hi));
    }
    for (; i < n; i += 16) bf16_to_f32_16(s + 2 * i, d + 4 * i, first_k(n - i));
}

/* Sixteen f32 to bf16, in the low 16 bits of each 32-bit lane. */
static inline __m512i round_bf16_lanes(__m512i u) {
    __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
}

static inline void f32_to_bf16_16(const char *s, char *d, __mmask16 m) {
    __m512i a = round_bf16_lanes(_mm512_maskz_loadu_epi32(m, s));
    _mm256_mask_storeu_epi16(d, m, _mm512_cvtepi32_epi16(a));
}

static void f32_to_bf16_avx512(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    const __m512i order = _mm512_set_epi64(7, 5, 3, 1, 6, 4, 2, 0);
    size_t i = head_count(s, n);
    if (i) f32_to_bf16_16(s, d, first_k(i));
    for (; i + 32 <= n; i += 32) {
        __m512i a = round_bf16_lanes(_mm512_loadu_si512(s + 4 * i));
        __m512i b = round_bf16_lanes(_mm512_loadu_si512(s + 4 * i + 64));
        /* values fit in 16 bits, so the saturating pack is exact; it works per 128-bit lane */
        _mm512_storeu_si512(d + 2 * i, _mm512_permutexvar_epi64(order, _mm512_packus_epi32(a, b)));
    }
    for (; i < n; i += 16) f32_to_bf16_16(s + 4 * i, d + 2 * i, first_k(n - i));
}

static const mq_convert_fns fns_avx512 = {f16_to_f32_avx512, f32_to_f16_avx512,
                                          bf16_to_f32_avx512, f32_to_bf16_avx512};

const mq_convert_fns *mq__convert_fns_avx512(void) { return &fns_avx512; }
