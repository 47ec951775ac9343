/* Reports and the quantization_config JSON stored in the output. */
#include "pipeline/pipeline_internal.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* A JSON number: NaN as null, infinities as out-of-range literals. */
static void json_num(mq_buf *b, double v) {
    if (isnan(v)) mq__buf_add(b, "null");
    else if (isinf(v)) mq__buf_add(b, v > 0 ? "1e999" : "-1e999");
    else mq__buf_printf(b, "%.6g", v);
}

static void json_str(mq_buf *b, const char *s) { mq__json_write_string(b, s, strlen(s)); }

/* ---- quantization_config -------------------------------------------------------------- */

static void json_str_list(mq_buf *sb, const char *const *items, size_t n) {
    mq__buf_add(sb, "[");
    for (size_t i = 0; i < n; i++) {
        if (i) mq__buf_add(sb, ", ");
        json_str(sb, items[i]);
    }
    mq__buf_add(sb, "]");
}

static void json_spec(mq_buf *sb, const mq_qspec *s) {
    char name[64];
    mq_qspec_format(s, name, sizeof name);
    mq__buf_printf(sb, "\"type\": \"%s\", \"scheme_name\": \"%s\"", mq_qtype_name(s->type),
                name);
    if (mq__qtype_is_integer(s->type)) {
        static const char *const gran[] = {"tensor", "channel", "group"};
        int bits = mq__qtype_bits(s->type);
        mq__buf_printf(sb, ", \"bits\": %d, \"symmetric\": %s, \"granularity\": \"%s\"", bits,
                    s->scheme == MQ_SYMMETRIC ? "true" : "false",
                    gran[(unsigned)s->granularity < 3 ? s->granularity : 0]);
        if (s->granularity == MQ_PER_GROUP) mq__buf_printf(sb, ", \"group_size\": %d", s->group_size);
        mq__buf_printf(sb, ", \"scale_search\": \"%s\"", s->search == MQ_SEARCH_MSE    ? "mse"
                                                    : s->search == MQ_SEARCH_GPTQ ? "gptq"
                                                                                  : "minmax");
    }
}

static const char *const act_names[] = {"auto", "none", "dynamic", "static"};

mq_status mq__config_json(mq_ctx *ctx, const mq__plan *p, const mq_quantize_options *o,
                          const mq_report *rep, char **out) {
    mq_buf sb;
    mq__buf_init(&sb, ctx);
    mq__buf_add(&sb, "{\"quant_method\": \"monoquant\", \"version\": \"" MQ_VERSION_STRING
                    "\", \"format_version\": " MQ__FORMAT_VERSION ", ");
    json_spec(&sb, &o->spec);
    mq__buf_add(&sb, ", \"types\": [");
    int first = 1;
    for (int k = 0; k <= MQ_KIND_RNN; k++) {
        if (!(o->kinds & MQ_KIND_BIT(k))) continue;
        mq__buf_printf(&sb, "%s\"%s\"", first ? "" : ", ", mq_layer_kind_name((mq_layer_kind)k));
        first = 0;
    }
    mq__buf_add(&sb, "], \"include\": ");
    json_str_list(&sb, o->include, o->ninclude);
    mq__buf_add(&sb, ", \"exclude\": ");
    json_str_list(&sb, o->exclude, o->nexclude);
    mq__buf_printf(&sb, ", \"min_params\": %llu, \"default_skip\": %s, \"layer_rules\": [",
                (unsigned long long)o->min_params, o->default_skip ? "true" : "false");
    for (size_t i = 0; i < o->nrules; i++) {
        mq__buf_add(&sb, i ? ", {\"pattern\": " : "{\"pattern\": ");
        json_str(&sb, o->rules[i].pattern);
        mq__buf_printf(&sb, ", \"type\": \"%s\"}", mq_qtype_name(o->rules[i].type));
    }
    mq__buf_add(&sb, "], \"activations\": ");
    /* static only when some layer really got input parameters from the statistics */
    bool any_static = false;
    for (size_t i = 0; i < p->n; i++) any_static |= p->entries[i].has_input_params != 0;
    if (any_static) mq__buf_add(&sb, "{\"static\": true, \"input_scale\": \"per_tensor\"}");
    else mq__buf_add(&sb, "null");
    mq__buf_printf(&sb, ", \"layout\": \"%s\", \"activation_mode\": \"%s\"", p->ops->name,
                   act_names[(unsigned)o->activations <= MQ_ACTIVATIONS_STATIC ? o->activations : 0]);
    mq__buf_add(&sb, ", \"quantized\": {");
    first = 1;
    for (size_t i = 0; i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        if (e->action == MQ_ACTION_KEEP) continue;
        mq__buf_add(&sb, first ? "" : ", ");
        first = 0;
        json_str(&sb, e->src->name);
        mq__buf_printf(&sb, ": {\"kind\": \"%s\", \"dtype\": \"%s\", ", mq_layer_kind_name(e->kind),
                    mq_dtype_name(e->src->dtype));
        json_spec(&sb, &e->spec);
        if (e->action == MQ_ACTION_QUANTIZE)
            mq__buf_printf(&sb, ", \"activations\": \"%s\"", act_names[e->act]);
        if (e->has_input_params) mq__buf_add(&sb, ", \"input_params\": true");
        if (rep && rep->tensors[i].has_error) {
            const mq_error_stats *er = &rep->tensors[i].error;
            mq__buf_add(&sb, ", \"sqnr_db\": ");
            json_num(&sb, er->sqnr_db);
            mq__buf_add(&sb, ", \"rel_error\": ");
            json_num(&sb, er->rel_fro);
            mq__buf_add(&sb, ", \"max_abs_error\": ");
            json_num(&sb, er->max_abs);
        }
        mq__buf_add(&sb, "}");
    }
    mq__buf_add(&sb, "}, \"skipped\": {");
    first = 1;
    for (size_t i = 0; i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        if (e->action != MQ_ACTION_KEEP) continue;
        mq__buf_add(&sb, first ? "" : ", ");
        first = 0;
        json_str(&sb, e->src->name);
        mq__buf_add(&sb, ": ");
        json_str(&sb, e->reason ? e->reason : "");
    }
    mq__buf_printf(&sb, "}, \"bytes_in\": %llu, \"bytes_out\": %llu}",
                (unsigned long long)p->bytes_in, (unsigned long long)p->bytes_out);
    if (sb.failed) {
        mq__buf_free(&sb);
        return mq__fail(ctx, MQ_ERR_NOMEM, "out of memory building the quantization config");
    }
    *out = sb.data;
    return MQ_OK;
}

/* ---- reports -------------------------------------------------------------------------- */

mq_status mq__report_from_plan(mq_ctx *ctx, mq__plan *p, mq_report **out) {
    mq_report *r = (mq_report *)mq__calloc(ctx, 1, sizeof *r);
    if (!r) return MQ_ERR_NOMEM;
    r->ctx = ctx;
    r->tensors = (mq__tensor_report *)mq__calloc(ctx, p->n ? p->n : 1, sizeof *r->tensors);
    if (!r->tensors) {
        mq__free(ctx, r);
        return MQ_ERR_NOMEM;
    }
    r->ntensors = p->n;
    for (size_t i = 0; i < p->n; i++) {
        mq__plan_entry *e = &p->entries[i];
        mq__tensor_report *t = &r->tensors[i];
        t->name = mq__strdup(ctx, e->src->name);
        t->reason = e->reason ? mq__strdup(ctx, e->reason) : NULL;
        if (!t->name || (e->reason && !t->reason)) {
            r->ntensors = i + 1;
            mq_report_free(r);
            return MQ_ERR_NOMEM;
        }
        t->kind = e->kind;
        t->dtype = e->src->dtype;
        t->ndim = e->src->ndim;
        memcpy(t->shape, e->src->shape, sizeof t->shape);
        t->numel = e->src->numel;
        t->action = e->action;
        t->spec = e->spec;
        t->bytes_in = e->src->nbytes;
        t->bytes_out = e->bytes_out;
        t->has_input_params = e->has_input_params;
    }
    r->nquantized = p->nquantized;
    r->ncast = p->ncast;
    r->nkept = p->nkept;
    r->bytes_in = p->bytes_in;
    r->bytes_out = p->bytes_out;
    *out = r;
    return MQ_OK;
}

void mq__report_take_warnings(mq_report *r, mq__plan *p) {
    for (size_t i = 0; i < r->nwarnings; i++) mq__free(r->ctx, r->warnings[i]);
    mq__free(r->ctx, r->warnings);
    r->warnings = p->warnings;
    r->nwarnings = p->nwarnings;
    p->warnings = NULL;
    p->nwarnings = p->cap_warnings = 0;
}

void mq_report_free(mq_report *r) {
    if (!r) return;
    mq_ctx *ctx = r->ctx;
    for (size_t i = 0; i < r->ntensors; i++) {
        mq__free(ctx, r->tensors[i].name);
        mq__free(ctx, r->tensors[i].reason);
    }
    for (size_t i = 0; i < r->nwarnings; i++) mq__free(ctx, r->warnings[i]);
    mq__free(ctx, r->warnings);
    mq__free(ctx, r->tensors);
    mq__free(ctx, r->config_json);
    mq__free(ctx, r);
}

/* ---- report accessors ------------------------------------------------------------------ */

static const mq__tensor_report *tensor_at(const mq_report *r, size_t i) {
    return r && i < r->ntensors ? &r->tensors[i] : NULL;
}

size_t mq_report_tensor_count(const mq_report *r) { return r ? r->ntensors : 0; }
const char *mq_report_tensor_name(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->name : NULL;
}
mq_layer_kind mq_report_tensor_kind(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->kind : MQ_KIND_OTHER;
}
mq_dtype mq_report_tensor_dtype(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->dtype : MQ_DTYPE_INVALID;
}
int mq_report_tensor_shape(const mq_report *r, size_t i, int64_t *shape) {
    const mq__tensor_report *t = tensor_at(r, i);
    if (!t) return 0;
    if (shape) memcpy(shape, t->shape, (size_t)t->ndim * sizeof *shape);
    return t->ndim;
}
uint64_t mq_report_tensor_numel(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->numel : 0;
}
mq_action mq_report_tensor_action(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->action : MQ_ACTION_KEEP;
}
int mq_report_tensor_spec(const mq_report *r, size_t i, mq_qspec *out) {
    const mq__tensor_report *t = tensor_at(r, i);
    if (!out) return t != NULL;
    if (t) *out = t->spec;
    else mq_qspec_default(out);
    return t != NULL;
}
const char *mq_report_tensor_reason(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->reason : NULL;
}
uint64_t mq_report_tensor_bytes_in(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->bytes_in : 0;
}
uint64_t mq_report_tensor_bytes_out(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->bytes_out : 0;
}
int mq_report_tensor_error(const mq_report *r, size_t i, mq_error_stats *out) {
    const mq__tensor_report *t = tensor_at(r, i);
    if (!t || !t->has_error) return 0;
    if (out) *out = t->error;
    return 1;
}
uint64_t mq_report_tensor_clamped(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->clamped : 0;
}
int mq_report_tensor_has_input_params(const mq_report *r, size_t i) {
    const mq__tensor_report *t = tensor_at(r, i);
    return t ? t->has_input_params : 0;
}
int mq_report_tensor_output_sqnr(const mq_report *r, size_t i, double *db) {
    const mq__tensor_report *t = tensor_at(r, i);
    if (!t || !t->has_output_error) return 0;
    if (db) *db = t->output_sqnr_db;
    return 1;
}

size_t mq_report_action_count(const mq_report *r, mq_action action) {
    if (!r) return 0;
    switch (action) {
    case MQ_ACTION_KEEP: return r->nkept;
    case MQ_ACTION_QUANTIZE: return r->nquantized;
    case MQ_ACTION_CAST: return r->ncast;
    default: return 0;
    }
}
uint64_t mq_report_bytes_in(const mq_report *r) { return r ? r->bytes_in : 0; }
uint64_t mq_report_bytes_out(const mq_report *r) { return r ? r->bytes_out : 0; }
uint64_t mq_report_file_bytes_in(const mq_report *r) { return r ? r->file_bytes_in : 0; }
uint64_t mq_report_file_bytes_out(const mq_report *r) { return r ? r->file_bytes_out : 0; }
size_t mq_report_warning_count(const mq_report *r) { return r ? r->nwarnings : 0; }
const char *mq_report_warning(const mq_report *r, size_t i) {
    return r && i < r->nwarnings ? r->warnings[i] : NULL;
}
const char *mq_report_config_json(const mq_report *r) { return r ? r->config_json : NULL; }
double mq_report_seconds(const mq_report *r) { return r ? r->seconds : 0; }

static const char *const phase_names[] = {"open",  "read",       "quantize", "error",
                                          "write", "write_wait", "sync",     "background_write"};
#define NPHASES (sizeof phase_names / sizeof *phase_names)
_Static_assert(NPHASES == MQ_PHASE_BACKGROUND_WRITE + 1, "a name per mq_phase");

double mq_report_phase_seconds(const mq_report *r, mq_phase phase) {
    return r && (unsigned)phase < NPHASES ? r->phase_s[phase] : 0;
}

const char *mq_phase_name(mq_phase phase) {
    return (unsigned)phase < NPHASES ? phase_names[phase] : "unknown";
}

int mq_phase_from_name(const char *name, mq_phase *out) {
    for (size_t i = 0; name && i < NPHASES; i++)
        if (!strcmp(name, phase_names[i])) {
            if (out) *out = (mq_phase)i;
            return 1;
        }
    return 0;
}
