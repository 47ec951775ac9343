/* PyTorch checkpoint reader (stub: replaced by the real reader). */
#include "io/model_internal.h"

mq_status mq__pytorch_read(mq_model *m, const char *path, const char *key) {
    (void)key;
    return mq__fail(m->ctx, MQ_ERR_UNSUPPORTED, "%s: PyTorch checkpoints are not implemented yet", path);
}
