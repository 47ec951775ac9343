/* AVX2 + F16C conversion paths (placeholder until vectorized: reports none). */
#include "common/convert.h"

const mq_convert_fns *mq__convert_fns_avx2(const mq_cpu *cpu) {
    (void)cpu;
    return NULL;
}
