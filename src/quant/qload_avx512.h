/* Loads shared by the AVX-512 quantization files (include after <immintrin.h>). */
#ifndef MQ_QLOAD_AVX512_H
#define MQ_QLOAD_AVX512_H

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static inline __mmask16 tail_mask(size_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* Sixteen values of a F32, F16 or BF16 source from element i (lanes outside m: 0), widened
 * exactly to f32. */
ALWAYS_INLINE __m512 load16(const void *x, mq_dtype dt, size_t i, __mmask16 m) {
    const char *p = (const char *)x;
    if (dt == MQ_F32) return _mm512_maskz_loadu_ps(m, p + 4 * i);
    __m256i h = _mm256_maskz_loadu_epi16(m, p + 2 * i);
    if (dt == MQ_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

#endif
