/* PyTorch checkpoint reader entry points beyond mq__pytorch_read (model_internal.h). */
#ifndef MQ_PYTORCH_INTERNAL_H
#define MQ_PYTORCH_INTERNAL_H

#include "io/model_internal.h"

/* Reads a torch.save archive held in memory (`data` must outlive the model: tensors may
 * point into it). Appends to `m`; `path` names the archive in messages. */
MQ_HIDDEN mq_status mq__pytorch_read_mem(mq_model *m, const char *path, const uint8_t *data,
                                         size_t len, const char *key);

#endif
