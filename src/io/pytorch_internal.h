/* PyTorch checkpoint reader entry points beyond mq__pytorch_read (model_internal.h). */
#ifndef MQ_PYTORCH_INTERNAL_H
#define MQ_PYTORCH_INTERNAL_H

#include "io/model_internal.h"

/* Reads a torch.save archive held in memory (`data` must outlive the model: tensors may
 * point into it). Appends to `m`; `path` names the archive in messages. */
MQ_HIDDEN mq_status mq__pytorch_read_mem(mq_model *m, const char *path, const uint8_t *data,
                                         size_t len, const char *key);

/* Lowers the size and offset from which the PyTorch writer uses ZIP64 forms (normally 2^32 - 1)
 * for the records written after the call, so tests can exercise them without 4 GiB files. */
typedef struct mq_writer mq_writer;
MQ_HIDDEN void mq__pytorch_writer_set_zip64_limit(mq_writer *w, uint64_t limit);

#endif
