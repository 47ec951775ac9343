/* safetensors writer backend (stub: replaced by the real writer). */
#include "io/writer_internal.h"

static mq_status st_begin(mq_writer *w) {
    return mq__fail(w->ctx, MQ_ERR_UNSUPPORTED, "%s: safetensors writing is not implemented yet", w->path);
}

const mq_writer_backend mq__safetensors_backend = {st_begin, NULL, NULL, NULL, NULL, NULL};
