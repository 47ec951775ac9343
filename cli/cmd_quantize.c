/* monoquant quantize: options (command line > --config file > defaults), the call, the
 * report. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_LIST 256

typedef struct qstate {
    mq_quantize_options o;
    const char *model, *output, *config, *calibration, *key, *output_dir, *max_shard;
    cli_list include, exclude, layer;
    mq_layer_rule rules[MAX_LIST];
    char *owned[3 * MAX_LIST + 64]; /* strings copied from the config file */
    size_t nowned;
    int qtype, scheme, gran, search, format, activations, scale_dtype;
    long long group_size, min_params;
    bool no_default_skip, skip_nonfinite, no_error_stats, strict, dry_run, clamp, weights_only;
    bool act_order;
    double min_sqnr;
    cli_args args;
} qstate;

static const char *parse_kinds(void *state, const char *s, char *err, size_t cap);

static const cli_choice bits_values[] = {
    {"8", MQ_Q_INT8}, {"4", MQ_Q_INT4}, {"16", MQ_Q_FP16}, {NULL, 0}};
static const cli_choice type_values[] = {
    {CLI_T_INT8, MQ_Q_INT8}, {CLI_T_UINT8, MQ_Q_UINT8}, {CLI_T_INT4, MQ_Q_INT4},
    {CLI_T_UINT4, MQ_Q_UINT4}, {CLI_T_FP16, MQ_Q_FP16}, {CLI_T_BF16, MQ_Q_BF16}, {NULL, 0}};
/* --layer GLOB=T: the --type names, the --bits numbers, and none */
static const cli_choice layer_values[] = {
    {CLI_T_INT8 "|8", MQ_Q_INT8}, {CLI_T_UINT8, MQ_Q_UINT8}, {CLI_T_INT4 "|4", MQ_Q_INT4},
    {CLI_T_UINT4, MQ_Q_UINT4}, {CLI_T_FP16 "|16", MQ_Q_FP16}, {CLI_T_BF16, MQ_Q_BF16},
    {"none", MQ_Q_NONE}, {NULL, 0}};
static const cli_choice scheme_values[] = {
    {"sym|symmetric", MQ_SYMMETRIC}, {"asym|asymmetric", MQ_ASYMMETRIC}, {NULL, 0}};
static const cli_choice gran_values[] = {
    {"tensor", MQ_PER_TENSOR}, {"channel", MQ_PER_CHANNEL}, {"group", MQ_PER_GROUP}, {NULL, 0}};
static const cli_choice search_values[] = {
    {"minmax", MQ_SEARCH_MINMAX}, {"mse", MQ_SEARCH_MSE}, {"gptq", MQ_SEARCH_GPTQ}, {NULL, 0}};
/* --format names a container or a layout: layouts are coded LAYOUT_CODE + mq_layout */
#define LAYOUT_CODE 16
static const cli_choice format_values[] = {
    {"safetensors", MQ_FORMAT_SAFETENSORS}, {"pt|pytorch", MQ_FORMAT_PYTORCH},
    {"compressed-tensors", LAYOUT_CODE + MQ_LAYOUT_COMPRESSED_TENSORS},
    {"native", LAYOUT_CODE + MQ_LAYOUT_NATIVE}, {"gptq", LAYOUT_CODE + MQ_LAYOUT_GPTQ},
    {NULL, 0}};
static const cli_choice activation_values[] = {
    {"auto", MQ_ACTIVATIONS_AUTO}, {"none", MQ_ACTIVATIONS_NONE},
    {"dynamic", MQ_ACTIVATIONS_DYNAMIC}, {"static", MQ_ACTIVATIONS_STATIC}, {NULL, 0}};
static const cli_choice scale_dtype_values[] = {
    {"f32", MQ_F32}, {"f16", MQ_F16}, {"bf16", MQ_BF16}, {NULL, 0}};

static const cli_option options[] = {
    /* target */
    OPT_CHOICE("bits", qstate, qtype, NULL, bits_values, "INT8 (default), INT4, or FP16 casts"),
    OPT_CHOICE("type|dtype", qstate, qtype, "T", type_values, "the target type (instead of "
               "--bits)"),
    OPT_CHOICE("scheme", qstate, scheme, NULL, scheme_values, "symmetric (default) or "
               "asymmetric (zero points)"),
    OPT_CHOICE("granularity", qstate, gran, "G", gran_values, "tensor, channel (8-bit default), "
               "group (4-bit default)"),
    OPT_INT("group-size", qstate, group_size, "N", 1, 1 << 30, "elements per group along the "
            "input dimension (128)"),
    OPT_CHOICE("search", qstate, search, NULL, search_values, "scale from the range (default), "
               "a clipping search, or\nGPTQ (needs --calibration from `calibrate --hessian`; "
               "the\ndefault for 4-bit types when those statistics hold Hessians;\nlayers "
               "without one use the weighted mse search)"),
    OPT_FLAG("act-order", qstate, act_order, "GPTQ: columns in decreasing order of the "
             "Hessian's diagonal\n(groups and the stored layout unchanged)"),
    /* selection */
    OPT_FN("types", "LIST", parse_kinds, "layer kinds to quantize: linear,conv,rnn,embedding,"
           "other\n(default linear,conv,rnn)"),
    OPT_LIST("include", qstate, include, "GLOB", "only names matching (repeatable)"),
    OPT_LIST("exclude", qstate, exclude, "GLOB", "keep names matching (repeatable)"),
    OPT_INT("min-params", qstate, min_params, "N", 0, INT64_MAX, "keep tensors with fewer "
            "elements"),
    OPT_LIST("layer", qstate, layer, "GLOB=T", "per-layer override: a --type or --bits value, "
             "or none\n(repeatable)"),
    OPT_FLAG("no-default-skip", qstate, no_default_skip, "4-bit: also quantize embeddings, "
             "output heads, tensors < 512"),
    OPT_NOFLAG("default-skip", qstate, no_default_skip, "undo --no-default-skip (config files)"),
    OPT_FLAG("skip-nonfinite", qstate, skip_nonfinite, "keep tensors holding NaN/Inf instead of "
             "failing"),
    OPT_FLAG("clamp", qstate, clamp, "FP16/BF16 casts: values beyond the type's range saturate "
             "to its\nlargest finite value (counted per tensor) instead of failing"),
    /* input */
    OPT_STR("model|m", qstate, model, "IN", "the input checkpoint (or the first argument)"),
    OPT_STR("key", qstate, key, "K", "PyTorch input: the entry holding the tensors (e.g. "
            "model,\nstate_dict; '.' the top level), when several entries do"),
    /* output and run */
    OPT_STR("output|o", qstate, output, "OUT", "output file, or model folder (a folder input, "
            "a name ending\nin '/', or one without a checkpoint extension); default: beside\nthe "
            "input, see below"),
    OPT_STR("output-dir", qstate, output_dir, "DIR", "output model folder: weights (sharded "
            "above --max-shard-size),\nconfig.json with its quantization_config, the input "
            "folder's\nother files"),
    OPT_STR("max-shard-size", qstate, max_shard, "N", "largest shard of a folder output: 5GB "
            "(default), 500MB, 64MiB"),
    OPT_CHOICE("format", qstate, format, NULL, format_values, "compressed-tensors (default: "
               "what vLLM and transformers load),\nnative (monoquant's own file: any layer "
               "kind, type, group\nsize), gptq (AutoGPTQ / GPTQModel layout: symmetric as v1,\n"
               "asymmetric as gptq_v2), or the container (default: from the\nextension)"),
    OPT_CHOICE("activations", qstate, activations, "A", activation_values, "8-bit activations "
               "of the quantized layers (auto: static with\n--calibration, else dynamic, for "
               "8-bit weights; none for 4-bit)"),
    OPT_FLAG("weights-only", qstate, weights_only, "same as --activations none (W4A16, W8A16)"),
    OPT_CHOICE("scale-dtype", qstate, scale_dtype, "T", scale_dtype_values, "dtype of the "
               "stored scales (default: the weights' dtype;\nnative: f32)"),
    OPT_STR("calibration", qstate, calibration, "FILE", "statistics from `monoquant calibrate` "
            "(static quantization)"),
    OPT_STR("config", qstate, config, "FILE", "options as `key = value` lines (command line "
            "wins)"),
    OPT_DOUBLE("min-sqnr", qstate, min_sqnr, "DB", "warn when a tensor's SQNR is below DB"),
    OPT_FLAG("no-error-stats", qstate, no_error_stats, "skip the per-tensor error figures "
             "(faster)"),
    OPT_FLAG("dry-run", qstate, dry_run, "print the plan, write nothing"),
    OPT_FLAG("strict", qstate, strict, "warnings are errors: exit 3, nothing written"),
    OPT_END,
};

static const cli_command command = {
    "quantize", "[--model] IN [-o OUT] [options]",
    "Quantizes a checkpoint (safetensors, sharded index, or PyTorch .pt) into a compact\n"
    "checkpoint (docs/FORMAT.md). The input is never modified.",
    options,
    "Default output: <input stem>.<scheme>.safetensors beside the input (for a model folder,\n"
    "or an index in one: the folder <input folder>-<scheme> beside it); when a checkpoint\n"
    "with the same stem and another extension lies beside it (m.pt and m.safetensors), the\n"
    "input's extension stays in the name: m.pt.<scheme>.safetensors. An existing output is\n"
    "replaced only with -f.\n"};

static const char *parse_kinds(void *state, const char *s, char *err, size_t cap) {
    qstate *q = (qstate *)state;
    unsigned m = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int k = 0; k <= MQ_KIND_RNN; k++)
            if (!strcmp(tok, mq_layer_kind_name((mq_layer_kind)k))) m |= MQ_KIND_BIT(k), found = 1;
        if (!found) m = 0;
        if (!found) break;
    }
    if (!m) {
        snprintf(err, cap, "expected a list of linear, conv, rnn, embedding, norm, bias, other; "
                 "got '%s'", s);
        return err;
    }
    q->o.kinds = m;
    return NULL;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

/* `key = value` lines; '#' starts a comment; a key without '=' is a flag (or `key = true`). */
static int load_config(qstate *q, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "monoquant: error: %s: cannot open: %s\n", path, strerror(errno));
        return EXIT_CONFIG;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        char *key = s, *val = NULL;
        if (eq) {
            *eq = 0;
            key = trim(s);
            val = trim(eq + 1);
            size_t vl = strlen(val);
            if (vl >= 2 && (val[0] == '"' || val[0] == '\'') && val[vl - 1] == val[0])
                val[vl - 1] = 0, val++;
        }
        if (!strcmp(key, "config")) {
            fprintf(stderr, "monoquant: error: %s:%d: a config file cannot include another\n",
                    path, lineno);
            rc = EXIT_CONFIG;
            break;
        }
        char *v = val ? strdup(val) : NULL;
        if ((val && !v) || q->nowned >= sizeof q->owned / sizeof *q->owned) {
            free(v);
            fprintf(stderr, "monoquant: error: %s: too many entries\n", path);
            rc = EXIT_CONFIG;
            break;
        }
        if (v) q->owned[q->nowned++] = v;
        int r = cli_apply_named(&command, q, key, v, true, &q->args);
        if (r < 0) {
            fprintf(stderr, "monoquant: error: %s:%d: unknown key '%s'\n", path, lineno, key);
            rc = EXIT_CONFIG;
        } else if (r > 0) {
            fprintf(stderr, "  (in %s:%d)\n", path, lineno);
            rc = r;
        }
    }
    fclose(f);
    return rc;
}

/* "5GB", "500MB", "64KiB", "1000000": decimal units as Hugging Face, binary with "i". */
static int parse_size(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v > 0)) return 0;
    static const struct { const char *unit; double mul; } units[] = {
        {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
        {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (!strcmp(end, units[i].unit)) {
            double b = v * units[i].mul;
            if (b < 1 || b > 1e18) return 0;
            *out = (uint64_t)b;
            return 1;
        }
    return 0;
}

/* --layer GLOB=T entries into rules. */
static int build_rules(qstate *q) {
    if (q->layer.n > MAX_LIST) return cli_usage_error("quantize", "too many --layer rules");
    for (size_t i = 0; i < q->layer.n; i++) {
        const char *v = q->layer.v[i], *eq = strrchr(v, '=');
        int t = cli_choice_find(layer_values, eq ? eq + 1 : "");
        if (!eq || eq == v || t < 0)
            return cli_usage_error("quantize", "--layer: expected GLOB=T (T: int8, uint8, int4, "
                                   "uint4, fp16, bf16, 8, 4, 16 or none), got '%s'", v);
        char *pat = strndup(v, (size_t)(eq - v));
        if (!pat || q->nowned >= sizeof q->owned / sizeof *q->owned) {
            free(pat);
            return EXIT_GENERAL;
        }
        q->owned[q->nowned++] = pat;
        q->rules[q->o.nrules++] = (mq_layer_rule){pat, (mq_qtype)layer_values[t].value};
    }
    return 0;
}

static int parse_args(qstate *q, int argc, char **argv) {
    /* the config file first, so the command line overrides it */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) q->config = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9)) q->config = argv[i] + 9;
    }
    if (q->config) {
        int rc = load_config(q, q->config);
        if (rc) return rc;
    }
    cli_args args;
    int rc = cli_parse(&command, q, argc, argv, &args);
    if (rc) return rc;
    for (int i = 0; i < CLI_MAX_OPTS; i++) q->args.seen[i] |= args.seen[i];
    for (int i = 0; i < args.npos; i++) {
        if (q->model && (i || cli_given(&command, &args, "model")))
            return cli_usage_error("quantize", "unexpected argument '%s'", args.pos[i]);
        q->model = args.pos[i];
    }
    if (!q->model) return cli_usage_error("quantize", "no input model (--model FILE)");
    rc = build_rules(q);
    if (rc) return rc;
    /* the type's recommended settings, then what was given explicitly */
    mq_qspec *s = &q->o.spec;
    if (q->qtype >= 0) s->type = (mq_qtype)q->qtype;
    mq_qspec_recommended(s, s->type);
    /* min/max scales for every type: on the LM fixture the MSE clipping search raised INT4
     * SQNR but lost more perplexity (clipped outliers matter), also when weighted by
     * calibration statistics (docs/CLI.md) */
    s->search = MQ_SEARCH_MINMAX;
    const cli_args *g = &q->args;
    if (cli_given(&command, g, "scheme")) s->scheme = (mq_scheme)q->scheme;
    if (cli_given(&command, g, "granularity")) s->granularity = (mq_granularity)q->gran;
    if (cli_given(&command, g, "search")) s->search = (mq_scale_search)q->search;
    if (cli_given(&command, g, "group-size")) s->group_size = (int)q->group_size;
    if (cli_given(&command, g, "min-params")) q->o.min_params = (uint64_t)q->min_params;
    if (cli_given(&command, g, "format") && q->format >= LAYOUT_CODE)
        q->o.layout = (mq_layout)(q->format - LAYOUT_CODE);
    else if (cli_given(&command, g, "format")) q->o.out_format = (mq_format)q->format;
    if (cli_given(&command, g, "activations")) q->o.activations = (mq_activations)q->activations;
    if (q->weights_only) q->o.activations = MQ_ACTIVATIONS_NONE;
    if (cli_given(&command, g, "scale-dtype")) q->o.scale_dtype = (mq_dtype)q->scale_dtype;
    if (q->max_shard && !parse_size(q->max_shard, &q->o.max_shard_size))
        return cli_usage_error("quantize", "--max-shard-size: expected a size such as 5GB, 500MB "
                               "or 1000000, got '%s'", q->max_shard);
    if (q->output_dir && q->output)
        return cli_usage_error("quantize", "give either -o or --output-dir");
    if (q->output_dir) q->output = q->output_dir;
    q->o.default_skip = !q->no_default_skip;
    q->o.skip_nonfinite = q->skip_nonfinite;
    q->o.clamp_casts = q->clamp;
    q->o.error_stats = !q->no_error_stats;
    q->o.act_order = q->act_order;
    q->o.calibration = q->calibration;
    q->o.key = q->key;
    q->o.include = q->include.v;
    q->o.ninclude = q->include.n;
    q->o.exclude = q->exclude.v;
    q->o.nexclude = q->exclude.n;
    q->o.rules = q->rules;
    q->o.sqnr_warn_db = q->min_sqnr;
    q->o.dry_run = q->dry_run;
    /* a dry run still prints its plan under --strict: checked here after the report */
    q->o.strict = q->strict && !q->dry_run;
    return 0;
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* A model folder (or an index in one) as input. */
static bool folder_input(const char *in) { return is_dir(in) || has_suffix(in, ".index.json"); }

/* Whether the output is a model folder: --output-dir; for -o a trailing '/', or, for a folder
 * input, no checkpoint extension; by default, for a folder input. */
static bool output_is_folder(const qstate *q) {
    if (q->output_dir) return true;
    if (!q->output) return folder_input(q->model);
    if (has_suffix(q->output, "/")) return true;
    static const char *const exts[] = {".safetensors", ".pt", ".pth", ".bin"};
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++)
        if (has_suffix(q->output, exts[i])) return false;
    return folder_input(q->model);
}

/* <input folder>-<scheme> beside a folder (or index) input. */
static char *default_folder(const char *in, const mq_quantize_options *o) {
    char scheme[64];
    cli_qspec_name(&o->spec, scheme, sizeof scheme);
    size_t n = strlen(in);
    while (n > 1 && in[n - 1] == '/') n--;
    if (!is_dir(in)) { /* an index: its folder */
        const char *slash = strrchr(in, '/');
        n = slash ? (size_t)(slash - in) : 0;
    }
    char *dir = n ? strndup(in, n) : realpath(".", NULL);
    if (!dir) return NULL;
    size_t cap = strlen(dir) + strlen(scheme) + 2;
    char *out = (char *)malloc(cap);
    if (out) snprintf(out, cap, "%s-%s", dir, scheme);
    free(dir);
    return out;
}

/* <stem>.<scheme>.<ext> beside the input; <stem>.<input ext>.<scheme>.<ext> when a checkpoint
 * with the same stem and another extension lies beside it (m.pt and m.safetensors), so the
 * two default names differ. */
static char *default_output(const char *in, const mq_quantize_options *o) {
    char scheme[64];
    cli_qspec_name(&o->spec, scheme, sizeof scheme);
    size_t n = strlen(in);
    while (n > 1 && in[n - 1] == '/') n--;
    char *stem = strndup(in, n);
    if (!stem) return NULL;
    static const char *const exts[] = {".safetensors.index.json", ".index.json", ".safetensors",
                                       ".pt", ".pth", ".bin"};
    const char *in_ext = NULL;
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++) {
        size_t k = strlen(exts[i]), sl = strlen(stem);
        if (sl > k && !strcmp(stem + sl - k, exts[i]) && stem[sl - k - 1] != '/') {
            stem[sl - k] = 0;
            in_ext = exts[i];
            break;
        }
    }
    const char *tag = "";
    for (size_t i = 2; in_ext && i < sizeof exts / sizeof *exts && !*tag; i++) {
        if (!strcmp(exts[i], in_ext)) continue;
        size_t cap = strlen(stem) + strlen(exts[i]) + 1;
        char *twin = (char *)malloc(cap);
        if (twin) snprintf(twin, cap, "%s%s", stem, exts[i]);
        if (twin && exists(twin)) tag = in_ext;
        free(twin);
    }
    const char *ext = o->out_format == MQ_FORMAT_PYTORCH ? ".pt" : ".safetensors";
    size_t cap = strlen(stem) + strlen(tag) + strlen(scheme) + strlen(ext) + 2;
    char *out = (char *)malloc(cap);
    if (out) snprintf(out, cap, "%s%s.%s%s", stem, tag, scheme, ext);
    free(stem);
    return out;
}

static const char *action_name(mq_action a) {
    return a == MQ_ACTION_QUANTIZE ? "quantized" : a == MQ_ACTION_CAST ? "cast" : "kept";
}

static const char *search_name(mq_scale_search s) {
    return s == MQ_SEARCH_GPTQ ? "gptq" : s == MQ_SEARCH_MSE ? "mse" : "minmax";
}

static void print_json(const qstate *q, const char *out, const mq_report *r) {
    FILE *f = stdout;
    char scheme[64];
    fputs("{\"input\": ", f);
    cli_json_string(f, q->model);
    fputs(", \"output\": ", f);
    if (out) cli_json_string(f, out);
    else fputs("null", f);
    uint64_t bin = mq_report_bytes_in(r), bout = mq_report_bytes_out(r);
    fprintf(f, ", \"scheme\": \"%s\", \"dry_run\": %s, \"bytes_in\": %llu, \"bytes_out\": %llu, "
               "\"file_bytes_in\": %llu, \"file_bytes_out\": %llu, \"ratio\": ",
            cli_qspec_name(&q->o.spec, scheme, sizeof scheme), q->dry_run ? "true" : "false",
            (unsigned long long)bin, (unsigned long long)bout,
            (unsigned long long)mq_report_file_bytes_in(r),
            (unsigned long long)mq_report_file_bytes_out(r));
    cli_json_number(f, bout ? (double)bin / (double)bout : 0);
    fprintf(f, ", \"seconds\": %.3f, \"quantized\": %zu, \"cast\": %zu, \"kept\": %zu, "
               "\"tensors\": [", mq_report_seconds(r),
            mq_report_action_count(r, MQ_ACTION_QUANTIZE),
            mq_report_action_count(r, MQ_ACTION_CAST), mq_report_action_count(r, MQ_ACTION_KEEP));
    for (size_t i = 0; i < mq_report_tensor_count(r); i++) {
        mq_qspec spec;
        mq_report_tensor_spec(r, i, &spec);
        fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", f);
        cli_json_string(f, mq_report_tensor_name(r, i));
        fprintf(f, ", \"kind\": \"%s\", \"dtype\": \"%s\", \"action\": \"%s\", \"scheme\": \"%s\"",
                mq_layer_kind_name(mq_report_tensor_kind(r, i)),
                mq_dtype_name(mq_report_tensor_dtype(r, i)),
                action_name(mq_report_tensor_action(r, i)),
                cli_qspec_name(&spec, scheme, sizeof scheme));
        fprintf(f, ", \"bytes_in\": %llu, \"bytes_out\": %llu",
                (unsigned long long)mq_report_tensor_bytes_in(r, i),
                (unsigned long long)mq_report_tensor_bytes_out(r, i));
        const char *reason = mq_report_tensor_reason(r, i);
        if (reason) {
            fputs(", \"reason\": ", f);
            cli_json_string(f, reason);
        }
        mq_error_stats es;
        if (mq_report_tensor_error(r, i, &es)) cli_json_error_stats(f, &es);
        double out_db;
        if (mq_report_tensor_output_sqnr(r, i, &out_db)) {
            fputs(", \"output_sqnr_db\": ", f);
            if (isfinite(out_db)) fprintf(f, "%.4f", out_db);
            else fputs("null", f);
        }
        mq_action act = mq_report_tensor_action(r, i);
        if (act == MQ_ACTION_QUANTIZE)
            fprintf(f, ", \"search\": \"%s\", \"input_params\": %s", search_name(spec.search),
                    mq_report_tensor_has_input_params(r, i) ? "true" : "false");
        if (act == MQ_ACTION_CAST)
            fprintf(f, ", \"clamped\": %llu", (unsigned long long)mq_report_tensor_clamped(r, i));
        fputs("}", f);
    }
    fputs("],\n \"phases\": {", f);
    for (int ph = MQ_PHASE_OPEN; ph <= MQ_PHASE_BACKGROUND_WRITE; ph++)
        fprintf(f, "%s\"%s\": %.4f", ph ? ", " : "", mq_phase_name((mq_phase)ph),
                mq_report_phase_seconds(r, (mq_phase)ph));
    fputs("},\n \"warnings\": [", f);
    for (size_t i = 0; i < mq_report_warning_count(r); i++) {
        if (i) fputs(", ", f);
        cli_json_string(f, mq_report_warning(r, i));
    }
    fputs("]}\n", f);
}

/* -v: where the wall time went. */
static void print_phases(FILE *f, const mq_report *r) {
    static const char *const what[] = {
        "open and map the input, plan, output header", "read the input (or map its pages in)",
        "quantize (error figures in the same pass)", "error figures in a pass of their own",
        "hand bytes to the writer", "wait for the writer", "fsync + rename",
        "write(2) + writeback on the writer thread"};
    double wall = mq_report_seconds(r), sum = 0;
    fprintf(f, "time: %.3f s wall\n", wall);
    for (int ph = MQ_PHASE_OPEN; ph <= MQ_PHASE_BACKGROUND_WRITE; ph++) {
        double sec = mq_report_phase_seconds(r, (mq_phase)ph);
        if (ph < MQ_PHASE_BACKGROUND_WRITE) sum += sec;
        else fprintf(f, "  %-16s %8.3f s %6.1f%%  (other)\n", "", wall - sum,
                     wall > 0 ? 100 * (wall - sum) / wall : 0);
        fprintf(f, "  %-16s %8.3f s %6.1f%%  %s%s\n", mq_phase_name((mq_phase)ph), sec,
                wall > 0 ? 100 * sec / wall : 0, what[ph],
                ph == MQ_PHASE_BACKGROUND_WRITE ? " (overlaps the above)" : "");
    }
}

static void print_report(const qstate *q, const char *out, const mq_report *r) {
    if (g_cli.quiet) return;
    char scheme[64], b1[32], b2[32];
    FILE *f = stdout;
    cli_progress_done();
    fprintf(f, "%s -> %s (%s)%s\n", q->model, out ? out : "(dry run)",
            cli_qspec_name(&q->o.spec, scheme, sizeof scheme), q->dry_run ? " plan:" : "");
    size_t n = mq_report_tensor_count(r);
    bool out_col = false; /* output SQNR on the calibration inputs (Hessians) */
    for (size_t i = 0; i < n; i++) out_col |= mq_report_tensor_output_sqnr(r, i, NULL) != 0;
    fprintf(f, "  %-40s %-9s %-12s %9s %9s %10s  %-13s%s\n", "tensor", "kind", "stored as",
            "SQNR dB", "rel.err", "max abs", "search", out_col ? "  output SQNR dB" : "");
    size_t one_d = 0;
    for (size_t i = 0; i < n; i++) {
        if (mq_report_tensor_action(r, i) == MQ_ACTION_KEEP) {
            if (mq_report_tensor_shape(r, i, NULL) < 2) one_d++;
            continue;
        }
        mq_qspec spec;
        mq_report_tensor_spec(r, i, &spec);
        fprintf(f, "  %-40s %-9s %-12s", mq_report_tensor_name(r, i),
                mq_layer_kind_name(mq_report_tensor_kind(r, i)),
                cli_qspec_name(&spec, scheme, sizeof scheme));
        mq_error_stats es;
        if (mq_report_tensor_error(r, i, &es))
            fprintf(f, " %9.2f %9.5f %10.3g", es.sqnr_db, es.rel_fro, es.max_abs);
        else
            fprintf(f, " %9s %9s %10s", "-", "-", "-");
        /* the search that ran, and "+static" when input parameters were stored */
        char how[32] = "-";
        if (mq_report_tensor_action(r, i) == MQ_ACTION_QUANTIZE)
            snprintf(how, sizeof how, "%s%s", search_name(spec.search),
                     mq_report_tensor_has_input_params(r, i) ? "+static" : "");
        fprintf(f, "  %-13s", how);
        double out_db;
        if (mq_report_tensor_output_sqnr(r, i, &out_db)) fprintf(f, " %16.2f", out_db);
        fputs("\n", f);
    }
    for (size_t i = 0; i < n; i++) {
        mq_qspec spec;
        mq_report_tensor_spec(r, i, &spec);
        if (mq_report_tensor_clamped(r, i))
            fprintf(f, "  %s: %llu value(s) beyond the %s range saturated (--clamp)\n",
                    mq_report_tensor_name(r, i),
                    (unsigned long long)mq_report_tensor_clamped(r, i), mq_qtype_name(spec.type));
    }
    bool header = false;
    for (size_t i = 0; i < n; i++) {
        if (mq_report_tensor_action(r, i) != MQ_ACTION_KEEP ||
            (mq_report_tensor_shape(r, i, NULL) < 2 && !g_cli.verbose))
            continue;
        if (!header) fprintf(f, "kept as they are:\n"), header = true;
        const char *reason = mq_report_tensor_reason(r, i);
        fprintf(f, "  %-40s %s\n", mq_report_tensor_name(r, i), reason ? reason : "");
    }
    if (one_d && !g_cli.verbose)
        fprintf(f, "  (and %zu 1-D tensors: norms, biases, scalars; -v lists them)\n", one_d);
    uint64_t bin = mq_report_bytes_in(r), bout = mq_report_bytes_out(r);
    double ratio = bout ? (double)bin / (double)bout : 0;
    fprintf(f, "%zu quantized, %zu cast, %zu kept; tensor data %s -> %s (%.2fx smaller)",
            mq_report_action_count(r, MQ_ACTION_QUANTIZE),
            mq_report_action_count(r, MQ_ACTION_CAST), mq_report_action_count(r, MQ_ACTION_KEEP),
            cli_bytes(bin, b1, sizeof b1), cli_bytes(bout, b2, sizeof b2), ratio);
    if (mq_report_file_bytes_out(r))
        fprintf(f, "; file %s -> %s", cli_bytes(mq_report_file_bytes_in(r), b1, sizeof b1),
                cli_bytes(mq_report_file_bytes_out(r), b2, sizeof b2));
    fprintf(f, "; %.2f s\n", mq_report_seconds(r));
    if (g_cli.verbose && !q->dry_run) print_phases(f, r);
}

/* GPTQ when the statistics allow it: on the LM fixture it halves the perplexity cost of
 * min/max INT4 (docs/QUANTIZATION.md). */
static mq_status pick_search(mq_ctx *ctx, qstate *q) {
    if (cli_given(&command, &q->args, "search") || !q->o.calibration ||
        (q->o.spec.type != MQ_Q_INT4 && q->o.spec.type != MQ_Q_UINT4))
        return MQ_OK;
    mq_calib_stats *stats = NULL;
    mq_status st = mq_calib_stats_open(ctx, q->o.calibration, &stats);
    if (st != MQ_OK) return st;
    for (size_t i = 0; i < mq_calib_stats_count(stats); i++)
        if (mq_calib_stats_layer(stats, i)->hessian) q->o.spec.search = MQ_SEARCH_GPTQ;
    mq_calib_stats_free(stats);
    return MQ_OK;
}

/* The output policy against the input model, before any work. */
static int check_output(mq_ctx *ctx, const qstate *q, const char *out) {
    mq_model *m = NULL;
    mq_open_options oo;
    mq_open_options_default(&oo);
    oo.key = q->o.key;
    mq_status st = mq_model_open(ctx, q->model, &oo, &m);
    if (st != MQ_OK) return cli_fail(ctx, st);
    int rc = q->o.output_folder ? cli_prepare_output_folder(ctx, out, m)
                                : cli_prepare_output(ctx, out, m);
    mq_model_free(m);
    return rc;
}

/* Options given that the run would ignore: each a warning, and under --strict an exit 3
 * before anything is read or written. */
static int ignored_options(const qstate *q) {
    const mq_qspec *s = &q->o.spec;
    bool rule_4bit = false, rule_cast = false;
    for (size_t i = 0; i < q->o.nrules; i++) {
        rule_4bit |= q->rules[i].type == MQ_Q_INT4 || q->rules[i].type == MQ_Q_UINT4;
        rule_cast |= q->rules[i].type == MQ_Q_FP16 || q->rules[i].type == MQ_Q_BF16;
    }
    bool cast = s->type == MQ_Q_FP16 || s->type == MQ_Q_BF16;
    unsigned n = 0;
    if (cli_given(&command, &q->args, "group-size") && s->granularity != MQ_PER_GROUP &&
        !rule_4bit) {
        cli_warn("--group-size %lld has no effect: %s is per %s, not per group", q->group_size,
                 mq_qtype_name(s->type), cast ? "element" : s->granularity == MQ_PER_TENSOR
                 ? "tensor" : "channel");
        n++;
    }
    if (q->clamp && !cast && !rule_cast) {
        cli_warn("--clamp has no effect: only FP16/BF16 casts saturate");
        n++;
    }
    if (n && q->strict) {
        fprintf(stderr, "monoquant: error: %u warning(s) under --strict; nothing written\n", n);
        return EXIT_QUANT;
    }
    return EXIT_OK;
}

static int run_quantize(qstate *q, mq_ctx *ctx, const char *out) {
    mq_status st = mq_ctx_set_threads(ctx, (int)g_cli.threads);
    if (st != MQ_OK) return cli_fail(ctx, st);
    int ign = ignored_options(q);
    if (ign) return ign;
    if (q->o.spec.search == MQ_SEARCH_GPTQ && !q->o.calibration)
        return cli_usage_error("quantize", "--search gptq needs --calibration statistics with "
                               "Hessians (monoquant calibrate --hessian)");
    if (out && !strcmp(out, "-"))
        return cli_usage_error("quantize", "-o -: a quantized checkpoint cannot be streamed to "
                               "standard output (its header is completed at the end); give a "
                               "file name");
    if (out) {
        int rc = check_output(ctx, q, out);
        if (rc) return rc;
    }
    st = pick_search(ctx, q);
    if (st != MQ_OK) return cli_fail(ctx, st);
    if (q->act_order && q->o.spec.search != MQ_SEARCH_GPTQ) {
        cli_warn("--act-order has no effect: it orders GPTQ's columns, and the search is not "
                 "gptq");
        if (q->strict) {
            fprintf(stderr, "monoquant: error: 1 warning(s) under --strict; nothing written\n");
            return EXIT_QUANT;
        }
    }
    if (g_cli.progress && !g_cli.json) mq_ctx_set_progress(ctx, cli_progress, NULL);
    mq_report *rep = NULL;
    st = mq_quantize_file(ctx, q->model, out, &q->o, &rep);
    cli_progress_done();
    if (st != MQ_OK) return cli_fail(ctx, st);
    if (g_cli.json) print_json(q, out, rep);
    else print_report(q, out, rep);
    fflush(stdout);
    size_t nwarn = mq_report_warning_count(rep);
    for (size_t i = 0; i < nwarn; i++) cli_warn("%s", mq_report_warning(rep, i));
    int rc = EXIT_OK;
    if (q->strict && nwarn) { /* a dry run: a real run fails before its commit */
        fprintf(stderr, "monoquant: error: %zu warning(s) under --strict\n", nwarn);
        rc = EXIT_QUANT;
    }
    mq_report_free(rep);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    qstate *q = (qstate *)calloc(1, sizeof *q);
    if (!q) return EXIT_GENERAL;
    mq_quantize_options_default(&q->o);
    q->qtype = -1;
    int rc = parse_args(q, argc, argv);
    char *out_owned = NULL;
    mq_ctx *ctx = NULL;
    const char *out = q->dry_run ? NULL : q->output;
    if (rc) {
        rc = rc < 0 ? EXIT_OK : rc;
    } else if (!out && !q->dry_run &&
               !(out = out_owned = output_is_folder(q) ? default_folder(q->model, &q->o)
                                                       : default_output(q->model, &q->o))) {
        rc = EXIT_GENERAL;
    } else if (!(ctx = mq_ctx_create())) {
        rc = EXIT_GENERAL;
    } else {
        q->o.output_folder = out && output_is_folder(q);
        cli_signals_install(ctx);
        rc = run_quantize(q, ctx, out);
    }
    cli_signals_install(NULL); /* the handler must not see a freed context */
    mq_ctx_free(ctx);
    free(out_owned);
    for (size_t i = 0; i < q->nowned; i++) free(q->owned[i]);
    cli_list_free(&q->include);
    cli_list_free(&q->exclude);
    cli_list_free(&q->layer);
    free(q);
    return rc;
}
