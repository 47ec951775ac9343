/* AVX-512 conversion paths (placeholder until vectorized: reports none). */
#include "common/convert.h"

const mq_convert_fns *mq__convert_fns_avx512(const mq_cpu *cpu) {
    (void)cpu;
    return NULL;
}
