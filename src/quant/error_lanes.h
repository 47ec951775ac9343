/* The vector block loops of the error lanes (quant/error_stats.c): blocks of MQ__ERR_LANES
 * pairs, pair k of a block into lane k, with the scalar loop's operations in its order (a
 * multiply, then an add; no fused multiply-add), so that every level gives the same bits. */
#ifndef MQ_ERROR_LANES_H
#define MQ_ERROR_LANES_H

#include "quant/quant_internal.h"

typedef struct mq__err_lanes_kernel {
    /* `a`: F32 or BF16; nblk blocks of a and b. */
    void (*blocks)(mq__err_lanes *l, mq_dtype a_dtype, const void *a, const float *b,
                   size_t nblk);
} mq__err_lanes_kernel;

MQ_HIDDEN const mq__err_lanes_kernel *mq__err_lanes_kernel_avx2(void);
MQ_HIDDEN const mq__err_lanes_kernel *mq__err_lanes_kernel_avx512(void);

#endif
