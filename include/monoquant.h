/*
 * monoquant — model-weight quantization in C11.
 *
 * This header is the manual. Conventions that hold for every function:
 *
 *  - Errors. Every fallible call returns an mq_status. MQ_OK is 0. On failure the context
 *    (mq_ctx) the call was made with holds a message naming the file, the tensor and what is
 *    wrong: mq_ctx_message(). The library never prints, never exits, never aborts on bad input.
 *  - Contexts. An mq_ctx carries the error message, the thread count, the instruction-set level
 *    and an optional progress callback. A context and every object created with it must be used
 *    by one thread at a time; use one context per thread. There is no global mutable state.
 *  - Ownership. Objects come from mq_<object>_create/open and go back with mq_<object>_free;
 *    every free function accepts NULL. Pointers returned by accessors (names, tensor data)
 *    stay valid until the object they came from is freed. Output buffers are provided by the
 *    caller and sized by a *_size / layout function.
 *  - Threads. Functions that do bulk work split rows across the context's thread pool; their
 *    results are bit-identical for every thread count.
 *  - Names. Items of a collection: mq_<obj>_count(obj), mq_<obj>_<item>(obj, i) for
 *    i < count (NULL / 0 past the end), and mq_<obj>_find(obj, name), which returns the index
 *    or -1. Names of enum values: mq_<enum>_name(value) (never NULL) and
 *    mq_<enum>_from_name(name, &value), which returns 1, or 0 (value untouched) when the name
 *    is unknown. Text into a caller's buffer: mq_<obj>_format(obj, buf, cap) writes at most
 *    cap bytes, NUL included (buf may be NULL when cap is 0), and returns the length of the
 *    full text, as snprintf.
 *
 * ABI policy
 *
 *  - Version. MQ_VERSION_MAJOR/MINOR/PATCH below are the only place the version is written;
 *    the build reads them for the shared library's names and the pkg-config file. The shared
 *    library is libmonoquant.so.MAJOR (the soname) -> libmonoquant.so.MAJOR.MINOR.PATCH. A
 *    program compiled against this header runs with any later library of the same soname.
 *    Compare MQ_VERSION_NUMBER (compiled against) with mq_version_number() (linked) to
 *    detect an older library at run time.
 *  - Extensible structs (mq_open_options, mq_quantize_options, mq_calib_data,
 *    mq_observer_options, mq_linear_desc, mq_conv2d_desc): the caller fills them, and each
 *    starts with `size_t struct_size`, set to sizeof by its _default/_init function. Always
 *    initialise them with that function (never `= {0}` alone), then set fields. The function
 *    is a macro passing the caller's sizeof to the exported *_sized function (bindings call
 *    that one with their own size): the library zeroes and fills only that many bytes,
 *    padding included, so a field later appended into an old layout's tail padding reads as
 *    its default. New fields are only ever appended at the end. The library reads only the
 *    fields within struct_size and uses the defaults for the rest, so a program built
 *    against an older header keeps working. A struct_size of 0, below the first released
 *    layout (0.2.0) or above the library's own sizeof (a header newer than the library)
 *    fails with MQ_ERR_INVALID naming the struct. Structs the library fills for the caller
 *    (mq_observer_options_parse) are filled up to the struct_size the caller set.
 *  - Fixed structs: every other public struct (mq_tensor, mq_tensor_desc, mq_kv, mq_qspec,
 *    mq_qlayout, mq_error_stats, mq_layer_rule, mq_allocator, mq_layer_check) keeps its layout
 *    for the life of the soname; new information comes through new functions. Structs the
 *    library owns and hands out by pointer (mq_qtensor, mq_layer_stats) may grow at the end.
 *  - Opaque objects (mq_ctx, mq_model, mq_writer, mq_report, mq_qmodel, mq_observer,
 *    mq_calibrator, mq_calib_stats, mq_linear, mq_conv2d) are read through accessors only.
 *  - Enums only gain values at the end; switch statements over them need a default.
 *  - Symbols: only MQ_API functions are exported; names with a double underscore are private.
 */
#ifndef MONOQUANT_H
#define MONOQUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MQ_API __attribute__((visibility("default")))
#else
#define MQ_API
#endif

#define MQ_VERSION_MAJOR 0
#define MQ_VERSION_MINOR 2
#define MQ_VERSION_PATCH 0
#define MQ_VERSION_NUMBER (MQ_VERSION_MAJOR * 10000 + MQ_VERSION_MINOR * 100 + MQ_VERSION_PATCH)
#define MQ__STR_(x) #x
#define MQ__STR(x) MQ__STR_(x)
#define MQ_VERSION_STRING \
    MQ__STR(MQ_VERSION_MAJOR) "." MQ__STR(MQ_VERSION_MINOR) "." MQ__STR(MQ_VERSION_PATCH)

/* Version of the library actually linked, e.g. "0.2.0", and as MQ_VERSION_NUMBER. */
MQ_API const char *mq_version(void);
MQ_API unsigned mq_version_number(void);

/* ======================================================================================
 * Status and context
 * ====================================================================================== */

typedef enum mq_status {
    MQ_OK = 0,
    MQ_ERR_INVALID,     /* bad argument, option or configuration (CLI exit 2) */
    MQ_ERR_IO,          /* a file could not be opened, read, written or renamed (exit 5) */
    MQ_ERR_FORMAT,      /* a file is malformed or of an unsupported kind (exit 5) */
    MQ_ERR_UNSUPPORTED, /* well-formed input that this version cannot handle (exit 5) */
    MQ_ERR_QUANT,       /* quantization failed, e.g. NaN/Inf in a tensor (exit 3) */
    MQ_ERR_VALIDATION,  /* a validation check failed (exit 4) */
    MQ_ERR_NOMEM,       /* out of memory (exit 1) */
    MQ_ERR_CANCELLED,   /* the progress callback asked to stop (exit 1) */
    MQ_ERR_INTERNAL     /* a bug in monoquant (exit 1) */
} mq_status;

/* Short constant name of a status, e.g. "invalid argument". Never NULL. */
MQ_API const char *mq_status_str(mq_status st);

typedef struct mq_ctx mq_ctx;

/* Optional allocator. alloc(ud, n) returns NULL on failure; free(ud, p) accepts NULL. Both
 * may be called from the context's worker threads at once: they must be thread-safe. */
typedef struct mq_allocator {
    void *(*alloc)(void *ud, size_t size);
    void (*free)(void *ud, void *ptr);
    void *ud;
} mq_allocator;

/* Progress callback: called from the calling thread only, a few times a second at most.
 * `what` names the current step (a tensor name), done/total count bytes or items.
 * Return nonzero to cancel: the running call then fails with MQ_ERR_CANCELLED. */
typedef int (*mq_progress_fn)(void *ud, const char *what, uint64_t done, uint64_t total);

/* Creates a context. Returns NULL only when memory is exhausted. The context reads the
 * environment once: MQ_ISA=scalar|avx2|avx512 (x86) or scalar|neon|dotprod (ARM64) caps the
 * instruction-set level; a name of another architecture's level is ignored. */
MQ_API mq_ctx *mq_ctx_create(void);
/* As mq_ctx_create, with every allocation going through `alloc` (copied). */
MQ_API mq_ctx *mq_ctx_create_with_allocator(const mq_allocator *alloc);
MQ_API void mq_ctx_free(mq_ctx *ctx);

/* Message of the last failure on this context ("" when none). Valid until the next call. */
MQ_API const char *mq_ctx_message(const mq_ctx *ctx);
/* Status of the last failure on this context (MQ_OK when none). */
MQ_API mq_status mq_ctx_status(const mq_ctx *ctx);
MQ_API void mq_ctx_clear_error(mq_ctx *ctx);

/* Worker threads for bulk work; 0 (the default) means one per online CPU (counted when the
 * context was created). */
MQ_API mq_status mq_ctx_set_threads(mq_ctx *ctx, int threads);
MQ_API int mq_ctx_threads(const mq_ctx *ctx);

MQ_API void mq_ctx_set_progress(mq_ctx *ctx, mq_progress_fn fn, void *ud);

/* Instruction-set levels. The context starts at the best level the CPU and the OS support
 * (XGETBV checked on x86; on ARM64 NEON always, dot products when the kernel reports
 * them), capped by MQ_ISA. Each architecture has its own levels, ordered by value: scalar <
 * avx2 < avx512 on x86, scalar < neon < dotprod on ARM64. Setting a level above what is
 * supported, or a level of another architecture, fails. */
typedef enum mq_isa {
    MQ_ISA_SCALAR = 0,
    MQ_ISA_AVX2 = 1,
    MQ_ISA_AVX512 = 2,
    MQ_ISA_NEON = 3,    /* ARM64 Advanced SIMD (armv8-a) */
    MQ_ISA_DOTPROD = 4  /* NEON + SDOT/UDOT (armv8.2-a dotprod) */
} mq_isa;
MQ_API mq_isa mq_ctx_isa(const mq_ctx *ctx);
MQ_API mq_status mq_ctx_set_isa(mq_ctx *ctx, mq_isa isa);
MQ_API const char *mq_isa_name(mq_isa isa);
/* Best level this machine supports, ignoring MQ_ISA. */
MQ_API mq_isa mq_isa_supported(void);

/* ======================================================================================
 * Data types and conversions
 * ====================================================================================== */

typedef enum mq_dtype {
    MQ_DTYPE_INVALID = 0,
    MQ_BOOL, MQ_U8, MQ_I8, MQ_I16, MQ_U16, MQ_I32, MQ_U32, MQ_I64, MQ_U64,
    MQ_F16, MQ_BF16, MQ_F32, MQ_F64,
    MQ_F8_E4M3, MQ_F8_E5M2, MQ_F8_E8M0, /* pass-through only */
    MQ_C64,                             /* pass-through only */
    MQ_DTYPE_COUNT
} mq_dtype;

/* safetensors name ("F32", "BF16", ...); "invalid" for an unknown value. */
MQ_API const char *mq_dtype_name(mq_dtype dt);
/* Parses a safetensors dtype name (exact, case-sensitive); 0 if unknown. */
MQ_API int mq_dtype_from_name(const char *name, mq_dtype *out);
/* Bytes per element (0 for MQ_DTYPE_INVALID). */
MQ_API size_t mq_dtype_size(mq_dtype dt);
/* 1 for F16, BF16, F32, F64. */
MQ_API int mq_dtype_is_float(mq_dtype dt);

/* Converts n elements between F64, F32, F16 and BF16 (any pair, same type allowed: a copy).
 * Narrowing rounds to nearest, ties to even; NaN stays NaN (quiet), Inf stays Inf; F16
 * subnormals are exact. Results are bit-identical on every instruction-set path.
 * MQ_ERR_INVALID for other dtypes. src and dst must not overlap. */
MQ_API mq_status mq_convert(mq_ctx *ctx, mq_dtype dst_dtype, void *dst, mq_dtype src_dtype,
                            const void *src, size_t n);

/* Scalar conversions (the reference for every vector path). */
MQ_API float mq_f16_to_f32(uint16_t h);
MQ_API uint16_t mq_f32_to_f16(float f);
MQ_API float mq_bf16_to_f32(uint16_t b);
MQ_API uint16_t mq_f32_to_bf16(float f);

/* ======================================================================================
 * Tensors and models (reading checkpoints)
 * ====================================================================================== */

#define MQ_MAX_DIMS 8

/* A view of one tensor. `data` points into the model's memory (a read-only mapping of the
 * file, or a buffer the model owns) and stays valid until the model is freed. Little-endian,
 * row-major, contiguous. `data` may be UNALIGNED for the dtype: safetensors places data right
 * after a header of any length, so a file not written by an aligning writer gives e.g. F32
 * views at odd addresses. Read elements with memcpy (or unaligned vector loads), never by
 * casting to `const float *` and dereferencing; library functions that take tensor data
 * accept any alignment. Zero-size tensors (nbytes == 0) have a `data` that must not be read. */
typedef struct mq_tensor {
    const char *name;
    mq_dtype dtype;
    int ndim;                      /* 0 for a scalar */
    int64_t shape[MQ_MAX_DIMS];
    uint64_t numel;                /* product of shape (1 for a scalar) */
    uint64_t nbytes;               /* numel * mq_dtype_size(dtype) */
    const void *data;
} mq_tensor;

typedef enum mq_format {
    MQ_FORMAT_AUTO = 0,     /* from the file's contents (reading) or extension (writing) */
    MQ_FORMAT_SAFETENSORS,  /* .safetensors, a sharded index, or a folder of shards */
    MQ_FORMAT_PYTORCH       /* torch.save zip archive: .pt, .pth, .bin */
} mq_format;

MQ_API const char *mq_format_name(mq_format fmt);

typedef struct mq_model mq_model;

typedef struct mq_open_options {
    size_t struct_size;     /* sizeof(mq_open_options): set by mq_open_options_default */
    mq_format format;       /* MQ_FORMAT_AUTO: detect */
    const char *key;        /* PyTorch: the entry of a nested dict that holds the tensors
                               (e.g. "state_dict"); "." for the top level; NULL: the top level
                               if it holds tensors, else the one entry that does (several such
                               entries: MQ_ERR_INVALID listing them) */
} mq_open_options;

/* struct_size, MQ_FORMAT_AUTO, key NULL. */
MQ_API void mq_open_options_default_sized(mq_open_options *opts, size_t struct_size);
#define mq_open_options_default(opts) mq_open_options_default_sized((opts), sizeof *(opts))

/* Opens a checkpoint: a .safetensors file, a *.index.json of shards, a folder holding either,
 * or a PyTorch zip checkpoint. The input is never modified. opts may be NULL. */
MQ_API mq_status mq_model_open(mq_ctx *ctx, const char *path, const mq_open_options *opts,
                               mq_model **out);
MQ_API void mq_model_free(mq_model *model);

MQ_API mq_format mq_model_format(const mq_model *model);
MQ_API size_t mq_model_tensor_count(const mq_model *model);
/* Tensor i in file order (shards in index order). NULL when i is out of range. */
MQ_API const mq_tensor *mq_model_tensor(const mq_model *model, size_t i);
/* Index of the named tensor, or -1. */
MQ_API int64_t mq_model_find(const mq_model *model, const char *name);
/* Number of files the model spans (1 unless sharded). */
MQ_API size_t mq_model_file_count(const mq_model *model);

/* String metadata (__metadata__ of safetensors; merged across shards). */
MQ_API size_t mq_model_metadata_count(const mq_model *model);
MQ_API const char *mq_model_metadata_key(const mq_model *model, size_t i);
MQ_API const char *mq_model_metadata_value(const mq_model *model, size_t i);
/* Index of the entry `key`, or -1. */
MQ_API int64_t mq_model_metadata_find(const mq_model *model, const char *key);

/* Layer kind a tensor looks like, from its name and shape. */
typedef enum mq_layer_kind {
    MQ_KIND_OTHER = 0, MQ_KIND_LINEAR, MQ_KIND_CONV, MQ_KIND_EMBEDDING, MQ_KIND_NORM,
    MQ_KIND_BIAS, MQ_KIND_RNN
} mq_layer_kind;
MQ_API mq_layer_kind mq_classify_tensor(const mq_tensor *t);
MQ_API const char *mq_layer_kind_name(mq_layer_kind kind);

/* ======================================================================================
 * Writing checkpoints (streaming)
 * ====================================================================================== */

typedef struct mq_tensor_desc {
    const char *name;
    mq_dtype dtype;
    int ndim;
    int64_t shape[MQ_MAX_DIMS];
} mq_tensor_desc;

typedef struct mq_kv {
    const char *key;
    const char *value;
} mq_kv;

typedef struct mq_writer mq_writer;

/* Output policy, shared by every function that writes a file (mq_writer_*, mq_quantize_file,
 * mq_qmodel_dequantize, mq_calibrator_save; docs/CLI.md "Output policy"):
 *  - an existing destination is never replaced unless the context allows it
 *    (mq_ctx_set_overwrite(ctx, 1); default off): MQ_ERR_INVALID naming the file;
 *  - only regular files are ever replaced: a directory, device, FIFO, socket or symbolic link
 *    destination is MQ_ERR_INVALID, overwrite or not (links are not followed: name the target);
 *  - a destination that is one of the input files (same device and inode; shards included)
 *    is MQ_ERR_INVALID;
 *  - the data goes to a temporary file "<destination folder>/.monoquant-<pid>-<n>.tmp" that
 *    is fsynced and renamed into place; a replaced file keeps its permission bits;
 *  - the path "-" is standard output, for formats whose bytes can be written in order
 *    (safetensors; not PyTorch zip, and not mq_quantize_file, whose header is completed at the
 *    end): no temporary file, and on failure the stream is incomplete. Write "./-" for a file
 *    named "-".
 * These checks run when a writer opens, before any data is produced; mq_output_check runs
 * them alone, e.g. before a long computation whose result is written at the end. */
MQ_API void mq_ctx_set_overwrite(mq_ctx *ctx, int allow);
MQ_API int mq_ctx_overwrite(const mq_ctx *ctx);
/* Checks that `path` may be written under the policy above, `input` (may be NULL) being the
 * model the result is computed from. Writes nothing. */
MQ_API mq_status mq_output_check(mq_ctx *ctx, const char *path, const mq_model *input);
/* Removes the temporary files and folders that this context's writers have on disk now, and
 * returns how many. Async-signal-safe: meant for a SIGINT/SIGTERM/SIGHUP/SIGBUS handler that
 * then exits (the library installs no handler). The context must not be used afterwards
 * except to free it. */
MQ_API int mq_ctx_remove_temporaries(mq_ctx *ctx);

/* Starts writing `n` tensors to `path` in the given order. The header (safetensors) is
 * written first, so the data is then streamed with mq_writer_write: the bytes of tensor 0,
 * then tensor 1, ..., in any chunk sizes. Everything goes to a temporary file in the
 * destination folder; mq_writer_commit checks that every byte arrived, fsyncs and renames it
 * into place. Freeing an uncommitted writer removes the temporary file: on any failure the
 * destination is untouched. `meta` entries are stored as string metadata (safetensors:
 * __metadata__ beside "format": "pt"). Names, descs and meta are copied. fmt AUTO: from the
 * extension (.safetensors, else .pt/.pth/.bin for PyTorch). */
MQ_API mq_status mq_writer_open(mq_ctx *ctx, const char *path, mq_format fmt,
                                const mq_tensor_desc *tensors, size_t n, const mq_kv *meta,
                                size_t nmeta, mq_writer **out);
MQ_API mq_status mq_writer_write(mq_writer *w, const void *data, size_t nbytes);
MQ_API mq_status mq_writer_commit(mq_writer *w);
MQ_API void mq_writer_free(mq_writer *w);

/* ======================================================================================
 * Quantization arithmetic on one tensor in memory  (docs/QUANTIZATION.md)
 *
 * A tensor of shape [d0, d1, ...] is viewed as a matrix [rows = d0, cols = d1*d2*...]:
 * rows are output channels (Linear out_features, Conv out_channels), cols the input
 * dimension (a 1-D tensor is [d0, 1]). Conventions follow PyTorch's observers and
 * quantize functions, so that INT8/UINT8 results are bit-identical to torch's MinMaxObserver /
 * PerChannelMinMaxObserver followed by quantize_per_tensor / quantize_per_channel:
 *   min' = min(min, 0), max' = max(max, 0)                      (range includes 0)
 *   symmetric:  scale = max(-min', max') / ((qmax - qmin) / 2)  zero point 0 (signed types)
 *               or the mid-range (qmin + qmax + 1) / 2 (unsigned: 128, 8)
 *   asymmetric: scale = (max' - min') / (qmax - qmin),
 *               zero point = clamp(qmin - round(min' / scale), qmin, qmax)
 *   scale = max(scale, FLT_EPSILON), all in float32;
 *   q = clamp(zero point + round(x * (1.0f / scale)), qmin, qmax), round half to even;
 *   dequantized x = (q - zero point) * scale.
 * MQ_SEARCH_MSE replaces min/max by a search over clipped ranges (see mq_scale_search).
 * ====================================================================================== */

typedef enum mq_qtype {
    MQ_Q_NONE = 0,   /* keep the tensor as it is (no layout) */
    MQ_Q_INT8,       /* [-128, 127] */
    MQ_Q_UINT8,      /* [0, 255] */
    MQ_Q_INT4,       /* [-8, 7], packed eight per int32 word, stored as value + 8 */
    MQ_Q_UINT4,      /* [0, 15], packed eight per int32 word */
    MQ_Q_FP16,       /* plain cast, round to nearest even; no scales */
    MQ_Q_BF16        /* plain cast, round to nearest even; no scales */
} mq_qtype;

typedef enum mq_scheme { MQ_SYMMETRIC = 0, MQ_ASYMMETRIC = 1 } mq_scheme;

typedef enum mq_granularity {
    MQ_PER_TENSOR = 0,
    MQ_PER_CHANNEL,  /* one scale per row */
    MQ_PER_GROUP     /* one scale per group_size consecutive elements of a row */
} mq_granularity;

typedef enum mq_scale_search {
    MQ_SEARCH_MINMAX = 0, /* scale from the min/max range (PyTorch's observers) */
    MQ_SEARCH_MSE,        /* per group / row / tensor: the min/max candidate, then clipped
                             ranges (ratios 1.1 .. 0.5 of the range, then the winner's
                             neighbours and, for asymmetric, zero points one step either
                             way); the least (weighted) squared error wins, ties keep
                             min/max; 4-bit groups without weights measure it in 16-bit
                             fixed point (docs/QUANTIZATION.md) */
    MQ_SEARCH_GPTQ        /* needs mq_calib_data.hessian: each row is quantized column by
                             column, left to right, and each column's rounding error is spread
                             over the columns not yet quantized through the inverse Hessian (GPTQ,
                             docs/QUANTIZATION.md); a group's scale / zero point follow the
                             min/max rule on its error-updated weights when the group starts.
                             An identity Hessian gives exactly MQ_SEARCH_MINMAX's bytes. */
} mq_scale_search;

/* How a tensor is stored: the format description, the same for every tensor of a layer
 * kind (per-tensor calibration data goes in mq_calib_data). Fixed layout. */
typedef struct mq_qspec {
    mq_qtype type;
    mq_scheme scheme;
    mq_granularity granularity;
    int group_size;           /* MQ_PER_GROUP (>= 1); a row shorter than a group is one group
                                 and a last partial group is allowed */
    mq_scale_search search;
} mq_qspec;

/* Defaults: INT8 symmetric per channel, min/max; group_size 128. */
MQ_API void mq_qspec_default(mq_qspec *spec);

/* Calibration data of one tensor, borrowed (not copied) by the call it is given to. */
typedef struct mq_calib_data {
    size_t struct_size;       /* sizeof(mq_calib_data): set by mq_calib_data_init */
    const float *importance;  /* optional, `cols` finite weights >= 0 (e.g. the mean of x^2 per
                                 input channel from calibration): the scale search minimizes
                                 the error weighted by importance[col] */
    const float *hessian;     /* MQ_SEARCH_GPTQ only: cols x cols, row-major, symmetric (the
                                 lower triangle is read), finite: the mean of x x^T over the
                                 layer's calibration inputs (`<layer>.hessian` of
                                 `monoquant calibrate --hessian`). Dampened by 1 % of its mean
                                 diagonal (a zero diagonal entry, a channel never active,
                                 becomes 1 first); not positive definite then: MQ_ERR_QUANT
                                 naming the column. Each mq_quantize_rows call factorizes it
                                 (O(cols^3), double precision; 8 * 2 * cols^2 bytes of scratch):
                                 quantize a tensor in as few calls as memory allows. The bytes
                                 do not depend on the row chunking or the thread count. */
    /* additions after 0.2.0 */
    int act_order;            /* MQ_SEARCH_GPTQ only: quantize the columns in decreasing order
                                 of the Hessian's diagonal (GPTQ's act-order) instead of left
                                 to right. Groups stay in the column order ("static groups"),
                                 their parameters taken from the weights before any update, so
                                 the stored layout is unchanged (docs/QUANTIZATION.md) */
} mq_calib_data;

/* struct_size, no importance, no Hessian. */
MQ_API void mq_calib_data_init_sized(mq_calib_data *data, size_t struct_size);
#define mq_calib_data_init(data) mq_calib_data_init_sized((data), sizeof *(data))

/* Recommended settings for a target type:
 *   INT8, UINT8: per channel, min/max (bit-identical to PyTorch), symmetric for INT8,
 *                asymmetric for UINT8;
 *   INT4, UINT4: per group of 128, MSE search (measured +0.8 dB SQNR over min/max on
 *                Gaussian weights, docs/QUANTIZATION.md), symmetric for INT4 (the
 *                compressed-tensors "uint4b8" layout), asymmetric for UINT4;
 *   FP16, BF16, NONE: casts (scheme and granularity unused). */
MQ_API void mq_qspec_recommended(mq_qspec *spec, mq_qtype type);

/* Storage layout of a quantized tensor (docs/QUANTIZATION.md, docs/FORMAT.md).
 * Data: 8-bit types keep the original shape, one byte per element. 4-bit types are
 * [rows, ceil(cols/8)] I32: eight values per little-endian word, lowest bits first, along
 * the row (two per byte, low nibble first); INT4 values are stored as value + 8; the unused
 * nibbles at the end of a row are 0. Casts keep the shape.
 * Scales: F32, nscales = 1 (per tensor), rows (per channel) or rows * groups_per_row (per
 * group, row-major: scale[row * groups_per_row + group]). Zero points: same count and order,
 * unpacked, holding the integer zero point (INT4: in [-8, 7], not offset by 8). */
typedef struct mq_qlayout {
    int64_t rows, cols;
    int64_t groups_per_row;    /* 1 per tensor / per channel, ceil(cols/group_size) per group,
                                  0 for casts */
    int64_t nscales;           /* 1 per tensor, rows per channel, rows*groups_per_row; 0 casts */
    mq_dtype data_dtype;       /* I8, U8, I32 (packed 4-bit) or F16/BF16 */
    int ndata_dims;            /* data tensor shape: original shape (8-bit, casts), */
    int64_t data_shape[MQ_MAX_DIMS]; /* or [rows, ceil(cols/8)] (4-bit) */
    uint64_t data_bytes;
    uint64_t row_bytes;        /* bytes of one row of data */
    mq_dtype scale_dtype;      /* F32 (MQ_DTYPE_INVALID for casts). A caller may set F16 or
                                  BF16 before mq_quantize_rows: each scale is then rounded to
                                  that dtype as it is chosen (the float array holds the rounded
                                  values) and the codes are computed with it, so scales stored
                                  in that dtype dequantize the codes as they were chosen; a
                                  scale beyond the dtype's range is an MQ_ERR_QUANT error */
    int has_zero_point;        /* asymmetric integer types, and unsigned symmetric ones (their
                                  constant mid-range zero point is stored too) */
    mq_dtype zero_point_dtype; /* I8/U8 for 8-bit, I8 for 4-bit, stored unpacked */
    int64_t group_size;        /* elements per group: cols unless per group, where it is
                                  min(spec group_size, cols) */
    int64_t last_group_size;   /* elements in the last group of a row (a partial group when
                                  < group_size) */
    int qmin, qmax;            /* integer range of the type (0, 0 for casts) */
} mq_qlayout;

/* Fills the layout for a tensor of `shape` (1 <= ndim <= MQ_MAX_DIMS, every dim >= 1)
 * quantized with `spec`. MQ_ERR_INVALID for an empty tensor, MQ_Q_NONE, a bad group size or
 * sizes that overflow. */
MQ_API mq_status mq_qlayout_init(mq_ctx *ctx, const mq_qspec *spec, int ndim,
                                 const int64_t *shape, mq_qlayout *out);

/* Quantizes rows [row_begin, row_end) of `src` (the whole tensor, F32/F16/BF16/F64, rows x
 * cols row-major, any alignment). `data` receives those rows only (row_end-row_begin rows of
 * row_bytes); `scale` and `zero_point` (NULL when the layout has none) are whole-tensor arrays
 * of which only the entries of these rows are written. MQ_PER_TENSOR: the call with
 * row_begin == 0 computes the tensor's parameters over all rows and later calls reuse
 * scale[0]/zero_point[0]. `spec` and `layout` must be those given to mq_qlayout_init;
 * `calib` (may be NULL) the tensor's calibration data.
 * Rows are split across the context's threads; the bytes do not depend on the thread count
 * or the instruction-set level; each call allocates about 14 bytes per column per thread of
 * scratch. NaN or Inf in the tensor (or, for FP16, a value beyond its range): MQ_ERR_QUANT
 * naming the row and column. */
MQ_API mq_status mq_quantize_rows(mq_ctx *ctx, const mq_qspec *spec, const mq_qlayout *layout,
                                  const mq_calib_data *calib, mq_dtype src_dtype,
                                  const void *src, int64_t row_begin, int64_t row_end,
                                  void *data, float *scale, void *zero_point);

/* Inverse: rows [row_begin, row_end) to F32 (`out` receives those rows only). `data`,
 * `scale` and `zero_point` are the whole tensor's arrays (any alignment for `data`). */
MQ_API mq_status mq_dequantize_rows(mq_ctx *ctx, const mq_qspec *spec, const mq_qlayout *layout,
                                    const void *data, const float *scale, const void *zero_point,
                                    int64_t row_begin, int64_t row_end, float *out);

/* Error figures of an approximation `b` of reference `a` (n elements), accumulated in
 * double. n == 0 or a == b gives sqnr_db +inf, rel_fro 0, cosine 1 (cosine 1 also when both
 * are all zero; 0 when only one is). */
typedef struct mq_error_stats {
    double sqnr_db;        /* 10 log10(sum a^2 / sum (a-b)^2); +inf when exact */
    double rel_fro;        /* ||a-b|| / ||a|| (+inf when a is 0 and b is not) */
    double max_abs;        /* max |a-b| */
    double mse;            /* mean (a-b)^2 */
    double cosine;         /* cosine similarity */
} mq_error_stats;
MQ_API void mq_error_stats_compute(const float *a, const float *b, size_t n,
                                   mq_error_stats *out);

/* ======================================================================================
 * Quantized layers that run (Linear, Conv2d)
 * ====================================================================================== */

/* Quantized layers that run: y = x W^T + b for Linear, and Conv2d, over weights in the formats
 * of the quantization section (docs/KERNELS.md). Activations are f32, row-major.
 *
 * Modes (how activations meet the weights):
 *  - MQ_ACT_F32: weight-only; activations stay f32, weights are dequantized on the fly. The
 *    only mode for F32/FP16/BF16 weights.
 *  - MQ_ACT_DYNAMIC: each activation row is quantized at run time to int8, symmetric:
 *    sx = max|x| / 127, a = clamp(round_half_even(x / sx), -127, 127); then exact integer
 *    dot products (VNNI vpdpbusd where present) per weight group, scaled back in f32.
 *  - MQ_ACT_STATIC: as dynamic, with the stored input_scale / input_zero_point (PyTorch
 *    quint8 convention): q = clamp(round_half_even(x / input_scale) + zero_point, 0, 255).
 *
 * Every instruction-set path gives the same bits as the scalar reference, for every mode and
 * thread count (fixed summation order; see docs/KERNELS.md). Non-finite activations give
 * unspecified (but never crashing) outputs. */

typedef enum mq_act_mode { MQ_ACT_F32 = 0, MQ_ACT_DYNAMIC = 1, MQ_ACT_STATIC = 2 } mq_act_mode;

/* The weights of one Linear layer, W [out_features, in_features] = [N, K], in their stored
 * format. Pointers need no alignment. mq_linear_create copies (repacks) everything it needs:
 * the caller may free or unmap these buffers as soon as it returns.
 *   type MQ_Q_NONE: weight F32 [N, K] (`weight_dtype` may also say F16/BF16: same as FP16/BF16)
 *   MQ_Q_FP16 / MQ_Q_BF16: weight F16 / BF16 [N, K]
 *   MQ_Q_INT8 / MQ_Q_UINT8: weight I8 / U8 [N, K].
 *   MQ_Q_INT4 / MQ_Q_UINT4: weight I32 [N, ceil(K/8)], eight 4-bit values per word, lowest
 *     bits first; INT4 values v in [-8, 7] are stored as v + 8, UINT4 as v.
 *   Integer types: scale F32 [1] (MQ_PER_TENSOR), [N] (MQ_PER_CHANNEL) or
 *     [N, ceil(K/group_size)] (MQ_PER_GROUP; group_size a multiple of 8 unless it covers the
 *     whole row); zero_point (I8/U8 for 8-bit, I8 for 4-bit: in [-8, 7] for INT4, [0, 15] for
 *     UINT4) of the same count, or NULL for 0; required when asymmetric, and used whenever
 *     given. Element value: (v - zero_point) * scale.
 * bias: F32 [N] or NULL. Dynamic/static modes need an integer type and groups of at most 32768
 * elements (a per-tensor or per-channel row longer than that is split internally). */
typedef struct mq_linear_desc {
    size_t struct_size;          /* sizeof(mq_linear_desc): set by mq_linear_desc_init */
    mq_qtype type;
    mq_scheme scheme;            /* integer types: symmetric (no zero point) or asymmetric */
    mq_granularity granularity;  /* integer types, see above */
    int group_size;              /* MQ_PER_GROUP */
    int64_t out_features;        /* N >= 1 */
    int64_t in_features;         /* K >= 1 */
    mq_dtype weight_dtype;       /* MQ_Q_NONE only: F32 (0 means F32), F16 or BF16 */
    const void *weight;
    const float *scale;
    const void *zero_point;
    const float *bias;
    mq_act_mode act;
    float input_scale;           /* MQ_ACT_STATIC: > 0 */
    int input_zero_point;        /* MQ_ACT_STATIC: [0, 255] */
} mq_linear_desc;

/* Zeroes *desc, then sets struct_size, type, out_features, in_features and weight, with
 * MQ_PER_CHANNEL, group_size 128, weight_dtype F32, symmetric, no bias, MQ_ACT_F32
 * (weight-only). */
MQ_API void mq_linear_desc_init_sized(mq_linear_desc *desc, size_t struct_size, mq_qtype type,
                                      int64_t out_features, int64_t in_features,
                                      const void *weight);
#define mq_linear_desc_init(desc, type, out_features, in_features, weight) \
    mq_linear_desc_init_sized((desc), sizeof *(desc), (type), (out_features), (in_features), \
                              (weight))

/* mq_linear_desc_init plus type, scheme, granularity and group size from a quantization spec
 * and the stored tensors (data, scale, zero point or NULL: see mq_qlayout). */
MQ_API void mq_linear_desc_from_qspec_sized(mq_linear_desc *desc, size_t struct_size,
                                            const mq_qspec *spec, int64_t out_features,
                                            int64_t in_features, const void *data,
                                            const float *scale, const void *zero_point);
#define mq_linear_desc_from_qspec(desc, spec, out_features, in_features, data, scale, zp) \
    mq_linear_desc_from_qspec_sized((desc), sizeof *(desc), (spec), (out_features), \
                                    (in_features), (data), (scale), (zp))

typedef struct mq_linear mq_linear;

/* Validates the description and repacks the weights into the kernel layout (owned by the
 * object). MQ_ERR_INVALID for a malformed description, MQ_ERR_UNSUPPORTED for a valid one this
 * version cannot run (message says which), MQ_ERR_FORMAT for non-finite scales or zero points
 * out of range. The object allocates through `ctx`: free it before the context. *out is NULL
 * on failure. */
MQ_API mq_status mq_linear_create(mq_ctx *ctx, const mq_linear_desc *desc, mq_linear **out);
MQ_API void mq_linear_free(mq_linear *lin);
MQ_API int64_t mq_linear_out_features(const mq_linear *lin);
MQ_API int64_t mq_linear_in_features(const mq_linear *lin);
/* Bytes of the repacked weights, scales and constants the object holds. */
MQ_API uint64_t mq_linear_weight_bytes(const mq_linear *lin);

/* y [M, N] = x [M, K] W^T + b, on the context's threads and instruction-set level; x and y
 * must not overlap. The object keeps scratch memory between calls (grown as needed), so it is
 * used by one call at a time. */
MQ_API mq_status mq_linear_forward(mq_ctx *ctx, mq_linear *lin, const float *x, int64_t M,
                                   float *y);

/* Runs `lin` and the plain f32 layer with weights `ref_weight` (F32 [N, K], e.g. the original
 * or dequantized weights) and the same bias on the same inputs, and compares the outputs
 * (reference first) into *out. x: [M, K] inputs, or NULL for M rows of N(0, 1) values drawn
 * from `seed`. This is the check behind `monoquant validate --run`. */
MQ_API mq_status mq_linear_check(mq_ctx *ctx, mq_linear *lin, const float *ref_weight,
                                 const float *bias, const float *x, int64_t M, uint64_t seed,
                                 mq_error_stats *out);

/* Conv2d over NCHW f32 input: weight [C_out, C_in / groups, kh, kw] as in mq_linear_desc with
 * K = C_in / groups * kh * kw (type NONE/F32, FP16, BF16, INT8, UINT8, and 4-bit with groups
 * along the flattened C*kh*kw), out_features = C_out. Runs as im2col + the Linear kernels.
 * The weights are described by an mq_linear_desc given beside the geometry below. */
typedef struct mq_conv2d_desc {
    size_t struct_size;          /* sizeof(mq_conv2d_desc): set by mq_conv2d_desc_init */
    int64_t in_channels;         /* C_in */
    int kernel_h, kernel_w;
    int stride_h, stride_w;      /* >= 1 */
    int pad_h, pad_w;            /* >= 0, zero padding */
    int dilation_h, dilation_w;  /* >= 1 */
    int groups;                  /* >= 1, divides C_in and C_out */
} mq_conv2d_desc;

typedef struct mq_conv2d mq_conv2d;

/* Zeroes *desc, then sets struct_size, in_channels and the kernel size, with stride 1,
 * no padding, dilation 1 and 1 group. */
MQ_API void mq_conv2d_desc_init_sized(mq_conv2d_desc *desc, size_t struct_size,
                                      int64_t in_channels, int kernel_h, int kernel_w);
#define mq_conv2d_desc_init(desc, in_channels, kernel_h, kernel_w) \
    mq_conv2d_desc_init_sized((desc), sizeof *(desc), (in_channels), (kernel_h), (kernel_w))

/* As mq_linear_create: `weights` with out_features = C_out and
 * in_features = C_in / groups * kh * kw; 0 for stride, dilation or groups means 1. */
MQ_API mq_status mq_conv2d_create(mq_ctx *ctx, const mq_linear_desc *weights,
                                  const mq_conv2d_desc *desc, mq_conv2d **out);
MQ_API void mq_conv2d_free(mq_conv2d *conv);
/* Output height and width for an input of h x w; MQ_ERR_INVALID if the kernel does not fit. */
MQ_API mq_status mq_conv2d_output_size(mq_ctx *ctx, const mq_conv2d *conv, int64_t h,
                                       int64_t w, int64_t *out_h, int64_t *out_w);
/* y [batch, C_out, out_h, out_w] from x [batch, C_in, h, w]. One call at a time per object. */
MQ_API mq_status mq_conv2d_forward(mq_ctx *ctx, mq_conv2d *conv, const float *x, int64_t batch,
                                   int64_t h, int64_t w, float *y);

/* ======================================================================================
 * Quantizing a whole checkpoint, reading it back, running its layers
 * ====================================================================================== */

/* What happens to one input tensor. */
typedef enum mq_action {
    MQ_ACTION_KEEP = 0,   /* copied unchanged (its reason says why) */
    MQ_ACTION_QUANTIZE,   /* stored as integers + scales (docs/FORMAT.md) */
    MQ_ACTION_CAST        /* stored as F16 or BF16 under its own name */
} mq_action;

/* Per-layer override: tensors whose name matches `pattern` (fnmatch glob, e.g.
 * "blocks.*.mlp.*") get `type` instead of the default. The last matching rule wins. A rule
 * overrides the type selection (--types) and the 4-bit default skip list, but not the
 * include/exclude patterns, --min-params, or tensors that cannot be quantized (1-D, integer).
 * A rule to the default's type uses the default spec; to another type, the settings of
 * mq_qspec_recommended for that type with the default's group size. */
typedef struct mq_layer_rule {
    const char *pattern;
    mq_qtype type;        /* MQ_Q_NONE keeps the tensor */
} mq_layer_rule;

/* How quantized tensors are laid out and described (docs/FORMAT.md). */
typedef enum mq_layout {
    MQ_LAYOUT_COMPRESSED_TENSORS = 0, /* exactly compressed-tensors' (vLLM, transformers,
                                         llm-compressor): Linear weights only, signed integer
                                         types (uint targets are mapped onto them: same
                                         values), packed zero points, W8A16 as pack-quantized;
                                         what its loaders cannot take is refused with
                                         MQ_ERR_INVALID naming the layer */
    MQ_LAYOUT_NATIVE = 1,             /* monoquant 0.1's file: any layer kind, type, group size */
    MQ_LAYOUT_GPTQ = 2                /* GPTQ (AutoGPTQ / GPTQModel, transformers, vLLM gptq and
                                         gptq_marlin): Linear weights only, F16 scales, one
                                         bit width / group size / scheme for the model;
                                         symmetric as v1, asymmetric as gptq_v2; what GPTQ
                                         cannot describe is refused with MQ_ERR_INVALID */
} mq_layout;

/* Activations of the quantized model, i.e. what the engine does with a layer's inputs. */
typedef enum mq_activations {
    MQ_ACTIVATIONS_AUTO = 0, /* 8-bit layers: static where the calibration statistics give the
                                layer's input parameters, else dynamic per token (per-group or
                                asymmetric 8-bit weights: none, as engines run them); 4-bit
                                layers and casts: none */
    MQ_ACTIVATIONS_NONE,     /* weight-only (W4A16, W8A16): no input parameters stored, even
                                with calibration statistics (they still steer the scales) */
    MQ_ACTIVATIONS_DYNAMIC,  /* int8 per token, computed at run time: nothing stored */
    MQ_ACTIVATIONS_STATIC    /* int8 per tensor from calibration: input_scale (and
                                input_zero_point when asymmetric); a quantized layer without
                                statistics is an MQ_ERR_INVALID error */
} mq_activations;

/* Bit for a kind in mq_quantize_options.kinds. */
#define MQ_KIND_BIT(kind) (1u << (unsigned)(kind))

typedef struct mq_quantize_options {
    size_t struct_size;        /* sizeof(mq_quantize_options): set by
                                  mq_quantize_options_default */
    mq_qspec spec;             /* default target */
    unsigned kinds;            /* MQ_KIND_BIT()s of the layer kinds to quantize */
    const char *const *include; /* if any: only names matching one of these globs */
    size_t ninclude;
    const char *const *exclude; /* names matching any of these globs are kept */
    size_t nexclude;
    uint64_t min_params;       /* tensors with fewer elements are kept */
    const mq_layer_rule *rules;
    size_t nrules;
    int default_skip;          /* 4-bit targets skip embeddings, norms, output heads (layers
                                  named lm_head, output, head, classifier, score, embed_out,
                                  and the last Linear outside numbered blocks, e.g. a
                                  classifier's fc2) and tensors under 512 elements (they
                                  stay in their dtype) */
    int skip_nonfinite;        /* a tensor with NaN/Inf is kept (with a reason) instead of
                                  failing with MQ_ERR_QUANT */
    int error_stats;           /* compute per-tensor error figures (costs one dequantization) */
    double sqnr_warn_db;       /* warn when a quantized tensor's SQNR is below this (0: never);
                                  needs error_stats (else MQ_ERR_INVALID: the gate would never
                                  run). Figures that are not finite (NaN) fail the call */
    const char *calibration;   /* statistics file from `monoquant calibrate`, or NULL: every
                                  quantized `<layer>.weight` with statistics gets
                                  `<layer>.input_scale` / `input_zero_point`, and its mean
                                  x^2 per input channel becomes the importance of
                                  mq_calib_data (used by MQ_SEARCH_MSE: activation-aware
                                  scales), its Hessian the one MQ_SEARCH_GPTQ needs */
    mq_format out_format;      /* MQ_FORMAT_AUTO: from the output extension */
    int dry_run;               /* plan only: nothing is read beyond the header, nothing written */
    const char *key;           /* PyTorch input: the entry holding the tensors, as
                                  mq_open_options.key ("." the top level; NULL: found) */
    int strict;                /* any warning fails the call with MQ_ERR_QUANT, its message
                                  listing the warnings. Decided before the output is committed:
                                  the destination stays untouched and no temporary file is
                                  left. A dry run fails the same way (no report). */
    int clamp_casts;           /* FP16/BF16 casts: values beyond the target's range saturate to
                                  its largest finite value (counted per tensor in the report)
                                  instead of failing with MQ_ERR_QUANT naming the tensor */
    /* additions (0.2): what the output looks like to serving engines (docs/FORMAT.md) */
    mq_layout layout;          /* MQ_LAYOUT_COMPRESSED_TENSORS (default), MQ_LAYOUT_NATIVE or
                                  MQ_LAYOUT_GPTQ */
    mq_activations activations; /* MQ_ACTIVATIONS_AUTO (default), see mq_activations */
    mq_dtype scale_dtype;      /* stored scales (and input scales): F32, F16 or BF16;
                                  MQ_DTYPE_INVALID (default): the weight's own dtype (F64: F32)
                                  in the compressed-tensors layout, F32 in the native one. The
                                  codes are chosen with the scales rounded to this dtype, and
                                  the error figures use those rounded scales. */
    int output_folder;         /* 1: `out` is a model folder to create (weights, index,
                                  config.json with its quantization_config, and every other
                                  file of the input's folder, copied); see mq_quantize_file */
    uint64_t max_shard_size;   /* folder output: largest shard in bytes (0: 5 GB, as Hugging
                                  Face); one shard is written as model.safetensors */
    /* additions after 0.2.0 */
    int act_order;             /* GPTQ layers: mq_calib_data.act_order (same layout; the
                                  compressed-tensors quantization_config says "actorder":
                                  "weight" for its group-wise targets) */
} mq_quantize_options;

/* Defaults: struct_size, INT8 symmetric per channel (min/max), kinds linear+conv+rnn,
 * default_skip 1, error_stats 1, sqnr_warn_db 0, the compressed-tensors layout, automatic
 * activations, scales in the weights' dtype, everything else 0/NULL. */
MQ_API void mq_quantize_options_default_sized(mq_quantize_options *opts, size_t struct_size);
#define mq_quantize_options_default(opts) \
    mq_quantize_options_default_sized((opts), sizeof *(opts))

/* What mq_quantize_file did (or, for a dry run, would do). */
typedef struct mq_report mq_report;

/* Quantizes the checkpoint `in` (anything mq_model_open reads) into `out` following `opts`
 * (NULL: defaults). With opts->output_folder, `out` is a folder that must not exist yet: it
 * is built under a temporary name beside it and renamed into place once complete, holding
 * model.safetensors (or shards of at most max_shard_size bytes plus
 * model.safetensors.index.json), config.json with the quantization_config the layout defines
 * (when the input's folder has a config.json), and every other regular file of the input's
 * folder (the folder itself, or the one holding the index or file), copied byte for byte;
 * the input's own weight files and index are not copied. On failure nothing is left. Streams: memory stays bounded by a few chunk buffers and the largest
 * tensor's scales, whatever the model size. The output is written to a temporary file and
 * renamed into place; `in` is never modified, and an `out` that resolves to the input file
 * fails with MQ_ERR_INVALID, as does an input that is already quantized (our metadata,
 * compressed-tensors' `*.weight_packed` / `weight_scale` / `weight_zero_point` /
 * `weight_shape`, GPTQ/AWQ's `qweight` / `qzeros` / `scales` / `g_idx`): dequantize it first.
 * Values that would be written as Inf fail with MQ_ERR_QUANT naming the tensor: FP16/BF16
 * overflow (unless clamp_casts), scales whose grid overflows float32. Options and rules that
 * have no effect are warnings (layer rules matching no tensor, norm/bias kinds, calibration
 * layers matching no tensor, GPTQ without a Hessian, storages shared in the input). `out` may be NULL for a dry run. On success, and for a dry run,
 * *report (if report is not NULL) receives a report to free with mq_report_free; on failure
 * *report is NULL. The output is byte-identical for every thread count. */
MQ_API mq_status mq_quantize_file(mq_ctx *ctx, const char *in, const char *out,
                                  const mq_quantize_options *opts, mq_report **report);
MQ_API void mq_report_free(mq_report *report);

/* Tensors, one per input tensor in file order. The mq_report_tensor_* accessors return 0,
 * NULL or MQ_ACTION_KEEP for i past the end. */
MQ_API size_t mq_report_tensor_count(const mq_report *report);
/* Input tensor name. */
MQ_API const char *mq_report_tensor_name(const mq_report *report, size_t i);
MQ_API mq_layer_kind mq_report_tensor_kind(const mq_report *report, size_t i);
/* Input dtype. */
MQ_API mq_dtype mq_report_tensor_dtype(const mq_report *report, size_t i);
/* Number of dims; `shape` (may be NULL) receives them (MQ_MAX_DIMS entries at most). */
MQ_API int mq_report_tensor_shape(const mq_report *report, size_t i, int64_t *shape);
MQ_API uint64_t mq_report_tensor_numel(const mq_report *report, size_t i);
MQ_API mq_action mq_report_tensor_action(const mq_report *report, size_t i);
/* Target format (type MQ_Q_NONE when kept): type, scheme, granularity, group size and the
 * scale search that really ran (MQ_SEARCH_GPTQ falls back to MQ_SEARCH_MSE for a layer
 * without a Hessian, with a warning). Returns 0 (and a default spec) for i past the end. */
MQ_API int mq_report_tensor_spec(const mq_report *report, size_t i, mq_qspec *out);
/* FP16/BF16 casts with clamp_casts: values beyond the target's range that were saturated to
 * its largest finite value. */
MQ_API uint64_t mq_report_tensor_clamped(const mq_report *report, size_t i);
/* Why the tensor is kept, e.g. "norm", "embedding (4-bit default skip)"; NULL when
 * converted. */
MQ_API const char *mq_report_tensor_reason(const mq_report *report, size_t i);
/* Tensor data bytes in the input, and of every output tensor it became (scales included). */
MQ_API uint64_t mq_report_tensor_bytes_in(const mq_report *report, size_t i);
MQ_API uint64_t mq_report_tensor_bytes_out(const mq_report *report, size_t i);
/* Error figures of the dequantized tensor against the input: returns 1 and fills *out when
 * they were computed, else 0. */
MQ_API int mq_report_tensor_error(const mq_report *report, size_t i, mq_error_stats *out);
/* 1 when input_scale / input_zero_point are stored for the layer (calibration). */
MQ_API int mq_report_tensor_has_input_params(const mq_report *report, size_t i);
/* SQNR of the layer's outputs X W^T on the calibration inputs,
 * 10 log10(sum w^T H w / sum d^T H d) over rows with d = w - the dequantized w (what GPTQ
 * minimizes; +inf when exact): returns 1 and sets *db when the calibration statistics hold
 * the layer's Hessian H and error figures were asked for, else 0. */
MQ_API int mq_report_tensor_output_sqnr(const mq_report *report, size_t i, double *db);

/* Totals: tensors with `action`; tensor data bytes in and out; whole files (file_bytes_out
 * is 0 for a dry run). */
MQ_API size_t mq_report_action_count(const mq_report *report, mq_action action);
MQ_API uint64_t mq_report_bytes_in(const mq_report *report);
MQ_API uint64_t mq_report_bytes_out(const mq_report *report);
MQ_API uint64_t mq_report_file_bytes_in(const mq_report *report);
MQ_API uint64_t mq_report_file_bytes_out(const mq_report *report);
/* Warnings, human-readable, e.g. "blocks.0.fc.weight: SQNR 12.1 dB ...". */
MQ_API size_t mq_report_warning_count(const mq_report *report);
MQ_API const char *mq_report_warning(const mq_report *report, size_t i);
/* The quantization_config JSON stored in the output. */
MQ_API const char *mq_report_config_json(const mq_report *report);
/* Wall time of the call, in seconds (opening the input included). */
MQ_API double mq_report_seconds(const mq_report *report);
/* Where the wall time went (mq_report_phase_seconds). The phases up to MQ_PHASE_SYNC follow
 * each other on the calling thread; MQ_PHASE_BACKGROUND_WRITE runs on the output writer's
 * own thread, overlapping them. */
typedef enum mq_phase {
    MQ_PHASE_OPEN,       /* opening and mapping the input, the plan, the output header */
    MQ_PHASE_READ,       /* reading input (or mapping its pages in, or waiting for the reader
                          * thread) ahead of the conversion */
    MQ_PHASE_QUANTIZE,   /* converting tensors (error figures computed in the same pass) */
    MQ_PHASE_ERROR,      /* error figures needing a pass of their own (casts, Hessians, GPTQ) */
    MQ_PHASE_WRITE,      /* handing output bytes to the writer */
    MQ_PHASE_WRITE_WAIT, /* waiting for the writer (the disk) to take more */
    MQ_PHASE_SYNC,       /* the commit: last bytes, fsync, rename into place */
    MQ_PHASE_BACKGROUND_WRITE /* write(2) and early writeback on the writer's thread */
} mq_phase;
/* Seconds spent in `phase` (0 for a dry run, or a value outside mq_phase). */
MQ_API double mq_report_phase_seconds(const mq_report *report, mq_phase phase);
/* "open", "read", "quantize", "error", "write", "write_wait", "sync", "background_write"
 * (format convention: see the top). */
MQ_API const char *mq_phase_name(mq_phase phase);
MQ_API int mq_phase_from_name(const char *name, mq_phase *out);

/* `s` (UTF-8, NUL-terminated; NULL as "") as a JSON string literal, quotes included, into
 * buf (format convention: see the top): '"', '\\' and control characters escaped, every
 * other byte copied. The escaper of the library's own JSON (reports, stored configs), for
 * programs that write JSON around what the library returns. */
MQ_API size_t mq_json_string_format(const char *s, char *buf, size_t cap);

/* Short scheme name of a spec for file names and messages: "int8", "int4-g128",
 * "uint8-asym"...; "fp16", "bf16", "none" (format convention: see the top). */
MQ_API size_t mq_qspec_format(const mq_qspec *spec, char *buf, size_t cap);
/* "none", "int8", "uint8", "int4", "uint4", "fp16", "bf16". */
MQ_API const char *mq_qtype_name(mq_qtype type);

/* ---- reading quantized checkpoints back ----------------------------------------------- */

/* A checkpoint seen as its logical (original) tensors: quantized ones are reassembled from
 * their data, scale, zero point and shape tensors (docs/FORMAT.md); plain checkpoints work
 * too (every tensor MQ_Q_NONE). */
typedef struct mq_qmodel mq_qmodel;

typedef struct mq_qtensor {
    const char *name;          /* original tensor name */
    mq_layer_kind kind;
    mq_dtype dtype;            /* original dtype (metadata; F32 when unknown) */
    int ndim;
    int64_t shape[MQ_MAX_DIMS];
    uint64_t numel;
    mq_qspec spec;             /* how it is stored; type MQ_Q_NONE: plain */
    mq_qlayout layout;         /* when quantized */
    const mq_tensor *data;     /* the stored tensor (plain data, packed or 8-bit values) */
    const mq_tensor *scale, *zero_point, *shape_tensor; /* NULL when absent */
    const mq_tensor *input_scale, *input_zero_point;     /* NULL when absent */
    uint64_t stored_bytes;     /* bytes of every stored tensor it uses */
    /* added in 0.2: */
    const char *storage;       /* the on-disk layout of a quantized tensor: "monoquant",
                                  "compressed-tensors pack-quantized", "compressed-tensors
                                  int-quantized", "gptq" or "gptq_v2"; NULL for plain ones.
                                  For all but "monoquant" `layout` describes the values
                                  (groups, scales) but not the stored bytes, and `data`,
                                  `scale`, `zero_point` are the stored tensors as they are
                                  (e.g. BF16 scales, packed zero points) */
    const mq_tensor *g_idx;    /* group of each input column (GPTQ g_idx, compressed-tensors
                                  weight_g_idx), or NULL: column c is in group c / group_size */
} mq_qtensor;

/* Opens `path` (any checkpoint mq_model_open reads) and checks its structure. Besides
 * monoquant's own files it reads compressed-tensors checkpoints (pack-quantized 4/8-bit with
 * packed zero points, int-quantized, F32/F16/BF16 scales, group/channel/tensor strategies,
 * weight_g_idx) and GPTQ ones (qweight/qzeros/scales/g_idx, v1 or gptq_v2), using the
 * `quantization_config` of config.json (or quantize_config.json) beside the checkpoint where
 * the tensors alone are ambiguous (docs/FORMAT.md); their scales, zero points and g_idx
 * are checked at open. Every quantized
 * tensor's companions exist with the dtypes and shapes its layout requires, packed sizes
 * match, the recorded original shapes agree, no stored tensor is left unexplained, and every
 * tensor passes mq_qmodel_verify (no NaN/Inf scale is ever dequantized). A failure is
 * MQ_ERR_VALIDATION naming the tensor (MQ_ERR_IO/FORMAT for unreadable files). */
MQ_API mq_status mq_qmodel_open(mq_ctx *ctx, const char *path, mq_qmodel **out);
/* As mq_qmodel_open, with open options (e.g. the key of a nested PyTorch checkpoint); opts
 * may be NULL. */
MQ_API mq_status mq_qmodel_open_with_options(mq_ctx *ctx, const char *path,
                                             const mq_open_options *opts, mq_qmodel **out);
MQ_API void mq_qmodel_free(mq_qmodel *qm);
MQ_API const mq_model *mq_qmodel_model(const mq_qmodel *qm);
MQ_API size_t mq_qmodel_count(const mq_qmodel *qm);
MQ_API const mq_qtensor *mq_qmodel_tensor(const mq_qmodel *qm, size_t i);
/* Index of the logical tensor `name`, or -1. */
MQ_API int64_t mq_qmodel_find(const mq_qmodel *qm, const char *name);
/* 1 when the checkpoint holds at least one quantized tensor. */
MQ_API int mq_qmodel_is_quantized(const mq_qmodel *qm);

/* Checks the values of logical tensor i: scales finite and > 0 with every grid value
 * (q - zero point) * scale finite in float32, zero points within the integer range, input
 * scales finite and > 0. MQ_ERR_VALIDATION naming the tensor. */
MQ_API mq_status mq_qmodel_verify(mq_qmodel *qm, size_t i);

/* Rows [row_begin, row_end) of logical tensor i (rows = shape[0], cols = the rest) as F32
 * into `out`. Plain tensors must have a float dtype. */
MQ_API mq_status mq_qmodel_read_rows(mq_qmodel *qm, size_t i, int64_t row_begin,
                                     int64_t row_end, float *out);

/* Error figures of tensor `j` of `b` against the reference tensor `i` of `a` (both read as
 * F32, in bounded chunks). The element counts must match. */
MQ_API mq_status mq_qmodel_error(mq_qmodel *a, size_t i, mq_qmodel *b, size_t j,
                                 mq_error_stats *out);

/* Writes every logical tensor of `in` as a plain checkpoint `out` with the original names
 * and shapes: quantized tensors dequantized to `dtype` (MQ_DTYPE_INVALID: their original
 * dtype), plain tensors unchanged. Streams like mq_quantize_file. fmt AUTO: from the
 * extension. */
MQ_API mq_status mq_dequantize_file(mq_ctx *ctx, const char *in, const char *out,
                                    mq_dtype dtype, mq_format fmt);
/* As mq_dequantize_file, from a checkpoint already open (e.g. with open options). */
MQ_API mq_status mq_qmodel_dequantize(mq_qmodel *qm, const char *out, mq_dtype dtype,
                                      mq_format fmt);

/* ---- running quantized layers (`monoquant validate --run`) ---------------------------- */

/* 1 when logical tensor i can run as a layer: quantized (INT8/UINT8/INT4/UINT4) or cast
 * (FP16/BF16), with at least 2 dims. A Conv weight [C_out, C_in/groups, kh, kw] runs as the
 * Linear [C_out, C_in/groups*kh*kw] it is flattened to, which is the product an im2col
 * convolution computes per patch (mq_conv2d runs exactly that). */
MQ_API int mq_qmodel_runnable(const mq_qmodel *qm, size_t i);

typedef struct mq_layer_check {
    int64_t out_features;      /* N */
    int64_t in_features;       /* K (Conv: C_in/groups * kh * kw) */
    mq_act_mode act;           /* the mode the layer ran in */
    int against_reference;     /* 1: compared with the reference checkpoint's weights,
                                  0: with the checkpoint's own dequantized weights */
    int has_bias;              /* `<layer>.bias` was found and added to both outputs */
    mq_error_stats error;      /* of the quantized layer's output against the f32 layer's */
} mq_layer_check;

/* Runs logical tensor i of `qm` (mq_qmodel_runnable; its name ends in "weight") through the
 * quantized kernels (mq_linear_create from its stored tensors) and the plain f32 layer on the
 * same inputs, with `<layer>.bias` of `qm` (float, N values) added to both when present, and
 * fills *out (mq_linear_check). The f32 layer's weights are the tensor of the same name in
 * `ref` (any float dtype, converted with mq_convert; same element count), or, with `ref`
 * NULL, the dequantized weights of `qm` itself: then the figures isolate the kernels' own
 * error (activation quantization and summation order), not the weight quantization.
 * x: [M, K] f32 inputs, or NULL for M rows of N(0, 1) values drawn from `seed`.
 * FP16/BF16 casts always run weight-only (MQ_ACT_F32); MQ_ACT_STATIC
 * uses the stored `<layer>.input_scale` / `input_zero_point` (a U8 zero point as PyTorch's
 * quint8; an I8 one as qint8, run shifted by 128, which is the same arithmetic) and runs
 * dynamic when the checkpoint has none; out->act says what ran. Memory: the f32 reference
 * weights (N*K*4 bytes) plus the kernel's copy of the layer. MQ_ERR_UNSUPPORTED for a layout
 * the kernels cannot run (e.g. a group size that is not a multiple of 8). */
MQ_API mq_status mq_qmodel_check_layer(mq_qmodel *qm, size_t i, mq_qmodel *ref,
                                       mq_act_mode act, const float *x, int64_t M, uint64_t seed,
                                       mq_layer_check *out);

/* ======================================================================================
 * Calibration: observers, calibrators, statistics files
 * ====================================================================================== */

/* Observers turn the values a layer sees (its input activations) into quantization
 * parameters. They are model-agnostic: any inference engine can feed them, batch by batch,
 * through the functions below; `monoquant calibrate` feeds them from recorded activations.
 * Conventions follow PyTorch's observers (docs/CALIBRATION.md):
 *  - MQ_OBS_MINMAX: running min/max (torch MinMaxObserver, PerChannelMinMaxObserver).
 *  - MQ_OBS_MOVING_AVERAGE: min/max averaged over batches, v += c * (batch - v), the first
 *    batch taken as it is (torch MovingAverage[PerChannel]MinMaxObserver).
 *  - MQ_OBS_HISTOGRAM: a histogram re-binned as the range grows, then the L2-minimizing range
 *    search of torch HistogramObserver.
 *  - MQ_OBS_ENTROPY: the histogram, then the threshold minimizing the KL divergence between
 *    the clipped distribution and its quantized version (TensorRT-style).
 *  - MQ_OBS_PERCENTILE: the histogram, then the range holding `percentile` % of the values.
 *  - MQ_OBS_MSE: the histogram, then the clipping range minimizing the expected squared
 *    error (rounding noise inside, clipping error outside).
 * The range (lo, hi) an observer settles on becomes a scale and zero point as everywhere in
 * monoquant: asymmetric ranges widened to include 0, scale >= FLT_EPSILON, zero points rounded
 * half to even and clamped; symmetric UINT8 has zero point 128 (UINT4: 8).
 *
 * Threads: an observer is not shared between threads. To calibrate in parallel, give each
 * thread (or shard) its own observer and combine them with mq_observer_merge. */

typedef enum mq_observer_kind {
    MQ_OBS_MINMAX = 0,
    MQ_OBS_MOVING_AVERAGE,
    MQ_OBS_HISTOGRAM,
    MQ_OBS_ENTROPY,
    MQ_OBS_PERCENTILE,
    MQ_OBS_MSE
} mq_observer_kind;

/* "minmax", "moving_average", "histogram", "entropy", "percentile", "mse". */
MQ_API const char *mq_observer_kind_name(mq_observer_kind kind);
/* Parses a kind name (also "moving-average", "kl" for entropy); 0 if unknown. */
MQ_API int mq_observer_kind_from_name(const char *name, mq_observer_kind *out);

typedef struct mq_observer_options {
    size_t struct_size;         /* sizeof(mq_observer_options): set by
                                   mq_observer_options_default */
    mq_observer_kind kind;
    mq_qtype type;              /* MQ_Q_UINT8 (default), MQ_Q_INT8, MQ_Q_INT4, MQ_Q_UINT4 */
    mq_scheme scheme;           /* MQ_ASYMMETRIC (default) or MQ_SYMMETRIC */
    mq_granularity granularity; /* MQ_PER_TENSOR (default) or MQ_PER_CHANNEL */
    int64_t channels;           /* MQ_PER_CHANNEL: number of channels (> 0) */
    double averaging_constant;  /* MQ_OBS_MOVING_AVERAGE: in (0, 1], default 0.01 */
    int bins;                   /* histogram kinds: default 2048 */
    int upsample_rate;          /* histogram re-binning when the range grows: default 128 */
    double percentile;          /* MQ_OBS_PERCENTILE: in (50, 100], default 99.999 */
} mq_observer_options;

/* struct_size and the defaults above for `kind` (the defaults of PyTorch's observers). */
MQ_API void mq_observer_options_default_sized(mq_observer_options *opts, size_t struct_size,
                                             mq_observer_kind kind);
#define mq_observer_options_default(opts, kind) \
    mq_observer_options_default_sized((opts), sizeof *(opts), (kind))

/* The options as one line of text, e.g. "histogram type=uint8 scheme=asymmetric
 * granularity=tensor channels=1 bins=2048 upsample=128". Writes at most cap bytes
 * (NUL included) and returns the length of the full text. */
MQ_API size_t mq_observer_options_format(const mq_observer_options *opts, char *buf, size_t cap);
/* Parses that text (keys may be left out: defaults of the kind) into *out, which must have
 * been initialised with mq_observer_options_default (its struct_size says what to fill). */
MQ_API mq_status mq_observer_options_parse(mq_ctx *ctx, const char *text,
                                           mq_observer_options *out);

typedef struct mq_observer mq_observer;

/* Creates an empty observer. opts NULL: MQ_OBS_MINMAX with defaults. The observer keeps
 * `ctx` for its errors and allocations. */
MQ_API mq_status mq_observer_create(mq_ctx *ctx, const mq_observer_options *opts,
                                    mq_observer **out);
MQ_API void mq_observer_free(mq_observer *obs);
MQ_API const mq_observer_options *mq_observer_get_options(const mq_observer *obs);

/* Observes one batch: a contiguous row-major [rows, cols] float matrix. Per channel, the
 * channels are the columns (cols must equal opts.channels). A batch with no elements is
 * ignored. NaN or Inf: MQ_ERR_QUANT naming the element, and the observer is unchanged. A batch
 * that would take the value or batch count past INT64_MAX (possible only from a restored
 * state): MQ_ERR_UNSUPPORTED, the observer unchanged; mq_observer_merge likewise. */
MQ_API mq_status mq_observer_update(mq_observer *obs, const float *x, int64_t rows,
                                    int64_t cols);
/* Observes one batch held in any layout: `ndim` (1..MQ_MAX_DIMS) dims of `shape`, element
 * strides `strides` (NULL: contiguous row-major; >= 0), element type F32, F16, BF16 or F64.
 * Per channel, `channel_axis` (negative counts from the end) is the channel dimension and
 * every other dimension is reduced, e.g. axis 1 for Conv inputs [N, C, H, W], -1 for Linear
 * inputs [..., in_features]; per tensor it is ignored. */
MQ_API mq_status mq_observer_update_strided(mq_observer *obs, mq_dtype dtype, const void *x,
                                            int ndim, const int64_t *shape,
                                            const int64_t *strides, int channel_axis);

/* Folds `src` into `dst` (same options, else MQ_ERR_INVALID); src is unchanged.
 *  - MINMAX: exact: equals one observer that saw both streams.
 *  - MOVING_AVERAGE: moving averages depend on the order of batches and cannot be merged
 *    exactly; the result is the average of both, weighted by their batch counts.
 *  - histogram kinds: the histograms are added on the union of both ranges. Exact (equal to
 *    one observer that saw both streams) when both have the same range; otherwise src's
 *    counts are spread over dst's grid in proportion to overlap, the approximation the
 *    observer makes itself whenever a new batch widens its range. */
MQ_API mq_status mq_observer_merge(mq_observer *dst, const mq_observer *src);

/* Values observed so far (all channels), and batches (update calls with data). */
MQ_API uint64_t mq_observer_count(const mq_observer *obs);
MQ_API uint64_t mq_observer_batches(const mq_observer *obs);
/* Number of parameter pairs: 1 per tensor, opts.channels per channel. */
MQ_API int64_t mq_observer_nparams(const mq_observer *obs);

/* Computes the quantization parameters: `scale` and `zero_point` receive
 * mq_observer_nparams(obs) entries each; `lo`/`hi` (may be NULL) the chosen range before
 * widening. An observer that saw nothing gives scale 1, zero point 0 and range [0, 0] (as
 * PyTorch): check mq_observer_count. Histogram searches run channels on the thread pool.
 * A range too wide for float32 parameters (near FLT_MAX: an infinite scale, or a grid that
 * dequantizes to Inf) is MQ_ERR_QUANT naming the channel. */
MQ_API mq_status mq_observer_qparams(const mq_observer *obs, float *scale, int32_t *zero_point,
                                     float *lo, float *hi);

/* State as a set of named tensors, for saving anywhere (e.g. a safetensors file beside the
 * text of mq_observer_options_format): "min_val", "max_val" F32 [nparams]; "count",
 * "batches" I64 [1]; histogram kinds add "histogram" F64 [nparams, bins]. Tensor data points
 * into the observer and stays valid until it is next updated, merged or freed. */
MQ_API size_t mq_observer_state_count(const mq_observer *obs);
MQ_API mq_status mq_observer_state_tensor(const mq_observer *obs, size_t i, mq_tensor *out);
/* Restores one state tensor by name (dtype, shape and values are checked: MQ_ERR_FORMAT).
 * Restore every tensor of the state, into an observer created with the saved options. */
MQ_API mq_status mq_observer_state_set(mq_observer *obs, const mq_tensor *t);

/* ---- calibrating a whole model: per-layer observers and input-channel statistics ---- */

/* A set of layers, each with an observer (built from one set of options) and statistics of
 * its input channels: the count of rows, the mean of x^2 and max |x| per channel. This is
 * what `monoquant calibrate` runs; an inference engine can feed it directly and save a
 * statistics file for `monoquant quantize --calibration`. Not shared between threads. */
typedef struct mq_calibrator mq_calibrator;

/* opts: the observer of every layer; per channel, its channels are set per layer. */
MQ_API mq_status mq_calibrator_create(mq_ctx *ctx, const mq_observer_options *opts,
                                      mq_calibrator **out);
MQ_API void mq_calibrator_free(mq_calibrator *cal);
/* Declares a layer and its number of input channels. Idempotent for equal channels;
 * MQ_ERR_INVALID when declared again with other channels. */
MQ_API mq_status mq_calibrator_add_layer(mq_calibrator *cal, const char *layer,
                                         int64_t channels);
/* Also accumulate, per layer, the sum of x x^T over input rows (double precision), saved as
 * `<layer>.hessian` F32 [channels, channels] (the mean over rows) for GPTQ
 * (MQ_SEARCH_GPTQ). Only for inputs whose channel axis is the last (Linear); a layer that
 * receives another layout (Conv) gets none. Costs 8 * channels^2 bytes per layer and
 * rows * channels^2 / 2 multiply-adds per batch, split over the context's threads (the sums do
 * not depend on the thread count). Call before adding layers; MQ_ERR_INVALID after. */
MQ_API mq_status mq_calibrator_set_hessian(mq_calibrator *cal, int enable);
/* One batch of inputs of a declared layer: contiguous, dtype F32/F16/BF16/F64, `shape`
 * [..., channels] (Linear: leading dims are rows) with channel_axis -1, or [N, C, H, W]
 * (Conv) with channel_axis 1. MQ_ERR_INVALID when the channel dimension does not match. */
MQ_API mq_status mq_calibrator_update(mq_calibrator *cal, const char *layer, mq_dtype dtype,
                                      const void *x, int ndim, const int64_t *shape,
                                      int channel_axis);
/* Layers in declaration order. Past the end: NULL name and observer, 0 rows. */
MQ_API size_t mq_calibrator_layer_count(const mq_calibrator *cal);
MQ_API const char *mq_calibrator_layer_name(const mq_calibrator *cal, size_t i);
/* Index of `layer`, or -1 when it was not declared. */
MQ_API int64_t mq_calibrator_find(const mq_calibrator *cal, const char *layer);
/* Rows observed by layer i (0: it saw no data). */
MQ_API uint64_t mq_calibrator_layer_rows(const mq_calibrator *cal, size_t i);
/* Layer i's observer, e.g. to read its qparams. */
MQ_API const mq_observer *mq_calibrator_observer(const mq_calibrator *cal, size_t i);
/* Folds src into dst layer by layer (same options; layers only in src are added). */
MQ_API mq_status mq_calibrator_merge(mq_calibrator *dst, const mq_calibrator *src);
/* Computes every layer's qparams (progress reported per layer) and writes the statistics
 * file (safetensors; layout in docs/CALIBRATION.md). Layers that saw no data are left out.
 * meta: extra string metadata (may be NULL). */
MQ_API mq_status mq_calibrator_save(mq_calibrator *cal, const char *path, const mq_kv *meta,
                                    size_t nmeta);

/* Reads a statistics file (mq_calibrator_save, `monoquant calibrate`) back as a calibrator
 * with the file's observer options: per layer the observer state (restored exactly), the rows,
 * max |x|, and the sums of x^2 and of x x^T (the stored means times the rows). Merging such
 * calibrators (mq_calibrator_merge) and saving gives what one calibration over all the inputs
 * gives: observer ranges, histograms of equal range, counts and max |x| exactly; the channel
 * means and Hessians to float rounding. This is `monoquant calibrate --merge`. */
MQ_API mq_status mq_calibrator_open(mq_ctx *ctx, const char *path, mq_calibrator **out);

/* Statistics written by `monoquant calibrate` (a safetensors file), read back for static
 * quantization and activation-aware weight quantization. */
typedef struct mq_calib_stats mq_calib_stats;
MQ_API mq_status mq_calib_stats_open(mq_ctx *ctx, const char *path, mq_calib_stats **out);
MQ_API void mq_calib_stats_free(mq_calib_stats *stats);
typedef struct mq_layer_stats {
    const char *layer;        /* layer prefix, e.g. "blocks.0.mlp.fc" */
    int64_t channels;         /* input channels (Linear in_features, Conv in_channels) */
    uint64_t count;           /* rows (samples) observed */
    const float *mean_sq;     /* [channels] mean of x^2 per input channel */
    const float *max_abs;     /* [channels] max |x| per input channel */
    const float *hessian;     /* [channels, channels] mean of x x^T, or NULL (calibrated
                                 without --hessian, or a Conv layer); see
                                 mq_calibrator_set_hessian */
    mq_qtype input_type;      /* MQ_Q_INT8 or MQ_Q_UINT8 */
    float input_scale;        /* per-tensor activation scale */
    int32_t input_zero_point;
    const char *observer;     /* e.g. "minmax", "histogram" */
    mq_scheme input_scheme;
    float input_min, input_max;          /* the range the observer chose */
    const float *channel_input_scale;    /* [channels] when calibrated per channel, else NULL */
    const int32_t *channel_input_zero_point;
} mq_layer_stats;
/* Layers in the file, in file order; the statistics of layer i (NULL past the end), valid
 * with everything they point to until the stats object is freed. */
MQ_API size_t mq_calib_stats_count(const mq_calib_stats *stats);
MQ_API const mq_layer_stats *mq_calib_stats_layer(const mq_calib_stats *stats, size_t i);
/* Index of `layer`, or -1 when the file has no statistics for it. */
MQ_API int64_t mq_calib_stats_find(const mq_calib_stats *stats, const char *layer);

/* ====== section: in-memory models ===================================================== */

/* A model whose tensors are views of memory the caller owns (e.g. the parameters of a model
 * in a framework), so that mq_quantize_model runs the same plan, writes the same bytes and
 * gives the same report as mq_quantize_file on a checkpoint holding those tensors in that
 * order. Nothing is copied: each view's data must stay valid and unchanged until the model is
 * freed (mq_model_free). The views are read, never written. Data: little-endian, row-major,
 * contiguous, any alignment. mq_model_format gives MQ_FORMAT_AUTO for such a model. */
MQ_API mq_status mq_model_create(mq_ctx *ctx, mq_model **out);
/* Appends a tensor view (the name and shape are copied). MQ_ERR_INVALID for a duplicate or
 * empty name, an unknown dtype, a negative dimension, NULL data for a non-empty tensor, or a
 * model opened from a file. */
MQ_API mq_status mq_model_add_view(mq_model *model, const char *name, mq_dtype dtype, int ndim,
                                   const int64_t *shape, const void *data);
/* Sets (or replaces) a string metadata entry, copied; stored in the output as a checkpoint's
 * metadata is. */
MQ_API mq_status mq_model_set_metadata(mq_model *model, const char *key, const char *value);
/* Names the model folder an in-memory model came from (e.g. the Hugging Face folder its
 * tensors were loaded from; the name is copied): mq_quantize_model with output_folder then
 * copies that folder's non-weight files and writes its config.json with the
 * quantization_config, as mq_quantize_file does for a checkpoint in that folder, and refuses
 * to replace that folder. NULL clears it. MQ_ERR_INVALID for a model opened from a file,
 * MQ_ERR_IO when `folder` is not a folder. (0.2) */
MQ_API mq_status mq_model_set_source_folder(mq_model *model, const char *folder);
/* mq_quantize_file with an open model as input (an in-memory one, or one from
 * mq_model_open; opts->key is then unused). The model is not modified, except that its name
 * index is built: use it from one thread at a time. report->file_bytes_in is 0 for an
 * in-memory model. */
MQ_API mq_status mq_quantize_model(mq_ctx *ctx, mq_model *model, const char *out,
                                   const mq_quantize_options *opts, mq_report **report);

/* Quantized layers built from a checkpoint: the kernel object of logical tensor i of `qm`
 * (mq_qmodel_runnable; a Linear weight, or a Conv weight [C_out, C_in/groups, kh, kw]) in
 * mode `act` (an mq_act_mode: MQ_ACT_STATIC uses the stored input_scale /
 * input_zero_point and runs dynamic when there are none; FP16/BF16 casts always run
 * weight-only), with `bias` (F32 [out_features], copied) or NULL. The object copies what it
 * needs: `qm` may be freed afterwards. The object allocates through `ctx` (free it before the
 * context). *act_used (may be NULL) receives the mode that will run. */
MQ_API mq_status mq_qmodel_linear_create(mq_ctx *ctx, mq_qmodel *qm, size_t i, mq_act_mode act,
                                         const float *bias, mq_linear **out,
                                         mq_act_mode *act_used);
/* As mq_qmodel_linear_create for a Conv2d: `geometry` (from mq_conv2d_desc_init) gives
 * in_channels, kernel size, stride, padding, dilation and groups. */
MQ_API mq_status mq_qmodel_conv2d_create(mq_ctx *ctx, mq_qmodel *qm, size_t i, mq_act_mode act,
                                         const float *bias, const mq_conv2d_desc *geometry,
                                         mq_conv2d **out, mq_act_mode *act_used);

/* ====== end of section: in-memory models =============================================== */

#ifdef __cplusplus
}
#endif
#endif /* MONOQUANT_H */
