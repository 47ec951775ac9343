/* Shared by the readers of quantized checkpoints: qmodel.c (monoquant's own layout and the
 * public functions) and qmodel_foreign.c (compressed-tensors and GPTQ layouts). */
#ifndef MQ_QMODEL_INTERNAL_H
#define MQ_QMODEL_INTERNAL_H

#include "pipeline/hf_config.h"
#include "pipeline/pipeline_internal.h"

/* Where a logical tensor's integers come from. NATIVE tensors are decoded by
 * mq_dequantize_rows; the others by the generic decoder of qmodel_foreign.c:
 *     x[r, c] = (code(r, c) - zero(r, g)) * scale(r, g),   g = g_idx[c] or c / group_size
 * with `code` the stored unsigned field (CT packed, GPTQ) or the stored signed byte (CT int). */
typedef enum mq__qfamily {
    MQ__QF_NATIVE = 0,
    MQ__QF_CT_PACKED,   /* compressed-tensors pack-quantized: weight_packed along the rows */
    MQ__QF_CT_INT,      /* compressed-tensors int-quantized: I8 weight */
    MQ__QF_GPTQ         /* qweight [K / (32/bits), N], qzeros [groups, N / (32/bits)] */
} mq__qfamily;

typedef struct mq__qsrc {
    mq__qfamily family;
    int bits;
    int sym_zero;          /* zero in the code domain when no zero-point tensor is stored */
    int zp_offset;         /* added to an unpacked stored zero point to reach the code domain */
    int zp_plus_one;       /* GPTQ v1: qzeros hold zero - 1 */
    int64_t groups;        /* scales per row (1 for channel and tensor) */
    const mq_tensor *g_idx;
    /* materialized on first use (one tensor at a time) */
    float *scale;          /* [rows * groups], or [1] per tensor */
    int32_t *zero;         /* same indexing, code domain; NULL: sym_zero */
    int32_t *gidx;         /* [cols], or NULL: c / group_size */
} mq__qsrc;

struct mq_qmodel {
    mq_ctx *ctx;
    mq_model *model;
    mq_qtensor *t;
    size_t n;
    int quantized;
    void **aligned;        /* per logical tensor: aligned copies of scale and zero point */
    long *logical_of;      /* per stored tensor: its logical tensor, or -1 (companions) */
    float *buf;            /* scratch for mq_qmodel_error */
    size_t buf_cap;
    mq__qsrc *src;         /* per logical tensor (zeroed: native) */
    long materialized;     /* the foreign tensor whose parameters are materialized, or -1 */
    mq__hfconfig cfg;      /* settings found beside the checkpoint */
    mq_status cfg_status;  /* why they could not be read (MQ_OK: read, or none) */
    char *cfg_error;       /* its message: fatal only for tensors that need the settings */
};

/* The stored tensor named base[0..base_len) + suffix, or NULL. */
MQ_HIDDEN const mq_tensor *mq__qm_find2(const mq_model *m, const char *base, size_t base_len,
                                        const char *suffix);

/* Recognizes a compressed-tensors tensor stored under `data` (`<p>.weight_packed` I32 or
 * `<p>.weight` I8 with `<p>.weight_scale`) that is not monoquant's native layout, and fills
 * q and its source. `meta` is the `monoquant.<name>` entry, or NULL. MQ_ERR_VALIDATION /
 * MQ_ERR_UNSUPPORTED naming the tensor when the layout is inconsistent or not supported. */
MQ_HIDDEN mq_status mq__ct_assemble(mq_qmodel *qm, const char *path, mq_qtensor *q,
                                    mq__qsrc *s, const mq_tensor *data, size_t base_len,
                                    const char *meta);
/* A GPTQ layer `<p>.qweight` (+ qzeros, scales, g_idx). */
MQ_HIDDEN mq_status mq__gptq_assemble(mq_qmodel *qm, const char *path, mq_qtensor *q,
                                      mq__qsrc *s, const mq_tensor *qweight, size_t prefix_len);

/* Value checks of a foreign tensor (scales, zero points, g_idx). */
MQ_HIDDEN mq_status mq__foreign_verify(mq_qmodel *qm, size_t i);
/* Rows [rb, re) of a foreign tensor as F32. */
MQ_HIDDEN mq_status mq__foreign_read_rows(mq_qmodel *qm, size_t i, int64_t rb, int64_t re,
                                          float *out);
/* Tensor i (consecutive groups only) in monoquant's own layout, for the kernels: data as
 * mq_qlayout describes it, F32 scales, zero points (NULL when the layout has none); buffers
 * allocated with mq__malloc, freed by the caller (also on failure). MQ_ERR_UNSUPPORTED for
 * groups in activation order. */
MQ_HIDDEN mq_status mq__foreign_canonical(mq_qmodel *qm, size_t i, void **data, float **scale,
                                          void **zp);
/* Releases what mq__foreign_* materialized for tensor i. */
MQ_HIDDEN void mq__foreign_release(mq_qmodel *qm, size_t i);

/* Copies in monoquant's layout made for a layer stored in another tool's layout. */
typedef struct mq__layer_copy {
    void *data;
    float *scale;
    void *zp;
} mq__layer_copy;

/* The kernel description of runnable logical tensor i (no bias) in mode *act: STATIC falls
 * back to DYNAMIC without stored input parameters, casts run weight-only (*act is updated).
 * Weights, scales and zero points point into the checkpoint, or into `copy` (other tools'
 * layouts), which the caller frees with mq__layer_copy_free once the kernel object exists.
 * Errors go to the checkpoint's context. */
MQ_HIDDEN mq_status mq__qmodel_linear_desc(mq_qmodel *qm, size_t i, mq_act_mode *act, mq_linear_desc *d,
                                           mq__layer_copy *copy);
MQ_HIDDEN void mq__layer_copy_free(mq_ctx *ctx, mq__layer_copy *copy);

#endif
