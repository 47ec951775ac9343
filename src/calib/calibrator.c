/* mq_calibrator: an observer and input-channel statistics per layer, saved as a statistics
 * file (docs/CALIBRATION.md). */
#include "calib/calib_internal.h"
#include "kernels/gemm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

mq_status mq_calibrator_create(mq_ctx *ctx, const mq_observer_options *opts,
                               mq_calibrator **out) {
    if (!ctx || !out) return mq__fail(ctx, MQ_ERR_INVALID, "mq_calibrator_create: NULL argument");
    *out = NULL;
    mq_observer_options o;
    MQ_TRY(mq__observer_options_read(ctx, opts, &o));
    /* validate once, with a stand-in channel count */
    mq_observer_options probe = o;
    if (probe.granularity == MQ_PER_CHANNEL) probe.channels = 1;
    mq_observer *test;
    MQ_TRY(mq_observer_create(ctx, &probe, &test));
    mq_observer_free(test);
    mq_calibrator *cal = (mq_calibrator *)mq__calloc(ctx, 1, sizeof *cal);
    if (!cal) return MQ_ERR_NOMEM;
    cal->ctx = ctx;
    cal->opts = o;
    *out = cal;
    return MQ_OK;
}

static void layer_release(mq_ctx *ctx, cal_layer *l) {
    mq__free(ctx, l->name);
    mq_observer_free(l->obs);
    mq__free(ctx, l->sum_sq);
    mq__free(ctx, l->max_abs);
    mq__free(ctx, l->xtx);
}

void mq_calibrator_free(mq_calibrator *cal) {
    if (!cal) return;
    for (size_t i = 0; i < cal->n; i++) layer_release(cal->ctx, &cal->layers[i]);
    mq__free(cal->ctx, cal->layers);
    mq__free(cal->ctx, cal->hbuf);
    mq__free(cal->ctx, cal->tiles);
    mq__free(cal->ctx, cal);
}

static cal_layer *find_layer(const mq_calibrator *cal, const char *name) {
    for (size_t i = 0; i < cal->n; i++)
        if (!strcmp(cal->layers[i].name, name)) return &cal->layers[i];
    return NULL;
}

mq_status mq_calibrator_add_layer(mq_calibrator *cal, const char *layer, int64_t channels) {
    if (!cal || !layer || !*layer) return mq__fail(cal ? cal->ctx : NULL, MQ_ERR_INVALID,
                                                   "calibrator: a layer needs a name");
    mq_ctx *ctx = cal->ctx;
    if (channels <= 0 || channels > (1ll << 32))
        return mq__fail(ctx, MQ_ERR_INVALID, "calibrator: layer '%s': %lld input channels",
                        layer, (long long)channels);
    cal_layer *old = find_layer(cal, layer);
    if (old) {
        if (old->channels == channels) return MQ_OK;
        return mq__fail(ctx, MQ_ERR_INVALID, "calibrator: layer '%s' was declared with %lld input "
                        "channels, now %lld", layer, (long long)old->channels,
                        (long long)channels);
    }
    MQ_TRY(mq__grow(ctx, (void **)&cal->layers, &cal->cap, cal->n + 1, sizeof *cal->layers));
    cal_layer l;
    memset(&l, 0, sizeof l);
    l.channels = channels;
    l.name = mq__strdup(ctx, layer);
    l.sum_sq = (double *)mq__calloc(ctx, (size_t)channels, sizeof(double));
    l.max_abs = (float *)mq__calloc(ctx, (size_t)channels, sizeof(float));
    mq_status st = l.name && l.sum_sq && l.max_abs ? MQ_OK : MQ_ERR_NOMEM;
    if (st == MQ_OK && cal->hessian) {
        if ((uint64_t)channels > SIZE_MAX / sizeof(double) / (uint64_t)channels)
            st = mq__fail(ctx, MQ_ERR_NOMEM, "calibrator: layer '%s': a Hessian of %lld "
                          "channels is too large", layer, (long long)channels);
        else if (!(l.xtx = (double *)mq__calloc(ctx, (size_t)(channels * channels),
                                                 sizeof(double))))
            st = MQ_ERR_NOMEM;
    }
    if (st == MQ_OK) {
        mq_observer_options o = cal->opts;
        if (o.granularity == MQ_PER_CHANNEL) o.channels = channels;
        st = mq_observer_create(ctx, &o, &l.obs);
    }
    if (st != MQ_OK) {
        layer_release(ctx, &l);
        return st;
    }
    cal->layers[cal->n++] = l;
    return MQ_OK;
}

typedef struct stats_pass {
    double *sum_sq;
    float *max_abs;
} stats_pass;

static bool stats_chunk(void *arg, const float *v, int64_t n, int64_t ch, int step,
                        uint64_t first) {
    (void)first;
    stats_pass *p = (stats_pass *)arg;
    if (step == 0) {
        double s = 0;
        float m = p->max_abs[ch];
        for (int64_t i = 0; i < n; i++) {
            s += (double)v[i] * v[i];
            float a = fabsf(v[i]);
            m = a > m ? a : m;
        }
        p->sum_sq[ch] += s;
        p->max_abs[ch] = m;
    } else {
        double *s = p->sum_sq + ch;
        float *m = p->max_abs + ch;
        for (int64_t i = 0; i < n; i++) {
            s[i] += (double)v[i] * v[i];
            float a = fabsf(v[i]);
            m[i] = a > m[i] ? a : m[i];
        }
    }
    return true;
}

mq_status mq_calibrator_set_hessian(mq_calibrator *cal, int enable) {
    if (!cal) return MQ_ERR_INVALID;
    if (cal->n)
        return mq__fail(cal->ctx, MQ_ERR_INVALID, "calibrator: enable the Hessian before "
                        "adding layers");
    cal->hessian = enable != 0;
    return MQ_OK;
}

/* The lower triangle of X^T X as a blocked symmetric rank-k update. The batch is first
 * copied as f32 into column blocks of HT_N channels, so a tile reads contiguous memory: with
 * the kernel's panels_f64, chunk by chunk of HT_K rows as panels of P channels (in a chunk of
 * kc rows, panel q: kc x P at q kc P, zero beyond the last channel; a tile's panels are
 * neighbours, which the hardware prefetch follows), else as blocks (block b: rows x HT_N). Tiles of HT_M x HT_N channels on or below
 * the diagonal each sum the batch's rows in chunks of HT_K as f32 products (kernels/gemm.h
 * gemm_tn: one fmaf chain per entry, in row order, from zero) added to the f64 accumulator
 * chunk by chunk (128 rows: between the per-chunk work of clearing and adding, and the f32
 * error, which grows with the chunk). The tile's accumulator is worked on in a contiguous
 * copy: in place its rows lie C doubles apart and share a few cache sets, so it would leave
 * the L2 cache between chunks (and with two threads, run at memory speed).
 * Each tile is one task with a fixed order, so the sums do not depend on the thread count or
 * the instruction set. */
enum { HT_M = 128, HT_N = 256, HT_K = 128, P = MQ__GEMM_PANEL };
/* per thread: the f32 chunk tile, a gemm workspace, then the f64 tile (64-byte aligned) */
enum { HT_TILE = HT_M * HT_N + MQ__GEMM_WS + 2 * HT_M * HT_N };

typedef struct hess_pass {
    mq_ctx *ctx;
    const mq__gemm_fns *f;
    double *xtx;
    const void *x; /* rows x c of dtype */
    mq_dtype dtype;
    float *xb;     /* the column blocks or panels */
    int64_t rows, c, ncol_tiles, cp; /* cp: channels rounded up to panels */
    float *tiles;
    int ntiles;
    /* the update's other passes, run as tasks of its parallel jobs */
    mq_observer *obs;
    int ndim, axis;
    const int64_t *shape;
    mq_status obs_st;
    double *sum_sq;
    float *max_abs;
    int64_t ntask; /* tiles; then one statistics task per block */
} hess_pass;

/* Column blocks [b, e) of the batch into xb as f32. */
static mq_status block_range(void *arg, int64_t b, int64_t e, int tid);

/* Task 0 the observer's update, then the column blocks: the copy changes no state, so when the
 * observer refuses the batch (a non-finite value) the layer is left as it was. */
static mq_status copy_range(void *arg, int64_t b, int64_t e, int tid) {
    hess_pass *p = (hess_pass *)arg;
    for (int64_t t = b; t < e; t++) {
        if (t) {
            MQ_TRY(block_range(arg, t - 1, t, tid));
            continue;
        }
        p->obs_st = mq_observer_update_strided(p->obs, p->dtype, p->x, p->ndim, p->shape, NULL,
                                               p->axis);
        MQ_TRY(p->obs_st);
    }
    return MQ_OK;
}

/* sum_sq and max_abs of block blk's channels from xb, row by row (stats_chunk's order). */
static void stats_block(const hess_pass *p, int64_t blk) {
    bool panels = p->f->panels_f64 != NULL;
    int64_t c0 = blk * HT_N, w = p->c - c0 < HT_N ? p->c - c0 : HT_N;
    for (int64_t r = 0; r < p->rows; r++) {
        int64_t k0 = r / HT_K * HT_K, kc = p->rows - k0 < HT_K ? p->rows - k0 : HT_K;
        for (int64_t j = 0; j < w; j += panels ? P : HT_N) {
            const float *v = panels ? p->xb + k0 * p->cp + (c0 + j) / P * kc * P + (r - k0) * P
                                    : p->xb + blk * p->rows * HT_N + r * HT_N;
            int64_t n = w - j < (panels ? P : HT_N) ? w - j : (panels ? P : HT_N);
            double *sq = p->sum_sq + c0 + j;
            float *m = p->max_abs + c0 + j;
            for (int64_t i = 0; i < n; i++) {
                sq[i] += (double)v[i] * v[i];
                float a = fabsf(v[i]);
                m[i] = a > m[i] ? a : m[i];
            }
        }
    }
}

static mq_status block_range(void *arg, int64_t b, int64_t e, int tid) {
    (void)tid;
    const hess_pass *p = (const hess_pass *)arg;
    size_t esz = mq_dtype_size(p->dtype);
    bool panels = p->f->panels_f64 != NULL;
    float row[HT_N];
    for (int64_t blk = b; blk < e; blk++) {
        int64_t c0 = blk * HT_N, w = p->c - c0 < HT_N ? p->c - c0 : HT_N;
        float *d = p->xb + blk * p->rows * HT_N;
        for (int64_t r = 0; r < p->rows; r++) {
            const uint8_t *s = (const uint8_t *)p->x + (size_t)(r * p->c + c0) * esz;
            if (!panels) {
                if (p->dtype == MQ_F32) memcpy(d + r * HT_N, s, (size_t)w * sizeof(float));
                else MQ_TRY(mq_convert(p->ctx, MQ_F32, d + r * HT_N, p->dtype, s, (size_t)w));
                continue;
            }
            const float *v = (const float *)(const void *)s;
            if (p->dtype != MQ_F32) {
                MQ_TRY(mq_convert(p->ctx, MQ_F32, row, p->dtype, s, (size_t)w));
                v = row;
            }
            int64_t k0 = r / HT_K * HT_K, kc = p->rows - k0 < HT_K ? p->rows - k0 : HT_K;
            float *dr = p->xb + k0 * p->cp + c0 / P * kc * P + (r - k0) * P;
            for (int64_t q = 0; q * P < w; q++) {
                int64_t n = w - q * P < P ? w - q * P : P;
                float *dq = dr + q * kc * P;
                memcpy(dq, v + q * P, (size_t)n * sizeof(float));
                memset(dq + n, 0, (size_t)(P - n) * sizeof(float));
            }
        }
    }
    return MQ_OK;
}

static mq_status hess_range(void *arg, int64_t b, int64_t e, int tid) {
    const hess_pass *p = (const hess_pass *)arg;
    if (tid < 0 || tid >= p->ntiles)
        return mq__fail(p->ctx, MQ_ERR_INTERNAL, "calibrator: worker %d without scratch", tid);
    int64_t C = p->c, rows = p->rows;
    float *tmp = p->tiles + (size_t)tid * HT_TILE, *ws = tmp + HT_M * HT_N;
    double *acc = (double *)(ws + MQ__GEMM_WS); /* HT_M x HT_N */
    bool panels = p->f->panels_f64 != NULL;
    for (int64_t t = b; t < e; t++) {
        int64_t i0 = t / p->ncol_tiles * HT_M, j0 = t % p->ncol_tiles * HT_N;
        if (j0 > i0 + HT_M - 1 || i0 >= C) continue; /* above the diagonal */
        int64_t m = C - i0 < HT_M ? C - i0 : HT_M;
        int64_t j1 = j0 + HT_N < i0 + m ? j0 + HT_N : i0 + m, n = j1 - j0;
        /* Entries computed per row: with panels, whole panels up to the diagonal (zeroed
         * where they are not the accumulator's), else the tile's n. */
        int64_t mp = panels ? (m + P - 1) / P * P : m;
        for (int64_t i = 0; i < mp; i++) {
            int64_t jend = i >= m ? j0 : i0 + i + 1 < j1 ? i0 + i + 1 : j1;
            int64_t w = panels ? ((i0 + i / P * P + P - 1 - j0) / P + 1) * P : n;
            w = w < (n + P - 1) / P * P ? w : (n + P - 1) / P * P;
            if (i < m)
                memcpy(acc + i * HT_N, p->xtx + (i0 + i) * C + j0,
                       (size_t)(jend - j0) * sizeof(double));
            if (panels)
                memset(acc + i * HT_N + (jend - j0), 0, (size_t)(w - (jend - j0)) * sizeof(double));
        }
        for (int64_t k0 = 0; k0 < rows; k0 += HT_K) {
            int64_t kc = rows - k0 < HT_K ? rows - k0 : HT_K;
            if (panels) {
                /* B panel by B panel: each is read once per chunk from memory, then from L1
                 * for the tile's A panels on or below the diagonal */
                const float *xa = p->xb + k0 * p->cp + i0 / P * kc * P;
                const float *xj = p->xb + k0 * p->cp + j0 / P * kc * P;
                for (int64_t q = 0; q * P < n; q++) {
                    int64_t a0 = j0 + q * P > i0 ? (j0 + q * P - i0) / P : 0;
                    p->f->panels_f64(kc, xa + a0 * kc * P, (m + P - 1) / P - a0, kc * P,
                                     xj + q * kc * P, acc + a0 * P * HT_N + q * P, HT_N);
                }
                continue;
            }
            /* HT_N is a multiple of HT_M: rows i0.. lie in one block */
            const float *xa = p->xb + i0 / HT_N * rows * HT_N + i0 % HT_N;
            const float *xj = p->xb + j0 / HT_N * rows * HT_N;
            memset(tmp, 0, (size_t)(m * n) * sizeof(float));
            p->f->gemm_tn(m, n, kc, xa + k0 * HT_N, HT_N, xj + k0 * HT_N, HT_N, tmp, n, ws);
            for (int64_t i = 0; i < m; i++) {
                int64_t jend = i0 + i + 1 < j1 ? i0 + i + 1 : j1;
                p->f->add_f64((size_t)(jend - j0), tmp + i * n, acc + i * HT_N);
            }
        }
        for (int64_t i = 0; i < m; i++) {
            int64_t jend = i0 + i + 1 < j1 ? i0 + i + 1 : j1;
            memcpy(p->xtx + (i0 + i) * C + j0, acc + i * HT_N,
                   (size_t)(jend - j0) * sizeof(double));
        }
    }
    return MQ_OK;
}

/* The tiles, then the statistics. */
static mq_status tile_range(void *arg, int64_t b, int64_t e, int tid) {
    const hess_pass *p = (const hess_pass *)arg;
    for (int64_t t = b; t < e; t++) {
        if (t < p->ntask) MQ_TRY(hess_range(arg, t, t + 1, tid));
        else stats_block(p, t - p->ntask);
    }
    return MQ_OK;
}

static mq_status grow_f32(mq_ctx *ctx, float **buf, size_t *cap, size_t n) {
    if (n <= *cap) return MQ_OK;
    mq__free(ctx, *buf);
    *cap = 0;
    if (n > SIZE_MAX / sizeof(float) || !(*buf = (float *)mq__malloc(ctx, n * sizeof(float))))
        return MQ_ERR_NOMEM;
    *cap = n;
    return MQ_OK;
}

/* The observer's update, the statistics and the Hessian of a batch of rows x C (channels
 * last), as two parallel jobs. */
static mq_status hessian_update(mq_calibrator *cal, cal_layer *l, const char *what,
                                mq_dtype dtype, const void *x, int ndim, const int64_t *shape,
                                int channel_axis, uint64_t numel) {
    mq_ctx *ctx = cal->ctx;
    int64_t C = l->channels, rows = (int64_t)(numel / (uint64_t)C);
    int64_t nblk = (C + HT_N - 1) / HT_N;
    if ((uint64_t)rows > SIZE_MAX / sizeof(float) / HT_N / (uint64_t)nblk)
        return mq__fail(ctx, MQ_ERR_NOMEM, "calibrator: a batch of %lld rows is too large",
                        (long long)rows);
    MQ_TRY(grow_f32(ctx, &cal->hbuf, &cal->hbuf_cap, (size_t)(rows * nblk * HT_N)));
    int nt = mq__thread_count(ctx);
    if (cal->ntiles < nt) {
        mq__free(ctx, cal->tiles);
        cal->ntiles = 0;
        cal->tiles = (float *)mq__malloc(ctx, (size_t)nt * HT_TILE * sizeof(float) + 64);
        if (!cal->tiles) return MQ_ERR_NOMEM;
        cal->ntiles = nt;
    }
    float *tiles = (float *)(((uintptr_t)cal->tiles + 63) & ~(uintptr_t)63);
    hess_pass hp = {.ctx = ctx,
                    .f = mq__gemm_pick(ctx),
                    .xtx = l->xtx,
                    .x = x,
                    .dtype = dtype,
                    .xb = cal->hbuf,
                    .rows = rows,
                    .c = C,
                    .ncol_tiles = nblk,
                    .cp = (C + P - 1) / P * P,
                    .tiles = tiles,
                    .ntiles = cal->ntiles,
                    .obs = l->obs,
                    .ndim = ndim,
                    .axis = channel_axis,
                    .shape = shape,
                    .obs_st = MQ_OK,
                    .sum_sq = l->sum_sq,
                    .max_abs = l->max_abs,
                    .ntask = (C + HT_M - 1) / HT_M * nblk};
    mq_status st = mq__parallel_for(ctx, 1 + nblk, 1, copy_range, &hp);
    if (hp.obs_st != MQ_OK) return mq__fail_prefix(ctx, "%s", what);
    MQ_TRY(st);
    return mq__parallel_for(ctx, hp.ntask + nblk, 1, tile_range, &hp);
}

mq_status mq_calibrator_update(mq_calibrator *cal, const char *layer, mq_dtype dtype,
                               const void *x, int ndim, const int64_t *shape, int channel_axis) {
    if (!cal || !layer) return MQ_ERR_INVALID;
    mq_ctx *ctx = cal->ctx;
    cal_layer *l = find_layer(cal, layer);
    if (!l) return mq__fail(ctx, MQ_ERR_INVALID, "calibrator: unknown layer '%s'", layer);
    char what[300];
    snprintf(what, sizeof what, "layer '%.200s'", layer);
    mq_batch_view view;
    MQ_TRY(mq__batch_view_init(ctx, what, dtype, x, ndim, shape, NULL, channel_axis, false,
                               l->channels, &view));
    int axis = channel_axis < 0 ? channel_axis + ndim : channel_axis;
    if (l->xtx && !l->no_hessian && axis == ndim - 1 && view.numel) {
        MQ_TRY(hessian_update(cal, l, what, dtype, x, ndim, shape, channel_axis, view.numel));
    } else {
        mq_status st = mq_observer_update_strided(l->obs, dtype, x, ndim, shape, NULL,
                                                  channel_axis);
        if (st != MQ_OK) return mq__fail_prefix(ctx, "%s", what);
        stats_pass sp = {l->sum_sq, l->max_abs};
        mq__batch_view_walk(&view, stats_chunk, &sp);
        if (l->xtx && axis != ndim - 1) l->no_hessian = true; /* Conv inputs: Linear layers only */
    }
    l->rows += view.numel / (uint64_t)l->channels;
    return MQ_OK;
}

size_t mq_calibrator_layer_count(const mq_calibrator *cal) { return cal ? cal->n : 0; }
const char *mq_calibrator_layer_name(const mq_calibrator *cal, size_t i) {
    return cal && i < cal->n ? cal->layers[i].name : NULL;
}
int64_t mq_calibrator_find(const mq_calibrator *cal, const char *layer) {
    const cal_layer *l = cal && layer ? find_layer(cal, layer) : NULL;
    return l ? (int64_t)(l - cal->layers) : -1;
}
uint64_t mq_calibrator_layer_rows(const mq_calibrator *cal, size_t i) {
    return cal && i < cal->n ? cal->layers[i].rows : 0;
}
const mq_observer *mq_calibrator_observer(const mq_calibrator *cal, size_t i) {
    return cal && i < cal->n ? cal->layers[i].obs : NULL;
}

mq_status mq_calibrator_merge(mq_calibrator *dst, const mq_calibrator *src) {
    if (!dst || !src || dst == src) return MQ_ERR_INVALID;
    mq_ctx *ctx = dst->ctx;
    /* check everything first so a failure leaves dst as it was */
    for (size_t i = 0; i < src->n; i++) {
        const cal_layer *s = &src->layers[i];
        const cal_layer *d = find_layer(dst, s->name);
        if (d && d->channels != s->channels)
            return mq__fail(ctx, MQ_ERR_INVALID, "calibrator merge: layer '%s' has %lld input "
                            "channels in one and %lld in the other", s->name,
                            (long long)d->channels, (long long)s->channels);
    }
    mq_observer_options a = dst->opts, b = src->opts;
    a.channels = b.channels = 0;
    char ta[256], tb[256];
    mq_observer_options_format(&a, ta, sizeof ta);
    mq_observer_options_format(&b, tb, sizeof tb);
    if (strcmp(ta, tb))
        return mq__fail(ctx, MQ_ERR_INVALID, "calibrator merge: options differ ('%s' and '%s')",
                        ta, tb);
    for (size_t i = 0; i < src->n; i++) {
        const cal_layer *s = &src->layers[i];
        MQ_TRY(mq_calibrator_add_layer(dst, s->name, s->channels));
        cal_layer *d = find_layer(dst, s->name);
        MQ_TRY(mq_observer_merge(d->obs, s->obs));
        if (!d->xtx || !s->xtx || s->no_hessian) d->no_hessian = true;
        if (!d->no_hessian)
            for (int64_t k = 0; k < s->channels * s->channels; k++) d->xtx[k] += s->xtx[k];
        for (int64_t c = 0; c < s->channels; c++) {
            d->sum_sq[c] += s->sum_sq[c];
            if (s->max_abs[c] > d->max_abs[c]) d->max_abs[c] = s->max_abs[c];
        }
        d->rows += s->rows;
    }
    return MQ_OK;
}

/* ---- saving ---- */

#define LAYER_FIXED 6 /* input_scale, input_zero_point, input_range, count, mean_sq, max_abs */

typedef struct layer_out {
    cal_layer *l;
    float scale, range[2];
    int32_t zp;
    float *ch_scale;   /* per channel */
    int32_t *ch_zp;
    float *mean_sq;
    float *hessian;    /* NULL when not kept */
    int64_t count;
    char *obs_text;
} layer_out;

static mq_status compute_layer(mq_calibrator *cal, cal_layer *l, layer_out *o) {
    mq_ctx *ctx = cal->ctx;
    int64_t np = mq_observer_nparams(l->obs);
    o->l = l;
    o->count = (int64_t)l->rows;
    o->mean_sq = (float *)mq__malloc(ctx, (size_t)l->channels * sizeof(float));
    float *lo = (float *)mq__malloc(ctx, (size_t)np * 2 * sizeof(float));
    o->ch_scale = (float *)mq__malloc(ctx, (size_t)np * sizeof(float));
    o->ch_zp = (int32_t *)mq__malloc(ctx, (size_t)np * sizeof(int32_t));
    char text[512];
    mq_observer_options_format(mq_observer_get_options(l->obs), text, sizeof text);
    o->obs_text = mq__strdup(ctx, text);
    mq_status st = o->mean_sq && lo && o->ch_scale && o->ch_zp && o->obs_text ? MQ_OK
                                                                             : MQ_ERR_NOMEM;
    if (st == MQ_OK) st = mq_observer_qparams(l->obs, o->ch_scale, o->ch_zp, lo, lo + np);
    if (st == MQ_OK) {
        float rlo = lo[0], rhi = lo[np];
        for (int64_t c = 1; c < np; c++) {
            if (lo[c] < rlo) rlo = lo[c];
            if (lo[np + c] > rhi) rhi = lo[np + c];
        }
        const mq_observer *obs = l->obs;
        if (np == 1) {
            o->scale = o->ch_scale[0];
            o->zp = o->ch_zp[0];
        } else {
            mq__obs_range_qparams(rlo, rhi, obs->opts.type, obs->opts.scheme, obs->qmin,
                                  obs->qmax, &o->scale, &o->zp);
        }
        o->range[0] = rlo, o->range[1] = rhi;
        if (!mq__qparam_finite(o->scale, o->zp, obs->qmin, obs->qmax))
            st = mq__fail(ctx, MQ_ERR_QUANT, "observer: the range [%g, %g] is too wide for "
                          "%s: its scale %g overflows float32", (double)rlo, (double)rhi,
                          mq_qtype_name(obs->opts.type), (double)o->scale);
        for (int64_t c = 0; st == MQ_OK && c < l->channels; c++) {
            o->mean_sq[c] = (float)(l->sum_sq[c] / (double)l->rows);
            if (!isfinite(o->mean_sq[c]))
                st = mq__fail(ctx, MQ_ERR_QUANT, "input channel %lld: the mean of x^2 (%g) "
                              "overflows float32", (long long)c, l->sum_sq[c] / (double)l->rows);
        }
    }
    if (st == MQ_OK && l->xtx && !l->no_hessian) {
        size_t C = (size_t)l->channels;
        o->hessian = (float *)mq__malloc(ctx, C * C * sizeof(float));
        if (!o->hessian) st = MQ_ERR_NOMEM;
        for (size_t i = 0; st == MQ_OK && i < C; i++)
            for (size_t k = 0; k <= i; k++)
                o->hessian[i * C + k] = o->hessian[k * C + i] =
                    (float)(l->xtx[i * C + k] / (double)l->rows);
        for (size_t i = 0; st == MQ_OK && i < C * C; i++)
            if (!isfinite(o->hessian[i]))
                st = mq__fail(ctx, MQ_ERR_QUANT, "Hessian entry [%zu, %zu] overflows float32 "
                              "(inputs too large)", i / C, i % C);
    }
    mq__free(ctx, lo);
    return st;
}

static void desc(mq_ctx *ctx, mq_tensor_desc *d, char **names, size_t *k, const char *layer,
                 const char *suffix, mq_dtype dt, int ndim, int64_t d0, int64_t d1) {
    size_t len = strlen(layer) + strlen(suffix) + 2;
    names[*k] = (char *)mq__malloc(ctx, len);
    if (names[*k]) snprintf(names[*k], len, "%s.%s", layer, suffix);
    d->name = names[*k];
    d->dtype = dt;
    d->ndim = ndim;
    d->shape[0] = d0;
    d->shape[1] = d1;
    (*k)++;
}

mq_status mq_calibrator_save(mq_calibrator *cal, const char *path, const mq_kv *meta,
                             size_t nmeta) {
    if (!cal || !path) return MQ_ERR_INVALID;
    mq_ctx *ctx = cal->ctx;
    size_t nl = 0;
    for (size_t i = 0; i < cal->n; i++) nl += cal->layers[i].rows > 0;
    bool per_channel = cal->opts.granularity == MQ_PER_CHANNEL;
    size_t per_layer = LAYER_FIXED + (per_channel ? 2 : 0) + 6;
    layer_out *outs = (layer_out *)mq__calloc(ctx, nl ? nl : 1, sizeof *outs);
    mq_tensor_desc *descs = (mq_tensor_desc *)mq__calloc(ctx, nl * per_layer + 1, sizeof *descs);
    char **names = (char **)mq__calloc(ctx, nl * per_layer + 1, sizeof *names);
    mq_kv *kv = (mq_kv *)mq__calloc(ctx, nl + nmeta + 2, sizeof *kv);
    const void **data = (const void **)mq__calloc(ctx, nl * per_layer + 1, sizeof *data);
    mq_writer *w = NULL;
    size_t nd = 0, nkv = 0;
    mq_status st = outs && descs && names && kv && data ? MQ_OK : MQ_ERR_NOMEM;
    char obs_text[512];
    mq_observer_options common = cal->opts;
    common.channels = 0;
    mq_observer_options_format(&common, obs_text, sizeof obs_text);
    if (st == MQ_OK) {
        kv[nkv++] = (mq_kv){"monoquant.calibration", "1"};
        kv[nkv++] = (mq_kv){"monoquant.observer", obs_text};
        for (size_t i = 0; i < nmeta; i++) kv[nkv++] = meta[i];
    }
    size_t done = 0;
    for (size_t i = 0; st == MQ_OK && i < cal->n; i++) {
        cal_layer *l = &cal->layers[i];
        if (!l->rows) continue;
        st = mq__progress(ctx, l->name, done, nl);
        if (st != MQ_OK) break;
        layer_out *o = &outs[done++];
        st = compute_layer(cal, l, o);
        if (st != MQ_OK) {
            mq__fail_prefix(ctx, "layer '%s'", l->name);
            break;
        }
        kv[nkv++] = (mq_kv){NULL, o->obs_text}; /* key set below */
        int64_t C = l->channels;
        size_t first = nd;
        desc(ctx, &descs[nd], names, &nd, l->name, "input_scale", MQ_F32, 1, 1, 0);
        data[nd - 1] = &o->scale;
        desc(ctx, &descs[nd], names, &nd, l->name, "input_zero_point", MQ_I32, 1, 1, 0);
        data[nd - 1] = &o->zp;
        desc(ctx, &descs[nd], names, &nd, l->name, "input_range", MQ_F32, 1, 2, 0);
        data[nd - 1] = o->range;
        desc(ctx, &descs[nd], names, &nd, l->name, "count", MQ_I64, 1, 1, 0);
        data[nd - 1] = &o->count;
        desc(ctx, &descs[nd], names, &nd, l->name, "mean_sq", MQ_F32, 1, C, 0);
        data[nd - 1] = o->mean_sq;
        desc(ctx, &descs[nd], names, &nd, l->name, "max_abs", MQ_F32, 1, C, 0);
        data[nd - 1] = l->max_abs;
        if (per_channel) {
            desc(ctx, &descs[nd], names, &nd, l->name, "channel_input_scale", MQ_F32, 1, C, 0);
            data[nd - 1] = o->ch_scale;
            desc(ctx, &descs[nd], names, &nd, l->name, "channel_input_zero_point", MQ_I32, 1, C, 0);
            data[nd - 1] = o->ch_zp;
        }
        if (o->hessian) {
            desc(ctx, &descs[nd], names, &nd, l->name, "hessian", MQ_F32, 2, C, C);
            data[nd - 1] = o->hessian;
        }
        size_t ns = mq_observer_state_count(l->obs);
        for (size_t s = 0; s < ns; s++) {
            mq_tensor t;
            mq_observer_state_tensor(l->obs, s, &t);
            char suffix[64];
            snprintf(suffix, sizeof suffix, "observer.%s", t.name);
            desc(ctx, &descs[nd], names, &nd, l->name, suffix, t.dtype, t.ndim, t.shape[0],
                 t.ndim > 1 ? t.shape[1] : 0);
            data[nd - 1] = t.data;
        }
        for (size_t k = first; k < nd; k++)
            if (!names[k]) st = mq__fail(ctx, MQ_ERR_NOMEM, "out of memory");
    }
    /* metadata keys "<layer>.observer": the full options, channels included */
    char **meta_keys = st == MQ_OK ? (char **)mq__calloc(ctx, nl + 1, sizeof *meta_keys) : NULL;
    if (st == MQ_OK && !meta_keys) st = MQ_ERR_NOMEM;
    for (size_t i = 0, m = 2 + nmeta; st == MQ_OK && i < done; i++, m++) {
        size_t len = strlen(outs[i].l->name) + 10;
        meta_keys[i] = (char *)mq__malloc(ctx, len);
        if (!meta_keys[i]) {
            st = MQ_ERR_NOMEM;
            break;
        }
        snprintf(meta_keys[i], len, "%s.observer", outs[i].l->name);
        kv[m].key = meta_keys[i];
    }
    if (st == MQ_OK) st = mq__progress(ctx, "writing", nl, nl);
    if (st == MQ_OK) st = mq_writer_open(ctx, path, MQ_FORMAT_SAFETENSORS, descs, nd, kv, nkv, &w);
    for (size_t k = 0; st == MQ_OK && k < nd; k++) {
        uint64_t bytes = mq_dtype_size(descs[k].dtype) * (uint64_t)descs[k].shape[0] *
                         (uint64_t)(descs[k].ndim > 1 ? descs[k].shape[1] : 1);
        st = mq_writer_write(w, data[k], (size_t)bytes);
    }
    if (st == MQ_OK) st = mq_writer_commit(w);
    mq_writer_free(w);
    for (size_t i = 0; i < done; i++) {
        mq__free(ctx, outs[i].ch_scale);
        mq__free(ctx, outs[i].ch_zp);
        mq__free(ctx, outs[i].mean_sq);
        mq__free(ctx, outs[i].hessian);
        mq__free(ctx, outs[i].obs_text);
        if (meta_keys) mq__free(ctx, meta_keys[i]);
    }
    if (names)
        for (size_t k = 0; k < nd; k++) mq__free(ctx, names[k]);
    mq__free(ctx, meta_keys);
    mq__free(ctx, outs);
    mq__free(ctx, descs);
    mq__free(ctx, names);
    mq__free(ctx, kv);
    mq__free(ctx, data);
    return st;
}
