/* Observers: options, batches in, merge, state, quantization parameters out. */
#include "calib/calib_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[] = {"minmax", "moving_average", "histogram", "entropy",
                                         "percentile", "mse"};

const char *mq_observer_kind_name(mq_observer_kind kind) {
    return (unsigned)kind < sizeof kind_names / sizeof *kind_names ? kind_names[kind] : "unknown";
}

int mq_observer_kind_from_name(const char *name, mq_observer_kind *out) {
    if (!name) return 0;
    for (size_t i = 0; i < sizeof kind_names / sizeof *kind_names; i++)
        if (!strcmp(name, kind_names[i])) return *out = (mq_observer_kind)i, 1;
    if (!strcmp(name, "moving-average")) return *out = MQ_OBS_MOVING_AVERAGE, 1;
    if (!strcmp(name, "kl")) return *out = MQ_OBS_ENTROPY, 1;
    return 0;
}

void mq_observer_options_default_sized(mq_observer_options *opts, size_t struct_size,
                                       mq_observer_kind kind) {
    mq_observer_options o;
    memset(&o, 0, sizeof o);
    o.kind = kind;
    o.type = MQ_Q_UINT8;
    o.scheme = MQ_ASYMMETRIC;
    o.granularity = MQ_PER_TENSOR;
    o.channels = 0;
    o.averaging_constant = 0.01;
    o.bins = 2048;
    o.upsample_rate = 128;
    o.percentile = 99.999;
    mq__struct_default(opts, struct_size, &o, sizeof o);
}

mq_status mq__observer_options_read(mq_ctx *ctx, const mq_observer_options *opts,
                                    mq_observer_options *out) {
    mq_observer_options_default(out, opts ? opts->kind : MQ_OBS_MINMAX);
    if (!opts) return MQ_OK;
    return mq__struct_read(ctx, "mq_observer_options", opts, out, sizeof *out,
                           MQ__LAYOUT_END(mq_observer_options, percentile));
}

size_t mq_observer_options_format(const mq_observer_options *o, char *buf, size_t cap) {
    char tmp[512];
    int n = snprintf(tmp, sizeof tmp, "%s type=%s scheme=%s granularity=%s channels=%lld",
                     mq_observer_kind_name(o->kind), mq_qtype_name(o->type),
                     o->scheme == MQ_SYMMETRIC ? "symmetric" : "asymmetric",
                     o->granularity == MQ_PER_CHANNEL ? "channel" : "tensor",
                     (long long)(o->granularity == MQ_PER_CHANNEL ? o->channels : 1));
    if (o->kind == MQ_OBS_MOVING_AVERAGE)
        n += snprintf(tmp + n, sizeof tmp - (size_t)n, " averaging=%.17g", o->averaging_constant);
    if (mq__obs_has_hist(o->kind))
        n += snprintf(tmp + n, sizeof tmp - (size_t)n, " bins=%d upsample=%d", o->bins,
                      o->upsample_rate);
    if (o->kind == MQ_OBS_PERCENTILE)
        n += snprintf(tmp + n, sizeof tmp - (size_t)n, " percentile=%.17g", o->percentile);
    if (buf && cap) snprintf(buf, cap, "%s", tmp);
    return (size_t)n;
}

static mq_status check_options(mq_ctx *ctx, const mq_observer_options *o) {
    int qmin, qmax;
    if ((unsigned)o->kind > MQ_OBS_MSE)
        return mq__fail(ctx, MQ_ERR_INVALID, "observer: unknown kind %d", (int)o->kind);
    if (!mq__obs_qrange(o->type, &qmin, &qmax))
        return mq__fail(ctx, MQ_ERR_INVALID, "observer: type must be int8, uint8, int4 or uint4");
    if (o->scheme != MQ_SYMMETRIC && o->scheme != MQ_ASYMMETRIC)
        return mq__fail(ctx, MQ_ERR_INVALID, "observer: unknown scheme %d", (int)o->scheme);
    if (o->granularity != MQ_PER_TENSOR && o->granularity != MQ_PER_CHANNEL)
        return mq__fail(ctx, MQ_ERR_INVALID, "observer: granularity must be per tensor or per "
                        "channel");
    if (o->granularity == MQ_PER_CHANNEL && (o->channels <= 0 || o->channels > (1ll << 32)))
        return mq__fail(ctx, MQ_ERR_INVALID, "observer: per channel needs a channel count in "
                        "[1, 2^32], not %lld", (long long)o->channels);
    if (o->kind == MQ_OBS_MOVING_AVERAGE &&
        !(o->averaging_constant > 0 && o->averaging_constant <= 1))
        return mq__fail(ctx, MQ_ERR_INVALID, "observer: averaging constant %g is not in (0, 1]",
                        o->averaging_constant);
    if (mq__obs_has_hist(o->kind)) {
        if (o->bins < 16 || o->bins > (1 << 20))
            return mq__fail(ctx, MQ_ERR_INVALID, "observer: %d bins (16 to 2^20)", o->bins);
        if (o->upsample_rate < 1 || o->upsample_rate > 4096)
            return mq__fail(ctx, MQ_ERR_INVALID, "observer: upsample rate %d (1 to 4096)",
                            o->upsample_rate);
        if (o->kind == MQ_OBS_ENTROPY && o->bins < qmax - qmin + 1)
            return mq__fail(ctx, MQ_ERR_INVALID, "observer: entropy needs at least %d bins",
                            qmax - qmin + 1);
        if (o->kind == MQ_OBS_PERCENTILE && !(o->percentile > 50 && o->percentile <= 100))
            return mq__fail(ctx, MQ_ERR_INVALID, "observer: percentile %g is not in (50, 100]",
                            o->percentile);
    }
    return MQ_OK;
}

mq_status mq_observer_options_parse(mq_ctx *ctx, const char *text, mq_observer_options *out) {
    if (!text || !out) return mq__fail(ctx, MQ_ERR_INVALID, "observer options: NULL argument");
    mq_observer_options caller;
    MQ_TRY(mq__observer_options_read(ctx, out, &caller)); /* checks out->struct_size */
    size_t out_size = out->struct_size;
    char buf[512];
    if (strlen(text) >= sizeof buf)
        return mq__fail(ctx, MQ_ERR_FORMAT, "observer options: text too long");
    strcpy(buf, text);
    char *save = NULL, *tok = strtok_r(buf, " ", &save);
    mq_observer_kind kind;
    if (!tok || !mq_observer_kind_from_name(tok, &kind))
        return mq__fail(ctx, MQ_ERR_FORMAT, "observer options '%s': unknown observer kind", text);
    mq_observer_options o;
    mq_observer_options_default(&o, kind);
    while ((tok = strtok_r(NULL, " ", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq) return mq__fail(ctx, MQ_ERR_FORMAT, "observer options: '%s' is not key=value", tok);
        *eq = 0;
        const char *k = tok, *v = eq + 1;
        char *end = NULL;
        bool good = true;
        if (!strcmp(k, "type")) {
            if (!strcmp(v, "int8")) o.type = MQ_Q_INT8;
            else if (!strcmp(v, "uint8")) o.type = MQ_Q_UINT8;
            else if (!strcmp(v, "int4")) o.type = MQ_Q_INT4;
            else if (!strcmp(v, "uint4")) o.type = MQ_Q_UINT4;
            else good = false;
        } else if (!strcmp(k, "scheme")) {
            if (!strcmp(v, "symmetric") || !strcmp(v, "sym")) o.scheme = MQ_SYMMETRIC;
            else if (!strcmp(v, "asymmetric") || !strcmp(v, "asym")) o.scheme = MQ_ASYMMETRIC;
            else good = false;
        } else if (!strcmp(k, "granularity")) {
            if (!strcmp(v, "tensor")) o.granularity = MQ_PER_TENSOR;
            else if (!strcmp(v, "channel")) o.granularity = MQ_PER_CHANNEL;
            else good = false;
        } else if (!strcmp(k, "channels")) {
            long long c = strtoll(v, &end, 10);
            good = *v && !*end;
            o.channels = c;
        } else if (!strcmp(k, "averaging") || !strcmp(k, "percentile")) {
            double d = strtod(v, &end);
            good = *v && !*end;
            *(!strcmp(k, "averaging") ? &o.averaging_constant : &o.percentile) = d;
        } else if (!strcmp(k, "bins") || !strcmp(k, "upsample")) {
            long c = strtol(v, &end, 10);
            good = *v && !*end && c >= 0 && c <= (1 << 30);
            *(!strcmp(k, "bins") ? &o.bins : &o.upsample_rate) = (int)c;
        } else {
            return mq__fail(ctx, MQ_ERR_FORMAT, "observer options: unknown key '%s'", k);
        }
        if (!good)
            return mq__fail(ctx, MQ_ERR_FORMAT, "observer options: bad value '%s' for '%s'", v, k);
    }
    if (o.granularity == MQ_PER_TENSOR) o.channels = 0;
    if (check_options(ctx, &o) != MQ_OK) {
        char why[MQ_MSG_MAX];
        snprintf(why, sizeof why, "%s", mq_ctx_message(ctx));
        return mq__fail(ctx, MQ_ERR_FORMAT, "observer options '%s': %s", text, why);
    }
    memcpy((char *)out + sizeof out_size, (const char *)&o + sizeof out_size,
           out_size - sizeof out_size);
    return MQ_OK;
}

void mq_observer_free(mq_observer *obs) {
    if (!obs) return;
    mq_ctx *ctx = obs->ctx;
    mq__free(ctx, obs->min_val);
    mq__free(ctx, obs->max_val);
    mq__free(ctx, obs->hist);
    mq__free(ctx, obs->hist_next);
    mq__free(ctx, obs->bmin);
    mq__free(ctx, obs->bmax);
    mq__free(ctx, obs->nlo);
    mq__free(ctx, obs->nhi);
    mq__free(ctx, obs);
}

static void reset_state(mq_observer *obs) {
    for (int64_t c = 0; c < obs->np; c++) obs->min_val[c] = INFINITY, obs->max_val[c] = -INFINITY;
    if (obs->hist) memset(obs->hist, 0, (size_t)obs->np * (size_t)obs->opts.bins * sizeof(double));
    obs->count = obs->batches = 0;
}

mq_status mq_observer_create(mq_ctx *ctx, const mq_observer_options *opts, mq_observer **out) {
    if (!ctx || !out) return mq__fail(ctx, MQ_ERR_INVALID, "mq_observer_create: NULL argument");
    *out = NULL;
    mq_observer_options o;
    MQ_TRY(mq__observer_options_read(ctx, opts, &o));
    MQ_TRY(check_options(ctx, &o));
    if (o.granularity == MQ_PER_TENSOR) o.channels = 0;
    mq_observer *obs = (mq_observer *)mq__calloc(ctx, 1, sizeof *obs);
    if (!obs) return MQ_ERR_NOMEM;
    obs->ctx = ctx;
    obs->opts = o;
    obs->np = o.granularity == MQ_PER_CHANNEL ? o.channels : 1;
    mq__obs_qrange(o.type, &obs->qmin, &obs->qmax);
    size_t np = (size_t)obs->np;
    obs->min_val = (float *)mq__malloc(ctx, np * sizeof(float));
    obs->max_val = (float *)mq__malloc(ctx, np * sizeof(float));
    obs->bmin = (float *)mq__malloc(ctx, np * sizeof(float));
    obs->bmax = (float *)mq__malloc(ctx, np * sizeof(float));
    bool ok = obs->min_val && obs->max_val && obs->bmin && obs->bmax;
    if (ok && mq__obs_has_hist(o.kind)) {
        uint64_t cells;
        if (!mq__mul_u64(np, (uint64_t)o.bins, &cells) || cells > SIZE_MAX / sizeof(double)) {
            mq_observer_free(obs);
            return mq__fail(ctx, MQ_ERR_INVALID, "observer: %zu channels x %d bins is too large",
                            np, o.bins);
        }
        obs->hist = (double *)mq__malloc(ctx, (size_t)cells * sizeof(double));
        obs->hist_next = (double *)mq__malloc(ctx, (size_t)cells * sizeof(double));
        obs->nlo = (float *)mq__malloc(ctx, np * sizeof(float));
        obs->nhi = (float *)mq__malloc(ctx, np * sizeof(float));
        ok = obs->hist && obs->hist_next && obs->nlo && obs->nhi;
    }
    if (!ok) {
        mq_observer_free(obs);
        return MQ_ERR_NOMEM;
    }
    reset_state(obs);
    *out = obs;
    return MQ_OK;
}

const mq_observer_options *mq_observer_get_options(const mq_observer *obs) { return &obs->opts; }
uint64_t mq_observer_count(const mq_observer *obs) { return (uint64_t)obs->count; }
uint64_t mq_observer_batches(const mq_observer *obs) { return (uint64_t)obs->batches; }
int64_t mq_observer_nparams(const mq_observer *obs) { return obs->np; }

/* A restored state must be coherent before it is used. */
static mq_status check_state(const mq_observer *obs) {
    if (obs->count == 0) return MQ_OK;
    for (int64_t c = 0; c < obs->np; c++)
        if (!(obs->min_val[c] <= obs->max_val[c]) || !isfinite(obs->min_val[c]) ||
            !isfinite(obs->max_val[c]))
            return mq__fail(obs->ctx, MQ_ERR_FORMAT, "observer state: channel %lld has range "
                            "[%g, %g] after %lld values", (long long)c, obs->min_val[c],
                            obs->max_val[c], (long long)obs->count);
    return MQ_OK;
}

/* ---- batches ---- */

typedef struct range_pass {
    float *bmin, *bmax;
    bool bad;
    uint64_t bad_at;
    float bad_val;
} range_pass;

static bool find_bad(range_pass *p, const float *v, int64_t n, uint64_t first) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            p->bad = true;
            p->bad_at = first + (uint64_t)i;
            p->bad_val = v[i];
            return false;
        }
    return true;
}

static bool range_chunk(void *arg, const float *v, int64_t n, int64_t ch, int step,
                        uint64_t first) {
    range_pass *p = (range_pass *)arg;
    float chk = 0;
    if (step == 0) {
        float mn = p->bmin[ch], mx = p->bmax[ch];
        for (int64_t i = 0; i < n; i++) {
            chk += v[i] - v[i];
            mn = v[i] < mn ? v[i] : mn;
            mx = v[i] > mx ? v[i] : mx;
        }
        p->bmin[ch] = mn, p->bmax[ch] = mx;
    } else {
        float *mn = p->bmin + ch, *mx = p->bmax + ch;
        for (int64_t i = 0; i < n; i++) {
            chk += v[i] - v[i];
            mn[i] = v[i] < mn[i] ? v[i] : mn[i];
            mx[i] = v[i] > mx[i] ? v[i] : mx[i];
        }
    }
    return chk == 0 ? true : find_bad(p, v, n, first);
}

typedef struct bin_pass {
    const float *lo, *hi;
    double *hist;
    int bins;
} bin_pass;

static bool bin_chunk(void *arg, const float *v, int64_t n, int64_t ch, int step,
                      uint64_t first) {
    (void)first;
    bin_pass *p = (bin_pass *)arg;
    int bins = p->bins;
    if (step == 0) {
        float lo = p->lo[ch], hi = p->hi[ch];
        double *h = p->hist + (size_t)ch * (size_t)bins;
        for (int64_t i = 0; i < n; i++) h[mq__hist_bin(v[i], lo, hi, bins)] += 1;
    } else {
        for (int64_t i = 0; i < n; i++) {
            int64_t c = ch + i;
            p->hist[(size_t)c * (size_t)bins + (size_t)mq__hist_bin(v[i], p->lo[c], p->hi[c], bins)] += 1;
        }
    }
    return true;
}

/* New histogram of channel c in hist_next over [nlo, nhi], holding the old counts. */
static void grow_channel(mq_observer *obs, int64_t c, float blo, float bhi) {
    int bins = obs->opts.bins;
    double *dst = obs->hist_next + (size_t)c * (size_t)bins;
    const double *src = obs->hist + (size_t)c * (size_t)bins;
    memset(dst, 0, (size_t)bins * sizeof *dst);
    float lo = obs->min_val[c], hi = obs->max_val[c];
    if (obs->count == 0) {
        obs->nlo[c] = blo, obs->nhi[c] = bhi;
        return;
    }
    float cmin = lo < blo ? lo : blo, cmax = hi > bhi ? hi : bhi;
    if (hi > lo) {
        float nlo, nhi;
        int64_t down, start;
        mq__hist_adjust(lo, hi, blo, bhi, bins, obs->opts.upsample_rate, &nlo, &nhi, &down,
                        &start);
        if (nlo == lo && nhi == hi) {
            memcpy(dst, src, (size_t)bins * sizeof *dst);
        } else if (isfinite(nhi) && down <= (1ll << 40) && start >= 0) {
            mq__hist_rebin_aligned(src, bins, obs->opts.upsample_rate, down, start, dst);
        } else {
            nlo = cmin, nhi = cmax;
            mq__hist_rebin_general(src, lo, hi, bins, dst, nlo, nhi);
        }
        obs->nlo[c] = nlo, obs->nhi[c] = nhi;
        return;
    }
    /* all earlier values were equal: keep their count in the bin that holds them */
    obs->nlo[c] = cmin, obs->nhi[c] = cmax;
    mq__hist_rebin_general(src, lo, hi, bins, dst, cmin, cmax);
}

/* Running min/max per channel: [min_val, max_val] grows to cover [lo, hi]. */
static void widen_range(float *min_val, float *max_val, const float *lo, const float *hi,
                        int64_t np) {
    for (int64_t c = 0; c < np; c++) {
        if (lo[c] < min_val[c]) min_val[c] = lo[c];
        if (hi[c] > max_val[c]) max_val[c] = hi[c];
    }
}

/* The counters after adding `values` values in `batches` batches must fit: a restored state
 * may claim counts near the limit (never negative), and the check comes before anything
 * changes. */
static mq_status check_counts(const mq_observer *obs, const char *what, uint64_t values,
                              uint64_t batches) {
    if (values > (uint64_t)(INT64_MAX - obs->count) ||
        batches > (uint64_t)(INT64_MAX - obs->batches))
        return mq__fail(obs->ctx, MQ_ERR_UNSUPPORTED, "%s: %lld values in %lld batches "
                        "already observed; %llu more values in %llu batches overflow the counts",
                        what, (long long)obs->count, (long long)obs->batches,
                        (unsigned long long)values, (unsigned long long)batches);
    return MQ_OK;
}

static mq_status observe(mq_observer *obs, const mq_batch_view *view) {
    if (!view->numel) return MQ_OK;
    MQ_TRY(check_state(obs));
    MQ_TRY(check_counts(obs, "observer", view->numel, 1));
    int64_t np = obs->np;
    for (int64_t c = 0; c < np; c++) obs->bmin[c] = INFINITY, obs->bmax[c] = -INFINITY;
    range_pass rp = {obs->bmin, obs->bmax, false, 0, 0};
    if (!mq__batch_view_walk(view, range_chunk, &rp)) {
        char idx[160];
        mq__batch_view_index(view, rp.bad_at, idx, sizeof idx);
        return mq__fail(obs->ctx, MQ_ERR_QUANT, "observer: the batch holds %g at %s",
                        (double)rp.bad_val, idx);
    }
    switch (obs->opts.kind) {
    case MQ_OBS_MINMAX:
        widen_range(obs->min_val, obs->max_val, obs->bmin, obs->bmax, np);
        break;
    case MQ_OBS_MOVING_AVERAGE: {
        float k = (float)obs->opts.averaging_constant;
        for (int64_t c = 0; c < np; c++) {
            if (obs->batches == 0) {
                obs->min_val[c] = obs->bmin[c], obs->max_val[c] = obs->bmax[c];
                continue;
            }
            /* separate statements: no contraction into fma, as in PyTorch */
            float dmin = obs->bmin[c] - obs->min_val[c], dmax = obs->bmax[c] - obs->max_val[c];
            float smin = k * dmin, smax = k * dmax;
            obs->min_val[c] = obs->min_val[c] + smin;
            obs->max_val[c] = obs->max_val[c] + smax;
        }
        break;
    }
    default: {
        for (int64_t c = 0; c < np; c++) grow_channel(obs, c, obs->bmin[c], obs->bmax[c]);
        bin_pass bp = {obs->nlo, obs->nhi, obs->hist_next, obs->opts.bins};
        mq__batch_view_walk(view, bin_chunk, &bp);
        double *t = obs->hist;
        obs->hist = obs->hist_next;
        obs->hist_next = t;
        memcpy(obs->min_val, obs->nlo, (size_t)np * sizeof(float));
        memcpy(obs->max_val, obs->nhi, (size_t)np * sizeof(float));
        break;
    }
    }
    obs->count += (int64_t)view->numel;
    obs->batches++;
    return MQ_OK;
}

mq_status mq_observer_update_strided(mq_observer *obs, mq_dtype dtype, const void *x, int ndim,
                                     const int64_t *shape, const int64_t *strides,
                                     int channel_axis) {
    if (!obs) return MQ_ERR_INVALID;
    mq_batch_view view;
    MQ_TRY(mq__batch_view_init(obs->ctx, "observer", dtype, x, ndim, shape, strides,
                               channel_axis, obs->opts.granularity == MQ_PER_TENSOR,
                               obs->opts.channels, &view));
    return observe(obs, &view);
}

mq_status mq_observer_update(mq_observer *obs, const float *x, int64_t rows, int64_t cols) {
    int64_t shape[2] = {rows, cols};
    return mq_observer_update_strided(obs, MQ_F32, x, 2, shape, NULL, -1);
}

/* ---- merge ---- */

static bool same_options(const mq_observer_options *a, const mq_observer_options *b) {
    return a->kind == b->kind && a->type == b->type && a->scheme == b->scheme &&
           a->granularity == b->granularity && a->channels == b->channels &&
           (a->kind != MQ_OBS_MOVING_AVERAGE || a->averaging_constant == b->averaging_constant) &&
           (!mq__obs_has_hist(a->kind) || (a->bins == b->bins && a->upsample_rate == b->upsample_rate)) &&
           (a->kind != MQ_OBS_PERCENTILE || a->percentile == b->percentile);
}

static void merge_hist_channel(mq_observer *dst, const mq_observer *src, int64_t c) {
    int bins = dst->opts.bins;
    size_t off = (size_t)c * (size_t)bins;
    float slo = src->min_val[c], shi = src->max_val[c];
    grow_channel(dst, c, slo, shi); /* dst's counts on the grown grid, in hist_next */
    float nlo = dst->nlo[c], nhi = dst->nhi[c];
    double *h = dst->hist_next + off;
    if (slo == nlo && shi == nhi) {
        for (int i = 0; i < bins; i++) h[i] += src->hist[off + (size_t)i];
    } else {
        mq__hist_rebin_general(src->hist + off, slo, shi, bins, h, nlo, nhi);
    }
    memcpy(dst->hist + off, h, (size_t)bins * sizeof *h);
}

mq_status mq_observer_merge(mq_observer *dst, const mq_observer *src) {
    if (!dst || !src) return MQ_ERR_INVALID;
    if (!same_options(&dst->opts, &src->opts)) {
        char a[256], b[256];
        mq_observer_options_format(&dst->opts, a, sizeof a);
        mq_observer_options_format(&src->opts, b, sizeof b);
        return mq__fail(dst->ctx, MQ_ERR_INVALID, "observer merge: options differ ('%s' and "
                        "'%s')", a, b);
    }
    if (dst == src) return mq__fail(dst->ctx, MQ_ERR_INVALID, "observer merge: an observer "
                                    "cannot be merged into itself");
    MQ_TRY(check_state(dst));
    mq_status st = check_state(src);
    if (st != MQ_OK) return mq__fail(dst->ctx, st, "%s", mq_ctx_message(src->ctx));
    if (src->count == 0) return MQ_OK;
    MQ_TRY(check_counts(dst, "observer merge", (uint64_t)src->count, (uint64_t)src->batches));
    int64_t np = dst->np;
    if (dst->count == 0) {
        memcpy(dst->min_val, src->min_val, (size_t)np * sizeof(float));
        memcpy(dst->max_val, src->max_val, (size_t)np * sizeof(float));
        if (dst->hist)
            memcpy(dst->hist, src->hist, (size_t)np * (size_t)dst->opts.bins * sizeof(double));
    } else {
        switch (dst->opts.kind) {
        case MQ_OBS_MINMAX:
            widen_range(dst->min_val, dst->max_val, src->min_val, src->max_val, np);
            break;
        case MQ_OBS_MOVING_AVERAGE: {
            double wd = (double)dst->batches, ws = (double)src->batches, t = wd + ws;
            for (int64_t c = 0; c < np; c++) {
                dst->min_val[c] = (float)((wd * dst->min_val[c] + ws * src->min_val[c]) / t);
                dst->max_val[c] = (float)((wd * dst->max_val[c] + ws * src->max_val[c]) / t);
            }
            break;
        }
        default:
            for (int64_t c = 0; c < np; c++) merge_hist_channel(dst, src, c);
            memcpy(dst->min_val, dst->nlo, (size_t)np * sizeof(float));
            memcpy(dst->max_val, dst->nhi, (size_t)np * sizeof(float));
            break;
        }
    }
    dst->count += src->count;
    dst->batches += src->batches;
    return MQ_OK;
}

/* ---- quantization parameters ---- */

typedef struct qp_job {
    const mq_observer *obs;
    float *lo, *hi;
    mq_search_scratch *scratch; /* one per thread */
} qp_job;

static mq_status qp_range(void *arg, int64_t begin, int64_t end, int tid) {
    qp_job *j = (qp_job *)arg;
    const mq_observer *obs = j->obs;
    const mq_observer_options *o = &obs->opts;
    int bins = o->bins;
    bool sym = o->scheme == MQ_SYMMETRIC;
    int nlevels = obs->qmax - obs->qmin + 1;
    for (int64_t c = begin; c < end; c++) {
        float mn = obs->min_val[c], mx = obs->max_val[c];
        const double *h = obs->hist ? obs->hist + (size_t)c * (size_t)bins : NULL;
        mq_search_scratch *s = j->scratch ? &j->scratch[tid] : NULL;
        switch (o->kind) {
        case MQ_OBS_HISTOGRAM:
            mq__search_l2(h, bins, mn, mx, nlevels, s, &j->lo[c], &j->hi[c]);
            break;
        case MQ_OBS_ENTROPY: {
            bool one_sided = !sym && (mn >= 0 || mx <= 0);
            mq__search_entropy(h, bins, mn, mx, one_sided ? nlevels : nlevels / 2, s, &j->lo[c],
                               &j->hi[c]);
            break;
        }
        case MQ_OBS_PERCENTILE:
            mq__search_percentile(h, bins, mn, mx, o->percentile, sym, s, &j->lo[c], &j->hi[c]);
            break;
        case MQ_OBS_MSE:
            mq__search_mse(h, bins, mn, mx, obs->qmin, obs->qmax, sym, s, &j->lo[c], &j->hi[c]);
            break;
        default:
            j->lo[c] = mn, j->hi[c] = mx;
            break;
        }
    }
    return MQ_OK;
}

mq_status mq_observer_qparams(const mq_observer *obs, float *scale, int32_t *zero_point,
                              float *lo, float *hi) {
    if (!obs || !scale || !zero_point) return MQ_ERR_INVALID;
    mq_ctx *ctx = obs->ctx;
    MQ_TRY(check_state(obs));
    int64_t np = obs->np;
    if (obs->count == 0) {
        for (int64_t c = 0; c < np; c++) {
            scale[c] = 1.0f, zero_point[c] = 0;
            if (lo) lo[c] = 0;
            if (hi) hi[c] = 0;
        }
        return MQ_OK;
    }
    float *rlo = (float *)mq__malloc(ctx, (size_t)np * 2 * sizeof(float));
    if (!rlo) return MQ_ERR_NOMEM;
    float *rhi = rlo + np;
    qp_job job = {obs, rlo, rhi, NULL};
    mq_status st = MQ_OK;
    void *mem = NULL;
    if (mq__obs_has_hist(obs->opts.kind)) {
        int threads = np > 1 ? mq__thread_count(ctx) : 1;
        size_t bins = (size_t)obs->opts.bins;
        size_t per = (3 * (4 * bins + 4)) * sizeof(double) + (2 * bins + 2) * sizeof(float);
        mem = mq__malloc(ctx, (size_t)threads * (per + sizeof(mq_search_scratch)));
        if (!mem) {
            mq__free(ctx, rlo);
            return MQ_ERR_NOMEM;
        }
        job.scratch = (mq_search_scratch *)mem;
        uint8_t *p = (uint8_t *)mem + (size_t)threads * sizeof(mq_search_scratch);
        for (int t = 0; t < threads; t++) {
            double *d = (double *)(p + (size_t)t * per);
            job.scratch[t].a = d;
            job.scratch[t].b = d + 4 * bins + 4;
            job.scratch[t].c = d + 2 * (4 * bins + 4);
            job.scratch[t].f = (float *)(d + 3 * (4 * bins + 4));
        }
        st = threads > 1 ? mq__parallel_for(ctx, np, 1, qp_range, &job) : qp_range(&job, 0, np, 0);
    } else {
        st = qp_range(&job, 0, np, 0);
    }
    if (st == MQ_OK) {
        for (int64_t c = 0; c < np; c++) {
            mq__obs_range_qparams(rlo[c], rhi[c], obs->opts.type, obs->opts.scheme, obs->qmin,
                                  obs->qmax, &scale[c], &zero_point[c]);
            if (lo) lo[c] = rlo[c];
            if (hi) hi[c] = rhi[c];
            /* a range near FLT_MAX gives an infinite scale, or one whose grid overflows */
            if (st == MQ_OK && !mq__qparam_finite(scale[c], zero_point[c], obs->qmin, obs->qmax))
                st = mq__fail(ctx, MQ_ERR_QUANT, "observer: channel %lld: the range [%g, %g] "
                              "is too wide for %s: its scale %g overflows float32",
                              (long long)c, (double)rlo[c], (double)rhi[c],
                              mq_qtype_name(obs->opts.type), (double)scale[c]);
        }
    }
    mq__free(ctx, mem);
    mq__free(ctx, rlo);
    return st;
}

/* ---- state ---- */

static void fill_state(const mq_observer *cobs) {
    mq_observer *obs = (mq_observer *)cobs; /* the views are cached inside the observer */
    static const char *const names[] = {"min_val", "max_val", "count", "batches", "histogram"};
    for (int i = 0; i < 5; i++) {
        mq_tensor *t = &obs->state[i];
        memset(t, 0, sizeof *t);
        t->name = names[i];
        t->ndim = 1;
        t->shape[0] = i < 2 ? obs->np : 1;
        t->dtype = i < 2 ? MQ_F32 : MQ_I64;
        if (i == 4) {
            t->ndim = 2;
            t->shape[0] = obs->np;
            t->shape[1] = obs->opts.bins;
            t->dtype = MQ_F64;
        }
        t->numel = (uint64_t)t->shape[0] * (uint64_t)(t->ndim == 2 ? t->shape[1] : 1);
        t->nbytes = t->numel * mq_dtype_size(t->dtype);
    }
    obs->state[0].data = obs->min_val;
    obs->state[1].data = obs->max_val;
    obs->state[2].data = &obs->count;
    obs->state[3].data = &obs->batches;
    obs->state[4].data = obs->hist;
}

size_t mq_observer_state_count(const mq_observer *obs) {
    return obs && obs->hist ? 5 : 4;
}

mq_status mq_observer_state_tensor(const mq_observer *obs, size_t i, mq_tensor *out) {
    if (!obs || !out) return MQ_ERR_INVALID;
    if (i >= mq_observer_state_count(obs))
        return mq__fail(obs->ctx, MQ_ERR_INVALID, "observer state: no tensor %zu", i);
    fill_state(obs);
    *out = obs->state[i];
    return MQ_OK;
}

mq_status mq_observer_state_set(mq_observer *obs, const mq_tensor *t) {
    if (!obs || !t || !t->name) return MQ_ERR_INVALID;
    mq_ctx *ctx = obs->ctx;
    fill_state(obs);
    size_t n = mq_observer_state_count(obs);
    for (size_t i = 0; i < n; i++) {
        const mq_tensor *want = &obs->state[i];
        if (strcmp(t->name, want->name)) continue;
        bool shape_ok = t->dtype == want->dtype && t->ndim == want->ndim && t->data;
        for (int d = 0; shape_ok && d < want->ndim; d++) shape_ok = t->shape[d] == want->shape[d];
        if (!shape_ok)
            return mq__fail(ctx, MQ_ERR_FORMAT, "observer state '%s': expected %s with %lld "
                            "elements", t->name, mq_dtype_name(want->dtype),
                            (long long)want->numel);
        /* check every value before changing anything */
        for (uint64_t k = 0; k < want->numel; k++) {
            bool good;
            if (want->dtype == MQ_F32) {
                float v;
                memcpy(&v, (const uint8_t *)t->data + k * 4, 4);
                good = !isnan(v) && (isfinite(v) || (i == 0 ? v > 0 : v < 0));
            } else if (want->dtype == MQ_F64) {
                double v;
                memcpy(&v, (const uint8_t *)t->data + k * 8, 8);
                good = isfinite(v) && v >= 0;
            } else {
                int64_t v;
                memcpy(&v, (const uint8_t *)t->data + k * 8, 8);
                good = v >= 0;
            }
            if (!good)
                return mq__fail(ctx, MQ_ERR_FORMAT, "observer state '%s': invalid value at %llu",
                                t->name, (unsigned long long)k);
        }
        memcpy((void *)want->data, t->data, (size_t)want->nbytes);
        return MQ_OK;
    }
    return mq__fail(ctx, MQ_ERR_FORMAT, "observer state: unknown tensor '%s' for a %s observer",
                    t->name, mq_observer_kind_name(obs->opts.kind));
}
