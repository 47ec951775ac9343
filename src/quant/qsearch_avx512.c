/* mq__search_fix with AVX-512 F/BW/VL/DQ/VNNI (body in qsearch_avx512.h). */
#include "quant/qsearch_avx512.h"

void mq__search_fix_avx512(const mq_qformat *f, mq_scheme scheme, const void *x, mq_dtype dt,
                           size_t gs, size_t ng, const float *mn, const float *mx,
                           mq_qparam *p) {
    search_fix(f, scheme, x, dt, gs, ng, mn, mx, p, false);
}
