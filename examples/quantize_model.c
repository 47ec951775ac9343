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
    for (size_t i = 0; i < mq_report_tensor_count(rep); i++) {
        const char *name = mq_report_tensor_name(rep, i);
        mq_qspec spec;
        mq_error_stats err;
        char scheme[64];
        mq_report_tensor_spec(rep, i, &spec);
        mq_qspec_format(&spec, scheme, sizeof scheme);
        if (mq_report_tensor_action(rep, i) == MQ_ACTION_KEEP)
            printf("%-40s kept: %s\n", name, mq_report_tensor_reason(rep, i));
        else if (mq_report_tensor_error(rep, i, &err))
            printf("%-40s %-10s SQNR %6.2f dB\n", name, scheme, err.sqnr_db);
    }
    printf("%llu -> %llu bytes of tensor data\n", (unsigned long long)mq_report_bytes_in(rep),
           (unsigned long long)mq_report_bytes_out(rep));
    for (size_t i = 0; i < mq_report_warning_count(rep); i++)
        fprintf(stderr, "warning: %s\n", mq_report_warning(rep, i));
    mq_report_free(rep);
    mq_ctx_free(ctx);
    return 0;
}
