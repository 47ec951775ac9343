/* Error lanes, AVX2: the 16 lanes of each sum in two registers. */
#include "quant/error_lanes.h"

#include <immintrin.h>

static __m256 widen_bf16(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static void blocks(mq__err_lanes *l, mq_dtype dt, const void *a, const float *b, size_t nblk) {
    __m256 a2[2], b2[2], ab[2], d2[2], mx[2];
    for (int h = 0; h < 2; h++) {
        a2[h] = _mm256_loadu_ps(l->a2 + 8 * h);
        b2[h] = _mm256_loadu_ps(l->b2 + 8 * h);
        ab[h] = _mm256_loadu_ps(l->ab + 8 * h);
        d2[h] = _mm256_loadu_ps(l->d2 + 8 * h);
        mx[h] = _mm256_loadu_ps(l->mx + 8 * h);
    }
    const __m256 zero = _mm256_setzero_ps();
    for (size_t k = 0; k < nblk; k++) {
        for (int h = 0; h < 2; h++) {
            size_t at = 16 * k + 8 * (size_t)h;
            __m256 x = dt == MQ_F32 ? _mm256_loadu_ps((const float *)a + at)
                                    : widen_bf16((const uint16_t *)a + at);
            __m256 y = _mm256_loadu_ps(b + at), d = _mm256_sub_ps(x, y);
            a2[h] = _mm256_add_ps(a2[h], _mm256_mul_ps(x, x));
            b2[h] = _mm256_add_ps(b2[h], _mm256_mul_ps(y, y));
            ab[h] = _mm256_add_ps(ab[h], _mm256_mul_ps(x, y));
            d2[h] = _mm256_add_ps(d2[h], _mm256_mul_ps(d, d));
            /* |d| as the scalar loop takes it (d < 0 ? -d : d); vmaxps keeps mx on ties
             * and NaN, as the scalar max does */
            __m256 ad = _mm256_blendv_ps(d, _mm256_sub_ps(zero, d),
                                         _mm256_cmp_ps(d, zero, _CMP_LT_OQ));
            mx[h] = _mm256_max_ps(ad, mx[h]);
        }
    }
    for (int h = 0; h < 2; h++) {
        _mm256_storeu_ps(l->a2 + 8 * h, a2[h]);
        _mm256_storeu_ps(l->b2 + 8 * h, b2[h]);
        _mm256_storeu_ps(l->ab + 8 * h, ab[h]);
        _mm256_storeu_ps(l->d2 + 8 * h, d2[h]);
        _mm256_storeu_ps(l->mx + 8 * h, mx[h]);
    }
}

const mq__err_lanes_kernel *mq__err_lanes_kernel_avx2(void) {
    static const mq__err_lanes_kernel k = {blocks};
    return &k;
}
