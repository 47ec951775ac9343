/* monoquant calibrate: recorded activations -> observers -> a statistics file. */
#include "cli.h"

#include <stdarg.h>
#include <dirent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct cal_state {
    const char *model, *output, *key;
    cli_list acts, merge;
    int observer, scheme, qtype;
    double averaging, percentile;
    long long bins;
    bool per_channel, hessian, strict;
} cal_state;

static const cli_choice observer_values[] = {
    {"minmax", MQ_OBS_MINMAX}, {"moving_average", MQ_OBS_MOVING_AVERAGE},
    {"histogram", MQ_OBS_HISTOGRAM}, {"entropy", MQ_OBS_ENTROPY},
    {"percentile", MQ_OBS_PERCENTILE}, {"mse", MQ_OBS_MSE}, {NULL, 0}};
static const cli_choice scheme_values[] = {
    {"asym|asymmetric", MQ_ASYMMETRIC}, {"sym|symmetric", MQ_SYMMETRIC}, {NULL, 0}};
static const cli_choice type_values[] = {
    {CLI_T_UINT8, MQ_Q_UINT8}, {CLI_T_INT8, MQ_Q_INT8}, {CLI_T_UINT4, MQ_Q_UINT4},
    {CLI_T_INT4, MQ_Q_INT4}, {NULL, 0}};

static const cli_option options[] = {
    OPT_STR("model|m", cal_state, model, "M", "the checkpoint whose layers are calibrated"),
    OPT_STR("key", cal_state, key, "K", "PyTorch model: the entry holding its tensors (e.g. "
            "model,\nstate_dict; '.' the top level)"),
    OPT_LIST_GREEDY("activations", cal_state, acts, "F...", "files or folders of recorded "
                    "activations (repeatable)"),
    OPT_STR("output|o", cal_state, output, "OUT", "statistics file to write (.safetensors; '-': "
            "stdout)"),
    OPT_CHOICE("observer", cal_state, observer, "KIND", observer_values, "how the input range "
               "is found (default minmax)"),
    OPT_FLAG("per-channel", cal_state, per_channel, "one scale per input channel (the file also "
             "holds the per-tensor\nscale of the union of the channel ranges)"),
    OPT_CHOICE("scheme", cal_state, scheme, NULL, scheme_values, "asymmetric (default) or "
               "symmetric"),
    OPT_CHOICE("type|dtype", cal_state, qtype, "T", type_values, "activation type (default "
               "uint8)"),
    OPT_DOUBLE("averaging", cal_state, averaging, "C", "moving_average constant (0.01)"),
    OPT_INT("bins", cal_state, bins, "N", 16, 1 << 20, "histogram bins (2048)"),
    OPT_DOUBLE("percentile", cal_state, percentile, "P", "percentile observer (99.999)"),
    OPT_FLAG("hessian", cal_state, hessian, "also store <layer>.hessian, the mean of x x^T of "
             "each Linear\nlayer's inputs, for `quantize --search gptq` (Conv layers get\n"
             "none; costs 8 * in_features^2 bytes of memory per layer)"),
    OPT_LIST_GREEDY("merge", cal_state, merge, "F...", "instead of --model/--activations: merge "
                    "statistics files of\nseparate runs (same observer settings) into -o OUT"),
    OPT_FLAG("strict", cal_state, strict, "warnings (unknown or missing layers, shape "
             "mismatches, layers\nwithout data) are errors: exit 3, nothing written"),
    OPT_END,
};

static const cli_command command = {
    "calibrate", "--model M [--key K] --activations FILE|DIR [FILE|DIR...] -o OUT [options]\n"
    "       monoquant calibrate --merge STATS STATS... -o OUT",
    "Observes the recorded inputs of every Linear and Conv layer of model M and writes\n"
    "calibration statistics (safetensors, docs/CALIBRATION.md): per layer the activation\n"
    "scale and zero point, and per input channel the mean of x^2 and max |x|.\n"
    "Activations: safetensors (or .pt) files holding one tensor per layer, named by the\n"
    "layer prefix ('blocks.0.mlp.fc' for 'blocks.0.mlp.fc.weight'), shape [..., in_features]\n"
    "for Linear and [N, C, H, W] for Conv. Each file is one batch; files are read in the\n"
    "order given, a folder's files in name order (tools/record_activations.py writes them).\n"
    "--json prints the per-layer results as JSON on stdout.\n"
    "--merge folds statistics files of separate runs into one, as one run over all their\n"
    "inputs gives (map/reduce calibration, docs/PYTHON.md).",
    options,
    "Exit codes: 0 ok, 1 general, 2 usage, 3 bad values (NaN/Inf) or warnings under\n"
    "--strict, 5 I/O or format.\n"};

typedef struct model_layer {
    char *name;          /* prefix */
    mq_layer_kind kind;
    int64_t in;          /* Linear in_features / Conv weight dim 1 */
    int64_t out;         /* weight dim 0 */
    int64_t channels;    /* declared to the calibrator (0: not yet) */
} model_layer;

static int by_name(const void *a, const void *b) {
    return strcmp(((const model_layer *)a)->name, ((const model_layer *)b)->name);
}

static model_layer *find(model_layer *ls, size_t n, const char *name) {
    model_layer key = {(char *)name, MQ_KIND_OTHER, 0, 0, 0};
    return (model_layer *)bsearch(&key, ls, n, sizeof *ls, by_name);
}

typedef struct str_list {
    char **v;
    size_t n, cap;
} str_list;

static bool push(str_list *l, const char *s) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = (char **)realloc(l->v, cap * sizeof *v);
        if (!v) return false;
        l->v = v, l->cap = cap;
    }
    char *c = strdup(s);
    if (!c) return false;
    l->v[l->n++] = c;
    return true;
}

static void list_free(str_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_checkpoint_name(const char *n) {
    size_t k = strlen(n);
    static const char *const ext[] = {".safetensors", ".pt", ".pth", ".bin"};
    for (size_t i = 0; i < 4; i++) {
        size_t e = strlen(ext[i]);
        if (k > e && !strcmp(n + k - e, ext[i])) return true;
    }
    return false;
}

/* Expands folders into their checkpoint files, sorted by name. */
static int collect(str_list *files, const char *arg) {
    struct stat sb;
    if (stat(arg, &sb) != 0) {
        fprintf(stderr, "monoquant: error: %s: cannot open\n", arg);
        return EXIT_IO;
    }
    if (!S_ISDIR(sb.st_mode)) return push(files, arg) ? EXIT_OK : EXIT_GENERAL;
    DIR *d = opendir(arg);
    if (!d) {
        fprintf(stderr, "monoquant: error: %s: cannot read the folder\n", arg);
        return EXIT_IO;
    }
    size_t first = files->n;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !is_checkpoint_name(e->d_name)) continue;
        size_t len = strlen(arg) + strlen(e->d_name) + 2;
        char *p = (char *)malloc(len);
        if (!p) break;
        snprintf(p, len, "%s/%s", arg, e->d_name);
        bool ok = push(files, p);
        free(p);
        if (!ok) break;
    }
    closedir(d);
    if (files->n == first) {
        fprintf(stderr, "monoquant: error: %s: no .safetensors or .pt files in the folder\n", arg);
        return EXIT_IO;
    }
    qsort(files->v + first, files->n - first, sizeof *files->v, cmp_str);
    return EXIT_OK;
}

typedef struct run {
    mq_ctx *ctx;
    mq_calibrator *cal;
    model_layer *layers;
    size_t nlayers;
    unsigned warnings;
} run;

__attribute__((format(printf, 2, 3))) static void warn(run *r, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    r->warnings++;
    cli_warn("%s", msg);
}

/* One activation tensor: checks it against its layer and feeds it. */
static int feed(run *r, const char *file, const mq_tensor *t) {
    model_layer *l = find(r->layers, r->nlayers, t->name);
    if (!l) {
        warn(r, "%s: activations '%s' match no Linear or Conv layer of the model (ignored)",
             file, t->name);
        return EXIT_OK;
    }
    if (!mq_dtype_is_float(t->dtype)) {
        warn(r, "%s: activations '%s' are not floating point (ignored)", file, t->name);
        return EXIT_OK;
    }
    int axis;
    int64_t c;
    if (l->kind == MQ_KIND_LINEAR) {
        axis = -1;
        c = t->ndim ? t->shape[t->ndim - 1] : 0;
        if (t->ndim < 1 || c != l->in) {
            char why[160];
            snprintf(why, sizeof why, "'%s' expects [..., %" PRId64 "]", t->name, l->in);
            warn(r, "%s: activations have the wrong shape: %s (ignored)", file, why);
            return EXIT_OK;
        }
    } else {
        axis = t->ndim == 4 ? 1 : 0;
        c = t->ndim >= 3 ? t->shape[axis] : 0;
        /* grouped convolutions: C is a multiple of the weight's dim 1 */
        bool ok = (t->ndim == 4 || t->ndim == 3) && c > 0 && c % l->in == 0 &&
                  l->out % (c / l->in) == 0;
        if (!ok) {
            char why[160];
            snprintf(why, sizeof why, "'%s' expects [N, %" PRId64 " (x groups), H, W]", t->name,
                     l->in);
            warn(r, "%s: activations have the wrong shape: %s (ignored)", file, why);
            return EXIT_OK;
        }
    }
    if (l->channels && l->channels != c) {
        warn(r, "%s: activations '%s' change their channel count between files (ignored)",
             file, t->name);
        return EXIT_OK;
    }
    mq_status st = MQ_OK;
    if (!l->channels) {
        st = mq_calibrator_add_layer(r->cal, l->name, c);
        if (st == MQ_OK) l->channels = c;
    }
    if (st == MQ_OK)
        st = mq_calibrator_update(r->cal, l->name, t->dtype, t->data, t->ndim, t->shape, axis);
    if (st != MQ_OK) {
        char msg[1200];
        snprintf(msg, sizeof msg, "%s", mq_ctx_message(r->ctx));
        fprintf(stderr, "monoquant: error: %s: %s\n", file, msg);
        return cli_exit_code(st);
    }
    return EXIT_OK;
}

/* Rows a layer received (0 for a layer never declared). */
static uint64_t layer_rows(const mq_calibrator *cal, const char *layer) {
    int64_t i = mq_calibrator_find(cal, layer);
    return i < 0 ? 0 : mq_calibrator_layer_rows(cal, (size_t)i);
}

static void print_json(const mq_calib_stats *s, const char *out) {
    printf("{\"output\": ");
    cli_json_string(stdout, out);
    printf(", \"layers\": [");
    for (size_t i = 0; i < mq_calib_stats_count(s); i++) {
        mq_layer_stats ls = *mq_calib_stats_layer(s, i);
        printf("%s\n  {\"layer\": ", i ? "," : "");
        cli_json_string(stdout, ls.layer);
        printf(", \"observer\": \"%s\", \"channels\": %" PRId64 ", \"rows\": %" PRIu64
               ", \"input_scale\": %.9g, \"input_zero_point\": %d, \"input_min\": %.9g, "
               "\"input_max\": %.9g}", ls.observer, ls.channels, ls.count,
               (double)ls.input_scale, (int)ls.input_zero_point, (double)ls.input_min,
               (double)ls.input_max);
    }
    printf("%s]}\n", mq_calib_stats_count(s) ? "\n" : "");
}

/* Observer settings given for an observer that does not use them: warned, never silent. */
static unsigned ignored_settings(const cal_state *c, const cli_args *args) {
    mq_observer_kind k = (mq_observer_kind)c->observer;
    bool hist = k == MQ_OBS_HISTOGRAM || k == MQ_OBS_ENTROPY || k == MQ_OBS_PERCENTILE ||
                k == MQ_OBS_MSE;
    static const struct { const char *opt; const char *needs; } rules[] = {
        {"percentile", "--observer percentile"},
        {"bins", "a histogram observer (histogram, entropy, percentile, mse)"},
        {"averaging", "--observer moving_average"}};
    bool unused[3] = {k != MQ_OBS_PERCENTILE, !hist, k != MQ_OBS_MOVING_AVERAGE};
    unsigned n = 0;
    for (int i = 0; i < 3; i++)
        if (unused[i] && cli_given(&command, args, rules[i].opt)) {
            cli_warn("--%s has no effect with the %s observer (it needs %s)", rules[i].opt,
                     mq_observer_kind_name(k), rules[i].needs);
            n++;
        }
    return n;
}

/* parse: the command line into observer options. Returns 0, -1 (help shown) or an exit code;
 * *ignored counts the settings warned about as having no effect. */
static int parse(cal_state *c, mq_observer_options *opts, int argc, char **argv,
                 unsigned *ignored) {
    cli_args args;
    int rc = cli_parse(&command, c, argc, argv, &args);
    if (rc) return rc;
    if (args.npos)
        return cli_usage_error("calibrate", "unexpected argument '%s'", args.pos[0]);
    if (c->merge.n) {
        if (c->model || c->acts.n)
            return cli_usage_error("calibrate", "--merge takes statistics files, not --model "
                                   "or --activations");
        if (c->merge.n < 2 || !c->output)
            return cli_usage_error("calibrate", "--merge needs two or more files and -o");
        return 0;
    }
    if (!c->model || !c->acts.n || !c->output)
        return cli_usage_error("calibrate", "--model, --activations and -o are required");
    mq_observer_options_default(opts, (mq_observer_kind)c->observer);
    if (c->per_channel) opts->granularity = MQ_PER_CHANNEL;
    if (cli_given(&command, &args, "scheme")) opts->scheme = (mq_scheme)c->scheme;
    if (cli_given(&command, &args, "type")) opts->type = (mq_qtype)c->qtype;
    if (cli_given(&command, &args, "averaging")) opts->averaging_constant = c->averaging;
    if (cli_given(&command, &args, "percentile")) opts->percentile = c->percentile;
    if (cli_given(&command, &args, "bins")) opts->bins = (int)c->bins;
    *ignored = ignored_settings(c, &args);
    return 0;
}

/* plan: the model's Linear and Conv layers by prefix, and the activation files. */
static int plan(run *r, const cal_state *c, const mq_model *model, str_list *files) {
    size_t nt = mq_model_tensor_count(model);
    r->layers = (model_layer *)calloc(nt ? nt : 1, sizeof *r->layers);
    if (!r->layers) return EXIT_GENERAL;
    for (size_t i = 0; i < nt; i++) {
        const mq_tensor *t = mq_model_tensor(model, i);
        mq_layer_kind k = mq_classify_tensor(t);
        size_t len = strlen(t->name);
        if ((k != MQ_KIND_LINEAR && k != MQ_KIND_CONV) || len < 8 ||
            strcmp(t->name + len - 7, ".weight") || t->ndim < 2)
            continue;
        model_layer *l = &r->layers[r->nlayers];
        l->name = strndup(t->name, len - 7);
        if (!l->name) return EXIT_GENERAL;
        l->kind = k;
        l->out = t->shape[0];
        l->in = k == MQ_KIND_LINEAR ? t->shape[t->ndim - 1] : t->shape[1];
        r->nlayers++;
    }
    if (!r->nlayers) {
        fprintf(stderr, "monoquant: error: %s: the model has no Linear or Conv layers\n", c->model);
        return EXIT_CONFIG;
    }
    qsort(r->layers, r->nlayers, sizeof *r->layers, by_name);
    int rc = EXIT_OK;
    for (size_t i = 0; i < c->acts.n && rc == EXIT_OK; i++) rc = collect(files, c->acts.v[i]);
    for (size_t i = 0; i < files->n && rc == EXIT_OK; i++)
        if (cli_same_file(files->v[i], c->output)) {
            fprintf(stderr, "monoquant: error: %s: the output is an input file (activations); "
                    "refusing to overwrite it\n", c->output);
            rc = EXIT_CONFIG;
        }
    return rc;
}

/* run: feeds every activation file, then checks what the layers received. */
static int observe(run *r, const cal_state *c, const mq_model *model, const str_list *files) {
    mq_status st;
    int rc = EXIT_OK;
    for (size_t f = 0; f < files->n && rc == EXIT_OK; f++) {
        cli_progress(NULL, files->v[f], f, files->n);
        mq_model *am = NULL;
        st = mq_model_open(r->ctx, files->v[f], NULL, &am);
        if (st != MQ_OK) return cli_fail(r->ctx, st);
        for (size_t i = 0; i < mq_model_tensor_count(am) && rc == EXIT_OK; i++)
            rc = feed(r, files->v[f], mq_model_tensor(am, i));
        mq_model_free(am);
    }
    cli_progress_done();
    if (rc != EXIT_OK) return rc;
    /* layers of the model that saw nothing, in file order of the model */
    for (size_t i = 0; i < mq_model_tensor_count(model); i++) {
        const char *name = mq_model_tensor(model, i)->name;
        size_t len = strlen(name);
        if (len < 8 || strcmp(name + len - 7, ".weight")) continue;
        char prefix[1024];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 7), name);
        model_layer *l = find(r->layers, r->nlayers, prefix);
        if (l && !layer_rows(r->cal, prefix))
            warn(r, "layer '%s'%s: no activations were recorded; it gets no statistics", prefix,
                 l->kind == MQ_KIND_CONV ? " (conv)" : "");
    }
    size_t fed = 0;
    for (size_t i = 0; i < r->nlayers; i++)
        fed += layer_rows(r->cal, r->layers[i].name) > 0;
    if (!fed) {
        fprintf(stderr, "monoquant: error: no layer of %s received activations; nothing written\n",
                c->model);
        return EXIT_QUANT;
    }
    if (c->strict && r->warnings) {
        fprintf(stderr, "monoquant: error: %u warning%s under --strict; nothing written\n",
                r->warnings, r->warnings == 1 ? "" : "s");
        return EXIT_QUANT;
    }
    return EXIT_OK;
}

/* report: what was written. */
static void report(const mq_calib_stats *stats, const cal_state *c, const run *r, size_t nfiles,
                   const mq_observer_options *opts) {
    if (g_cli.json) print_json(stats, c->output);
    size_t nl = mq_calib_stats_count(stats);
    if (g_cli.verbose && !g_cli.json) {
        for (size_t i = 0; i < nl; i++) {
            mq_layer_stats ls = *mq_calib_stats_layer(stats, i);
            cli_info("  %-40s rows %10" PRIu64 "  range [%.6g, %.6g]  scale %.6g  zero point %d",
                     ls.layer, ls.count, (double)ls.input_min, (double)ls.input_max,
                     (double)ls.input_scale, (int)ls.input_zero_point);
        }
    }
    char obs_text[256];
    mq_observer_options_format(opts, obs_text, sizeof obs_text);
    cli_info("calibrated %zu of %zu layers from %zu file%s (%s) -> %s", nl, r->nlayers, nfiles,
             nfiles == 1 ? "" : "s", obs_text, c->output);
}

/* --merge: statistics files read back (mq_calibrator_open), folded into the first, saved. */
static int merge_files(const cal_state *c) {
    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return EXIT_GENERAL;
    cli_signals_install(ctx);
    mq_ctx_set_threads(ctx, (int)g_cli.threads);
    int rc = cli_prepare_output(ctx, c->output, NULL);
    for (size_t i = 0; !rc && i < c->merge.n; i++)
        if (cli_same_file(c->merge.v[i], c->output)) {
            fprintf(stderr, "monoquant: error: %s: the output is an input file; refusing to "
                    "overwrite it\n", c->output);
            rc = EXIT_CONFIG;
        }
    mq_calibrator *all = NULL, *one = NULL;
    mq_model *first = NULL;
    mq_status st = MQ_OK;
    for (size_t i = 0; !rc && st == MQ_OK && i < c->merge.n; i++) {
        st = mq_calibrator_open(ctx, c->merge.v[i], i ? &one : &all);
        if (st == MQ_OK && i) st = mq_calibrator_merge(all, one);
        mq_calibrator_free(one);
        one = NULL;
    }
    /* the model the statistics belong to, as the first file names it */
    if (!rc && st == MQ_OK) st = mq_model_open(ctx, c->merge.v[0], NULL, &first);
    int64_t mi = first ? mq_model_metadata_find(first, "monoquant.model") : -1;
    const char *model = mi >= 0 ? mq_model_metadata_value(first, (size_t)mi) : NULL;
    mq_kv meta[] = {{"monoquant.model", model}};
    if (!rc && st == MQ_OK) st = mq_calibrator_save(all, c->output, meta, model ? 1 : 0);
    if (!rc && st != MQ_OK) rc = cli_fail(ctx, st);
    if (!rc) cli_info("merged %zu statistics files -> %s", c->merge.n, c->output);
    mq_model_free(first);
    mq_calibrator_free(all);
    mq_ctx_free(ctx);
    return rc;
}

int cmd_calibrate(int argc, char **argv) {
    cal_state c;
    memset(&c, 0, sizeof c);
    c.observer = MQ_OBS_MINMAX;
    mq_observer_options opts;
    str_list files = {0};
    run r = {0};
    mq_model *model = NULL;
    mq_calib_stats *stats = NULL;
    unsigned ignored = 0;
    int rc = parse(&c, &opts, argc, argv, &ignored);
    r.warnings = ignored; /* under --strict they stop the run before anything is written */
    if (!rc && c.merge.n) rc = merge_files(&c);
    if (rc || c.merge.n) {
        cli_list_free(&c.acts);
        cli_list_free(&c.merge);
        return rc < 0 ? EXIT_OK : rc;
    }
    r.ctx = mq_ctx_create();
    if (!r.ctx) {
        cli_list_free(&c.acts);
        fprintf(stderr, "monoquant: error: out of memory\n");
        return EXIT_GENERAL;
    }
    cli_signals_install(r.ctx);
    mq_ctx_set_threads(r.ctx, (int)g_cli.threads);
    mq_status st = mq_calibrator_create(r.ctx, &opts, &r.cal);
    if (st == MQ_OK && c.hessian) st = mq_calibrator_set_hessian(r.cal, 1);
    if (st != MQ_OK) {
        rc = cli_usage_error("calibrate", "%s", mq_ctx_message(r.ctx));
        goto done;
    }
    mq_open_options model_opts;
    mq_open_options_default(&model_opts);
    model_opts.key = c.key;
    st = mq_model_open(r.ctx, c.model, &model_opts, &model);
    if (st != MQ_OK) {
        rc = cli_fail(r.ctx, st);
        goto done;
    }
    rc = cli_prepare_output(r.ctx, c.output, model);
    if (!rc) rc = plan(&r, &c, model, &files);
    if (!rc) rc = observe(&r, &c, model, &files);
    if (rc) goto done;
    mq_ctx_set_progress(r.ctx, cli_progress, NULL);
    mq_kv meta[] = {{"monoquant.model", c.model}};
    st = mq_calibrator_save(r.cal, c.output, meta, 1);
    cli_progress_done();
    if (st == MQ_OK && strcmp(c.output, "-")) st = mq_calib_stats_open(r.ctx, c.output, &stats);
    if (st != MQ_OK) {
        rc = cli_fail(r.ctx, st);
        goto done;
    }
    if (stats) report(stats, &c, &r, files.n, &opts);
    else cli_info("calibration statistics from %zu file%s -> standard output", files.n,
                  files.n == 1 ? "" : "s");
done:
    mq_calib_stats_free(stats);
    mq_calibrator_free(r.cal);
    mq_model_free(model);
    for (size_t i = 0; i < r.nlayers; i++) free(r.layers[i].name);
    free(r.layers);
    cli_list_free(&c.acts);
    cli_list_free(&c.merge);
    list_free(&files);
    cli_signals_install(NULL); /* the handler must not see a freed context */
    mq_ctx_free(r.ctx);
    return rc;
}
