/* AVX2 Linear kernels (placeholder: no path yet, the scalar reference runs). */
#include "kernels/kernels.h"

const mq__linear_fns *mq__linear_fns_avx2(const mq_cpu *cpu) {
    (void)cpu;
    return NULL;
}
