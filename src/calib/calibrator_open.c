/* mq_calibrator_open: a statistics file read back as a calibrator (observer state, rows,
 * channel sums, Hessian sums), so that separate calibration runs merge (mq_calibrator_merge)
 * and save like one. */
#include "calib/calib_internal.h"

#include <stdio.h>
#include <string.h>

/* Tensor "<layer>.<suffix>" of dtype dt and `count` elements, or NULL. */
static const mq_tensor *get(const mq_model *m, const char *layer, const char *suffix,
                            mq_dtype dt, uint64_t count) {
    char name[700];
    snprintf(name, sizeof name, "%s.%s", layer, suffix);
    int64_t i = mq_model_find(m, name);
    const mq_tensor *t = i >= 0 ? mq_model_tensor(m, (size_t)i) : NULL;
    return t && t->dtype == dt && t->numel == count ? t : NULL;
}

static const char *meta(const mq_model *m, const char *key) {
    int64_t i = mq_model_metadata_find(m, key);
    return i >= 0 ? mq_model_metadata_value(m, (size_t)i) : NULL;
}

static mq_status restore_layer(mq_calibrator *cal, const mq_model *m, const char *path,
                               const char *layer) {
    mq_ctx *ctx = cal->ctx;
    char name[700];
    snprintf(name, sizeof name, "%s.max_abs", layer);
    int64_t im = mq_model_find(m, name);
    const mq_tensor *mx = im >= 0 ? mq_model_tensor(m, (size_t)im) : NULL;
    if (!mx || mx->dtype != MQ_F32 || mx->ndim != 1 || mx->numel < 1)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: layer '%s': no F32 [C] max_abs", path, layer);
    int64_t C = (int64_t)mx->numel;
    const mq_tensor *cnt = get(m, layer, "count", MQ_I64, 1);
    const mq_tensor *ms = get(m, layer, "mean_sq", MQ_F32, (uint64_t)C);
    if (!cnt || !ms)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: layer '%s': count or mean_sq missing or of "
                        "the wrong shape", path, layer);
    int64_t rows;
    memcpy(&rows, cnt->data, 8);
    if (rows < 0)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: layer '%s': negative count", path, layer);
    MQ_TRY(mq_calibrator_add_layer(cal, layer, C));
    cal_layer *l = &cal->layers[cal->n - 1];
    l->rows = (uint64_t)rows;
    memcpy(l->max_abs, mx->data, (size_t)C * 4);
    for (int64_t c = 0; c < C; c++) {
        float v;
        memcpy(&v, (const uint8_t *)ms->data + c * 4, 4);
        l->sum_sq[c] = (double)v * (double)rows;
    }
    if (l->xtx) {
        const mq_tensor *h = get(m, layer, "hessian", MQ_F32, (uint64_t)(C * C));
        if (!h) l->no_hessian = true;
        for (int64_t k = 0; h && k < C * C; k++) {
            float v;
            memcpy(&v, (const uint8_t *)h->data + k * 4, 4);
            l->xtx[k] = (double)v * (double)rows;
        }
    }
    size_t ns = mq_observer_state_count(l->obs);
    for (size_t s = 0; s < ns; s++) {
        mq_tensor want;
        MQ_TRY(mq_observer_state_tensor(l->obs, s, &want));
        snprintf(name, sizeof name, "%s.observer.%s", layer, want.name);
        int64_t it = mq_model_find(m, name);
        if (it < 0)
            return mq__fail(ctx, MQ_ERR_FORMAT, "%s: no observer state '%s'", path, name);
        mq_tensor t = *mq_model_tensor(m, (size_t)it);
        t.name = want.name;
        mq_status st = mq_observer_state_set(l->obs, &t);
        if (st != MQ_OK) return mq__fail_prefix(ctx, "%s: layer '%s'", path, layer);
    }
    return MQ_OK;
}

mq_status mq_calibrator_open(mq_ctx *ctx, const char *path, mq_calibrator **out) {
    if (!ctx || !path || !out) return mq__fail(ctx, MQ_ERR_INVALID, "mq_calibrator_open: NULL argument");
    *out = NULL;
    mq_model *m = NULL;
    MQ_TRY(mq_model_open(ctx, path, NULL, &m));
    const char *text = meta(m, "monoquant.observer");
    mq_status st = MQ_OK;
    if (!meta(m, "monoquant.calibration") || !text)
        st = mq__fail(ctx, MQ_ERR_FORMAT, "%s: not a statistics file of monoquant calibrate "
                      "(no monoquant.calibration / monoquant.observer metadata)", path);
    mq_observer_options o;
    mq_observer_options_default(&o, MQ_OBS_MINMAX);
    if (st == MQ_OK) st = mq_observer_options_parse(ctx, text, &o);
    if (st != MQ_OK && st != MQ_ERR_FORMAT) st = mq__fail_prefix(ctx, "%s", path);
    mq_calibrator *cal = NULL;
    if (st == MQ_OK) st = mq_calibrator_create(ctx, &o, &cal);
    /* Hessian sums when any layer stored its Hessian */
    const char *hs = ".hessian";
    size_t n = mq_model_tensor_count(m), hl = strlen(hs);
    for (size_t i = 0; st == MQ_OK && i < n; i++) {
        const char *nm = mq_model_tensor(m, i)->name;
        size_t len = strlen(nm);
        if (len > hl && !strcmp(nm + len - hl, hs)) {
            st = mq_calibrator_set_hessian(cal, 1);
            break;
        }
    }
    /* layers in file order, found by their input_scale */
    const char *ks = ".input_scale";
    size_t kl = strlen(ks);
    for (size_t i = 0; st == MQ_OK && i < n; i++) {
        const char *nm = mq_model_tensor(m, i)->name;
        size_t len = strlen(nm);
        if (len <= kl || strcmp(nm + len - kl, ks) || len - kl >= 600) continue;
        char layer[600];
        memcpy(layer, nm, len - kl);
        layer[len - kl] = 0;
        st = restore_layer(cal, m, path, layer);
    }
    mq_model_free(m);
    if (st != MQ_OK) {
        mq_calibrator_free(cal);
        return st;
    }
    *out = cal;
    return MQ_OK;
}
