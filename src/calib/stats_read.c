/* Reading a statistics file written by mq_calibrator_save (docs/CALIBRATION.md). */
#include "calib/calib_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stats_layer {
    mq_layer_stats s;
    void *mem;      /* names and arrays of this layer */
    float *hessian; /* separate: channels^2 entries */
} stats_layer;

struct mq_calib_stats {
    mq_ctx *ctx;
    stats_layer *layers;
    size_t n, cap;
    size_t *order; /* indices sorted by name, for lookup */
};

void mq_calib_stats_free(mq_calib_stats *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n; i++) {
        mq__free(st->ctx, st->layers[i].mem);
        mq__free(st->ctx, st->layers[i].hessian);
    }
    mq__free(st->ctx, st->layers);
    mq__free(st->ctx, st->order);
    mq__free(st->ctx, st);
}

static const char *const suffix_scale = ".input_scale";

/* The tensor "<layer>.<suffix>" of the given dtype and element count (count < 0: any),
 * or NULL with an error recorded when `required`. */
static const mq_tensor *get(mq_ctx *ctx, const mq_model *m, const char *path, const char *layer,
                            const char *suffix, mq_dtype dt, int64_t count, bool required,
                            mq_status *st) {
    char name[1200];
    snprintf(name, sizeof name, "%s.%s", layer, suffix);
    long i = mq_model_find(m, name);
    if (i < 0) {
        if (required)
            *st = mq__fail(ctx, MQ_ERR_FORMAT, "%s: tensor '%s' is missing", path, name);
        return NULL;
    }
    const mq_tensor *t = mq_model_tensor(m, (size_t)i);
    if (t->dtype != dt || t->ndim != 1 || (count >= 0 && t->shape[0] != count)) {
        *st = mq__fail(ctx, MQ_ERR_FORMAT, "%s: tensor '%s' must be %s [%lld]", path, name,
                       mq_dtype_name(dt), (long long)count);
        return NULL;
    }
    return t;
}

static float f32_at(const mq_tensor *t, int64_t i) {
    float v;
    memcpy(&v, (const uint8_t *)t->data + i * 4, 4);
    return v;
}

/* The optional "<layer>.hessian", F32 [C, C], finite and symmetric with a diagonal >= 0. */
static mq_status read_hessian(mq_ctx *ctx, const mq_model *m, const char *path,
                              const char *layer, int64_t C, float **out) {
    *out = NULL;
    char name[1200];
    snprintf(name, sizeof name, "%s.hessian", layer);
    long i = mq_model_find(m, name);
    if (i < 0) return MQ_OK;
    const mq_tensor *t = mq_model_tensor(m, (size_t)i);
    if (t->dtype != MQ_F32 || t->ndim != 2 || t->shape[0] != C || t->shape[1] != C)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: tensor '%s' must be F32 [%lld, %lld]", path,
                        name, (long long)C, (long long)C);
    size_t n = (size_t)C;
    if (n > SIZE_MAX / 4 / n) return mq__fail(ctx, MQ_ERR_NOMEM, "%s: '%s' is too large", path, name);
    float *h = (float *)mq__malloc(ctx, n * n * 4);
    if (!h) return MQ_ERR_NOMEM;
    memcpy(h, t->data, n * n * 4);
    for (size_t r = 0; r < n; r++)
        for (size_t c = 0; c <= r; c++)
            if (!isfinite(h[r * n + c]) || h[r * n + c] != h[c * n + r] ||
                (r == c && !(h[r * n + c] >= 0))) {
                mq__free(ctx, h);
                return mq__fail(ctx, MQ_ERR_FORMAT, "%s: tensor '%s' holds an invalid value at "
                                "[%zu][%zu] (must be finite and symmetric, diagonal >= 0)",
                                path, name, r, c);
            }
    *out = h;
    return MQ_OK;
}

static mq_status read_layer(mq_ctx *ctx, const mq_model *m, const char *path, const char *layer,
                            stats_layer *out) {
    mq_status st = MQ_OK;
    const mq_tensor *ms = get(ctx, m, path, layer, "mean_sq", MQ_F32, -1, true, &st);
    if (!ms) return st;
    int64_t C = ms->shape[0];
    if (C <= 0) return mq__fail(ctx, MQ_ERR_FORMAT, "%s: layer '%s' has no channels", path, layer);
    const mq_tensor *scale = get(ctx, m, path, layer, "input_scale", MQ_F32, 1, true, &st);
    const mq_tensor *zp = scale ? get(ctx, m, path, layer, "input_zero_point", MQ_I32, 1, true, &st) : NULL;
    const mq_tensor *cnt = zp ? get(ctx, m, path, layer, "count", MQ_I64, 1, true, &st) : NULL;
    const mq_tensor *ma = cnt ? get(ctx, m, path, layer, "max_abs", MQ_F32, C, true, &st) : NULL;
    if (!ma) return st;
    const mq_tensor *range = get(ctx, m, path, layer, "input_range", MQ_F32, 2, false, &st);
    const mq_tensor *cs = get(ctx, m, path, layer, "channel_input_scale", MQ_F32, C, false, &st);
    const mq_tensor *cz = get(ctx, m, path, layer, "channel_input_zero_point", MQ_I32, C, false, &st);
    if (st != MQ_OK) return st;
    if (!cs != !cz)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: layer '%s' has only one of "
                        "channel_input_scale and channel_input_zero_point", path, layer);
    char key[1200];
    snprintf(key, sizeof key, "%s.observer", layer);
    const char *text = mq__model_meta(m, key);
    if (!text) return mq__fail(ctx, MQ_ERR_FORMAT, "%s: metadata '%s' is missing", path, key);
    mq_observer_options o;
    mq_observer_options_default(&o, MQ_OBS_MINMAX);
    if (mq_observer_options_parse(ctx, text, &o) != MQ_OK)
        return mq__fail_prefix(ctx, "%s: metadata '%s'", path, key);
    int qmin, qmax;
    mq__obs_qrange(o.type, &qmin, &qmax);

    size_t nlen = strlen(layer) + 1;
    size_t arrays = (size_t)C * (2 + (cs ? 2 : 0));
    uint8_t *mem = (uint8_t *)mq__malloc(ctx, arrays * 4 + nlen);
    if (!mem) return MQ_ERR_NOMEM;
    float *mean_sq = (float *)mem, *max_abs = mean_sq + C;
    float *ch_scale = cs ? max_abs + C : NULL;
    int32_t *ch_zp = cs ? (int32_t *)(ch_scale + C) : NULL;
    char *name = (char *)(mem + arrays * 4);
    memcpy(name, layer, nlen);
    memcpy(mean_sq, ms->data, (size_t)C * 4);
    memcpy(max_abs, ma->data, (size_t)C * 4);
    if (cs) {
        memcpy(ch_scale, cs->data, (size_t)C * 4);
        memcpy(ch_zp, cz->data, (size_t)C * 4);
    }
    mq_layer_stats *s = &out->s;
    memset(s, 0, sizeof *s);
    s->layer = name;
    s->channels = C;
    int64_t count;
    memcpy(&count, cnt->data, 8);
    s->count = (uint64_t)count;
    s->mean_sq = mean_sq;
    s->max_abs = max_abs;
    s->input_type = o.type;
    s->input_scheme = o.scheme;
    s->input_scale = f32_at(scale, 0);
    memcpy(&s->input_zero_point, zp->data, 4);
    s->observer = mq_observer_kind_name(o.kind);
    s->input_min = range ? f32_at(range, 0) : 0;
    s->input_max = range ? f32_at(range, 1) : 0;
    s->channel_input_scale = ch_scale;
    s->channel_input_zero_point = ch_zp;
    out->mem = mem;
    /* values */
    const char *bad = NULL;
    if (count <= 0) bad = "count";
    else if (!(s->input_scale > 0) || !isfinite(s->input_scale)) bad = "input_scale";
    else if (s->input_zero_point < qmin || s->input_zero_point > qmax) bad = "input_zero_point";
    else if (!(s->input_min <= s->input_max) || !isfinite(s->input_min) || !isfinite(s->input_max))
        bad = "input_range";
    for (int64_t c = 0; !bad && c < C; c++) {
        if (!(mean_sq[c] >= 0) || !isfinite(mean_sq[c])) bad = "mean_sq";
        else if (!(max_abs[c] >= 0) || !isfinite(max_abs[c])) bad = "max_abs";
        else if (cs && (!(ch_scale[c] > 0) || !isfinite(ch_scale[c]))) bad = "channel_input_scale";
        else if (cs && (ch_zp[c] < qmin || ch_zp[c] > qmax)) bad = "channel_input_zero_point";
    }
    if (bad) {
        mq__free(ctx, mem);
        out->mem = NULL;
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: tensor '%s.%s' holds an invalid value", path,
                        layer, bad);
    }
    out->hessian = NULL;
    st = read_hessian(ctx, m, path, layer, C, &out->hessian);
    if (st != MQ_OK) {
        mq__free(ctx, mem);
        out->mem = NULL;
        return st;
    }
    s->hessian = out->hessian;
    return MQ_OK;
}

static int cmp_layers(const stats_layer *layers, size_t a, size_t b) {
    return strcmp(layers[a].s.layer, layers[b].s.layer);
}

mq_status mq_calib_stats_open(mq_ctx *ctx, const char *path, mq_calib_stats **out) {
    if (!ctx || !path || !out) return mq__fail(ctx, MQ_ERR_INVALID, "mq_calib_stats_open: NULL argument");
    *out = NULL;
    mq_model *m = NULL;
    MQ_TRY(mq_model_open(ctx, path, NULL, &m));
    mq_calib_stats *st = (mq_calib_stats *)mq__calloc(ctx, 1, sizeof *st);
    mq_status rc = st ? MQ_OK : MQ_ERR_NOMEM;
    if (st) st->ctx = ctx;
    size_t n = mq_model_tensor_count(m), k = strlen(suffix_scale);
    for (size_t i = 0; rc == MQ_OK && i < n; i++) {
        const char *name = mq_model_tensor(m, i)->name;
        size_t len = strlen(name);
        if (len <= k || strcmp(name + len - k, suffix_scale)) continue;
        if (len - k >= 1000) {
            rc = mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: layer name of %zu bytes is too long",
                          path, len - k);
            break;
        }
        char layer[1000];
        memcpy(layer, name, len - k);
        layer[len - k] = 0;
        rc = mq__grow(ctx, (void **)&st->layers, &st->cap, st->n + 1, sizeof *st->layers);
        if (rc == MQ_OK) rc = read_layer(ctx, m, path, layer, &st->layers[st->n]);
        if (rc == MQ_OK) st->n++;
    }
    if (rc == MQ_OK && st->n == 0 && !mq__model_meta(m, "monoquant.calibration"))
        rc = mq__fail(ctx, MQ_ERR_FORMAT, "%s: not a calibration statistics file (no "
                      "'<layer>.input_scale' tensors)", path);
    if (rc == MQ_OK) {
        st->order = (size_t *)mq__malloc(ctx, (st->n ? st->n : 1) * sizeof *st->order);
        if (!st->order) rc = MQ_ERR_NOMEM;
    }
    if (rc == MQ_OK) {
        /* insertion sort: files hold hundreds of layers at most */
        for (size_t i = 0; i < st->n; i++) {
            size_t j = i;
            for (; j > 0 && cmp_layers(st->layers, st->order[j - 1], i) > 0; j--)
                st->order[j] = st->order[j - 1];
            st->order[j] = i;
        }
    }
    mq_model_free(m);
    if (rc != MQ_OK) {
        mq_calib_stats_free(st);
        return rc;
    }
    *out = st;
    return MQ_OK;
}

int64_t mq_calib_stats_find(const mq_calib_stats *st, const char *layer) {
    if (!st || !layer) return -1;
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(st->layers[st->order[mid]].s.layer, layer);
        if (c == 0) return (int64_t)st->order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

size_t mq_calib_stats_count(const mq_calib_stats *st) { return st ? st->n : 0; }
const mq_layer_stats *mq_calib_stats_layer(const mq_calib_stats *st, size_t i) {
    return st && i < st->n ? &st->layers[i].s : NULL;
}
