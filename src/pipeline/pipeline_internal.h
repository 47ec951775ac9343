/* Shared by the pipeline sources: the plan (what becomes of each input tensor), output
 * naming, error-figure accumulation and the reports. */
#ifndef MQ_PIPELINE_INTERNAL_H
#define MQ_PIPELINE_INTERNAL_H

#include "common/internal.h"
#include "common/strbuf.h"
#include "io/io.h"

/* Metadata keys (docs/FORMAT.md). */
#define MQ__META_CONFIG "quantization_config"
/* Our own configuration when quantization_config holds the layout's (compressed-tensors). */
#define MQ__META_OWN_CONFIG "monoquant_config"
#define MQ__META_FORMAT "monoquant_format"
#define MQ__META_SCHEME "quantization_scheme"
#define MQ__META_TENSOR_PREFIX "monoquant."
#define MQ__FORMAT_VERSION "1"
/* Which layout family wrote the quantized tensors: "native", "compressed-tensors". */
#define MQ__META_LAYOUT "monoquant_layout"

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
    int act_order;          /* GPTQ with a Hessian and opts->act_order: columns in act-order */
    uint64_t bytes_out;
    mq_activations act;     /* resolved: NONE, DYNAMIC or STATIC (never AUTO) */
    int input_symmetric;    /* static: the calibration's activation scheme was symmetric */
    int is_head;            /* named like an output head, or the last Linear outside blocks */
    int by_rule;            /* its target came from a --layer rule */
    int shard;              /* folder output: the file its outputs go to */
} mq__plan_entry;

typedef struct mq__plan mq__plan;
typedef struct mq__emit mq__emit;

/* An output layout family: which tensors it quantizes, how they are named and laid out, and
 * the quantization_config that describes them. One per family (native, compressed-tensors,
 * ...); the pipeline calls these for every entry the generic plan decided to quantize. */
typedef struct mq__layout_ops {
    const char *name;
    /* Checks a tensor to convert against what the family's loaders accept: may map its target
     * (the pipeline re-derives the layout), keep it (set_reason), or fail naming the layer. */
    mq_status (*adapt)(mq__plan *p, mq__plan_entry *e, const mq_quantize_options *o);
    /* Appends the output tensors of a quantized entry (mq__plan_add_out). */
    mq_status (*outputs)(mq__plan *p, mq__plan_entry *e);
    /* Writes rows [rb, re) of a quantized entry, given as mq_quantize_rows stores them. */
    mq_status (*rows)(mq__emit *em, const mq__plan_entry *e, const uint8_t *data, int64_t rb,
                      int64_t re);
    /* After the last row: the companions (scales as F32 values, zero points as
     * mq_quantize_rows stores them or NULL, shape, input parameters). */
    mq_status (*companions)(mq__emit *em, const mq__plan_entry *e, const float *scale,
                            const void *zero_point);
    /* The quantization_config engines read (config.json and __metadata__), or *out NULL when
     * the family has none. */
    mq_status (*hf_config)(mq_ctx *ctx, const mq__plan *p, char **out);
} mq__layout_ops;

MQ_HIDDEN extern const mq__layout_ops mq__layout_native;
MQ_HIDDEN extern const mq__layout_ops mq__layout_ct;
MQ_HIDDEN extern const mq__layout_ops mq__layout_gptq;

/* The output stream of a run: the bytes of every output tensor, in plan order, routed to the
 * file (shard) each belongs to, plus scratch for layout conversions (output_files.c). Shard
 * writers open when the stream reaches them and are committed when it leaves them, except
 * the one holding the metadata (the last), committed by mq__outputs_commit. */
struct mq__emit {
    mq_ctx *ctx;
    struct mq__outputs *files;
    mq_writer **w;          /* one per output file (NULL: not open, or committed) */
    uint64_t *file_bytes;   /* tensor bytes per file */
    size_t nw, cur;
    uint64_t done;          /* bytes written into file cur */
    uint8_t *scratch;
    size_t scratch_cap;
    uint8_t *held;          /* a family's copy of a whole tensor (mq__emit_hold) */
    size_t held_cap;
    mq__write_times closed; /* times of the writers already committed and freed */
};
MQ_HIDDEN mq_status mq__emit_write(mq__emit *em, const void *data, size_t n);
/* em->held of at least n bytes, kept across calls (for a family that needs every row of a
 * tensor before writing it, as GPTQ's input-dim packing does). */
MQ_HIDDEN mq_status mq__emit_hold(mq__emit *em, size_t n);
/* Scratch of at least n bytes (valid until the next call). */
MQ_HIDDEN uint8_t *mq__emit_scratch(mq__emit *em, size_t n);
/* Writes n F32 values converted to `dtype` (F32, F16 or BF16). */
MQ_HIDDEN mq_status mq__emit_floats(mq__emit *em, const float *v, size_t n, mq_dtype dtype);

struct mq__plan {
    mq_ctx *ctx;
    const mq__layout_ops *ops;
    mq__plan_entry *entries;
    size_t n;
    mq_tensor_desc *outs;   /* names owned */
    size_t nouts, cap_outs;
    size_t nquantized, ncast, nkept;
    uint64_t bytes_in, bytes_out;
    char **warnings;
    size_t nwarnings, cap_warnings;
};

/* Appends an output tensor named `base` (its first base_len bytes) + `suffix`. */
MQ_HIDDEN mq_status mq__plan_add_out(mq__plan *p, const char *base, size_t base_len,
                                     const char *suffix, mq_dtype dtype, int ndim,
                                     const int64_t *shape);
/* Keeps an entry, with the reason (printf-style). */
MQ_HIDDEN mq_status mq__plan_keep(mq__plan *p, mq__plan_entry *e, const char *fmt, ...)
    MQ_PRINTF(3, 4);
/* Length of the layer prefix of a tensor name (the name without its last component). */
MQ_HIDDEN size_t mq__layer_prefix_len(const char *name);

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

/* "type scheme granularity group_size search dtype", the per-tensor metadata value. */
MQ_HIDDEN void mq__spec_to_meta(const mq_qspec *spec, mq_dtype orig, char *buf, size_t cap);
MQ_HIDDEN int mq__spec_from_meta(const char *s, mq_qspec *spec, mq_dtype *orig);

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
    double phase_s[MQ_PHASE_BACKGROUND_WRITE + 1]; /* mq_report_phase_seconds */
};

/* The quantization_config JSON for a plan; with a report, its error figures too. */
MQ_HIDDEN mq_status mq__config_json(mq_ctx *ctx, const mq__plan *plan,
                                    const mq_quantize_options *opts, const mq_report *rep,
                                    char **out);
/* Report from a plan (figures filled by the caller). */
MQ_HIDDEN mq_status mq__report_from_plan(mq_ctx *ctx, mq__plan *plan, mq_report **out);
/* Moves the plan's warnings into the report. */
MQ_HIDDEN void mq__report_take_warnings(mq_report *report, mq__plan *plan);

/* The files of a run: one safetensors/.pt file, or a model folder of shards (output_files.c). */
typedef struct mq__outputs {
    struct mq__folder *folder; /* folder output, else NULL */
    char **files;              /* file names in the folder (or the output path) */
    size_t nfiles;
    size_t meta_file;          /* the file that carries the metadata (the last) */
    int *file_of;              /* per output tensor: its file */
    size_t *first_out;         /* per file: its first output tensor */
    const mq__plan *plan;
    mq_format format;
    const mq_kv *meta;         /* borrowed until the commit */
    size_t nmeta;
    uint64_t bytes_out;        /* bytes of every file written, after the commit */
} mq__outputs;
/* Assigns entries to files (folder: shards of at most max_shard_size, a layer's tensors
 * together), starts the folder, and sets up `em` to route the stream; a single file's writer
 * opens now (its destination checked before any work). */
MQ_HIDDEN mq_status mq__outputs_open(mq_ctx *ctx, const char *out, mq__plan *p,
                                     const mq_quantize_options *o, const mq_kv *meta,
                                     size_t nmeta, mq__outputs *files, mq__emit *em);
/* The metadata file's writer, every file opened and every other one committed: for the
 * final metadata (error figures) before mq__outputs_commit. */
MQ_HIDDEN mq_status mq__outputs_meta_writer(mq__outputs *files, mq__emit *em, mq_writer **w);
/* Commits every file; a folder also gets its index, the input folder's other files (`in`:
 * the input path) with config.json carrying hf_config, and is renamed into place. */
MQ_HIDDEN mq_status mq__outputs_commit(mq_ctx *ctx, mq__outputs *files, mq__emit *em,
                                       const mq__plan *p, const char *in, const char *hf_config);
/* The times of every writer of the stream so far (added to *t). */
MQ_HIDDEN void mq__outputs_times(const mq__emit *em, mq__write_times *t);
/* Frees; what was not committed is removed. */
MQ_HIDDEN void mq__outputs_free(mq_ctx *ctx, mq__outputs *files, mq__emit *em);

#endif
