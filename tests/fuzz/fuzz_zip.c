/* Fuzz target: a whole PyTorch checkpoint archive (zip container, pickle, tensors). */
#include "io/pytorch_internal.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return 0;
    static const char *const keys[] = {NULL, ".", "state_dict"};
    for (int k = 0; k < 3; k++) {
        mq_model *m = (mq_model *)calloc(1, sizeof *m);
        if (!m) break;
        m->ctx = ctx;
        if (mq__pytorch_read_mem(m, "fuzz.pt", data, size, keys[k]) == MQ_OK) {
            /* touch every byte of every tensor: views must stay inside the input */
            volatile uint8_t sink = 0;
            for (size_t i = 0; i < m->ntensors; i++)
                for (uint64_t j = 0; j < m->tensors[i].nbytes; j++)
                    sink ^= ((const uint8_t *)m->tensors[i].data)[j];
            (void)sink;
            (void)mq__model_index(m, "fuzz.pt");
        }
        mq_model_free(m);
    }
    mq_ctx_free(ctx);
    return 0;
}
