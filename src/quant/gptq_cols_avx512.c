/* AVX-512 path of gptq_cols.h: one zmm holds one column of 16 rows. Rounding as
 * qkernels_ref.c (clamp by compares, +-1.5 * 2^23), the error as a product then a
 * difference (no contraction) then a division, the updates as single fmas: the row loop's
 * bits. */
#include "quant/gptq_cols.h"

#include <immintrin.h>

static int64_t cols_avx512(int64_t c0, int64_t c1, int64_t nb, float *w, const float *u,
                           int64_t ldu, const mq_qround *q, const int32_t *add, uint8_t *codes,
                           float *et, int64_t ldet, int nrow) {
    float sc[16], inv[16], lo[16], hi[16];
    for (int r = 0; r < 16; r++) {
        sc[r] = q[r].scale;
        inv[r] = q[r].inv;
        lo[r] = q[r].lo;
        hi[r] = q[r].hi;
    }
    const __m512 vs = _mm512_loadu_ps(sc), vi = _mm512_loadu_ps(inv);
    const __m512 vlo = _mm512_loadu_ps(lo), vhi = _mm512_loadu_ps(hi);
    const __m512 big = _mm512_set1_ps(0x1.8p23f), sign = _mm512_set1_ps(-0.0f);
    const __m512i va = _mm512_loadu_si512(add);
    const __mmask16 rows = (__mmask16)((1u << nrow) - 1);
    for (int64_t c = c0; c < c1; c++) {
        __m512 x = _mm512_load_ps(w + 16 * c);
        /* NaN, +-Inf (QNaN 0x01, +Inf 0x08, -Inf 0x10, SNaN 0x80) */
        if (_mm512_mask_fpclass_ps_mask(rows, x, 0x99)) return c;
        __m512 v = _mm512_mul_ps(x, vi);
        v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, vlo, _CMP_LT_OQ), vlo);
        v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, vhi, _CMP_GT_OQ), vhi);
        __m512 r = _mm512_sub_ps(_mm512_add_ps(v, big), big);
        __m512i code = _mm512_add_epi32(_mm512_cvtps_epi32(r), va);
        _mm_store_si128((__m128i *)(codes + 16 * c), _mm512_cvtepi32_epi8(code));
        const float *uc = u + c * ldu;
        __m512 e = _mm512_div_ps(_mm512_sub_ps(x, _mm512_mul_ps(r, vs)), _mm512_set1_ps(uc[c]));
        __m512 ne = _mm512_xor_ps(e, sign);
        _mm512_mask_storeu_ps(et + c * ldet, rows, ne);
        for (int64_t k = c + 1; k < nb; k++)
            _mm512_store_ps(w + 16 * k, _mm512_fmadd_ps(ne, _mm512_set1_ps(uc[k]),
                                                         _mm512_load_ps(w + 16 * k)));
    }
    return -1;
}

const mq__gptq_cols_fns mq__gptq_cols_avx512 = {cols_avx512};
