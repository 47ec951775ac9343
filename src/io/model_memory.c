/* In-memory models: tensors that are views of caller-owned memory (e.g. a framework's
 * parameters), so that the quantization pipeline can run without a checkpoint file. */
#include "io/model_internal.h"

#include <string.h>
#include <sys/stat.h>

mq_status mq_model_create(mq_ctx *ctx, mq_model **out) {
    if (!ctx || !out) return mq__fail(ctx, MQ_ERR_INVALID, "mq_model_create: NULL argument");
    *out = NULL;
    mq_model *m = (mq_model *)mq__calloc(ctx, 1, sizeof *m);
    if (!m) return MQ_ERR_NOMEM;
    m->ctx = ctx;
    m->format = MQ_FORMAT_AUTO;
    *out = m;
    return MQ_OK;
}

mq_status mq_model_add_view(mq_model *m, const char *name, mq_dtype dtype, int ndim,
                            const int64_t *shape, const void *data) {
    if (!m) return MQ_ERR_INVALID;
    mq_ctx *ctx = m->ctx;
    if (m->nmaps || m->path)
        return mq__fail(ctx, MQ_ERR_INVALID, "mq_model_add_view: the model was opened from a "
                        "file; views go into a model from mq_model_create");
    if (!name || !*name)
        return mq__fail(ctx, MQ_ERR_INVALID, "mq_model_add_view: a tensor needs a name");
    if (dtype <= MQ_DTYPE_INVALID || dtype >= MQ_DTYPE_COUNT)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: unknown dtype %d", name, (int)dtype);
    if (ndim < 0 || ndim > MQ_MAX_DIMS || (ndim && !shape))
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: %d dimensions (0 to %d)", name, ndim,
                        MQ_MAX_DIMS);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || !mq__mul_u64(numel, (uint64_t)shape[i], &numel))
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: dimension %d is %lld", name, i,
                            (long long)shape[i]);
    }
    uint64_t nbytes;
    if (!mq__mul_u64(numel, mq_dtype_size(dtype), &nbytes) || nbytes > ((uint64_t)1 << 62))
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: too large", name);
    if (nbytes && !data) return mq__fail(ctx, MQ_ERR_INVALID, "%s: no data", name);
    if (mq_model_find(m, name) >= 0)
        return mq__fail(ctx, MQ_ERR_INVALID, "duplicate tensor name '%s'", name);
    MQ_TRY(mq__model_add_tensor(m, name, strlen(name), dtype, ndim, shape, data, nbytes));
    /* the name index is rebuilt when the model is next used as a whole */
    mq__free(ctx, m->hash);
    m->hash = NULL;
    m->hash_cap = 0;
    return MQ_OK;
}

mq_status mq_model_set_source_folder(mq_model *m, const char *folder) {
    if (!m) return MQ_ERR_INVALID;
    mq_ctx *ctx = m->ctx;
    if (m->nmaps || m->path)
        return mq__fail(ctx, MQ_ERR_INVALID, "mq_model_set_source_folder: the model was opened "
                        "from a file, whose folder is known");
    char *copy = NULL;
    if (folder) {
        struct stat sb;
        if (!*folder || stat(folder, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return mq__fail(ctx, MQ_ERR_IO, "%s: not a folder", folder);
        if (!(copy = mq__strdup(ctx, folder))) return MQ_ERR_NOMEM;
    }
    mq__free(ctx, m->source_dir);
    m->source_dir = copy;
    return MQ_OK;
}

mq_status mq_model_set_metadata(mq_model *m, const char *key, const char *value) {
    if (!m) return MQ_ERR_INVALID;
    if (!key || !*key || !value)
        return mq__fail(m->ctx, MQ_ERR_INVALID, "mq_model_set_metadata: NULL or empty key");
    return mq__model_set_meta(m, key, strlen(key), value, strlen(value));
}
