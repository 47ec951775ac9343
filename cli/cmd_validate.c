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
        goto done;
    }
    if (o.run) {
        o.r.q = o.q, o.r.ref = o.ref, o.r.min_sqnr = o.min_sqnr, o.r.has_min = o.has_min;
        o.r.json = o.json, o.r.strict = o.strict;
        rc = validate_run(&o.r, ctx, qm, ref);
        goto done;
    }
    size_t n = mq_qmodel_count(qm), nq = 0, failures = 0, warnings = 0;
    uint64_t stored = 0, ref_bytes = 0;
    if (o.json) {
        printf("{\"checkpoint\": ");
        cli_json_string(stdout, o.q);
        printf(", \"tensors\": [");
    }
    else if (!g_cli.quiet)
        printf("  %-40s %-12s %9s %9s %10s  %s\n", "tensor", "stored as", "SQNR dB",
                "rel.err", "max abs", "status");
    for (size_t i = 0; i < n; i++) {
        const mq_qtensor *t = mq_qmodel_tensor(qm, i);
        stored += t->stored_bytes;
        bool quantized = t->spec.type != MQ_Q_NONE;
        nq += quantized;
        char scheme[64], problem[600] = "";
        cli_qspec_name(&t->spec, scheme, sizeof scheme);
        mq_status vs = mq_qmodel_verify(qm, i);
        if (vs != MQ_OK) snprintf(problem, sizeof problem, "%s", mq_ctx_message(ctx)), failures++;
        mq_error_stats es;
        bool has_err = false;
        if (ref) {
            long j = mq_qmodel_find(ref, t->name);
            if (j < 0) {
                snprintf(problem, sizeof problem, "not in the reference");
                failures++;
            } else {
                const mq_qtensor *r = mq_qmodel_tensor(ref, (size_t)j);
                ref_bytes += r->stored_bytes;
                bool shape_ok = r->ndim == t->ndim;
                for (int d = 0; shape_ok && d < t->ndim; d++) shape_ok = r->shape[d] == t->shape[d];
                if (!shape_ok) {
                    snprintf(problem, sizeof problem, "shape differs from the reference");
                    failures++;
                } else if (quantized && vs == MQ_OK) {
                    mq_status es_st = mq_qmodel_error(ref, (size_t)j, qm, i, &es);
                    if (es_st != MQ_OK) {
                        snprintf(problem, sizeof problem, "%s", mq_ctx_message(ctx));
                        failures++;
                    } else {
                        has_err = true;
                        if (o.has_min && es.sqnr_db < o.min_sqnr) {
                            snprintf(problem, sizeof problem, "SQNR %.2f dB below --min-sqnr %.2f",
                                     es.sqnr_db, o.min_sqnr);
                            failures++;
                        }
                    }
                }
            }
        }
        bool four = t->spec.type == MQ_Q_INT4 || t->spec.type == MQ_Q_UINT4;
        bool risky = four && (t->kind == MQ_KIND_EMBEDDING || head_name(t->name));
        warnings += risky;
        if (o.json) {
            printf("%s\n  {\"name\": ", i ? "," : "");
            cli_json_string(stdout, t->name);
            printf(", \"stored_as\": \"%s\", \"bytes\": %llu, \"ok\": %s", scheme,
                   (unsigned long long)t->stored_bytes, problem[0] ? "false" : "true");
            if (problem[0]) {
                printf(", \"problem\": ");
                cli_json_string(stdout, problem);
            }
            if (has_err) {
                cli_json_error_stats(stdout, &es);
            }
            printf("}");
        } else if (!g_cli.quiet && (quantized || problem[0] || g_cli.verbose)) {
            printf("  %-40s %-12s", t->name, scheme);
            if (has_err) printf(" %9.2f %9.5f %10.3g", es.sqnr_db, es.rel_fro, es.max_abs);
            else printf(" %9s %9s %10s", "-", "-", "-");
            printf("  %s\n", problem[0] ? problem : "ok");
        }
        if (risky) cli_warn("%s: 4-bit on an %s", t->name,
                            t->kind == MQ_KIND_EMBEDDING ? "embedding" : "output head");
    }
    bool all_quantized = nq == n && n > 0;
    if (!nq) cli_warn("%s holds no quantized tensor", o.q), warnings++;
    if (all_quantized) cli_warn("every tensor is quantized, norms and biases included"), warnings++;
    char b1[32], b2[32];
    if (o.json) {
        printf("],\n \"quantized\": %zu, \"tensors_total\": %zu, \"bytes\": %llu, "
               "\"reference_bytes\": %llu, \"failures\": %zu, \"warnings\": %zu}\n", nq, n,
               (unsigned long long)stored, (unsigned long long)ref_bytes, failures, warnings);
    } else if (!g_cli.quiet) {
        printf("%zu of %zu tensors quantized; %s", nq, n, cli_bytes(stored, b1, sizeof b1));
        if (ref)
            printf(" vs reference %s (%.2fx smaller)", cli_bytes(ref_bytes, b2, sizeof b2),
                    stored ? (double)ref_bytes / (double)stored : 0);
        printf("; %s\n", failures ? "FAILED" : "ok");
    }
    fflush(stdout);
    if (failures) {
        fprintf(stderr, "monoquant: error: validation failed: %zu problem(s)\n", failures);
        rc = EXIT_VALIDATION;
    } else if (o.strict && warnings) {
        fprintf(stderr, "monoquant: error: %zu warning(s) under --strict\n", warnings);
        rc = EXIT_QUANT;
    }
done:
    mq_qmodel_free(qm);
    mq_qmodel_free(ref);
    mq_ctx_free(ctx);
    return rc;
}
