/* Error lanes, AVX-512: the 16 lanes of each sum in one register. */
#include "quant/error_lanes.h"

#include <immintrin.h>

static void blocks(mq__err_lanes *l, mq_dtype dt, const void *a, const float *b, size_t nblk) {
    __m512 a2 = _mm512_loadu_ps(l->a2), b2 = _mm512_loadu_ps(l->b2);
    __m512 ab = _mm512_loadu_ps(l->ab), d2 = _mm512_loadu_ps(l->d2), mx = _mm512_loadu_ps(l->mx);
    const __m512 zero = _mm512_setzero_ps();
    for (size_t k = 0; k < nblk; k++) {
        __m512 x;
        if (dt == MQ_F32) {
            x = _mm512_loadu_ps((const float *)a + 16 * k);
        } else {
            __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)a + 16 * k));
            x = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        }
        __m512 y = _mm512_loadu_ps(b + 16 * k), d = _mm512_sub_ps(x, y);
        a2 = _mm512_add_ps(a2, _mm512_mul_ps(x, x));
        b2 = _mm512_add_ps(b2, _mm512_mul_ps(y, y));
        ab = _mm512_add_ps(ab, _mm512_mul_ps(x, y));
        d2 = _mm512_add_ps(d2, _mm512_mul_ps(d, d));
        /* |d| as the scalar loop takes it (d < 0 ? -d : d), then max keeping mx unless
         * |d| > mx (vmaxps returns its second operand on ties and NaN) */
        __m512 ad = _mm512_mask_sub_ps(d, _mm512_cmp_ps_mask(d, zero, _CMP_LT_OQ), zero, d);
        mx = _mm512_max_ps(ad, mx);
    }
    _mm512_storeu_ps(l->a2, a2);
    _mm512_storeu_ps(l->b2, b2);
    _mm512_storeu_ps(l->ab, ab);
    _mm512_storeu_ps(l->d2, d2);
    _mm512_storeu_ps(l->mx, mx);
}

const mq__err_lanes_kernel *mq__err_lanes_kernel_avx512(void) {
    static const mq__err_lanes_kernel k = {blocks};
    return &k;
}
