/* monoquant calibrate: recorded activations -> observers -> a statistics file. */
#include "cli.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void calibrate_usage(FILE *f) {
    fprintf(f,
        "usage: monoquant calibrate --model M [--key K] --activations FILE|DIR [FILE|DIR...]\n"
        "                           -o OUT\n"
        "                           [--observer KIND] [--per-channel] [--scheme sym|asym]\n"
        "                           [--dtype uint8|int8|uint4|int4] [--hessian] [--strict]\n"
        "                           [--json]\n\n"
        "Observes the recorded inputs of every Linear and Conv layer of model M and writes\n"
        "calibration statistics (safetensors, docs/CALIBRATION.md): per layer the activation\n"
        "scale and zero point, and per input channel the mean of x^2 and max |x|.\n"
        "Activations: safetensors (or .pt) files holding one tensor per layer, named by the\n"
        "layer prefix ('blocks.0.mlp.fc' for 'blocks.0.mlp.fc.weight'), shape [..., in_features]\n"
        "for Linear and [N, C, H, W] for Conv. Each file is one batch; files are read in the\n"
        "order given, a folder's files in name order (tools/record_activations.py writes them).\n\n"
        "  --model M           the checkpoint whose layers are calibrated\n"
        "  --key K             PyTorch model: the entry holding its tensors (e.g. model,\n"
        "                      state_dict; '.' the top level)\n"
        "  --activations F     a file or folder of recorded activations (repeatable)\n"
        "  -o, --output OUT    statistics file to write (.safetensors)\n"
        "  --observer KIND     minmax (default), moving_average, histogram, entropy,\n"
        "                      percentile, mse\n"
        "  --per-channel       one scale per input channel (the file also holds the per-tensor\n"
        "                      scale of the union of the channel ranges)\n"
        "  --scheme S          asym (default) or sym\n"
        "  --dtype T           uint8 (default), int8, uint4, int4\n"
        "  --averaging C       moving_average constant (0.01)\n"
        "  --bins N            histogram bins (2048)\n"
        "  --percentile P      percentile observer (99.999)\n"
        "  --threads N         worker threads (0: all CPUs)\n"
        "  --hessian           also store <layer>.hessian, the mean of x x^T of each Linear\n"
        "                      layer's inputs, for `quantize --search gptq` (Conv layers get\n"
        "                      none; costs 8 * in_features^2 bytes of memory per layer)\n"
        "  --strict            warnings (unknown or missing layers, shape mismatches, layers\n"
        "                      without data) are errors: exit 3, nothing written\n"
        "  --json              per-layer results as JSON on stdout\n"
        "  -h, --help          this help\n\n"
        "Exit codes: 0 ok, 1 general, 2 usage, 3 bad values (NaN/Inf) or warnings under\n"
        "--strict, 5 I/O or format.\n");
}

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

static void warn(run *r, const char *fmt, const char *a, const char *b) {
    r->warnings++;
    cli_warn(fmt, a, b);
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

int cmd_calibrate(int argc, char **argv) {
    const char *model_path = NULL, *out = NULL, *kind_s = "minmax";
    str_list acts = {0}, files = {0};
    bool per_channel = false, hessian = false, strict = false, json = false, after_acts = false;
    mq_observer_options opts;
    mq_observer_options_default(&opts, MQ_OBS_MINMAX);
    const char *scheme_s = NULL, *dtype_s = NULL, *avg_s = NULL, *bins_s = NULL,
               *pct_s = NULL, *threads_s = NULL, *model_key = NULL;
    int rc = EXIT_OK;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        bool missing = false;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            calibrate_usage(stdout);
            list_free(&acts);
            return EXIT_OK;
        }
        if ((v = cli_opt_value(argc, argv, &i, "--model", &missing))) model_path = v;
        else if ((v = cli_opt_value(argc, argv, &i, "--activations", &missing))) {
            if (!push(&acts, v)) rc = EXIT_GENERAL;
            after_acts = true;
            continue;
        } else if ((v = cli_opt_value(argc, argv, &i, "-o", &missing)) ||
                   (v = cli_opt_value(argc, argv, &i, "--output", &missing))) out = v;
        else if ((v = cli_opt_value(argc, argv, &i, "--observer", &missing))) kind_s = v;
        else if ((v = cli_opt_value(argc, argv, &i, "--scheme", &missing))) scheme_s = v;
        else if ((v = cli_opt_value(argc, argv, &i, "--dtype", &missing))) dtype_s = v;
        else if ((v = cli_opt_value(argc, argv, &i, "--averaging", &missing))) avg_s = v;
        else if ((v = cli_opt_value(argc, argv, &i, "--bins", &missing))) bins_s = v;
        else if ((v = cli_opt_value(argc, argv, &i, "--percentile", &missing))) pct_s = v;
        else if ((v = cli_opt_value(argc, argv, &i, "--threads", &missing))) threads_s = v;
        else if ((v = cli_opt_value(argc, argv, &i, "--key", &missing))) model_key = v;
        else if (!strcmp(a, "--per-channel")) per_channel = true;
        else if (!strcmp(a, "--hessian")) hessian = true;
        else if (!strcmp(a, "--strict")) strict = true;
        else if (!strcmp(a, "--json")) json = true;
        else if (missing) {
            list_free(&acts);
            return cli_usage_error("calibrate", "option '%s' needs a value", a);
        } else if (a[0] != '-' && after_acts) {
            if (!push(&acts, a)) rc = EXIT_GENERAL;
            continue;
        } else {
            list_free(&acts);
            return cli_usage_error("calibrate", "unknown argument '%s'", a);
        }
        if (missing) {
            list_free(&acts);
            return cli_usage_error("calibrate", "option '%s' needs a value", a);
        }
        after_acts = false;
    }
    if (rc != EXIT_OK) {
        list_free(&acts);
        fprintf(stderr, "monoquant: error: out of memory\n");
        return rc;
    }
    if (!model_path || !acts.n || !out) {
        list_free(&acts);
        return cli_usage_error("calibrate", "--model, --activations and -o are required");
    }
    mq_observer_kind kind;
    if (!mq_observer_kind_from_name(kind_s, &kind)) {
        list_free(&acts);
        return cli_usage_error("calibrate", "unknown observer '%s' (minmax, moving_average, "
                               "histogram, entropy, percentile, mse)", kind_s);
    }
    mq_observer_options_default(&opts, kind);
    if (per_channel) opts.granularity = MQ_PER_CHANNEL;
    const char *bad = NULL;
    if (scheme_s) {
        if (!strcmp(scheme_s, "sym") || !strcmp(scheme_s, "symmetric")) opts.scheme = MQ_SYMMETRIC;
        else if (!strcmp(scheme_s, "asym") || !strcmp(scheme_s, "asymmetric")) opts.scheme = MQ_ASYMMETRIC;
        else bad = "--scheme must be sym or asym";
    }
    if (dtype_s) {
        if (!strcmp(dtype_s, "uint8")) opts.type = MQ_Q_UINT8;
        else if (!strcmp(dtype_s, "int8")) opts.type = MQ_Q_INT8;
        else if (!strcmp(dtype_s, "uint4")) opts.type = MQ_Q_UINT4;
        else if (!strcmp(dtype_s, "int4")) opts.type = MQ_Q_INT4;
        else bad = "--dtype must be uint8, int8, uint4 or int4";
    }
    long long ll;
    if (avg_s && !cli_parse_double(avg_s, &opts.averaging_constant)) bad = "--averaging needs a number";
    if (pct_s && !cli_parse_double(pct_s, &opts.percentile)) bad = "--percentile needs a number";
    if (bins_s) {
        if (cli_parse_int(bins_s, 16, 1 << 20, &ll)) opts.bins = (int)ll;
        else bad = "--bins needs a number from 16 to 1048576";
    }
    long long threads = 0;
    if (threads_s && !cli_parse_int(threads_s, 0, 4096, &threads)) bad = "--threads needs a number";
    if (bad) {
        list_free(&acts);
        return cli_usage_error("calibrate", "%s", bad);
    }

    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) {
        list_free(&acts);
        fprintf(stderr, "monoquant: error: out of memory\n");
        return EXIT_GENERAL;
    }
    mq_ctx_set_threads(ctx, (int)threads);
    mq_model *model = NULL;
    mq_calibrator *cal = NULL;
    mq_calib_stats *stats = NULL;
    model_layer *layers = NULL;
    size_t nlayers = 0;
    mq_status st = mq_calibrator_create(ctx, &opts, &cal);
    if (st == MQ_OK && hessian) st = mq_calibrator_set_hessian(cal, 1);
    if (st != MQ_OK) {
        rc = cli_usage_error("calibrate", "%s", mq_ctx_message(ctx));
        goto done;
    }
    mq_open_options model_opts;
    mq_open_options_default(&model_opts);
    model_opts.key = model_key;
    st = mq_model_open(ctx, model_path, &model_opts, &model);
    if (st != MQ_OK) {
        rc = cli_fail(ctx, st);
        goto done;
    }
    /* the model's Linear and Conv layers, by prefix */
    size_t nt = mq_model_tensor_count(model);
    layers = (model_layer *)calloc(nt ? nt : 1, sizeof *layers);
    if (!layers) {
        rc = EXIT_GENERAL;
        goto done;
    }
    for (size_t i = 0; i < nt; i++) {
        const mq_tensor *t = mq_model_tensor(model, i);
        mq_layer_kind k = mq_classify_tensor(t);
        size_t len = strlen(t->name);
        if ((k != MQ_KIND_LINEAR && k != MQ_KIND_CONV) || len < 8 ||
            strcmp(t->name + len - 7, ".weight") || t->ndim < 2)
            continue;
        model_layer *l = &layers[nlayers];
        l->name = strndup(t->name, len - 7);
        if (!l->name) {
            rc = EXIT_GENERAL;
            goto done;
        }
        l->kind = k;
        l->out = t->shape[0];
        l->in = k == MQ_KIND_LINEAR ? t->shape[t->ndim - 1] : t->shape[1];
        nlayers++;
    }
    if (!nlayers) {
        fprintf(stderr, "monoquant: error: %s: the model has no Linear or Conv layers\n", model_path);
        rc = EXIT_CONFIG;
        goto done;
    }
    qsort(layers, nlayers, sizeof *layers, by_name);
    for (size_t i = 0; i < acts.n && rc == EXIT_OK; i++) rc = collect(&files, acts.v[i]);
    if (rc != EXIT_OK) goto done;

    run r = {ctx, cal, layers, nlayers, 0};
    for (size_t f = 0; f < files.n && rc == EXIT_OK; f++) {
        cli_progress(NULL, files.v[f], f, files.n);
        mq_model *am = NULL;
        st = mq_model_open(ctx, files.v[f], NULL, &am);
        if (st != MQ_OK) {
            rc = cli_fail(ctx, st);
            break;
        }
        for (size_t i = 0; i < mq_model_tensor_count(am) && rc == EXIT_OK; i++)
            rc = feed(&r, files.v[f], mq_model_tensor(am, i));
        mq_model_free(am);
    }
    cli_progress_done();
    if (rc != EXIT_OK) goto done;
    /* layers of the model that saw nothing, in file order of the model */
    for (size_t i = 0; i < nt; i++) {
        const char *name = mq_model_tensor(model, i)->name;
        size_t len = strlen(name);
        if (len < 8 || strcmp(name + len - 7, ".weight")) continue;
        char prefix[1024];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(len - 7), name);
        model_layer *l = find(layers, nlayers, prefix);
        if (l && !layer_rows(cal, prefix))
            warn(&r, "layer '%s'%s: no activations were recorded; it gets no statistics", prefix,
                 l->kind == MQ_KIND_CONV ? " (conv)" : "");
    }
    size_t fed = 0;
    for (size_t i = 0; i < nlayers; i++) fed += layer_rows(cal, layers[i].name) > 0;
    if (!fed) {
        fprintf(stderr, "monoquant: error: no layer of %s received activations; nothing written\n",
                model_path);
        rc = EXIT_QUANT;
        goto done;
    }
    if (strict && r.warnings) {
        fprintf(stderr, "monoquant: error: %u warning%s under --strict; nothing written\n",
                r.warnings, r.warnings == 1 ? "" : "s");
        rc = EXIT_QUANT;
        goto done;
    }
    mq_ctx_set_progress(ctx, cli_progress, NULL);
    char obs_text[256];
    mq_observer_options_format(&opts, obs_text, sizeof obs_text);
    mq_kv meta[] = {{"monoquant.model", model_path}};
    st = mq_calibrator_save(cal, out, meta, 1);
    cli_progress_done();
    if (st == MQ_OK) st = mq_calib_stats_open(ctx, out, &stats);
    if (st != MQ_OK) {
        rc = cli_fail(ctx, st);
        goto done;
    }
    if (json) print_json(stats, out);
    size_t nl = mq_calib_stats_count(stats);
    if (g_cli.verbose && !json) {
        for (size_t i = 0; i < nl; i++) {
            mq_layer_stats ls = *mq_calib_stats_layer(stats, i);
            cli_info("  %-40s rows %10" PRIu64 "  range [%.6g, %.6g]  scale %.6g  zero point %d",
                     ls.layer, ls.count, (double)ls.input_min, (double)ls.input_max,
                     (double)ls.input_scale, (int)ls.input_zero_point);
        }
    }
    cli_info("calibrated %zu of %zu layers from %zu file%s (%s) -> %s", nl, nlayers, files.n,
             files.n == 1 ? "" : "s", obs_text, out);
done:
    mq_calib_stats_free(stats);
    mq_calibrator_free(cal);
    mq_model_free(model);
    for (size_t i = 0; i < nlayers; i++) free(layers[i].name);
    free(layers);
    list_free(&acts);
    list_free(&files);
    mq_ctx_free(ctx);
    return rc;
}
