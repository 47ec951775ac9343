/* mq__search_fix with AVX-512 and VBMI2 (body in qsearch_avx512.h): the split of the values
 * compresses 16-bit lanes. The library calls it only when the CPU reports VBMI2. */
#include "quant/qsearch_avx512.h"

void mq__search_fix_avx512_vbmi2(const mq_qformat *f, mq_scheme scheme, const void *x,
                                 mq_dtype dt, size_t gs, size_t ng, const float *mn,
                                 const float *mx, mq_qparam *p) {
    search_fix(f, scheme, x, dt, gs, ng, mn, mx, p, true);
}
