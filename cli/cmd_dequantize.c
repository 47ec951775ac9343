/* monoquant dequantize: a quantized checkpoint back to a plain floating-point one. */
#include "cli.h"

#include <string.h>

static void help(FILE *f) {
    fprintf(f, "usage: monoquant dequantize IN -o OUT [--dtype f32|f16|bf16] [--format F]\n"
               "                            [--key K]\n\n"
               "Rebuilds a plain checkpoint with the original tensor names and shapes, loadable\n"
               "by the original architecture. Quantized tensors become --dtype (default: their\n"
               "original dtype); the others are copied unchanged. --key K: for a PyTorch input,\n"
               "the entry holding the tensors ('.' the top level).\n");
}

int cmd_dequantize(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    mq_dtype dtype = MQ_DTYPE_INVALID;
    mq_format fmt = MQ_FORMAT_AUTO;
    mq_open_options oo;
    mq_open_options_default(&oo);
    int threads = 0;
    for (int i = 1; i < argc; i++) {
        bool missing = false;
        const char *v;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            help(stdout);
            return EXIT_OK;
        } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
            g_cli.quiet = true, g_cli.progress = false;
        } else if ((v = cli_opt_value(argc, argv, &i, "-o", &missing)) ||
                   (!missing && (v = cli_opt_value(argc, argv, &i, "--output", &missing)))) {
            out = v;
        } else if (!missing && (v = cli_opt_value(argc, argv, &i, "--dtype", &missing))) {
            if (!strcmp(v, "f32") || !strcmp(v, "F32")) dtype = MQ_F32;
            else if (!strcmp(v, "f16") || !strcmp(v, "F16")) dtype = MQ_F16;
            else if (!strcmp(v, "bf16") || !strcmp(v, "BF16")) dtype = MQ_BF16;
            else return cli_usage_error("dequantize", "--dtype: expected f32, f16 or bf16");
        } else if (!missing && (v = cli_opt_value(argc, argv, &i, "--format", &missing))) {
            if (!strcmp(v, "pt")) fmt = MQ_FORMAT_PYTORCH;
            else if (!strcmp(v, "safetensors")) fmt = MQ_FORMAT_SAFETENSORS;
            else return cli_usage_error("dequantize", "--format: expected pt or safetensors");
        } else if (!missing && (v = cli_opt_value(argc, argv, &i, "--key", &missing))) {
            oo.key = v;
        } else if (!missing && (v = cli_opt_value(argc, argv, &i, "--threads", &missing))) {
            long long n;
            if (!cli_parse_int(v, 0, 1024, &n)) return cli_usage_error("dequantize", "bad --threads");
            threads = (int)n;
        } else if (missing) {
            return cli_usage_error("dequantize", "%s needs a value", argv[i]);
        } else if (argv[i][0] == '-') {
            return cli_usage_error("dequantize", "unknown option '%s'", argv[i]);
        } else if (!in) {
            in = argv[i];
        } else {
            return cli_usage_error("dequantize", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!in || !out) return cli_usage_error("dequantize", "needs IN and -o OUT");
    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return EXIT_GENERAL;
    mq_status st = mq_ctx_set_threads(ctx, threads);
    if (g_cli.progress) mq_ctx_set_progress(ctx, cli_progress, NULL);
    mq_qmodel *qm = NULL;
    if (st == MQ_OK) st = mq_qmodel_open_with_options(ctx, in, &oo, &qm);
    if (st == MQ_OK) st = mq_qmodel_dequantize(qm, out, dtype, fmt);
    mq_qmodel_free(qm);
    cli_progress_done();
    int rc = st == MQ_OK ? EXIT_OK : cli_fail(ctx, st);
    if (st == MQ_OK) cli_info("%s -> %s", in, out);
    mq_ctx_free(ctx);
    return rc;
}
