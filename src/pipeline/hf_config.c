/* Quantization settings stored by other tools beside their weights (hf_config.h). */
#include "pipeline/hf_config.h"

#include "io/json.h"

#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_MAX_BYTES (64u << 20)

static void free_strs(mq_ctx *ctx, char **v, size_t n) {
    for (size_t i = 0; i < n; i++) mq__free(ctx, v[i]);
    mq__free(ctx, v);
}

void mq__hfconfig_free(mq_ctx *ctx, mq__hfconfig *c) {
    if (!c) return;
    for (size_t i = 0; i < c->ngroups; i++) {
        mq__free(ctx, c->groups[i].name);
        mq__free(ctx, c->groups[i].format);
        free_strs(ctx, c->groups[i].targets, c->groups[i].ntargets);
    }
    mq__free(ctx, c->groups);
    free_strs(ctx, c->ignore, c->nignore);
    mq__free(ctx, c->format);
    mq__free(ctx, c->source);
    memset(c, 0, sizeof *c);
    c->torch_dtype = MQ_DTYPE_INVALID;
    c->sym = -1;
}

/* ---- JSON walking ---------------------------------------------------------------------- */

static mq_status get_string(mq_json *j, char **out) {
    const char *s;
    size_t n;
    if (mq__json_peek(j) == MQ_JSON_NULL) {
        mq_json_type t;
        bool b;
        return mq__json_literal(j, &t, &b);
    }
    MQ_TRY(mq__json_string(j, &s, &n));
    mq__free(j->ctx, *out);
    *out = mq__strndup(j->ctx, s, n);
    return *out ? MQ_OK : MQ_ERR_NOMEM;
}

/* true/false (or null, which leaves *out alone). */
static mq_status get_bool(mq_json *j, int *out) {
    mq_json_type t;
    bool b;
    if (mq__json_peek(j) != MQ_JSON_BOOL && mq__json_peek(j) != MQ_JSON_NULL)
        return mq__json_skip(j);
    MQ_TRY(mq__json_literal(j, &t, &b));
    if (t == MQ_JSON_BOOL) *out = b;
    return MQ_OK;
}

/* An integer (or null / anything else, skipped). */
static mq_status get_int(mq_json *j, const char *what, int64_t *out) {
    if (mq__json_peek(j) != MQ_JSON_NUMBER) return mq__json_skip(j);
    return mq__json_i64(j, what, out);
}

static mq_status get_string_list(mq_json *j, char ***out, size_t *n) {
    if (mq__json_peek(j) == MQ_JSON_STRING) { /* a single string stands for a list of one */
        char *s = NULL;
        MQ_TRY(get_string(j, &s));
        *out = (char **)mq__calloc(j->ctx, 1, sizeof **out);
        if (!*out) return mq__free(j->ctx, s), MQ_ERR_NOMEM;
        (*out)[0] = s;
        *n = 1;
        return MQ_OK;
    }
    if (mq__json_peek(j) != MQ_JSON_ARRAY) return mq__json_skip(j);
    MQ_TRY(mq__json_array_begin(j));
    size_t cap = 0;
    bool more;
    mq_status st;
    while ((st = mq__json_array_next(j, &more)) == MQ_OK && more) {
        if (mq__json_peek(j) != MQ_JSON_STRING) {
            MQ_TRY(mq__json_skip(j));
            continue;
        }
        MQ_TRY(mq__grow(j->ctx, (void **)out, &cap, *n + 1, sizeof **out));
        (*out)[*n] = NULL;
        MQ_TRY(get_string(j, &(*out)[*n]));
        (*n)++;
    }
    return st;
}

static mq_status parse_args(mq_json *j, mq__qargs *a) {
    memset(a, 0, sizeof *a);
    a->symmetric = -1;
    if (mq__json_peek(j) != MQ_JSON_OBJECT) return mq__json_skip(j);
    a->present = 1;
    MQ_TRY(mq__json_object_begin(j));
    const char *key;
    size_t klen;
    bool more;
    mq_status st;
    while ((st = mq__json_object_next(j, &key, &klen, &more)) == MQ_OK && more) {
        int64_t v = 0;
        char *s = NULL;
        if (!strcmp(key, "num_bits")) {
            MQ_TRY(get_int(j, "num_bits", &v));
            a->num_bits = v > 0 && v <= 32 ? (int)v : 0;
        } else if (!strcmp(key, "group_size")) {
            MQ_TRY(get_int(j, "group_size", &v));
            a->group_size = v;
        } else if (!strcmp(key, "symmetric")) {
            MQ_TRY(get_bool(j, &a->symmetric));
        } else if (!strcmp(key, "dynamic")) {
            if (mq__json_peek(j) == MQ_JSON_STRING) { /* "local" */
                MQ_TRY(get_string(j, &s));
                a->dynamic = 1;
            } else {
                MQ_TRY(get_bool(j, &a->dynamic));
            }
        } else if (!strcmp(key, "type") || !strcmp(key, "strategy")) {
            bool is_type = key[0] == 't';
            MQ_TRY(get_string(j, &s));
            if (is_type) a->is_float = s && !strcmp(s, "float");
            else if (!s) a->strategy = MQ__STRAT_UNKNOWN;
            else if (!strcmp(s, "tensor")) a->strategy = MQ__STRAT_TENSOR;
            else if (!strcmp(s, "channel")) a->strategy = MQ__STRAT_CHANNEL;
            else if (!strcmp(s, "group")) a->strategy = MQ__STRAT_GROUP;
            else if (!strcmp(s, "token")) a->strategy = MQ__STRAT_TOKEN;
            else a->strategy = MQ__STRAT_OTHER;
        } else {
            MQ_TRY(mq__json_skip(j));
        }
        mq__free(j->ctx, s);
    }
    return st;
}

static mq_status parse_groups(mq_json *j, mq__hfconfig *c) {
    if (mq__json_peek(j) != MQ_JSON_OBJECT) return mq__json_skip(j);
    MQ_TRY(mq__json_object_begin(j));
    const char *key;
    size_t klen, cap = 0;
    bool more;
    mq_status st;
    while ((st = mq__json_object_next(j, &key, &klen, &more)) == MQ_OK && more) {
        MQ_TRY(mq__grow(j->ctx, (void **)&c->groups, &cap, c->ngroups + 1, sizeof *c->groups));
        mq__qgroup *g = &c->groups[c->ngroups++];
        memset(g, 0, sizeof *g);
        g->weights.symmetric = g->input.symmetric = -1;
        g->name = mq__strndup(j->ctx, key, klen);
        if (!g->name) return MQ_ERR_NOMEM;
        if (mq__json_peek(j) != MQ_JSON_OBJECT) {
            MQ_TRY(mq__json_skip(j));
            continue;
        }
        MQ_TRY(mq__json_object_begin(j));
        bool more2;
        while ((st = mq__json_object_next(j, &key, &klen, &more2)) == MQ_OK && more2) {
            if (!strcmp(key, "targets")) MQ_TRY(get_string_list(j, &g->targets, &g->ntargets));
            else if (!strcmp(key, "weights")) MQ_TRY(parse_args(j, &g->weights));
            else if (!strcmp(key, "input_activations")) MQ_TRY(parse_args(j, &g->input));
            else if (!strcmp(key, "format")) MQ_TRY(get_string(j, &g->format));
            else MQ_TRY(mq__json_skip(j));
        }
        MQ_TRY(st);
    }
    return st;
}

/* A quantization_config object (compressed-tensors or GPTQ keys). */
static mq_status parse_qconfig(mq_json *j, mq__hfconfig *c) {
    if (mq__json_peek(j) != MQ_JSON_OBJECT) return mq__json_skip(j);
    MQ_TRY(mq__json_object_begin(j));
    const char *key;
    size_t klen;
    bool more;
    mq_status st;
    char *method = NULL, *ckpt = NULL;
    while ((st = mq__json_object_next(j, &key, &klen, &more)) == MQ_OK && more) {
        int64_t v = 0;
        if (!strcmp(key, "quant_method")) st = get_string(j, &method);
        else if (!strcmp(key, "format")) st = get_string(j, &c->format);
        else if (!strcmp(key, "checkpoint_format")) st = get_string(j, &ckpt);
        else if (!strcmp(key, "config_groups")) st = parse_groups(j, c);
        else if (!strcmp(key, "ignore")) st = get_string_list(j, &c->ignore, &c->nignore);
        else if (!strcmp(key, "sym")) st = get_bool(j, &c->sym);
        else if (!strcmp(key, "desc_act")) st = get_bool(j, &c->desc_act);
        else if (!strcmp(key, "bits") || !strcmp(key, "group_size")) {
            bool bits = key[0] == 'b';
            st = get_int(j, bits ? "bits" : "group_size", &v);
            if (bits) c->bits = v > 0 && v <= 32 ? (int)v : 0;
            else c->group_size = v;
        } else st = mq__json_skip(j);
        if (st != MQ_OK) break;
    }
    if (st == MQ_OK && method) {
        if (!strcmp(method, "compressed-tensors")) c->method = MQ__QM_CT;
        else if (!strcmp(method, "gptq")) c->method = MQ__QM_GPTQ;
        else c->method = MQ__QM_OTHER;
    }
    if (st == MQ_OK && ckpt && !strcmp(ckpt, "gptq_v2")) c->gptq_v2 = 1;
    mq__free(j->ctx, method);
    mq__free(j->ctx, ckpt);
    return st;
}

/* config.json: quantization_config and torch_dtype; with `top_is_qconfig` the object itself
 * is a quantization config (quantize_config.json, metadata). */
static mq_status parse_text(mq_ctx *ctx, const char *text, size_t len, const char *where,
                            int top_is_qconfig, mq__hfconfig *c) {
    mq_json j;
    mq__json_init(&j, ctx, text, len, where, 0);
    mq_status st;
    if (top_is_qconfig) {
        st = parse_qconfig(&j, c);
    } else {
        st = mq__json_object_begin(&j);
        const char *key;
        size_t klen;
        bool more;
        while (st == MQ_OK && (st = mq__json_object_next(&j, &key, &klen, &more)) == MQ_OK &&
               more) {
            if (!strcmp(key, "quantization_config")) {
                st = parse_qconfig(&j, c);
            } else if (!strcmp(key, "torch_dtype") || !strcmp(key, "dtype")) {
                char *s = NULL;
                st = mq__json_peek(&j) == MQ_JSON_STRING ? get_string(&j, &s) : mq__json_skip(&j);
                if (s) {
                    const char *n = !strcmp(s, "float16") ? "F16" : !strcmp(s, "bfloat16") ? "BF16"
                                    : !strcmp(s, "float32") ? "F32" : "";
                    mq_dtype d;
                    if (mq_dtype_from_name(n, &d)) c->torch_dtype = d;
                }
                mq__free(ctx, s);
            } else {
                st = mq__json_skip(&j);
            }
        }
    }
    if (st == MQ_OK) st = mq__json_finish(&j);
    mq__json_free(&j);
    return st;
}

/* Reads a whole small file; *text NULL (and MQ_OK) when it does not exist. */
static mq_status read_small(mq_ctx *ctx, const char *path, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) return MQ_OK;
        return mq__fail(ctx, MQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > CONFIG_MAX_BYTES) {
        close(fd);
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: not a regular file of at most %u MiB", path,
                        CONFIG_MAX_BYTES >> 20);
    }
    char *buf = (char *)mq__malloc(ctx, (size_t)sb.st_size + 1);
    if (!buf) return close(fd), MQ_ERR_NOMEM;
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)sb.st_size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            mq_status st = mq__fail(ctx, MQ_ERR_IO, "%s: cannot read: %s", path,
                                    r < 0 ? strerror(errno) : "file shrank");
            close(fd);
            mq__free(ctx, buf);
            return st;
        }
        got += (size_t)r;
    }
    close(fd);
    buf[got] = 0;
    *text = buf;
    *len = got;
    return MQ_OK;
}

/* "<folder of path>/<name>" (path itself when it is a folder). */
static char *beside(mq_ctx *ctx, const char *path, const char *name) {
    struct stat sb;
    size_t dl;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        dl = strlen(path);
    } else {
        const char *slash = strrchr(path, '/');
        dl = slash ? (size_t)(slash - path) : 0;
        if (!slash) path = ".", dl = 1;
        else if (dl == 0) dl = 1; /* "/file" */
    }
    size_t nl = strlen(name);
    char *out = (char *)mq__malloc(ctx, dl + nl + 2);
    if (!out) return NULL;
    memcpy(out, path, dl);
    out[dl] = '/';
    memcpy(out + dl + 1, name, nl + 1);
    return out;
}

static mq_status load_file(mq_ctx *ctx, const char *path, const char *name, int top_is_qconfig,
                           mq__hfconfig *c, int *found) {
    *found = 0;
    char *file = beside(ctx, path, name);
    if (!file) return MQ_ERR_NOMEM;
    char *text;
    size_t len;
    mq_status st = read_small(ctx, file, &text, &len);
    if (st == MQ_OK && text) {
        *found = 1;
        st = parse_text(ctx, text, len, file, top_is_qconfig, c);
        if (st == MQ_OK && c->method != MQ__QM_NONE && !c->source) {
            c->source = file;
            file = NULL;
        }
    }
    mq__free(ctx, text);
    mq__free(ctx, file);
    return st;
}

mq_status mq__hfconfig_load(mq_ctx *ctx, const mq_model *m, const char *path, mq__hfconfig *out) {
    memset(out, 0, sizeof *out);
    out->torch_dtype = MQ_DTYPE_INVALID;
    out->sym = -1;
    mq_status st = MQ_OK;
    const char *meta = mq__model_meta(m, "quantization_config");
    if (meta) {
        mq__hfconfig tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.torch_dtype = MQ_DTYPE_INVALID;
        tmp.sym = -1;
        /* our own (quant_method "monoquant") or unreadable JSON: not a foreign config */
        if (parse_text(ctx, meta, strlen(meta), "quantization_config", 1, &tmp) == MQ_OK &&
            (tmp.method == MQ__QM_CT || tmp.method == MQ__QM_GPTQ)) {
            /* the dtype of the model still comes from config.json, when there is one */
            mq__hfconfig beside_cfg;
            memset(&beside_cfg, 0, sizeof beside_cfg);
            int found;
            if (load_file(ctx, path, "config.json", 0, &beside_cfg, &found) == MQ_OK)
                tmp.torch_dtype = beside_cfg.torch_dtype;
            mq__hfconfig_free(ctx, &beside_cfg);
            *out = tmp;
            out->source = mq__strdup(ctx, "the quantization_config metadata");
            return out->source ? MQ_OK : MQ_ERR_NOMEM;
        }
        mq__hfconfig_free(ctx, &tmp);
    }
    int found;
    st = load_file(ctx, path, "config.json", 0, out, &found);
    if (st == MQ_OK && (out->method == MQ__QM_NONE || out->method == MQ__QM_GPTQ)) {
        /* GPTQ tools also (or only) write quantize_config.json; its keys fill the gaps */
        mq__hfconfig q;
        memset(&q, 0, sizeof q);
        q.torch_dtype = MQ_DTYPE_INVALID;
        q.sym = -1;
        st = load_file(ctx, path, "quantize_config.json", 1, &q, &found);
        if (st == MQ_OK && found && out->method == MQ__QM_NONE) {
            if (q.method == MQ__QM_NONE) q.method = MQ__QM_GPTQ; /* older files name no method */
            if (q.method == MQ__QM_GPTQ) {
                out->method = MQ__QM_GPTQ;
                out->bits = q.bits, out->group_size = q.group_size, out->sym = q.sym;
                out->desc_act = q.desc_act, out->gptq_v2 = q.gptq_v2;
                if (!out->source) {
                    out->source = beside(ctx, path, "quantize_config.json");
                    if (!out->source) st = MQ_ERR_NOMEM;
                }
            }
        }
        mq__hfconfig_free(ctx, &q);
    }
    if (st != MQ_OK) mq__hfconfig_free(ctx, out);
    return st;
}

/* ---- target matching ------------------------------------------------------------------ */

/* Python regex -> POSIX extended, anchored at the start like re.match. NULL when the pattern
 * uses something POSIX lacks (lookarounds, backreferences...). */
static char *translate(const char *p) {
    size_t n = strlen(p);
    char *out = (char *)malloc(n * 12 + 2);
    if (!out) return NULL;
    size_t o = 0;
    out[o++] = '^';
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\\' && i + 1 < n) {
            char e = p[++i];
            const char *rep = NULL;
            switch (e) {
            case 'd': rep = in_class ? "0-9" : "[0-9]"; break;
            case 'w': rep = in_class ? "A-Za-z0-9_" : "[A-Za-z0-9_]"; break;
            case 's': rep = in_class ? "[:space:]" : "[[:space:]]"; break;
            case 'D': case 'W': case 'S': case 'b': case 'B': case 'A': case 'Z':
                if (in_class || e != 'A') return free(out), NULL;
                continue; /* \A: already anchored */
            default:
                if (e >= '0' && e <= '9') return free(out), NULL;
                if (in_class) { out[o++] = e; continue; }
                out[o++] = '\\';
                out[o++] = e;
                continue;
            }
            size_t k = strlen(rep);
            memcpy(out + o, rep, k);
            o += k;
            continue;
        }
        if (in_class) {
            if (ch == ']') in_class = 0;
            out[o++] = ch;
            continue;
        }
        if (ch == '[') {
            in_class = 1;
            out[o++] = ch;
            if (i + 1 < n && p[i + 1] == '^') out[o++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']') out[o++] = p[++i];
            continue;
        }
        if (ch == '(' && i + 1 < n && p[i + 1] == '?') {
            if (i + 2 < n && p[i + 2] == ':') {
                out[o++] = '(';
                i += 2;
                continue;
            }
            return free(out), NULL;
        }
        /* lazy quantifiers match the same prefixes for re.match's yes/no answer */
        if (ch == '?' && o > 1 && strchr("*+?}", p[i - 1]) && (i < 2 || p[i - 2] != '\\'))
            continue;
        out[o++] = ch;
    }
    out[o] = 0;
    return out;
}

int mq__pattern_match(const char *pattern, const char *name) {
    char *ere = translate(pattern);
    if (!ere) return -1;
    regex_t re;
    int rc = regcomp(&re, ere, REG_EXTENDED | REG_NOSUB);
    free(ere);
    if (rc != 0) return -1;
    rc = regexec(&re, name, 0, NULL, 0);
    regfree(&re);
    return rc == 0;
}

/* 3 exact name, 2 pattern, 1 class name (any layer: the tensors say which are quantized),
 * 0 no match. */
static int match_rank(const char *target, const char *name) {
    if (!strncmp(target, "re:", 3)) return mq__pattern_match(target + 3, name) == 1 ? 2 : 0;
    if (!strcmp(target, name)) return 3;
    bool is_class = target[0] >= 'A' && target[0] <= 'Z' && !strchr(target, '.');
    return is_class ? 1 : 0;
}

const mq__qgroup *mq__hfconfig_match(const mq__hfconfig *c, const char *name, int *ignored) {
    *ignored = 0;
    for (size_t i = 0; i < c->nignore; i++) {
        const char *t = c->ignore[i];
        int r = match_rank(t, name);
        if (r >= 2) *ignored = 1;
    }
    const mq__qgroup *best = NULL;
    int best_rank = 0;
    for (size_t g = 0; g < c->ngroups; g++)
        for (size_t t = 0; t < c->groups[g].ntargets; t++) {
            int r = match_rank(c->groups[g].targets[t], name);
            if (r > best_rank) best_rank = r, best = &c->groups[g];
        }
    return best;
}
