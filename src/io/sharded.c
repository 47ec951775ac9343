/* Sharded checkpoints and folders (stub: replaced by the real reader). */
#include "io/model_internal.h"

mq_status mq__sharded_read(mq_model *m, const char *index_path) {
    return mq__fail(m->ctx, MQ_ERR_UNSUPPORTED, "%s: sharded checkpoints are not implemented yet", index_path);
}

mq_status mq__resolve_dir(mq_ctx *ctx, const char *dir, char **path, mq_format *fmt) {
    (void)path;
    (void)fmt;
    return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: opening a folder is not implemented yet", dir);
}
