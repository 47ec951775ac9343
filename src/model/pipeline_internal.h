/* Shared by the pipeline sources: the plan (what becomes of each input tensor), output
 * naming, error-figure accumulation and the reports. */
#ifndef MQ_PIPELINE_INTERNAL_H
#define MQ_PIPELINE_INTERNAL_H

#include "common/internal.h"
#include "common/strbuf.h"

/* Metadata keys (docs/FORMAT.md). */
#define MQ__META_CONFIG "quantization_config"
#define MQ__META_FORMAT "monoquant_format"
#define MQ__META_SCHEME "quantization_scheme"
#define MQ__META_TENSOR_PREFIX "monoquant."
#define MQ__FORMAT_VERSION "1"

/* Suffixes appended to a quantized tensor's name for its companions. */
#define MQ__SUFFIX_SCALE "_scale"
#define MQ__SUFFIX_ZERO "_zero_point"
#define MQ__SUFFIX_PACKED "_packed"
#define MQ__SUFFIX_SHAPE "_shape"

typedef struct mq__plan_entry {
    const mq_tensor *src;
    mq_layer_kind kind;
    mq_action action;
    mq_qspec spec;
    mq_qlayout layout;      /* MQ_ACTION_QUANTIZE */
    char *reason;           /* owned; NULL when converted */
    size_t first_out, nout; /* its output tensors in plan->outs */
    int has_input_params;   /* input_scale / input_zero_point follow */
    float input_scale;
    int32_t input_zero_point;
    mq_dtype input_zp_dtype;
    float *importance;      /* [cols] mean x^2 from calibration (owned), or NULL */
    const float *hessian;   /* [cols, cols] from calibration (owned by the stats) or NULL */
    uint64_t bytes_out;
} mq__plan_entry;

typedef struct mq__plan {
    mq_ctx *ctx;
    mq__plan_entry *entries;
    size_t n;
    mq_tensor_desc *outs;   /* names owned */
    size_t nouts, cap_outs;
    size_t nquantized, ncast, nkept;
    uint64_t bytes_in, bytes_out;
    char **warnings;
    size_t nwarnings, cap_warnings;
} mq__plan;

/* Builds the plan for `model`. `stats` (may be NULL) supplies calibration statistics. */
MQ_HIDDEN mq_status mq__plan_build(mq_ctx *ctx, const mq_model *model,
                                   const mq_quantize_options *opts,
                                   const mq_calib_stats *stats, mq__plan *plan);
MQ_HIDDEN void mq__plan_free(mq__plan *plan);
MQ_HIDDEN mq_status mq__plan_warn(mq__plan *plan, const char *fmt, ...) MQ_PRINTF(2, 3);
/* 1 for a layer named like an output head (lm_head, output, head, classifier, score,
 * embed_out). */
MQ_HIDDEN int mq__is_head_name(const char *name);

/* The context a quantized checkpoint was opened with. */
MQ_HIDDEN mq_ctx *mq__qmodel_ctx(const mq_qmodel *qm);

/* Drops consumed input pages [p, p+n) from the process when they lie in a read-only file
 * mapping of the model (they stay in the page cache); owned buffers are left alone. */
MQ_HIDDEN void mq__release_input(const mq_model *m, const void *p, uint64_t n);

/* "type scheme granularity group_size search dtype", the per-tensor metadata value. */
MQ_HIDDEN void mq__spec_to_meta(const mq_qspec *spec, mq_dtype orig, char *buf, size_t cap);
MQ_HIDDEN int mq__spec_from_meta(const char *s, mq_qspec *spec, mq_dtype *orig);

/* Error figures accumulated over chunks, in a fixed order (thread-count independent). */
typedef struct mq__err_acc {
    double sum_a2, sum_b2, sum_ab, sum_d2, max_abs;
    uint64_t n;
    double out_a, out_d;   /* sums of w^T H w and d^T H d (calibration Hessian), */
    int has_out;           /* when has_out */
} mq__err_acc;
/* Adds n pairs: reference `a` of a float dtype, approximation `b` (parallel over the
 * context's threads, deterministic). */
MQ_HIDDEN mq_status mq__err_acc_add(mq_ctx *ctx, mq__err_acc *acc, mq_dtype a_dtype,
                                    const void *a, const float *b, size_t n);
MQ_HIDDEN void mq__err_acc_finish(const mq__err_acc *acc, mq_error_stats *out);

/* What became of one input tensor (mq_report_tensor_* accessors). */
typedef struct mq__tensor_report {
    char *name;
    mq_layer_kind kind;
    mq_dtype dtype;
    int ndim;
    int64_t shape[MQ_MAX_DIMS];
    uint64_t numel;
    mq_action action;
    mq_qspec spec;
    char *reason;
    uint64_t bytes_in, bytes_out;
    int has_error;
    mq_error_stats error;
    int has_input_params;
    int has_output_error;
    double output_sqnr_db;
    uint64_t clamped;          /* cast values saturated (clamp_casts) */
} mq__tensor_report;

struct mq_report {
    mq_ctx *ctx;               /* allocated through it */
    mq__tensor_report *tensors;
    size_t ntensors;
    size_t nquantized, ncast, nkept;
    uint64_t bytes_in, bytes_out;
    uint64_t file_bytes_in, file_bytes_out;
    char **warnings;
    size_t nwarnings;
    char *config_json;
    double seconds;
};

/* The quantization_config JSON for a plan; with a report, its error figures too. */
MQ_HIDDEN mq_status mq__config_json(mq_ctx *ctx, const mq__plan *plan,
                                    const mq_quantize_options *opts, const mq_report *rep,
                                    char **out);
/* Report from a plan (figures filled by the caller). */
MQ_HIDDEN mq_status mq__report_from_plan(mq_ctx *ctx, mq__plan *plan, mq_report **out);
/* Moves the plan's warnings into the report. */
MQ_HIDDEN void mq__report_take_warnings(mq_report *report, mq__plan *plan);

#endif
