/* safetensors reader (stub: replaced by the real reader). */
#include "io/model_internal.h"

mq_status mq__safetensors_read(mq_model *m, const char *path) {
    return mq__fail(m->ctx, MQ_ERR_UNSUPPORTED, "%s: safetensors reading is not implemented yet", path);
}
