/* PyTorch checkpoint writer backend (stub: replaced by the real writer). */
#include "io/writer_internal.h"

static mq_status pt_begin(mq_writer *w) {
    return mq__fail(w->ctx, MQ_ERR_UNSUPPORTED, "%s: PyTorch output is not implemented yet", w->path);
}

const mq_writer_backend mq__pytorch_backend = {pt_begin, NULL, NULL, NULL, NULL, NULL};
