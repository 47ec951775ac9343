/* Weak placeholders for the quantization arithmetic (src/quant), so the pipeline links
 * before it lands; the real definitions replace these. Remove this file once src/quant is
 * merged. */
#include "common/internal.h"

#include <string.h>

#define MQ_WEAK __attribute__((weak))

MQ_WEAK void mq_qspec_default(mq_qspec *spec) {
    memset(spec, 0, sizeof *spec);
    spec->type = MQ_Q_INT8;
    spec->granularity = MQ_PER_CHANNEL;
    spec->group_size = 128;
}

MQ_WEAK mq_status mq_qlayout_init(mq_ctx *ctx, const mq_qspec *spec, int ndim,
                                  const int64_t *shape, mq_qlayout *out) {
    (void)spec, (void)ndim, (void)shape, (void)out;
    return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "quantization is not available in this build");
}

MQ_WEAK mq_status mq_quantize_rows(mq_ctx *ctx, const mq_qspec *spec, const mq_qlayout *layout,
                                   mq_dtype src_dtype, const void *src, int64_t row_begin,
                                   int64_t row_end, void *data, float *scale, void *zero_point) {
    (void)spec, (void)layout, (void)src_dtype, (void)src, (void)row_begin, (void)row_end;
    (void)data, (void)scale, (void)zero_point;
    return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "quantization is not available in this build");
}

MQ_WEAK mq_status mq_dequantize_rows(mq_ctx *ctx, const mq_qspec *spec,
                                     const mq_qlayout *layout, const void *data,
                                     const float *scale, const void *zero_point,
                                     int64_t row_begin, int64_t row_end, float *out) {
    (void)spec, (void)layout, (void)data, (void)scale, (void)zero_point, (void)row_begin;
    (void)row_end, (void)out;
    return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "quantization is not available in this build");
}
