/* Embedding the pipeline: quantize a checkpoint to INT4 (groups of 128) with one call and
 * print the per-tensor report.   usage: quantize_model IN OUT */
#include "monoquant.h"

#include <stdio.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s IN OUT\n", argv[0]);
        return 2;
    }
    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return 1;
    mq_quantize_options opts;
    mq_quantize_options_default(&opts);           /* INT8 per channel, linear+conv+rnn */
    mq_qspec_recommended(&opts.spec, MQ_Q_INT4);  /* INT4, groups of 128 */
    opts.spec.search = MQ_SEARCH_MINMAX;
    mq_report *rep = NULL;
    mq_status st = mq_quantize_file(ctx, argv[1], argv[2], &opts, &rep);
    if (st != MQ_OK) {
        fprintf(stderr, "error: %s\n", mq_ctx_message(ctx));
        mq_ctx_free(ctx);
        return 1;
    }
    for (size_t i = 0; i < rep->ntensors; i++) {
        const mq_tensor_report *t = &rep->tensors[i];
        char scheme[64];
        if (t->action == MQ_ACTION_KEEP)
            printf("%-40s kept: %s\n", t->name, t->reason);
        else
            printf("%-40s %-10s SQNR %6.2f dB\n", t->name,
                   mq_qspec_name(&t->spec, scheme, sizeof scheme), t->error.sqnr_db);
    }
    printf("%llu -> %llu bytes of tensor data\n", (unsigned long long)rep->bytes_in,
           (unsigned long long)rep->bytes_out);
    for (size_t i = 0; i < rep->nwarnings; i++) fprintf(stderr, "warning: %s\n", rep->warnings[i]);
    mq_report_free(rep);
    mq_ctx_free(ctx);
    return 0;
}
