/* monoquant validate: integrity of a quantized checkpoint, its error figures against the
 * reference, sizes, and warnings about risky choices. */
#include "cli.h"

#include <math.h>
#include <string.h>

static const char about[] =
    "Checks a quantized checkpoint: structure (shapes, packed sizes, companions, metadata),\n"
    "values (scales finite and > 0, zero points in range), and with --reference the\n"
    "per-tensor SQNR, relative and max abs error against the original, plus sizes.\n"
    "Exit 4 when a check fails or a tensor's SQNR is below --min-sqnr; under --strict\n"
    "warnings fail too (exit 3).\n\n"
    "--run runs each quantized layer (Linear; Conv as its flattened [out, in*kh*kw]\n"
    "matrix, the product of an im2col convolution) through the quantized kernels and\n"
    "the f32 layer on the same inputs, and reports the output SQNR, relative and max abs\n"
    "error: against the --reference weights, else against the dequantized weights (the\n"
    "kernels' own error). Layers below --min-sqnr fail (exit 4).";

typedef struct vopts {
    const char *q, *ref;
    const char *key, *ref_key;
    double min_sqnr;
    bool has_min, json, strict, run;
    validate_run_opts r;
    long long seed;
} vopts;

static const cli_choice modes[] = {
    {"weight", MQ_ACT_F32}, {"dynamic", MQ_ACT_DYNAMIC}, {"static", MQ_ACT_STATIC}, {NULL, 0}};

static const cli_option options[] = {
    OPT_STR("reference", vopts, ref, "ORIG", "the original checkpoint: error figures against it"),
    OPT_STR("key", vopts, key, "K", "PyTorch inputs: the entry holding the tensors ('.' the top "
            "level)"),
    OPT_STR("reference-key", vopts, ref_key, "K", "--key for ORIG alone"),
    OPT_DOUBLE("min-sqnr", vopts, min_sqnr, "DB", "fail (exit 4) below this SQNR"),
    OPT_FLAG("strict", vopts, strict, "warnings are errors (exit 3)"),
    OPT_FLAG("run", vopts, run, "run each quantized layer (see above)"),
    OPT_CHOICE("mode", vopts, r.act, "M", modes, "--run: weight (default: f32 activations), "
               "dynamic (int8 per\nrow at run time), static (stored input_scale/zero point;\n"
               "dynamic without)"),
    OPT_INT("rows", vopts, r.rows, "M", 1, 1 << 20, "--run: input rows per layer (default 16)"),
    OPT_INT("seed", vopts, seed, "N", 0, INT64_MAX, "--run: seed of the N(0, 1) random inputs "
            "(default 0)"),
    OPT_STR("activations", vopts, r.activations, "F", "--run: recorded layer inputs "
            "(safetensors/.pt, calibration\nformat: tensor '<layer>' [..., in_features]); its "
            "first M\nrows are used for layers it has, random inputs for the others"),
    OPT_END,
};

static const cli_command command = {
    "validate", "Q [--reference ORIG] [--min-sqnr DB] [--strict] [--run [--mode M] [--rows M]\n"
    "                          [--seed N] [--activations F]]", about, options, NULL};

/* A layer named like an output head ("lm_head.weight", "model.output.weight"). */
static bool head_name(const char *name) {
    static const char *const heads[] = {"lm_head", "output", "head", "classifier", "score",
                                        "embed_out"};
    const char *dot = strrchr(name, '.');
    if (!dot) return false;
    const char *start = dot;
    while (start > name && start[-1] != '.') start--;
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++)
        if (strlen(heads[i]) == (size_t)(dot - start) && !strncmp(start, heads[i], (size_t)(dot - start)))
            return true;
    return false;
}

static int parse(vopts *o, int argc, char **argv) {
    cli_args args;
    int rc = cli_parse(&command, o, argc, argv, &args);
    if (rc) return rc;
    if (args.npos != 1)
        return cli_usage_error("validate", args.npos ? "one checkpoint at a time" :
                               "no checkpoint given");
    o->q = args.pos[0];
    o->has_min = cli_given(&command, &args, "min-sqnr");
    o->json = g_cli.json;
    o->r.seed = (unsigned long long)o->seed;
    static const char *const run_only[] = {"mode", "rows", "seed", "activations"};
    for (size_t i = 0; i < 4 && !o->run; i++)
        if (cli_given(&command, &args, run_only[i]))
            return cli_usage_error("validate", "--%s needs --run", run_only[i]);
    return 0;
}

/* One tensor's checks: structure, the reference, the SQNR floor. */
typedef struct tensor_check {
    char problem[600];     /* "" when fine */
    mq_error_stats es;
    bool has_err;
    uint64_t ref_bytes;    /* the reference tensor's stored bytes (0: none) */
} tensor_check;

static void check_tensor(const vopts *o, mq_ctx *ctx, mq_qmodel *qm, size_t i, mq_qmodel *ref,
                         tensor_check *c) {
    memset(c, 0, sizeof *c);
    const mq_qtensor *t = mq_qmodel_tensor(qm, i);
    mq_status vs = mq_qmodel_verify(qm, i);
    if (vs != MQ_OK) snprintf(c->problem, sizeof c->problem, "%s", mq_ctx_message(ctx));
    if (!ref) return;
    long j = mq_qmodel_find(ref, t->name);
    if (j < 0) {
        snprintf(c->problem, sizeof c->problem, "not in the reference");
        return;
    }
    const mq_qtensor *r = mq_qmodel_tensor(ref, (size_t)j);
    c->ref_bytes = r->stored_bytes;
    bool shape_ok = r->ndim == t->ndim;
    for (int d = 0; shape_ok && d < t->ndim; d++) shape_ok = r->shape[d] == t->shape[d];
    if (!shape_ok) {
        snprintf(c->problem, sizeof c->problem, "shape differs from the reference");
        return;
    }
    if (t->spec.type == MQ_Q_NONE || vs != MQ_OK) return;
    if (mq_qmodel_error(ref, (size_t)j, qm, i, &c->es) != MQ_OK) {
        snprintf(c->problem, sizeof c->problem, "%s", mq_ctx_message(ctx));
        return;
    }
    c->has_err = true;
    if (o->has_min && c->es.sqnr_db < o->min_sqnr)
        snprintf(c->problem, sizeof c->problem, "SQNR %.2f dB below --min-sqnr %.2f",
                 c->es.sqnr_db, o->min_sqnr);
}

static void report_tensor(const vopts *o, const mq_qtensor *t, size_t i, const tensor_check *c) {
    char scheme[64];
    cli_qspec_name(&t->spec, scheme, sizeof scheme);
    bool quantized = t->spec.type != MQ_Q_NONE;
    if (o->json) {
        printf("%s\n  {\"name\": ", i ? "," : "");
        cli_json_string(stdout, t->name);
        printf(", \"stored_as\": \"%s\", \"bytes\": %llu, \"ok\": %s", scheme,
               (unsigned long long)t->stored_bytes, c->problem[0] ? "false" : "true");
        if (c->problem[0]) {
            printf(", \"problem\": ");
            cli_json_string(stdout, c->problem);
        }
        if (c->has_err) cli_json_error_stats(stdout, &c->es);
        printf("}");
    } else if (!g_cli.quiet && (quantized || c->problem[0] || g_cli.verbose)) {
        printf("  %-40s %-12s", t->name, scheme);
        if (c->has_err) printf(" %9.2f %9.5f %10.3g", c->es.sqnr_db, c->es.rel_fro, c->es.max_abs);
        else printf(" %9s %9s %10s", "-", "-", "-");
        printf("  %s\n", c->problem[0] ? c->problem : "ok");
    }
}

typedef struct totals {
    size_t n, nq, failures, warnings;
    uint64_t stored, ref_bytes;
} totals;

/* The summary line or document, then the exit code. */
static int report_summary(const vopts *o, const totals *tt, bool has_ref) {
    char b1[32], b2[32];
    if (o->json) {
        printf("],\n \"quantized\": %zu, \"tensors_total\": %zu, \"bytes\": %llu, "
               "\"reference_bytes\": %llu, \"failures\": %zu, \"warnings\": %zu}\n", tt->nq,
               tt->n, (unsigned long long)tt->stored, (unsigned long long)tt->ref_bytes,
               tt->failures, tt->warnings);
    } else if (!g_cli.quiet) {
        printf("%zu of %zu tensors quantized; %s", tt->nq, tt->n,
               cli_bytes(tt->stored, b1, sizeof b1));
        if (has_ref)
            printf(" vs reference %s (%.2fx smaller)", cli_bytes(tt->ref_bytes, b2, sizeof b2),
                   tt->stored ? (double)tt->ref_bytes / (double)tt->stored : 0);
        printf("; %s\n", tt->failures ? "FAILED" : "ok");
    }
    fflush(stdout);
    return cli_verdict(tt->failures, o->strict, tt->warnings);
}

/* Structure and error figures of every tensor (without --run). */
static int validate_tensors(const vopts *o, mq_ctx *ctx, mq_qmodel *qm, mq_qmodel *ref) {
    totals tt = {0};
    tt.n = mq_qmodel_count(qm);
    if (o->json) {
        printf("{\"checkpoint\": ");
        cli_json_string(stdout, o->q);
        printf(", \"tensors\": [");
    } else if (!g_cli.quiet) {
        printf("  %-40s %-12s %9s %9s %10s  %s\n", "tensor", "stored as", "SQNR dB",
               "rel.err", "max abs", "status");
    }
    for (size_t i = 0; i < tt.n; i++) {
        const mq_qtensor *t = mq_qmodel_tensor(qm, i);
        tensor_check c;
        check_tensor(o, ctx, qm, i, ref, &c);
        tt.stored += t->stored_bytes;
        tt.ref_bytes += c.ref_bytes;
        tt.nq += t->spec.type != MQ_Q_NONE;
        tt.failures += c.problem[0] != 0;
        report_tensor(o, t, i, &c);
        bool four = t->spec.type == MQ_Q_INT4 || t->spec.type == MQ_Q_UINT4;
        if (four && (t->kind == MQ_KIND_EMBEDDING || head_name(t->name))) {
            tt.warnings++;
            cli_warn("%s: 4-bit on an %s", t->name,
                     t->kind == MQ_KIND_EMBEDDING ? "embedding" : "output head");
        }
    }
    if (!tt.nq) cli_warn("%s holds no quantized tensor", o->q), tt.warnings++;
    if (tt.nq == tt.n && tt.n > 0)
        cli_warn("every tensor is quantized, norms and biases included"), tt.warnings++;
    return report_summary(o, &tt, ref != NULL);
}

int cmd_validate(int argc, char **argv) {
    vopts o = {0};
    o.r.rows = 16;
    o.r.act = MQ_ACT_F32;
    int rc = parse(&o, argc, argv);
    if (rc) return rc < 0 ? EXIT_OK : rc;
    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return EXIT_GENERAL;
    mq_ctx_set_threads(ctx, (int)g_cli.threads);
    mq_qmodel *qm = NULL, *ref = NULL;
    mq_open_options oq, orf;
    mq_open_options_default(&oq);
    mq_open_options_default(&orf);
    oq.key = o.key;
    orf.key = o.ref_key ? o.ref_key : o.key;
    mq_status st = mq_qmodel_open_with_options(ctx, o.q, &oq, &qm);
    if (st == MQ_OK && o.ref) st = mq_qmodel_open_with_options(ctx, o.ref, &orf, &ref);
    if (st != MQ_OK) {
        rc = cli_fail(ctx, st);
    } else if (o.run) {
        o.r.q = o.q, o.r.ref = o.ref, o.r.min_sqnr = o.min_sqnr, o.r.has_min = o.has_min;
        o.r.json = o.json, o.r.strict = o.strict;
        rc = validate_run(&o.r, ctx, qm, ref);
    } else {
        rc = validate_tensors(&o, ctx, qm, ref);
    }
    mq_qmodel_free(qm);
    mq_qmodel_free(ref);
    mq_ctx_free(ctx);
    return rc;
}
