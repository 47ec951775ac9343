/* Writing the GPTQ checkpoint layout (docs/FORMAT.md, "GPTQ output"): a Linear weight [N, K]
 * quantized in monoquant's layout becomes `<layer>.qweight` I32 [K / (32/b), N], `.qzeros`
 * I32 [groups, N / (32/b)], `.scales` F16 [groups, N] and `.g_idx` I32 [K]. Symmetric
 * schemes are written as GPTQ v1 (qzeros hold zero - 1, checkpoint_format "gptq", what
 * every GPTQ loader reads); asymmetric ones as gptq_v2 (qzeros hold the zero point itself,
 * because v1 cannot store a zero point of 0). */
#ifndef MQ_GPTQ_EXPORT_H
#define MQ_GPTQ_EXPORT_H

#include "common/internal.h"

typedef struct mq__gptq_shape {
    int bits;              /* 4 or 8 */
    int sym;               /* written as v1 when 1, as gptq_v2 when 0 */
    int64_t n, k;          /* out_features, in_features */
    int64_t groups;        /* scales per output column */
    int64_t group_size;    /* k when per channel (config group_size -1) */
} mq__gptq_shape;

/* Whether tensor `name` of `shape` quantized with `spec` can be stored as GPTQ: a 2-D weight,
 * INT4/UINT4/INT8/UINT8 per group (the group size dividing K) or per channel, K and N
 * multiples of 32/bits. MQ_ERR_INVALID naming the tensor and the rule otherwise. */
MQ_HIDDEN mq_status mq__gptq_shape_of(mq_ctx *ctx, const char *name, const mq_qspec *spec,
                                      int ndim, const int64_t *shape, mq__gptq_shape *out);

/* Bytes of qweight, qzeros, scales and g_idx. */
MQ_HIDDEN void mq__gptq_sizes(const mq__gptq_shape *g, uint64_t bytes[4]);

/* Converts rows [row_begin, row_end) of a tensor quantized in monoquant's layout (`data`:
 * those rows only; `scale`, `zero_point`: whole-tensor arrays as mq_quantize_rows fills them)
 * into the GPTQ tensors (whole-tensor little-endian buffers of mq__gptq_sizes; the rows'
 * entries are written; g_idx with row_begin == 0). Scales that F16 cannot hold (beyond its
 * range, or so small they round to 0) are MQ_ERR_QUANT naming `name`. */
MQ_HIDDEN mq_status mq__gptq_pack_rows(mq_ctx *ctx, const char *name, const mq_qspec *spec,
                                       const mq_qlayout *layout, const mq__gptq_shape *g,
                                       const void *data, const float *scale,
                                       const void *zero_point, int64_t row_begin,
                                       int64_t row_end, uint8_t *qweight, uint8_t *qzeros,
                                       uint8_t *scales, uint8_t *g_idx);

/* The GPTQ quantization config JSON object (quantize_config.json, and config.json's
 * quantization_config): quant_method "gptq", bits, group_size, desc_act false (g_idx is
 * always c / group_size), static_groups (act-order ran: groups kept in column order), sym,
 * checkpoint_format, and the keys AutoGPTQ / GPTQModel write. Allocated; mq__free it. */
MQ_HIDDEN char *mq__gptq_config_json(mq_ctx *ctx, const mq__gptq_shape *g, int static_groups);

#endif
