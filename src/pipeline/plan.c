/* The plan: what becomes of each input tensor (kept, cast, quantized), why, and the output
 * tensors it turns into. Known entirely before any data is read, so the writer can put the
 * header first and stream. */
#include "pipeline/pipeline_internal.h"
#include "quant/quant_internal.h"

#include <float.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_SKIP_MIN_ELEMENTS 512

void mq_quantize_options_default_sized(mq_quantize_options *opts, size_t struct_size) {
    mq_quantize_options o;
    memset(&o, 0, sizeof o);
    mq_qspec_default(&o.spec);
    o.kinds = MQ_KIND_BIT(MQ_KIND_LINEAR) | MQ_KIND_BIT(MQ_KIND_CONV) | MQ_KIND_BIT(MQ_KIND_RNN);
    o.default_skip = 1;
    o.error_stats = 1;
    mq__struct_default(opts, struct_size, &o, sizeof o);
}


size_t mq_qspec_format(const mq_qspec *s, char *buf, size_t cap) {
    int n;
    if (!mq__qtype_is_integer(s->type)) {
        n = snprintf(buf, cap, "%s", mq_qtype_name(s->type));
    } else {
        char gran[32] = "";
        if (s->granularity == MQ_PER_GROUP) snprintf(gran, sizeof gran, "-g%d", s->group_size);
        else if (s->granularity == MQ_PER_TENSOR) snprintf(gran, sizeof gran, "-pt");
        n = snprintf(buf, cap, "%s%s%s", mq_qtype_name(s->type), gran,
                     s->scheme == MQ_ASYMMETRIC ? "-asym" : "");
    }
    return n < 0 ? 0 : (size_t)n;
}

static const char *const gran_names[] = {"tensor", "channel", "group"};
static const char *const search_names[] = {"minmax", "mse", "gptq"};

void mq__spec_to_meta(const mq_qspec *s, mq_dtype orig, char *buf, size_t cap) {
    unsigned g = (unsigned)s->granularity < 3 ? (unsigned)s->granularity : 0;
    unsigned se = (unsigned)s->search < 3 ? (unsigned)s->search : 0;
    snprintf(buf, cap, "%s %s %s %d %s %s", mq_qtype_name(s->type),
             s->scheme == MQ_ASYMMETRIC ? "asymmetric" : "symmetric", gran_names[g],
             s->group_size, search_names[se], mq_dtype_name(orig));
}

int mq__spec_from_meta(const char *str, mq_qspec *s, mq_dtype *orig) {
    char type[16], scheme[16], gran[16], search[16], dtype[16];
    int group = 0;
    if (sscanf(str, "%15s %15s %15s %d %15s %15s", type, scheme, gran, &group, search, dtype) != 6)
        return 0;
    mq_qspec_default(s);
    s->type = MQ_Q_NONE;
    if (!mq__qtype_from_name(type, &s->type)) return 0;
    if (!strcmp(scheme, "symmetric")) s->scheme = MQ_SYMMETRIC;
    else if (!strcmp(scheme, "asymmetric")) s->scheme = MQ_ASYMMETRIC;
    else return 0;
    int found = 0;
    for (int g = 0; g < 3; g++)
        if (!strcmp(gran, gran_names[g])) s->granularity = (mq_granularity)g, found = 1;
    if (!found) return 0;
    found = 0;
    for (int k = 0; k < 3; k++)
        if (!strcmp(search, search_names[k])) s->search = (mq_scale_search)k, found = 1;
    if (!found || group < 0) return 0;
    s->group_size = group;
    return mq_dtype_from_name(dtype, orig);
}

/* Name of the layer a tensor belongs to: the name without its last component. */
size_t mq__layer_prefix_len(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot ? (size_t)(dot - name) : 0;
}

int mq__is_head_name(const char *name) {
    static const char *const heads[] = {"lm_head", "output", "head", "classifier", "score",
                                        "embed_out"};
    size_t n = mq__layer_prefix_len(name);
    if (!n) return 0;
    size_t start = n;
    while (start > 0 && name[start - 1] != '.') start--;
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++)
        if (strlen(heads[i]) == n - start && !memcmp(name + start, heads[i], n - start)) return 1;
    return 0;
}

/* 1 when a dot-separated component is all digits (a numbered block, "layers.3."). */
static int has_numbered_part(const char *name) {
    const char *p = name;
    while (*p) {
        const char *e = strchr(p, '.');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        size_t k = 0;
        while (k < n && p[k] >= '0' && p[k] <= '9') k++;
        if (n && k == n) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

static bool matches(const char *pattern, const char *name) {
    return fnmatch(pattern, name, 0) == 0;
}

void mq__plan_free(mq__plan *p) {
    if (!p || !p->ctx) return;
    mq_ctx *ctx = p->ctx;
    for (size_t i = 0; i < p->n; i++) {
        mq__free(ctx, p->entries[i].reason);
        mq__free(ctx, p->entries[i].importance);
    }
    for (size_t i = 0; i < p->nouts; i++) mq__free(ctx, (void *)p->outs[i].name);
    for (size_t i = 0; i < p->nwarnings; i++) mq__free(ctx, p->warnings[i]);
    mq__free(ctx, p->entries);
    mq__free(ctx, p->outs);
    mq__free(ctx, p->warnings);
    memset(p, 0, sizeof *p);
}

mq_status mq__plan_warn(mq__plan *p, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    MQ_TRY(mq__grow(p->ctx, (void **)&p->warnings, &p->cap_warnings, p->nwarnings + 1,
                    sizeof *p->warnings));
    char *w = mq__strdup(p->ctx, buf);
    if (!w) return MQ_ERR_NOMEM;
    p->warnings[p->nwarnings++] = w;
    return MQ_OK;
}

#define set_reason mq__plan_keep
mq_status mq__plan_keep(mq__plan *p, mq__plan_entry *e, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    e->action = MQ_ACTION_KEEP;
    e->spec.type = MQ_Q_NONE;
    mq__free(p->ctx, e->reason);
    e->reason = mq__strdup(p->ctx, buf);
    return e->reason ? MQ_OK : MQ_ERR_NOMEM;
}

mq_status mq__plan_add_out(mq__plan *p, const char *base, size_t base_len, const char *suffix,
                         mq_dtype dtype, int ndim, const int64_t *shape) {
    MQ_TRY(mq__grow(p->ctx, (void **)&p->outs, &p->cap_outs, p->nouts + 1, sizeof *p->outs));
    size_t k = strlen(suffix);
    char *name = (char *)mq__malloc(p->ctx, base_len + k + 1);
    if (!name) return MQ_ERR_NOMEM;
    memcpy(name, base, base_len);
    memcpy(name + base_len, suffix, k + 1);
    mq_tensor_desc *d = &p->outs[p->nouts++];
    memset(d, 0, sizeof *d);
    d->name = name;
    d->dtype = dtype;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++) d->shape[i] = shape[i];
    return MQ_OK;
}

static uint64_t desc_bytes(const mq_tensor_desc *d) {
    uint64_t b = mq_dtype_size(d->dtype);
    for (int i = 0; i < d->ndim; i++) b *= (uint64_t)d->shape[i]; /* sizes checked by layout */
    return b;
}

/* The target spec for a tensor matched by a rule of type t: the default spec for the same
 * type, else the recommended settings for t with the default's group size. */
static mq_qspec rule_spec(const mq_qspec *def, mq_qtype t) {
    mq_qspec s = *def;
    if (t != def->type) {
        mq_qspec_recommended(&s, t);
        if (def->group_size > 0) s.group_size = def->group_size;
    }
    return s;
}

/* 1 when a float tensor holds NaN or Inf (exponent bits all ones). */
static int has_nonfinite(const mq_tensor *t) {
    const uint8_t *d = (const uint8_t *)t->data;
    for (uint64_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case MQ_F32:
            if ((mq__load_le32(d + 4 * i) & 0x7f800000u) == 0x7f800000u) return 1;
            break;
        case MQ_F64:
            if ((mq__load_le64(d + 8 * i) & 0x7ff0000000000000ull) == 0x7ff0000000000000ull)
                return 1;
            break;
        case MQ_F16:
            if ((mq__load_le16(d + 2 * i) & 0x7c00u) == 0x7c00u) return 1;
            break;
        case MQ_BF16:
            if ((mq__load_le16(d + 2 * i) & 0x7f80u) == 0x7f80u) return 1;
            break;
        default: return 0;
        }
    }
    return 0;
}

/* Decides the action for one tensor (reasons for everything kept). */
static mq_status decide(mq__plan *p, const mq_quantize_options *o, mq__plan_entry *e,
                        bool last_linear) {
    const mq_tensor *t = e->src;
    bool head = mq__is_head_name(t->name) || last_linear;
    e->is_head = head;
    e->spec = o->spec;
    if (!mq_dtype_is_float(t->dtype))
        return set_reason(p, e, "%s tensor (not floating point)", mq_dtype_name(t->dtype));
    if (t->ndim < 2)
        return set_reason(p, e, "%s (%s)", mq_layer_kind_name(e->kind),
                          t->ndim == 0 ? "scalar" : "1-D");
    if (t->numel == 0) return set_reason(p, e, "empty tensor");
    if (o->ninclude) {
        bool any = false;
        for (size_t i = 0; i < o->ninclude && !any; i++) any = matches(o->include[i], t->name);
        if (!any) return set_reason(p, e, "not matched by --include");
    }
    for (size_t i = 0; i < o->nexclude; i++)
        if (matches(o->exclude[i], t->name))
            return set_reason(p, e, "excluded by --exclude '%s'", o->exclude[i]);
    if (t->numel < o->min_params)
        return set_reason(p, e, "%llu elements, under --min-params %llu",
                          (unsigned long long)t->numel, (unsigned long long)o->min_params);
    const mq_layer_rule *rule = NULL;
    for (size_t i = 0; i < o->nrules; i++)
        if (matches(o->rules[i].pattern, t->name)) rule = &o->rules[i];
    if (rule) {
        if (rule->type == MQ_Q_NONE)
            return set_reason(p, e, "kept by --layer '%s=none'", rule->pattern);
        e->spec = rule_spec(&o->spec, rule->type);
        e->by_rule = 1;
    } else {
        if (!(o->kinds & MQ_KIND_BIT(e->kind)))
            return set_reason(p, e, "%s (not in --types)", mq_layer_kind_name(e->kind));
        if (o->spec.type == MQ_Q_NONE) return set_reason(p, e, "target type none");
        if (mq__qtype_bits(o->spec.type) == 4 && o->default_skip) {
            if (e->kind == MQ_KIND_EMBEDDING)
                return set_reason(p, e, "embedding (4-bit default skip)");
            if (head)
                return set_reason(p, e, "output head (4-bit default skip)");
            if (t->numel < DEFAULT_SKIP_MIN_ELEMENTS)
                return set_reason(p, e, "%llu elements, under %d (4-bit default skip)",
                                  (unsigned long long)t->numel, DEFAULT_SKIP_MIN_ELEMENTS);
        }
    }
    if (o->skip_nonfinite && !o->dry_run && has_nonfinite(t))
        return set_reason(p, e, "contains NaN or Inf (--skip-nonfinite)");
    if (mq__qtype_bits(e->spec.type) == 4 && (e->kind == MQ_KIND_EMBEDDING || head))
        MQ_TRY(mq__plan_warn(p, "%s: 4-bit on an %s is risky (quality loss concentrates there)",
                             t->name, e->kind == MQ_KIND_EMBEDDING ? "embedding" : "output head"));
    e->action = mq__qtype_is_integer(e->spec.type) ? MQ_ACTION_QUANTIZE : MQ_ACTION_CAST;
    return MQ_OK;
}

/* Statistics for the layer of a `<layer>.weight` tensor: activation parameters and the
 * per-column importance (Conv: each input channel repeated kh*kw times). */
static mq_status attach_stats(mq__plan *p, mq__plan_entry *e, const mq_calib_stats *stats) {
    const mq_tensor *t = e->src;
    size_t lp = mq__weight_layer_len(t->name, strlen(t->name));
    if (!lp) return MQ_OK;
    char layer[512];
    if (lp >= sizeof layer) return MQ_OK;
    memcpy(layer, t->name, lp);
    layer[lp] = 0;
    int64_t at = mq_calib_stats_find(stats, layer);
    if (at < 0) return MQ_OK;
    mq_layer_stats ls = *mq_calib_stats_layer(stats, (size_t)at);
    int64_t cols = e->layout.cols;
    if (ls.channels <= 0 || cols % ls.channels != 0)
        return mq__fail(p->ctx, MQ_ERR_INVALID,
                        "calibration: layer '%s' has %lld input channels, tensor '%s' has %lld "
                        "columns", layer, (long long)ls.channels, t->name, (long long)cols);
    e->has_input_params = 1;
    e->input_scale = ls.input_scale;
    e->input_zero_point = ls.input_zero_point;
    e->input_zp_dtype = ls.input_type == MQ_Q_UINT8 ? MQ_U8 : MQ_I8;
    e->input_symmetric = ls.input_scheme == MQ_SYMMETRIC;
    if (ls.mean_sq) {
        float *imp = (float *)mq__malloc(p->ctx, (size_t)cols * sizeof *imp);
        if (!imp) return MQ_ERR_NOMEM;
        int64_t rep = cols / ls.channels;
        for (int64_t c = 0; c < cols; c++) imp[c] = ls.mean_sq[c / rep];
        e->importance = imp;
    }
    if (ls.hessian && ls.channels == cols) e->hessian = ls.hessian; /* Linear only */
    return MQ_OK;
}

static bool is_8bit(mq_qtype t) { return t == MQ_Q_INT8 || t == MQ_Q_UINT8; }

/* The activation mode of a converted tensor (mq_activations); static needs the layer's
 * calibration statistics. */
static mq_status resolve_activations(mq__plan *p, mq__plan_entry *e, const mq_quantize_options *o) {
    bool quant = e->action == MQ_ACTION_QUANTIZE;
    switch (o->activations) {
    case MQ_ACTIVATIONS_AUTO:
        e->act = !quant || !is_8bit(e->spec.type) ? MQ_ACTIVATIONS_NONE
               : e->has_input_params              ? MQ_ACTIVATIONS_STATIC
                                                  : MQ_ACTIVATIONS_DYNAMIC;
        break;
    case MQ_ACTIVATIONS_STATIC:
        if (quant && !e->has_input_params)
            return mq__fail(p->ctx, MQ_ERR_INVALID,
                            "tensor '%s': static activations need the layer's calibration "
                            "statistics (--calibration), and it has none", e->src->name);
        /* fall through */
    default:
        e->act = quant ? o->activations : MQ_ACTIVATIONS_NONE;
    }
    if (e->act != MQ_ACTIVATIONS_STATIC) e->has_input_params = 0;
    return MQ_OK;
}

/* A converted tensor that ended up kept, or a cast: no calibration-derived state. */
static void drop_stats(mq__plan *p, mq__plan_entry *e) {
    e->has_input_params = 0;
    mq__free(p->ctx, e->importance);
    e->importance = NULL;
    e->hessian = NULL;
}

/* The layout again (the family may have mapped the target) and the stored scale dtype. */
static mq_status finish_layout(mq__plan *p, mq__plan_entry *e, const mq_quantize_options *o) {
    mq_status st = mq_qlayout_init(p->ctx, &e->spec, e->src->ndim, e->src->shape, &e->layout);
    if (st != MQ_OK) return mq__fail_prefix(p->ctx, "tensor '%s'", e->src->name);
    mq_dtype sd = o->scale_dtype;
    if (o->layout == MQ_LAYOUT_GPTQ) sd = MQ_F16; /* what GPTQ stores */
    if (sd == MQ_DTYPE_INVALID)
        sd = o->layout == MQ_LAYOUT_NATIVE || e->src->dtype == MQ_F64 ? MQ_F32 : e->src->dtype;
    e->layout.scale_dtype = sd;
    if (e->has_input_params && sd == MQ_F16)
        e->input_scale = mq_f16_to_f32(mq_f32_to_f16(e->input_scale));
    else if (e->has_input_params && sd == MQ_BF16)
        e->input_scale = mq_bf16_to_f32(mq_f32_to_bf16(e->input_scale));
    if (e->has_input_params && !(e->input_scale > 0 && e->input_scale <= FLT_MAX))
        return mq__fail(p->ctx, MQ_ERR_QUANT, "tensor '%s': input scale beyond the %s range",
                        e->src->name, mq_dtype_name(sd));
    return MQ_OK;
}

static int by_address(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)(*(const mq_tensor *const *)a)->data;
    uintptr_t y = (uintptr_t)(*(const mq_tensor *const *)b)->data;
    return x < y ? -1 : x > y;
}

/* Tensors sharing storage in the input (tied weights, views of one storage in a .pt) are
 * written as separate tensors: the output is larger than the ties made the input, and no
 * longer tied. Said, not silent. */
static mq_status shared_storage_warning(mq__plan *p, const mq_model *model) {
    size_t n = mq_model_tensor_count(model), k = 0, shared = 0;
    if (n < 2) return MQ_OK;
    const mq_tensor **v = (const mq_tensor **)mq__malloc(p->ctx, n * sizeof *v);
    if (!v) return MQ_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        if (mq_model_tensor(model, i)->nbytes) v[k++] = mq_model_tensor(model, i);
    qsort(v, k, sizeof *v, by_address);
    const mq_tensor *a = NULL, *b = NULL;
    uintptr_t end = 0;
    size_t end_at = 0;
    for (size_t i = 0; i < k; i++) {
        uintptr_t s0 = (uintptr_t)v[i]->data, s1 = s0 + (uintptr_t)v[i]->nbytes;
        if (i && s0 < end) {
            if (!shared++) a = v[end_at], b = v[i];
        }
        if (!i || s1 > end) end = s1, end_at = i;
    }
    mq__free(p->ctx, v);
    if (!shared) return MQ_OK;
    return mq__plan_warn(p, "%zu tensor%s share%s storage with another in the input (first: '%s' "
                         "and '%s', e.g. tied weights): the output stores each separately",
                         shared, shared == 1 ? "" : "s", shared == 1 ? "s" : "", a->name,
                         b->name);
}

/* Options and rules that had no effect are warnings, never silent. */
static mq_status ignored_warnings(mq__plan *p, const mq_model *model, const mq_quantize_options *o,
                                  const mq_calib_stats *stats) {
    size_t n = mq_model_tensor_count(model);
    for (size_t r = 0; r < o->nrules; r++) {
        bool hit = false;
        for (size_t i = 0; i < n && !hit; i++) hit = matches(o->rules[r].pattern, mq_model_tensor(model, i)->name);
        if (!hit)
            MQ_TRY(mq__plan_warn(p, "layer rule '%s=%s' matches no tensor", o->rules[r].pattern,
                                 mq_qtype_name(o->rules[r].type)));
    }
    /* 1-D tensors are never quantized, so these kinds only ever match 2-D ones */
    static const mq_layer_kind one_d[] = {MQ_KIND_NORM, MQ_KIND_BIAS};
    for (size_t k = 0; k < 2; k++) {
        if (!(o->kinds & MQ_KIND_BIT(one_d[k]))) continue;
        bool used = false;
        for (size_t i = 0; i < p->n && !used; i++)
            used = p->entries[i].kind == one_d[k] && p->entries[i].action != MQ_ACTION_KEEP;
        if (!used)
            MQ_TRY(mq__plan_warn(p, "layer kind '%s' selected but no such tensor is converted "
                                 "(1-D tensors are always kept)", mq_layer_kind_name(one_d[k])));
    }
    if (!stats) return MQ_OK;
    size_t ns = mq_calib_stats_count(stats), missing = 0;
    const char *first = NULL;
    char name[600];
    for (size_t k = 0; k < ns; k++) {
        const char *layer = mq_calib_stats_layer(stats, k)->layer;
        snprintf(name, sizeof name, "%s.weight", layer);
        if (mq_model_find(model, name) < 0 && !missing++) first = layer;
    }
    bool attached = false;
    for (size_t i = 0; i < p->n; i++)
        attached |= p->entries[i].has_input_params || p->entries[i].importance;
    if (!attached && ns)
        return mq__plan_warn(p, "calibration statistics: none of their %zu layers matches a "
                             "quantized '<layer>.weight' tensor: no input parameters, no "
                             "activation-aware search (first layer: %s)", ns,
                             mq_calib_stats_layer(stats, 0)->layer);
    if (missing)
        return mq__plan_warn(p, "calibration statistics: %zu of %zu layers have no "
                             "'<layer>.weight' tensor in the model (first: %s)", missing, ns,
                             first);
    return MQ_OK;
}

mq_status mq__plan_build(mq_ctx *ctx, const mq_model *model, const mq_quantize_options *o,
                         const mq_calib_stats *stats, mq__plan *p) {
    memset(p, 0, sizeof *p);
    p->ctx = ctx;
    p->ops = o->layout == MQ_LAYOUT_NATIVE ? &mq__layout_native
             : o->layout == MQ_LAYOUT_GPTQ ? &mq__layout_gptq : &mq__layout_ct;
    if (o->layout != MQ_LAYOUT_NATIVE && o->layout != MQ_LAYOUT_COMPRESSED_TENSORS &&
        o->layout != MQ_LAYOUT_GPTQ)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantize: unknown output layout %d", (int)o->layout);
    if (o->layout == MQ_LAYOUT_GPTQ && o->scale_dtype != MQ_DTYPE_INVALID &&
        o->scale_dtype != MQ_F16)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantize: the GPTQ layout stores F16 scales");
    if ((unsigned)o->activations > MQ_ACTIVATIONS_STATIC)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantize: unknown activation mode %d",
                        (int)o->activations);
    if (o->scale_dtype != MQ_DTYPE_INVALID && o->scale_dtype != MQ_F32 &&
        o->scale_dtype != MQ_F16 && o->scale_dtype != MQ_BF16)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantize: scales can be stored as F32, F16 or BF16, "
                        "not %s", mq_dtype_name(o->scale_dtype));
    if (o->layout == MQ_LAYOUT_NATIVE && o->scale_dtype != MQ_DTYPE_INVALID &&
        o->scale_dtype != MQ_F32)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantize: the native layout stores F32 scales "
                        "(other scale dtypes are for the compressed-tensors layout)");
    size_t n = mq_model_tensor_count(model);
    p->entries = (mq__plan_entry *)mq__calloc(ctx, n ? n : 1, sizeof *p->entries);
    if (!p->entries) return MQ_ERR_NOMEM;
    p->n = n;
    /* the last Linear outside numbered blocks is the output head (a classifier's fc2) */
    size_t last_linear = n, gptq_fallback = 0;
    const char *gptq_first = NULL;
    for (size_t i = 0; i < n; i++) {
        const mq_tensor *t = mq_model_tensor(model, i);
        if (mq_classify_tensor(t) == MQ_KIND_LINEAR && !has_numbered_part(t->name)) last_linear = i;
    }
    for (size_t i = 0; i < n; i++) {
        mq__plan_entry *e = &p->entries[i];
        e->src = mq_model_tensor(model, i);
        e->kind = mq_classify_tensor(e->src);
        MQ_TRY(decide(p, o, e, i == last_linear));
        if (e->action == MQ_ACTION_QUANTIZE) {
            mq_status st = mq_qlayout_init(ctx, &e->spec, e->src->ndim, e->src->shape, &e->layout);
            if (st != MQ_OK) return mq__fail_prefix(ctx, "tensor '%s'", e->src->name);
            if (stats) MQ_TRY(attach_stats(p, e, stats));
            /* GPTQ needs the layer's Hessian: without one, the weighted MSE search */
            if (e->spec.search == MQ_SEARCH_GPTQ && !e->hessian) {
                e->spec.search = MQ_SEARCH_MSE;
                if (!gptq_fallback++) gptq_first = e->src->name;
            }
            e->act_order = o->act_order && e->spec.search == MQ_SEARCH_GPTQ &&
                           mq__qtype_is_integer(e->spec.type);
        }
        if (e->action != MQ_ACTION_KEEP) {
            MQ_TRY(resolve_activations(p, e, o));
            MQ_TRY(p->ops->adapt(p, e, o));
        }
        if (e->action == MQ_ACTION_QUANTIZE) MQ_TRY(finish_layout(p, e, o));
        else drop_stats(p, e);
        e->first_out = p->nouts;
        const mq_tensor *t = e->src;
        if (e->action == MQ_ACTION_QUANTIZE) {
            MQ_TRY(p->ops->outputs(p, e));
            p->nquantized++;
        } else {
            mq_dtype dt = t->dtype;
            if (e->action == MQ_ACTION_CAST) {
                dt = e->spec.type == MQ_Q_FP16 ? MQ_F16 : MQ_BF16;
                p->ncast++;
            } else {
                p->nkept++;
            }
            MQ_TRY(mq__plan_add_out(p, t->name, strlen(t->name), "", dt, t->ndim, t->shape));
        }
        e->nout = p->nouts - e->first_out;
        for (size_t k = e->first_out; k < p->nouts; k++) e->bytes_out += desc_bytes(&p->outs[k]);
        p->bytes_in += t->nbytes;
        p->bytes_out += e->bytes_out;
    }
    /* A companion name may collide with an input tensor (e.g. an already quantized input). */
    for (size_t i = 0; i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        for (size_t k = e->first_out; k < e->first_out + e->nout; k++) {
            long j = mq_model_find(model, p->outs[k].name);
            if (j >= 0 && (size_t)j != i)
                return mq__fail(ctx, MQ_ERR_INVALID,
                                "tensor '%s' would be written as '%s', which the input already "
                                "holds (is the input already quantized?)",
                                e->src->name, p->outs[k].name);
        }
    }
    if (p->nquantized + p->ncast == 0)
        MQ_TRY(mq__plan_warn(p, "nothing is quantized: every tensor was kept (see the reasons)"));
    if (gptq_fallback)
        MQ_TRY(mq__plan_warn(p, "GPTQ: %zu quantized tensor%s (first: %s) ha%s no Hessian in the "
                             "calibration statistics and used the mse search instead "
                             "(calibrate with --hessian; Conv layers never have one)",
                             gptq_fallback, gptq_fallback == 1 ? "" : "s", gptq_first,
                             gptq_fallback == 1 ? "s" : "ve"));
    MQ_TRY(shared_storage_warning(p, model));
    return ignored_warnings(p, model, o, stats);
}
