/* monoquant dequantize: a quantized checkpoint back to a plain floating-point one. */
#include "cli.h"

#include <string.h>

typedef struct dq_state {
    const char *output, *key;
    int dtype, format;
} dq_state;

static const cli_choice dtypes[] = {
    {CLI_T_FP32, MQ_F32}, {CLI_T_FP16, MQ_F16}, {CLI_T_BF16, MQ_BF16}, {NULL, 0}};
static const cli_choice formats[] = {
    {"safetensors", MQ_FORMAT_SAFETENSORS}, {"pt|pytorch", MQ_FORMAT_PYTORCH}, {NULL, 0}};

static const cli_option options[] = {
    OPT_STR("output|o", dq_state, output, "OUT", "the plain checkpoint to write ('-': stdout,\n"
            "safetensors only)"),
    OPT_CHOICE("type|dtype", dq_state, dtype, "T", dtypes, "dtype of the dequantized tensors "
               "(default: their original dtype)"),
    OPT_CHOICE("format", dq_state, format, NULL, formats, "output format (default: from OUT's "
               "extension)"),
    OPT_STR("key", dq_state, key, "K", "PyTorch input: the entry holding the tensors ('.' the "
            "top level)"),
    OPT_END,
};

static const cli_command command = {
    "dequantize", "IN -o OUT [options]",
    "Rebuilds a plain checkpoint with the original tensor names and shapes, loadable by the\n"
    "original architecture. Quantized tensors become --type (default: their original dtype);\n"
    "the others are copied unchanged.",
    options, NULL};

int cmd_dequantize(int argc, char **argv) {
    dq_state s = {NULL, NULL, MQ_DTYPE_INVALID, MQ_FORMAT_AUTO};
    cli_args a;
    int rc = cli_parse(&command, &s, argc, argv, &a);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    if (a.npos != 1 || !s.output)
        return cli_usage_error("dequantize", a.npos > 1 ? "one input at a time" : "needs IN and -o OUT");
    const char *in = a.pos[0];
    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return EXIT_GENERAL;
    cli_signals_install(ctx);
    mq_status st = mq_ctx_set_threads(ctx, (int)g_cli.threads);
    if (g_cli.progress) mq_ctx_set_progress(ctx, cli_progress, NULL);
    mq_open_options oo;
    mq_open_options_default(&oo);
    oo.key = s.key;
    mq_qmodel *qm = NULL;
    if (st == MQ_OK) st = mq_qmodel_open_with_options(ctx, in, &oo, &qm);
    if (st != MQ_OK) rc = cli_fail(ctx, st);
    if (!rc) rc = cli_prepare_output(ctx, s.output, mq_qmodel_model(qm));
    if (!rc) {
        st = mq_qmodel_dequantize(qm, s.output, (mq_dtype)s.dtype, (mq_format)s.format);
        cli_progress_done();
        if (st != MQ_OK) rc = cli_fail(ctx, st);
    }
    mq_qmodel_free(qm);
    if (!rc && g_cli.json && strcmp(s.output, "-")) {
        fputs("{\"input\": ", stdout);
        cli_json_string(stdout, in);
        fputs(", \"output\": ", stdout);
        cli_json_string(stdout, s.output);
        fputs("}\n", stdout);
    } else if (!rc) {
        cli_info("%s -> %s", in, strcmp(s.output, "-") ? s.output : "standard output");
    }
    cli_signals_install(NULL); /* the handler must not see a freed context */
    mq_ctx_free(ctx);
    return rc;
}
