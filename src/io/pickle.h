/* A bounded interpreter for the pickles torch.save writes: exactly the opcodes and globals
 * that PyTorch's weights-only unpickler accepts, building a tree of plain values. Nothing is
 * ever called or imported: allowed globals are entries of a fixed table, and the few calls a
 * state dict needs (OrderedDict(), _rebuild_tensor_v2(...), ...) are interpreted here. */
#ifndef MQ_PICKLE_H
#define MQ_PICKLE_H

#include "common/internal.h"

typedef enum mq_pk_kind {
    MQ_PK_NONE,
    MQ_PK_BOOL,
    MQ_PK_INT,
    MQ_PK_FLOAT,
    MQ_PK_STR,
    MQ_PK_TUPLE,
    MQ_PK_LIST,
    MQ_PK_DICT,
    MQ_PK_SET,
    MQ_PK_GLOBAL,
    MQ_PK_STORAGE,
    MQ_PK_TENSOR,
    MQ_PK_OTHER
} mq_pk_kind;

/* Allowed globals. */
typedef enum mq_pk_global {
    MQ_G_ORDERED_DICT,
    MQ_G_REBUILD_TENSOR,
    MQ_G_REBUILD_TENSOR_V2,
    MQ_G_REBUILD_TENSOR_V3,
    MQ_G_REBUILD_PARAMETER,
    MQ_G_REBUILD_PARAMETER_STATE,
    MQ_G_REBUILD_FROM_TYPE_V2,
    MQ_G_PARAMETER,
    MQ_G_TENSOR,
    MQ_G_SIZE,
    MQ_G_DEVICE,
    MQ_G_STORAGE_CLASS,
    MQ_G_DTYPE,
    MQ_G_UNSUPPORTED /* allowed by PyTorch, but not a dense tensor we can represent */
} mq_pk_global;

typedef struct mq_pk_obj mq_pk_obj;

typedef struct mq_pk_tensor {
    const mq_pk_obj *storage; /* MQ_PK_STORAGE */
    mq_dtype dtype;
    int ndim;
    int64_t offset; /* in elements */
    int64_t shape[MQ_MAX_DIMS];
    int64_t stride[MQ_MAX_DIMS];
} mq_pk_tensor;

struct mq_pk_obj {
    mq_pk_kind kind;
    union {
        int64_t i; /* BOOL, INT */
        double f;  /* FLOAT */
        struct {
            const char *s;
            size_t len;
        } str; /* STR: into the pickle, no NUL */
        struct {
            mq_pk_obj **items;
            size_t n, cap;
        } seq; /* TUPLE, LIST, SET; DICT: k,v pairs */
        struct {
            mq_pk_global id;
            mq_dtype dtype;   /* STORAGE_CLASS (INVALID for UntypedStorage), DTYPE */
            const char *name; /* "module.name" from the table */
        } global;
        struct {
            const char *key;
            size_t key_len; /* record data/<key> */
            mq_dtype dtype; /* element type; U8 for untyped storages */
            uint64_t nbytes;
        } storage;
        mq_pk_tensor *tensor;
    } u;
};

typedef struct mq_pk_arena mq_pk_arena;

/* Limits; exceeding one is an MQ_ERR_FORMAT naming it. */
#define MQ_PK_MAX_STACK (1u << 20)   /* items on the stack */
#define MQ_PK_MAX_MARKS 256u         /* nested MARKs */
#define MQ_PK_MAX_BYTES (1ull << 30) /* pickle length */

/* Runs the pickle in `data` (which must outlive the result: strings point into it). On
 * success *root is the unpickled object, allocated in *arena (free with mq__pk_free).
 * Errors name `where`, the opcode and its byte offset, or the global. */
MQ_HIDDEN mq_status mq__pk_load(mq_ctx *ctx, const char *where, const uint8_t *data, size_t len,
                                mq_pk_arena **arena, const mq_pk_obj **root);
MQ_HIDDEN void mq__pk_free(mq_ctx *ctx, mq_pk_arena *arena);

/* Torch storage class name ("FloatStorage") for a dtype, NULL when torch has none. */
MQ_HIDDEN const char *mq__pk_storage_name(mq_dtype dt);

#endif
