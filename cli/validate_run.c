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

static void print_header(const validate_run_opts *o) {
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
}

/* One layer's run and its verdict. */
typedef struct layer_result {
    char layer[512], problem[700];
    const float *x;       /* recorded inputs, NULL: random */
    int64_t rows;
    const char *note;
    mq_layer_check c;
    bool ran, failed, not_run, flagged; /* flagged: static, on inputs unlike the calibration */
} layer_result;

typedef struct run_totals {
    size_t nrun, failures, notrun, nfallback, nflagged, nrows;
    double worst;
} run_totals;

/* Runs layer i. MQ_OK also for a layer that fails its check (lr->failed) or cannot run
 * (lr->not_run); other statuses end the command. */
static mq_status run_layer(run_state *s, mq_qmodel *qm, size_t i, mq_qmodel *ref,
                           layer_result *lr) {
    const validate_run_opts *o = s->o;
    const mq_qtensor *t = mq_qmodel_tensor(qm, i);
    memset(lr, 0, sizeof *lr);
    lr->note = "-";
    layer_prefix(t->name, lr->layer, sizeof lr->layer);
    int64_t K = (int64_t)(t->numel / (uint64_t)t->shape[0]);
    mq_status st = mq_qmodel_verify(qm, i);
    if (st == MQ_ERR_VALIDATION) {
        snprintf(lr->problem, sizeof lr->problem, "%s", mq_ctx_message(s->ctx));
        lr->failed = true;
        return MQ_OK;
    }
    if (st == MQ_OK) st = layer_inputs(s, t, lr->layer, K, &lr->x, &lr->rows, &lr->note);
    if (st == MQ_OK)
        st = mq_qmodel_check_layer(qm, i, ref, o->act, lr->x, lr->rows, o->seed, &lr->c);
    if (st == MQ_ERR_UNSUPPORTED || st == MQ_ERR_INVALID || st == MQ_ERR_FORMAT) {
        /* a layout the kernels cannot run (not a failure of the checkpoint), or a layer that
         * cannot be built or does not match the reference (a failure) */
        snprintf(lr->problem, sizeof lr->problem, "not run: %s", mq_ctx_message(s->ctx));
        if (st != MQ_ERR_UNSUPPORTED) lr->failed = true;
        else lr->not_run = true;
        return MQ_OK;
    }
    if (st != MQ_OK) return st;
    lr->ran = true;
    if (o->has_min && !(lr->c.error.sqnr_db >= o->min_sqnr)) {
        snprintf(lr->problem, sizeof lr->problem, "BELOW --min-sqnr %.2f", o->min_sqnr);
        lr->failed = true;
    } else if (lr->c.act == MQ_ACT_STATIC &&
               inputs_unlike_calibration(t, lr->x, (size_t)lr->rows * (size_t)K, lr->problem,
                                         sizeof lr->problem)) {
        cli_warn("%s: %s (record inputs with --activations)", lr->layer, lr->problem);
        lr->flagged = true;
    }
    return MQ_OK;
}

static void report_layer(const validate_run_opts *o, const mq_qtensor *t, const layer_result *lr,
                         size_t nth) {
    char scheme[64];
    cli_qspec_name(&t->spec, scheme, sizeof scheme);
    const mq_layer_check *c = &lr->c;
    if (o->json) {
        printf("%s\n  {\"layer\": ", nth ? "," : "");
        cli_json_string(stdout, lr->layer);
        printf(", \"tensor\": ");
        cli_json_string(stdout, t->name);
        printf(", \"stored_as\": \"%s\", \"ran\": %s", scheme, lr->ran ? "true" : "false");
        if (lr->ran)
            printf(", \"mode\": \"%s\", \"input\": \"%s\", \"rows\": %lld, \"out_features\": "
                   "%lld, \"in_features\": %lld, \"bias\": %s", mode_name(c->act), lr->note,
                   (long long)lr->rows, (long long)c->out_features, (long long)c->in_features,
                   c->has_bias ? "true" : "false");
        printf(", \"ok\": %s", lr->problem[0] ? "false" : "true");
        if (lr->problem[0]) {
            printf(", \"problem\": ");
            cli_json_string(stdout, lr->problem);
        }
        if (lr->ran) cli_json_error_stats(stdout, &c->error);
        printf("}");
    } else if (!g_cli.quiet) {
        if (lr->ran)
            printf("  %-32s %-10s %-8s %-8s %5lld", lr->layer, scheme, mode_name(c->act),
                   lr->x ? "recorded" : "random", (long long)lr->rows);
        else
            printf("  %-32s %-10s %-8s %-8s %5s", lr->layer, scheme, "-", "-", "-");
        if (lr->ran) printf(" %9.2f %9.5f %10.3g", c->error.sqnr_db, c->error.rel_fro, c->error.max_abs);
        else printf(" %9s %9s %10s", "-", "-", "-");
        printf("  %s\n", lr->problem[0] ? lr->problem : "ok");
    }
}

static int report_summary(const validate_run_opts *o, const run_totals *tt, size_t warnings) {
    if (o->json) {
        printf("],\n \"run\": %zu, \"not_run\": %zu, \"failures\": %zu, \"warnings\": %zu, "
               "\"unlike_calibration\": %zu, \"worst_sqnr_db\": ", tt->nrun, tt->notrun,
               tt->failures, warnings, tt->nflagged);
        cli_json_number(stdout, tt->nrun ? tt->worst : NAN);
        printf("}\n");
    } else if (!g_cli.quiet) {
        printf("%zu layer(s) run", tt->nrun);
        if (tt->nrun) printf(", worst output SQNR %.2f dB", tt->worst);
        if (tt->notrun) printf(", %zu not run", tt->notrun);
        if (tt->nfallback) printf(", %zu dynamic (no stored input scale)", tt->nfallback);
        if (tt->nflagged) printf(", %zu on inputs unlike the calibration data", tt->nflagged);
        printf("; %s\n", tt->failures ? "FAILED" : tt->nflagged ? "not conclusive" : "ok");
    }
    fflush(stdout);
    return cli_verdict(tt->failures, o->strict, warnings);
}

int validate_run(const validate_run_opts *o, mq_ctx *ctx, mq_qmodel *qm, mq_qmodel *ref) {
    run_state s = {o, ctx, NULL, NULL, 0, 0};
    int rc = EXIT_OK;
    mq_status st = MQ_OK;
    if (o->activations && (st = mq_model_open(ctx, o->activations, NULL, &s.acts)) != MQ_OK)
        return cli_fail(ctx, st);
    run_totals tt = {0};
    tt.worst = INFINITY;
    print_header(o);
    bool progress = g_cli.progress && !o->json;
    size_t n = mq_qmodel_count(qm);
    layer_result *lr = (layer_result *)malloc(sizeof *lr);
    if (!lr) rc = EXIT_GENERAL;
    for (size_t i = 0; i < n && rc == EXIT_OK; i++) {
        if (!mq_qmodel_runnable(qm, i)) continue;
        const mq_qtensor *t = mq_qmodel_tensor(qm, i);
        if (progress) cli_progress(NULL, t->name, i, n);
        st = run_layer(&s, qm, i, ref, lr);
        if (st != MQ_OK) {
            if (progress) cli_progress_done();
            rc = cli_fail(ctx, st);
            break;
        }
        tt.failures += lr->failed;
        tt.notrun += lr->not_run;
        tt.nflagged += lr->flagged;
        s.warnings += lr->not_run + lr->flagged;
        if (lr->ran) {
            tt.nrun++;
            tt.nfallback += o->act == MQ_ACT_STATIC && lr->c.act == MQ_ACT_DYNAMIC;
            if (lr->c.error.sqnr_db < tt.worst) tt.worst = lr->c.error.sqnr_db;
        }
        report_layer(o, t, lr, tt.nrows++);
    }
    if (progress) cli_progress_done();
    if (rc == EXIT_OK) {
        if (!tt.nrun && !tt.failures) cli_warn("%s holds no quantized layer to run", o->q), s.warnings++;
        rc = report_summary(o, &tt, s.warnings);
    }
    free(lr);
    free(s.x);
    mq_model_free(s.acts);
    return rc;
}
