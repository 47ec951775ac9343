/* monoquant validate --run: each quantized layer runs through the quantized kernels and its
 * output is compared with the f32 layer's (reference weights, or the dequantized ones). */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *mode_name(int act) {
    return act == MQ_ACT_DYNAMIC ? "dynamic" : act == MQ_ACT_STATIC ? "static" : "weight";
}

/* Layer prefix of a weight name into buf ("blocks.0.fc.weight" -> "blocks.0.fc"). */
static const char *layer_prefix(const char *name, char *buf, size_t cap) {
    size_t n = strlen(name), k = strlen(".weight");
    if (n > k && !strcmp(name + n - k, ".weight")) n -= k;
    if (n >= cap) n = cap - 1;
    memcpy(buf, name, n);
    buf[n] = 0;
    return buf;
}

typedef struct run_state {
    const validate_run_opts *o;
    mq_ctx *ctx;
    mq_model *acts;
    float *x;            /* activation rows for the current layer */
    size_t x_cap;
    size_t warnings;
} run_state;

/* Inputs for a layer from the activation file: sets *x (NULL: random), *rows and a note. */
static mq_status layer_inputs(run_state *s, const mq_qtensor *t, const char *layer, int64_t K,
                              const float **x, int64_t *rows, const char **note) {
    *x = NULL;
    *rows = s->o->rows;
    *note = "random";
    if (!s->acts) return MQ_OK;
    long j = mq_model_find(s->acts, layer);
    if (j < 0) {
        *note = "random (no activations)";
        return MQ_OK;
    }
    const mq_tensor *a = mq_model_tensor(s->acts, (size_t)j);
    if (t->ndim != 2) {
        *note = "random (conv: needs patches)";
        return MQ_OK;
    }
    if (!mq_dtype_is_float(a->dtype) || a->ndim < 1 || a->shape[a->ndim - 1] != K ||
        a->numel < (uint64_t)K) {
        cli_warn("%s: activations '%s' are not float [..., %lld]: random inputs used",
                 s->o->activations, layer, (long long)K);
        s->warnings++;
        *note = "random (bad activations)";
        return MQ_OK;
    }
    uint64_t avail = a->numel / (uint64_t)K;
    int64_t m = avail < (uint64_t)s->o->rows ? (int64_t)avail : s->o->rows;
    size_t n = (size_t)m * (size_t)K;
    if (n > s->x_cap) {
        free(s->x);
        s->x_cap = 0;
        s->x = (float *)malloc(n * sizeof *s->x);
        if (!s->x) return MQ_ERR_NOMEM;
        s->x_cap = n;
    }
    mq_status st = mq_convert(s->ctx, MQ_F32, s->x, a->dtype, a->data, n);
    if (st != MQ_OK) return st;
    for (size_t k = 0; k < n; k++)
        if (!isfinite(s->x[k])) {
            cli_warn("%s: activations '%s' hold NaN or Inf: random inputs used",
                     s->o->activations, layer);
            s->warnings++;
            *note = "random (bad activations)";
            return MQ_OK;
        }
    *x = s->x;
    *rows = m;
    *note = "activations";
    return MQ_OK;
}

/* Static mode quantizes the inputs on the grid stored from the calibration data. Inputs
 * unlike that data say little about the checkpoint: many values clipped at the grid's ends,
 * or so narrow that they fall on a few of its 256 levels. Writes why into `why` and returns
 * true for such inputs. x NULL: the N(0, 1) rows of mq_qmodel_check_layer. */
static bool inputs_unlike_calibration(const mq_qtensor *t, const float *x, size_t n, char *why,
                                      size_t cap) {
    if (!t->input_scale) return false;
    float scale;
    memcpy(&scale, t->input_scale->data, 4);
    int zp = 128; /* quint8 terms, as the kernels take it; a missing zero point: symmetric */
    if (t->input_zero_point && t->input_zero_point->dtype == MQ_U8) {
        uint8_t v;
        memcpy(&v, t->input_zero_point->data, 1);
        zp = v;
    } else if (t->input_zero_point) {
        int8_t v;
        memcpy(&v, t->input_zero_point->data, 1);
        zp = v + 128;
    }
    double lo = (double)(0 - zp) * scale, hi = (double)(255 - zp) * scale;
    if (!(hi > lo)) return false;
    double clipped, span;
    if (!x) { /* N(0, 1): expected fractions; +-3 sigma holds 99.7 % */
        clipped = 0.5 * erfc(-lo / sqrt(2.0)) + 0.5 * erfc(hi / sqrt(2.0));
        span = 6.0;
    } else {
        size_t out = 0;
        float mn = x[0], mx = x[0];
        for (size_t k = 0; k < n; k++) {
            out += x[k] < lo || x[k] > hi;
            mn = x[k] < mn ? x[k] : mn;
            mx = x[k] > mx ? x[k] : mx;
        }
        clipped = n ? (double)out / (double)n : 0;
        span = (double)mx - mn;
    }
    double levels = span / scale;
    if (clipped > 0.01)
        snprintf(why, cap, "inputs unlike the calibration data: %.0f%% fall outside the stored "
                 "input range [%.3g, %.3g]", 100 * clipped, lo, hi);
    else if (levels < 16)
        snprintf(why, cap, "inputs unlike the calibration data: they span %.1f of the 256 "
                 "levels of the stored input range [%.3g, %.3g]", levels, lo, hi);
    else
        return false;
    return true;
}

int validate_run(const validate_run_opts *o, mq_ctx *ctx, mq_qmodel *qm, mq_qmodel *ref) {
    run_state s = {o, ctx, NULL, NULL, 0, 0};
    int rc = EXIT_OK;
    mq_status st = MQ_OK;
    if (o->activations && (st = mq_model_open(ctx, o->activations, NULL, &s.acts)) != MQ_OK)
        return cli_fail(ctx, st);
    size_t n = mq_qmodel_count(qm), nrun = 0, failures = 0, notrun = 0, nfallback = 0;
    size_t nflagged = 0;
    size_t nrows = 0;
    double worst = INFINITY;
    if (o->json) {
        printf("{\"checkpoint\": ");
        cli_json_string(stdout, o->q);
        printf(", \"reference\": ");
        if (o->ref) cli_json_string(stdout, o->ref);
        else printf("null");
        printf(", \"mode\": \"%s\", \"rows\": %lld, \"seed\": %llu, \"layers\": [", mode_name(o->act),
               (long long)o->rows, (unsigned long long)o->seed);
    } else if (!g_cli.quiet) {
        printf("output error of each quantized layer against the f32 layer with %s weights;\n"
               "inputs: %sM = %lld rows of N(0, 1) values (seed %llu)\n",
               o->ref ? "the reference" : "its own dequantized",
               o->activations ? "the first recorded rows (at most M) where the activations hold "
                                "the layer,\n        else " : "",
               (long long)o->rows, (unsigned long long)o->seed);
        printf("  %-32s %-10s %-8s %-8s %5s %9s %9s %10s  %s\n", "layer", "format", "mode",
               "input", "rows", "SQNR dB", "rel.err", "max abs", "status");
    }
    bool progress = g_cli.progress && !o->json;
    for (size_t i = 0; i < n; i++) {
        if (!mq_qmodel_runnable(qm, i)) continue;
        const mq_qtensor *t = mq_qmodel_tensor(qm, i);
        if (progress) cli_progress(NULL, t->name, i, n);
        char layer[512], scheme[64], problem[700] = "";
        layer_prefix(t->name, layer, sizeof layer);
        cli_qspec_name(&t->spec, scheme, sizeof scheme);
        int64_t K = (int64_t)(t->numel / (uint64_t)t->shape[0]);
        const float *x;
        int64_t rows;
        const char *note;
        mq_layer_check c = {0};
        bool ran = false;
        st = mq_qmodel_verify(qm, i);
        if (st == MQ_ERR_VALIDATION) {
            snprintf(problem, sizeof problem, "%s", mq_ctx_message(ctx));
            failures++;
            st = MQ_OK;
            note = "-";
        } else {
            if (st == MQ_OK) st = layer_inputs(&s, t, layer, K, &x, &rows, &note);
            if (st == MQ_OK) st = mq_qmodel_check_layer(qm, i, ref, o->act, x, rows, o->seed, &c);
            if (st == MQ_ERR_UNSUPPORTED || st == MQ_ERR_INVALID || st == MQ_ERR_FORMAT) {
                /* a layout the kernels cannot run (not a failure of the checkpoint), or a
                 * layer that cannot be built or does not match the reference (a failure) */
                snprintf(problem, sizeof problem, "not run: %s", mq_ctx_message(ctx));
                if (st != MQ_ERR_UNSUPPORTED) failures++;
                else notrun++, s.warnings++;
                st = MQ_OK;
            } else if (st != MQ_OK) {
                if (progress) cli_progress_done();
                rc = cli_fail(ctx, st);
                goto done;
            } else {
                ran = true;
                nrun++;
                nfallback += o->act == MQ_ACT_STATIC && c.act == MQ_ACT_DYNAMIC;
                if (c.error.sqnr_db < worst) worst = c.error.sqnr_db;
                if (o->has_min && !(c.error.sqnr_db >= o->min_sqnr)) {
                    snprintf(problem, sizeof problem, "BELOW --min-sqnr %.2f", o->min_sqnr);
                    failures++;
                } else if (c.act == MQ_ACT_STATIC &&
                           inputs_unlike_calibration(t, x, (size_t)rows * (size_t)K, problem,
                                                     sizeof problem)) {
                    cli_warn("%s: %s (record inputs with --activations)", layer, problem);
                    nflagged++;
                    s.warnings++;
                }
            }
        }
        if (o->json) {
            printf("%s\n  {\"layer\": ", nrows++ ? "," : "");
            cli_json_string(stdout, layer);
            printf(", \"tensor\": ");
            cli_json_string(stdout, t->name);
            printf(", \"stored_as\": \"%s\", \"ran\": %s", scheme, ran ? "true" : "false");
            if (ran)
                printf(", \"mode\": \"%s\", \"input\": \"%s\", \"rows\": %lld, \"out_features\": "
                       "%lld, \"in_features\": %lld, \"bias\": %s", mode_name(c.act), note,
                       (long long)rows, (long long)c.out_features, (long long)c.in_features,
                       c.has_bias ? "true" : "false");
            printf(", \"ok\": %s", problem[0] ? "false" : "true");
            if (problem[0]) {
                printf(", \"problem\": ");
                cli_json_string(stdout, problem);
            }
            if (ran) cli_json_error_stats(stdout, &c.error);
            printf("}");
        } else if (!g_cli.quiet) {
            if (ran)
                printf("  %-32s %-10s %-8s %-8s %5lld", layer, scheme, mode_name(c.act),
                       x ? "recorded" : "random", (long long)rows);
            else
                printf("  %-32s %-10s %-8s %-8s %5s", layer, scheme, "-", "-", "-");
            if (ran) printf(" %9.2f %9.5f %10.3g", c.error.sqnr_db, c.error.rel_fro, c.error.max_abs);
            else printf(" %9s %9s %10s", "-", "-", "-");
            printf("  %s\n", problem[0] ? problem : "ok");
        }
    }
    if (progress) cli_progress_done();
    if (!nrun && !failures) cli_warn("%s holds no quantized layer to run", o->q), s.warnings++;
    if (o->json) {
        printf("],\n \"run\": %zu, \"not_run\": %zu, \"failures\": %zu, \"warnings\": %zu, "
               "\"unlike_calibration\": %zu, \"worst_sqnr_db\": ", nrun, notrun, failures,
               s.warnings, nflagged);
        cli_json_number(stdout, nrun ? worst : NAN);
        printf("}\n");
    } else if (!g_cli.quiet) {
        printf("%zu layer(s) run", nrun);
        if (nrun) printf(", worst output SQNR %.2f dB", worst);
        if (notrun) printf(", %zu not run", notrun);
        if (nfallback) printf(", %zu dynamic (no stored input scale)", nfallback);
        if (nflagged) printf(", %zu on inputs unlike the calibration data", nflagged);
        printf("; %s\n", failures ? "FAILED" : nflagged ? "not conclusive" : "ok");
    }
    fflush(stdout);
    if (failures) {
        fprintf(stderr, "monoquant: error: validation failed: %zu problem(s)\n", failures);
        rc = EXIT_VALIDATION;
    } else if (o->strict && s.warnings) {
        fprintf(stderr, "monoquant: error: %zu warning(s) under --strict\n", s.warnings);
        rc = EXIT_QUANT;
    }
done:
    free(s.x);
    mq_model_free(s.acts);
    return rc;
}
