/* The model object shared by the readers: a list of tensor views over mapped files or owned
 * buffers, plus string metadata. Each reader (safetensors, index, PyTorch) fills one in. */
#ifndef MQ_MODEL_INTERNAL_H
#define MQ_MODEL_INTERNAL_H

#include "common/internal.h"

typedef struct mq_mapping {
    void *addr;
    size_t len;
    char *path;
    int fd; /* kept open for mq__model_read; -1 when none */
} mq_mapping;

struct mq_model {
    mq_ctx *ctx;
    mq_format format;
    char *path;
    char *source_dir;        /* in-memory models: the model folder they came from, or NULL */
    mq_tensor *tensors;      /* names owned (mq__strdup) */
    size_t ntensors, cap_tensors;
    mq_kv *meta;             /* keys and values owned */
    size_t nmeta, cap_meta;
    mq_mapping *maps;        /* files mapped read-only */
    size_t nmaps, cap_maps;
    size_t nfds;             /* mappings whose fd is kept (bounded: see mq__model_map_file) */
    bool fds_scarce;         /* an open ran out of descriptors: keep no more */
    void **owned;            /* buffers owned by the model (materialized tensors) */
    size_t nowned, cap_owned;
    /* name lookup: open-addressing hash of tensor indices, built by mq__model_index */
    long *hash;
    size_t hash_cap;
};

/* Maps `path` read-only (an empty file maps to a zero-length region) and records it in the
 * model. The mapping is returned in addr and len. Errors name the file. */
MQ_HIDDEN mq_status mq__model_map_file(mq_model *m, const char *path, const uint8_t **addr,
                                       size_t *len);
/* Appends a tensor (the name is copied). Rejects a duplicate name when the index is built. */
MQ_HIDDEN mq_status mq__model_add_tensor(mq_model *m, const char *name, size_t name_len,
                                         mq_dtype dtype, int ndim, const int64_t *shape,
                                         const void *data, uint64_t nbytes);
/* Adds or replaces a metadata entry (copied). */
MQ_HIDDEN mq_status mq__model_set_meta(mq_model *m, const char *key, size_t key_len,
                                       const char *value, size_t value_len);
/* Takes ownership of a buffer allocated with mq__malloc(m->ctx, ...). */
MQ_HIDDEN mq_status mq__model_own(mq_model *m, void *buf);
/* Builds the name index; fails on a duplicate name (naming it and `where`). */
MQ_HIDDEN mq_status mq__model_index(mq_model *m, const char *where);

/* Readers: each fills an empty model (format set by the caller). */
MQ_HIDDEN mq_status mq__safetensors_read(mq_model *m, const char *path);
MQ_HIDDEN mq_status mq__sharded_read(mq_model *m, const char *index_path);
MQ_HIDDEN mq_status mq__pytorch_read(mq_model *m, const char *path, const char *key);
/* For a folder: finds what to open inside it (an index, or a single checkpoint). Returns a
 * path allocated with mq__malloc and the format. */
MQ_HIDDEN mq_status mq__resolve_dir(mq_ctx *ctx, const char *dir, char **path, mq_format *fmt);

#endif
