/* Reading quantized checkpoints back: logical tensors reassembled from their data, scale,
 * zero-point and shape tensors; structural and value checks; dequantization; comparison;
 * mq_dequantize_file. */
#include "qmodel/qmodel_internal.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define CHUNK_ELEMS ((int64_t)1 << 20)

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The stored tensor named base+suffix, or NULL. */
const mq_tensor *mq__qm_find2(const mq_model *m, const char *base, size_t base_len,
                             const char *suffix) {
    char name[1024];
    size_t k = strlen(suffix);
    if (base_len + k >= sizeof name) return NULL;
    memcpy(name, base, base_len);
    memcpy(name + base_len, suffix, k + 1);
    long i = mq_model_find(m, name);
    return i < 0 ? NULL : mq_model_tensor(m, (size_t)i);
}

void mq_qmodel_free(mq_qmodel *qm) {
    if (!qm) return;
    mq_ctx *ctx = qm->ctx;
    for (size_t i = 0; i < qm->n; i++) {
        mq__free(ctx, (void *)qm->t[i].name);
        if (qm->src) mq__foreign_release(qm, i);
        if (qm->aligned) {
            mq__free(ctx, qm->aligned[2 * i]);
            mq__free(ctx, qm->aligned[2 * i + 1]);
        }
    }
    mq__free(ctx, qm->t);
    mq__free(ctx, qm->aligned);
    mq__free(ctx, qm->logical_of);
    mq__free(ctx, qm->src);
    mq__hfconfig_free(ctx, &qm->cfg);
    mq__free(ctx, qm->cfg_error);
    mq__free(ctx, qm->buf);
    mq_model_free(qm->model);
    mq__free(ctx, qm);
}

const mq_model *mq_qmodel_model(const mq_qmodel *qm) { return qm->model; }
mq_ctx *mq__qmodel_ctx(const mq_qmodel *qm) { return qm->ctx; }
size_t mq_qmodel_count(const mq_qmodel *qm) { return qm->n; }
const mq_qtensor *mq_qmodel_tensor(const mq_qmodel *qm, size_t i) {
    return i < qm->n ? &qm->t[i] : NULL;
}
int mq_qmodel_is_quantized(const mq_qmodel *qm) { return qm->quantized; }

/* Index of a stored tensor (the model keeps its tensors in one array). */
static size_t stored_index(const mq_model *m, const mq_tensor *x) {
    return (size_t)(x - mq_model_tensor(m, 0));
}

int64_t mq_qmodel_find(const mq_qmodel *qm, const char *name) {
    /* a logical tensor is stored under its own name (plain, 8-bit) or as <name>_packed */
    long j = mq_model_find(qm->model, name);
    if (j >= 0 && qm->logical_of[j] >= 0) return qm->logical_of[j];
    const mq_tensor *x = mq__qm_find2(qm->model, name, strlen(name), MQ__SUFFIX_PACKED);
    if (x && qm->logical_of[stored_index(qm->model, x)] >= 0)
        return qm->logical_of[stored_index(qm->model, x)];
    for (size_t i = 0; i < qm->n; i++) /* other layouts (GPTQ's `<layer>.qweight`) */
        if (qm->t[i].storage && !strcmp(qm->t[i].name, name)) return (long)i;
    return -1;
}

static mq_status bad(mq_ctx *ctx, const char *path, const char *name, const char *what) {
    return mq__fail(ctx, MQ_ERR_VALIDATION, "%s: tensor '%s': %s", path, name, what);
}

/* Spec of a quantized tensor without our metadata (e.g. another tool's output): inferred
 * from the stored dtypes and shapes. */
static void infer_spec(const mq_tensor *data, const mq_tensor *scale, const mq_tensor *zp,
                       int packed, int64_t cols, mq_qspec *s) {
    mq_qspec_default(s);
    s->scheme = zp ? MQ_ASYMMETRIC : MQ_SYMMETRIC;
    if (packed) s->type = zp ? MQ_Q_UINT4 : MQ_Q_INT4;
    else s->type = data->dtype == MQ_U8 ? MQ_Q_UINT8 : MQ_Q_INT8;
    int64_t g = scale->ndim == 2 ? scale->shape[1] : 1;
    if (scale->numel == 1 && data->shape[0] != 1) s->granularity = MQ_PER_TENSOR;
    else if (g <= 1) s->granularity = MQ_PER_CHANNEL;
    else {
        s->granularity = MQ_PER_GROUP;
        s->group_size = (int)((cols + g - 1) / g);
    }
}

/* Checks a companion's dtype and element count against the layout. */
static mq_status check_companion(mq_ctx *ctx, const char *path, const mq_tensor *c,
                                 mq_dtype dtype, uint64_t numel) {
    char what[200];
    if (c->dtype != dtype || c->numel != numel) {
        snprintf(what, sizeof what, "is %s with %llu elements, expected %s with %llu",
                 mq_dtype_name(c->dtype), (unsigned long long)c->numel, mq_dtype_name(dtype),
                 (unsigned long long)numel);
        return bad(ctx, path, c->name, what);
    }
    return MQ_OK;
}

/* Fills a quantized logical tensor from its stored tensors. */
static mq_status assemble(mq_qmodel *qm, const char *path, mq_qtensor *q, const mq_tensor *data,
                          size_t base_len, int packed) {
    mq_ctx *ctx = qm->ctx;
    const mq_model *m = qm->model;
    const char *base = data->name;
    q->data = data;
    q->scale = mq__qm_find2(m, base, base_len, MQ__SUFFIX_SCALE);
    q->zero_point = mq__qm_find2(m, base, base_len, MQ__SUFFIX_ZERO);
    q->shape_tensor = packed ? mq__qm_find2(m, base, base_len, MQ__SUFFIX_SHAPE) : NULL;
    size_t lp = mq__weight_layer_len(base, base_len);
    if (lp) {
        q->input_scale = mq__qm_find2(m, base, lp, ".input_scale");
        q->input_zero_point = mq__qm_find2(m, base, lp, ".input_zero_point");
    }
    if (packed) {
        if (!q->shape_tensor) return bad(ctx, path, q->name, "packed 4-bit data without its _shape");
        const mq_tensor *st = q->shape_tensor;
        if (st->dtype != MQ_I64 || st->ndim != 1 || st->numel < 1 || st->numel > MQ_MAX_DIMS)
            return bad(ctx, path, st->name, "must be I64 [ndim]");
        q->ndim = (int)st->numel;
        for (int d = 0; d < q->ndim; d++) {
            q->shape[d] = (int64_t)mq__load_le64((const uint8_t *)st->data + 8 * d);
            if (q->shape[d] < 0) return bad(ctx, path, st->name, "negative dimension");
        }
    } else {
        q->ndim = data->ndim;
        memcpy(q->shape, data->shape, sizeof q->shape);
    }
    q->numel = 1;
    for (int d = 0; d < q->ndim; d++)
        if (!mq__mul_u64(q->numel, (uint64_t)q->shape[d], &q->numel))
            return bad(ctx, path, q->name, "shape overflows");
    if (q->ndim < 1) return bad(ctx, path, q->name, "quantized tensor without dimensions");
    int64_t cols = q->shape[0] ? (int64_t)(q->numel / (uint64_t)q->shape[0]) : 0;
    char key[1100];
    snprintf(key, sizeof key, "%s%s", MQ__META_TENSOR_PREFIX, q->name);
    const char *meta = mq__model_meta(m, key);
    mq_dtype orig = MQ_F32;
    if (meta) {
        if (!mq__spec_from_meta(meta, &q->spec, &orig))
            return bad(ctx, path, q->name, "unreadable entry in the metadata");
    } else {
        infer_spec(data, q->scale, q->zero_point, packed, cols, &q->spec);
    }
    q->dtype = orig;
    bool spec_packed = mq__qtype_bits(q->spec.type) == 4;
    if (!mq__qtype_is_integer(q->spec.type) || spec_packed != (packed != 0))
        return bad(ctx, path, q->name, "metadata type does not match the stored tensors");
    mq_status st = mq_qlayout_init(ctx, &q->spec, q->ndim, q->shape, &q->layout);
    if (st != MQ_OK) return mq__fail(ctx, MQ_ERR_VALIDATION, "%s: tensor '%s': %s", path, q->name,
                                     mq_ctx_message(ctx));
    const mq_qlayout *L = &q->layout;
    char what[256];
    bool shape_ok = data->dtype == L->data_dtype && data->ndim == L->ndata_dims;
    for (int d = 0; shape_ok && d < L->ndata_dims; d++) shape_ok = data->shape[d] == L->data_shape[d];
    if (!shape_ok) {
        snprintf(what, sizeof what, "stored as %s with %d dims, the layout needs %s [%lld, ...] "
                 "(%llu bytes)", mq_dtype_name(data->dtype), data->ndim,
                 mq_dtype_name(L->data_dtype), (long long)L->data_shape[0],
                 (unsigned long long)L->data_bytes);
        return bad(ctx, path, data->name, what);
    }
    MQ_TRY(check_companion(ctx, path, q->scale, L->scale_dtype, (uint64_t)L->nscales));
    if (L->has_zero_point) {
        if (!q->zero_point) return bad(ctx, path, q->name, "asymmetric but no _zero_point");
        MQ_TRY(check_companion(ctx, path, q->zero_point, L->zero_point_dtype,
                               (uint64_t)L->nscales));
    } else if (q->zero_point) {
        return bad(ctx, path, q->zero_point->name, "symmetric tensor with a zero point");
    }
    if (q->input_scale) MQ_TRY(check_companion(ctx, path, q->input_scale, MQ_F32, 1));
    if (q->input_zero_point && (q->input_zero_point->numel != 1 ||
                                (q->input_zero_point->dtype != MQ_I8 &&
                                 q->input_zero_point->dtype != MQ_U8)))
        return bad(ctx, path, q->input_zero_point->name, "must be one I8 or U8 value");
    q->stored_bytes = data->nbytes + q->scale->nbytes;
    const mq_tensor *extra[] = {q->zero_point, q->shape_tensor, q->input_scale,
                                q->input_zero_point};
    for (size_t k = 0; k < 4; k++)
        if (extra[k]) q->stored_bytes += extra[k]->nbytes;
    return MQ_OK;
}

/* Whether a `_packed` / 8-bit tensor is stored as compressed-tensors lays it out rather than
 * as monoquant 0.1 did (the two agree on symmetric INT4 and INT8 with F32 scales, which the
 * native path decodes). Files without our per-tensor metadata are read as compressed-tensors
 * defines them: an asymmetric 4-bit value there is signed, stored + 8. */
static bool is_foreign(const mq_qmodel *qm, const mq_tensor *x, size_t base_len, int packed,
                       const char *meta) {
    const mq_model *m = qm->model;
    const mq_tensor *sc = mq__qm_find2(m, x->name, base_len, MQ__SUFFIX_SCALE);
    const mq_tensor *zp = mq__qm_find2(m, x->name, base_len, MQ__SUFFIX_ZERO);
    if (sc->dtype != MQ_F32 || (zp && zp->dtype == MQ_I32) ||
        mq__qm_find2(m, x->name, base_len, "_g_idx"))
        return true;
    if (meta) {
        mq_qspec s;
        mq_dtype orig;
        /* 8-bit values packed four per word: compressed-tensors' W8A16 */
        return packed && mq__spec_from_meta(meta, &s, &orig) &&
               (s.type == MQ_Q_INT8 || s.type == MQ_Q_UINT8);
    }
    return packed || qm->cfg.method == MQ__QM_CT;
}

static mq_status need_settings(mq_qmodel *qm) {
    if (qm->cfg_status == MQ_OK) return MQ_OK;
    return mq__fail(qm->ctx, qm->cfg_status, "%s", qm->cfg_error ? qm->cfg_error : "");
}

/* The metadata records the type asked for. GPTQ stores unsigned values with zero points
 * whatever it was, and reads back as INT4/INT8 when symmetric, UINT4/UINT8 when asymmetric:
 * of one width and scheme, the signed and the unsigned type hold the same values there (the
 * zero point moved by 8 or 128). */
static bool same_values_type(const mq_qtensor *t, mq_qtype asked) {
    if (t->spec.type == asked) return true;
    bool gptq = t->storage && strncmp(t->storage, "gptq", 4) == 0;
    return gptq && mq__qtype_is_integer(asked) && mq__qtype_is_integer(t->spec.type) &&
           mq__qtype_bits(asked) == mq__qtype_bits(t->spec.type);
}

static mq_status open_logical(mq_qmodel *qm, const char *path) {
    mq_ctx *ctx = qm->ctx;
    const mq_model *m = qm->model;
    size_t ns = mq_model_tensor_count(m);
    qm->t = (mq_qtensor *)mq__calloc(ctx, ns ? ns : 1, sizeof *qm->t);
    qm->aligned = (void **)mq__calloc(ctx, ns ? 2 * ns : 1, sizeof *qm->aligned);
    /* pass 1 marks each stored tensor: -1 plain, -2 companion, k >= 0 quantized entry k */
    qm->logical_of = (long *)mq__malloc(ctx, (ns ? ns : 1) * sizeof *qm->logical_of);
    qm->src = (mq__qsrc *)mq__calloc(ctx, ns ? ns : 1, sizeof *qm->src);
    if (!qm->t || !qm->aligned || !qm->logical_of || !qm->src) return MQ_ERR_NOMEM;
    long *role = qm->logical_of;
    for (size_t i = 0; i < ns; i++) role[i] = -1;
    /* pass 1: quantized tensors */
    for (size_t i = 0; i < ns; i++) {
        const mq_tensor *x = mq_model_tensor(m, i);
        size_t len = strlen(x->name);
        mq_qtensor *q = &qm->t[qm->n];
        mq__qsrc *src = &qm->src[qm->n];
        if (x->dtype == MQ_I32 && ends_with(x->name, ".qweight") &&
            mq__qm_find2(m, x->name, len - 8, ".scales")) {
            q->name = (char *)mq__malloc(ctx, len);
            if (!q->name) return MQ_ERR_NOMEM;
            memcpy((char *)q->name, x->name, len - 8);
            memcpy((char *)q->name + len - 8, ".weight", 8);
            qm->n++;
            MQ_TRY(need_settings(qm));
            MQ_TRY(mq__gptq_assemble(qm, path, q, src, x, len - 8));
            q->storage = qm->cfg.gptq_v2 ? "gptq_v2" : "gptq";
        } else {
            int packed = ends_with(x->name, MQ__SUFFIX_PACKED) && x->dtype == MQ_I32;
            size_t base_len = packed ? len - strlen(MQ__SUFFIX_PACKED) : len;
            if (!packed && x->dtype != MQ_I8 && x->dtype != MQ_U8) continue;
            if (!mq__qm_find2(m, x->name, base_len, MQ__SUFFIX_SCALE)) continue;
            q->name = mq__strndup(ctx, x->name, base_len);
            if (!q->name) return MQ_ERR_NOMEM;
            qm->n++;
            char key[1100];
            snprintf(key, sizeof key, "%s%s", MQ__META_TENSOR_PREFIX, q->name);
            const char *meta = mq__model_meta(m, key);
            if (is_foreign(qm, x, base_len, packed, meta)) {
                MQ_TRY(need_settings(qm));
                MQ_TRY(mq__ct_assemble(qm, path, q, src, x, base_len, meta));
                q->storage = packed ? "compressed-tensors pack-quantized"
                                    : "compressed-tensors int-quantized";
            } else {
                MQ_TRY(assemble(qm, path, q, x, base_len, packed));
                q->storage = "monoquant";
            }
        }
        q->g_idx = src->g_idx;
        q->kind = mq_classify_tensor(&(mq_tensor){.name = q->name, .ndim = q->ndim});
        qm->quantized = 1;
        const mq_tensor *comp[] = {q->scale, q->zero_point, q->shape_tensor, q->input_scale,
                                   q->input_zero_point, q->g_idx};
        for (size_t k = 0; k < 6; k++)
            if (comp[k]) role[stored_index(m, comp[k])] = -2;
        role[i] = (long)(qm->n - 1);
    }
    /* pass 2: everything else, in file order (then the quantized ones are moved into it) */
    mq_qtensor *all = (mq_qtensor *)mq__calloc(ctx, ns ? ns : 1, sizeof *all);
    mq__qsrc *src_all = (mq__qsrc *)mq__calloc(ctx, ns ? ns : 1, sizeof *src_all);
    if (!all || !src_all) {
        mq__free(ctx, all);
        mq__free(ctx, src_all);
        return MQ_ERR_NOMEM;
    }
    /* nothing is materialized yet: the entries move as they are */
    mq__qsrc *src_old = qm->src;
    qm->src = src_all;
    size_t n = 0;
    for (size_t i = 0; i < ns; i++) {
        const mq_tensor *x = mq_model_tensor(m, i);
        if (role[i] >= 0) {
            src_all[n] = src_old[role[i]];
            all[n] = qm->t[role[i]];
            role[i] = (long)n++;
            continue;
        }
        if (role[i] == -2) continue;
        role[i] = (long)n;
        mq_qtensor *q = &all[n++];
        q->name = mq__strdup(ctx, x->name);
        if (!q->name) {
            /* keep every owned name reachable for mq_qmodel_free: move the quantized tensors
             * not reached yet behind the others */
            n--;
            for (size_t k2 = i + 1; k2 < ns; k2++)
                if (role[k2] >= 0) src_all[n] = src_old[role[k2]], all[n++] = qm->t[role[k2]];
            mq__free(ctx, src_old);
            mq__free(ctx, qm->t);
            qm->t = all;
            qm->n = n;
            return MQ_ERR_NOMEM;
        }
        q->kind = mq_classify_tensor(x);
        q->dtype = x->dtype;
        q->ndim = x->ndim;
        memcpy(q->shape, x->shape, sizeof q->shape);
        q->numel = x->numel;
        q->data = x;
        q->stored_bytes = x->nbytes;
        mq_qspec_default(&q->spec);
        q->spec.type = MQ_Q_NONE;
        char key[1100];
        snprintf(key, sizeof key, "%s%s", MQ__META_TENSOR_PREFIX, x->name);
        const char *meta = mq__model_meta(m, key);
        mq_dtype orig;
        mq_qspec s;
        if (meta && mq__spec_from_meta(meta, &s, &orig) &&
            mq__qtype_is_cast(s.type)) {
            q->spec = s;
            q->dtype = orig;
        }
    }
    mq__free(ctx, src_old);
    mq__free(ctx, qm->t);
    qm->t = all;
    qm->n = n;
    for (size_t i = 0; i < ns; i++)
        if (role[i] < 0) role[i] = -1;
    /* every quantized tensor recorded in the metadata must be there */
    for (size_t i = 0; i < mq_model_metadata_count(m); i++) {
        const char *key = mq_model_metadata_key(m, i);
        size_t pl = strlen(MQ__META_TENSOR_PREFIX);
        if (strncmp(key, MQ__META_TENSOR_PREFIX, pl) != 0) continue;
        long j = mq_qmodel_find(qm, key + pl);
        mq_qspec s;
        mq_dtype orig;
        if (!mq__spec_from_meta(mq_model_metadata_value(m, i), &s, &orig))
            return bad(ctx, path, key + pl, "unreadable entry in the metadata");
        if (j < 0) return bad(ctx, path, key + pl, "listed in the metadata but not stored");
        if (!same_values_type(&qm->t[j], s.type))
            return bad(ctx, path, key + pl, "stored differently than the metadata says");
        if ((s.type == MQ_Q_FP16 && qm->t[j].data->dtype != MQ_F16) ||
            (s.type == MQ_Q_BF16 && qm->t[j].data->dtype != MQ_BF16))
            return bad(ctx, path, key + pl, "cast tensor with the wrong dtype");
    }
    return MQ_OK;
}

static mq_status verify_params(mq_qmodel *qm, size_t i);

mq_status mq_qmodel_open(mq_ctx *ctx, const char *path, mq_qmodel **out) {
    return mq_qmodel_open_with_options(ctx, path, NULL, out);
}

mq_status mq_qmodel_open_with_options(mq_ctx *ctx, const char *path, const mq_open_options *opts,
                                      mq_qmodel **out) {
    if (!ctx || !path || !out) return mq__fail(ctx, MQ_ERR_INVALID, "mq_qmodel_open: NULL argument");
    *out = NULL;
    mq_qmodel *qm = (mq_qmodel *)mq__calloc(ctx, 1, sizeof *qm);
    if (!qm) return MQ_ERR_NOMEM;
    qm->ctx = ctx;
    qm->materialized = -1;
    qm->cfg.torch_dtype = MQ_DTYPE_INVALID;
    mq_status st = mq_model_open(ctx, path, opts, &qm->model);
    if (st == MQ_OK) {
        /* unreadable settings beside a checkpoint matter only to layouts that need them */
        qm->cfg_status = mq__hfconfig_load(ctx, qm->model, path, &qm->cfg);
        if (qm->cfg_status == MQ_ERR_NOMEM) st = MQ_ERR_NOMEM;
        else if (qm->cfg_status != MQ_OK && !(qm->cfg_error = mq__strdup(ctx, mq_ctx_message(ctx))))
            st = MQ_ERR_NOMEM;
    }
    if (st == MQ_OK) st = open_logical(qm, path);
    /* values too: a NaN/Inf scale, an out-of-range zero point or g_idx would dequantize
     * into wrong weights */
    for (size_t i = 0; st == MQ_OK && i < qm->n; i++) {
        st = verify_params(qm, i);
        if (st != MQ_OK) mq__fail_prefix(ctx, "%s", path);
    }
    if (st != MQ_OK) {
        mq_qmodel_free(qm);
        return st;
    }
    *out = qm;
    return MQ_OK;
}

/* Scale and zero point of tensor i at aligned addresses (copied once if the file has them
 * at odd offsets). */
static mq_status params(mq_qmodel *qm, size_t i, const float **scale, const void **zp) {
    const mq_qtensor *q = &qm->t[i];
    const mq_tensor *src[2] = {q->scale, q->zero_point};
    const void *res[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        if (!src[k]) continue;
        res[k] = src[k]->data;
        if ((uintptr_t)res[k] % 4 == 0) continue;
        if (!qm->aligned[2 * i + (size_t)k]) {
            void *c = mq__malloc(qm->ctx, (size_t)src[k]->nbytes ? (size_t)src[k]->nbytes : 1);
            if (!c) return MQ_ERR_NOMEM;
            memcpy(c, src[k]->data, (size_t)src[k]->nbytes);
            qm->aligned[2 * i + (size_t)k] = c;
        }
        res[k] = qm->aligned[2 * i + (size_t)k];
    }
    *scale = (const float *)res[0];
    *zp = res[1];
    return MQ_OK;
}

/* A cast tensor holding Inf or NaN: an overflowed cast (the writer refuses both). */
static mq_status verify_cast(mq_qmodel *qm, const mq_qtensor *q) {
    uint16_t mask = q->data->dtype == MQ_F16 ? 0x7c00 : 0x7f80;
    const uint8_t *d = (const uint8_t *)q->data->data;
    for (uint64_t k = 0; k < q->data->numel; k++)
        if ((mq__load_le16(d + 2 * k) & mask) == mask)
            return mq__fail(qm->ctx, MQ_ERR_VALIDATION, "tensor '%s': %s element %llu is Inf "
                            "or NaN (an overflowed cast)", q->name,
                            mq_dtype_name(q->data->dtype), (unsigned long long)k);
    return MQ_OK;
}

static mq_status verify_input_scale(mq_qmodel *qm, const mq_qtensor *q) {
    if (!q->input_scale) return MQ_OK;
    float s;
    MQ_TRY(mq_convert(qm->ctx, MQ_F32, &s, q->input_scale->dtype, q->input_scale->data, 1));
    if (!isfinite(s) || !(s > 0))
        return mq__fail(qm->ctx, MQ_ERR_VALIDATION, "tensor '%s': input_scale is %g", q->name,
                        (double)s);
    return MQ_OK;
}

/* Scales, zero points and input scales of tensor i (cheap: checked at open). */
static mq_status verify_params(mq_qmodel *qm, size_t i) {
    mq_ctx *ctx = qm->ctx;
    const mq_qtensor *q = &qm->t[i];
    if (q->spec.type < MQ_Q_INT8 || q->spec.type > MQ_Q_UINT4) return MQ_OK;
    if (qm->src[i].family != MQ__QF_NATIVE) {
        MQ_TRY(mq__foreign_verify(qm, i));
        return verify_input_scale(qm, q);
    }
    const float *scale;
    const void *zp;
    MQ_TRY(params(qm, i, &scale, &zp));
    int lo = 0, hi = 0;
    switch (q->spec.type) {
    case MQ_Q_INT8: lo = -128, hi = 127; break;
    case MQ_Q_UINT8: lo = 0, hi = 255; break;
    case MQ_Q_INT4: lo = -8, hi = 7; break;
    default: lo = 0, hi = 15; break;
    }
    for (int64_t k = 0; k < q->layout.nscales; k++) {
        int v = !zp ? (lo < 0 ? 0 : (lo + hi + 1) / 2)
                : q->layout.zero_point_dtype == MQ_U8 ? ((const uint8_t *)zp)[k]
                                                      : ((const int8_t *)zp)[k];
        if (!isfinite(scale[k]) || !(scale[k] > 0))
            return mq__fail(ctx, MQ_ERR_VALIDATION, "tensor '%s': scale %lld is %g (must be "
                            "finite and > 0)", q->name, (long long)k, (double)scale[k]);
        if (v < lo || v > hi)
            return mq__fail(ctx, MQ_ERR_VALIDATION, "tensor '%s': zero point %lld is %d, "
                            "outside [%d, %d]", q->name, (long long)k, v, lo, hi);
        if (!mq__qparam_finite(scale[k], v, lo, hi))
            return mq__fail(ctx, MQ_ERR_VALIDATION, "tensor '%s': scale %lld is %g: its "
                            "values dequantize beyond float32", q->name, (long long)k,
                            (double)scale[k]);
    }
    return verify_input_scale(qm, q);
}

mq_status mq_qmodel_verify(mq_qmodel *qm, size_t i) {
    if (i >= qm->n) return mq__fail(qm->ctx, MQ_ERR_INVALID, "tensor index %zu out of range", i);
    const mq_qtensor *q = &qm->t[i];
    if ((q->spec.type == MQ_Q_FP16 || q->spec.type == MQ_Q_BF16) && q->data &&
        (q->data->dtype == MQ_F16 || q->data->dtype == MQ_BF16))
        return verify_cast(qm, q);
    return verify_params(qm, i);
}

mq_status mq_qmodel_read_rows(mq_qmodel *qm, size_t i, int64_t rb, int64_t re, float *out) {
    mq_ctx *ctx = qm->ctx;
    if (i >= qm->n) return mq__fail(ctx, MQ_ERR_INVALID, "tensor index %zu out of range", i);
    const mq_qtensor *q = &qm->t[i];
    int64_t rows = q->ndim ? q->shape[0] : 1;
    uint64_t cols = rows ? q->numel / (uint64_t)rows : 0;
    if (rb < 0 || re < rb || re > rows)
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': rows [%lld, %lld) out of range",
                        q->name, (long long)rb, (long long)re);
    if (mq__qtype_is_integer(q->spec.type) &&
        qm->src[i].family != MQ__QF_NATIVE)
        return mq__foreign_read_rows(qm, i, rb, re, out);
    if (mq__qtype_is_integer(q->spec.type)) {
        const float *scale;
        const void *zp;
        MQ_TRY(params(qm, i, &scale, &zp));
        return mq_dequantize_rows(ctx, &q->spec, &q->layout, q->data->data, scale, zp, rb, re,
                                  out);
    }
    if (!mq_dtype_is_float(q->data->dtype))
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': %s is not a floating-point tensor",
                        q->name, mq_dtype_name(q->data->dtype));
    size_t es = mq_dtype_size(q->data->dtype);
    return mq_convert(ctx, MQ_F32, out, q->data->dtype,
                      (const uint8_t *)q->data->data + (uint64_t)rb * cols * es,
                      (size_t)((uint64_t)(re - rb) * cols));
}

static int64_t rows_of(const mq_qtensor *q) { return q->ndim ? q->shape[0] : 1; }

mq_status mq_qmodel_error(mq_qmodel *a, size_t i, mq_qmodel *b, size_t j, mq_error_stats *out) {
    mq_ctx *ctx = b->ctx;
    if (i >= a->n || j >= b->n) return mq__fail(ctx, MQ_ERR_INVALID, "tensor index out of range");
    const mq_qtensor *qa = &a->t[i], *qb = &b->t[j];
    int64_t rows = rows_of(qb);
    if (qa->numel != qb->numel || rows_of(qa) != rows)
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': %llu elements in %lld rows vs %llu in "
                        "%lld rows", qb->name, (unsigned long long)qa->numel,
                        (long long)rows_of(qa), (unsigned long long)qb->numel, (long long)rows);
    uint64_t cols = rows ? qb->numel / (uint64_t)rows : 0;
    /* whole parts of the error figures, as the quantize pipeline sums them */
    int64_t step = cols ? CHUNK_ELEMS / (int64_t)cols : rows, k = mq__err_rows_per_part((int64_t)cols);
    step = step < k ? k : step / k * k;
    size_t need = (size_t)((uint64_t)(step < rows ? step : rows) * cols * 2 + 1) * sizeof(float);
    if (need > b->buf_cap) {
        mq__free(ctx, b->buf);
        b->buf_cap = 0;
        b->buf = (float *)mq__malloc(ctx, need);
        if (!b->buf) return MQ_ERR_NOMEM;
        b->buf_cap = need;
    }
    float *fa = b->buf, *fb = b->buf + need / sizeof(float) / 2;
    mq__err_acc acc = {0};
    for (int64_t rb = 0; rb < rows; rb += step) {
        int64_t re = rb + step < rows ? rb + step : rows;
        MQ_TRY(mq_qmodel_read_rows(a, i, rb, re, fa));
        MQ_TRY(mq_qmodel_read_rows(b, j, rb, re, fb));
        MQ_TRY(mq__err_acc_add(ctx, &acc, MQ_F32, fa, fb, (size_t)((uint64_t)(re - rb) * cols),
                               (size_t)cols));
    }
    mq__err_acc_finish(&acc, out);
    return MQ_OK;
}

/* ---- mq_dequantize_file --------------------------------------------------------------- */

static bool our_key(const char *k) {
    return !strcmp(k, "format") || !strcmp(k, MQ__META_CONFIG) || !strcmp(k, MQ__META_SCHEME) ||
           !strcmp(k, MQ__META_FORMAT) || !strcmp(k, MQ__META_OWN_CONFIG) ||
           !strcmp(k, MQ__META_LAYOUT) ||
           !strncmp(k, MQ__META_TENSOR_PREFIX, strlen(MQ__META_TENSOR_PREFIX));
}

static mq_status write_plain(mq_qmodel *qm, mq_writer *w, const mq_tensor_desc *descs,
                             float *f32, void *conv, size_t chunk_elems) {
    mq_ctx *ctx = qm->ctx;
    for (size_t i = 0; i < qm->n; i++) {
        const mq_qtensor *q = &qm->t[i];
        mq_dtype dt = descs[i].dtype;
        if (q->spec.type == MQ_Q_NONE || (dt == q->data->dtype && q->spec.type >= MQ_Q_FP16)) {
            MQ_TRY(mq_writer_write(w, q->data->data, (size_t)q->data->nbytes));
            mq__model_release(qm->model, q->data->data, q->data->nbytes);
            continue;
        }
        int64_t rows = rows_of(q);
        uint64_t cols = rows ? q->numel / (uint64_t)rows : 0;
        int64_t step = cols ? (int64_t)(chunk_elems / cols) : rows;
        if (step < 1) step = 1;
        for (int64_t rb = 0; rb < rows; rb += step) {
            int64_t re = rb + step < rows ? rb + step : rows;
            size_t n = (size_t)((uint64_t)(re - rb) * cols);
            MQ_TRY(mq_qmodel_read_rows(qm, i, rb, re, f32));
            MQ_TRY(mq_convert(ctx, dt, conv, MQ_F32, f32, n));
            MQ_TRY(mq_writer_write(w, conv, n * mq_dtype_size(dt)));
            MQ_TRY(mq__progress(ctx, q->name, (uint64_t)i, (uint64_t)qm->n));
        }
        mq__model_release(qm->model, q->data->data, q->data->nbytes);
    }
    return MQ_OK;
}

mq_status mq_dequantize_file(mq_ctx *ctx, const char *in, const char *out, mq_dtype dtype,
                             mq_format fmt) {
    if (!ctx || !in || !out) return mq__fail(ctx, MQ_ERR_INVALID, "mq_dequantize_file: NULL argument");
    if (dtype != MQ_DTYPE_INVALID && !mq_dtype_is_float(dtype))
        return mq__fail(ctx, MQ_ERR_INVALID, "dequantize: %s is not a floating-point dtype",
                        mq_dtype_name(dtype));
    mq_qmodel *qm = NULL;
    MQ_TRY(mq_qmodel_open(ctx, in, &qm));
    mq_status st = mq_qmodel_dequantize(qm, out, dtype, fmt);
    mq_qmodel_free(qm);
    return st;
}

mq_status mq_qmodel_dequantize(mq_qmodel *qm, const char *out, mq_dtype dtype, mq_format fmt) {
    if (!qm || !out) return MQ_ERR_INVALID;
    mq_ctx *ctx = qm->ctx;
    if (dtype != MQ_DTYPE_INVALID && !mq_dtype_is_float(dtype))
        return mq__fail(ctx, MQ_ERR_INVALID, "dequantize: %s is not a floating-point dtype",
                        mq_dtype_name(dtype));
    MQ_TRY(mq_output_check(ctx, out, qm->model));
    mq_writer *w = NULL;
    mq_kv *meta = NULL;
    float *f32 = NULL;
    void *conv = NULL;
    size_t nmeta = 0, chunk = 1;
    mq_status st = MQ_ERR_NOMEM;
    mq_tensor_desc *descs = (mq_tensor_desc *)mq__calloc(ctx, qm->n ? qm->n : 1, sizeof *descs);
    size_t nm = mq_model_metadata_count(qm->model);
    meta = (mq_kv *)mq__calloc(ctx, nm ? nm : 1, sizeof *meta);
    if (!descs || !meta) goto done;
    for (size_t i = 0; i < nm; i++) {
        const char *k = mq_model_metadata_key(qm->model, i);
        if (!our_key(k)) meta[nmeta++] = (mq_kv){k, mq_model_metadata_value(qm->model, i)};
    }
    for (size_t i = 0; i < qm->n; i++) {
        const mq_qtensor *q = &qm->t[i];
        descs[i].name = q->name;
        descs[i].ndim = q->ndim;
        memcpy(descs[i].shape, q->shape, sizeof descs[i].shape);
        descs[i].dtype = q->spec.type == MQ_Q_NONE ? q->data->dtype
                         : dtype != MQ_DTYPE_INVALID ? dtype : q->dtype;
        if (q->spec.type != MQ_Q_NONE) {
            int64_t rows = rows_of(q);
            uint64_t cols = rows ? q->numel / (uint64_t)rows : 0;
            uint64_t c = cols > (uint64_t)CHUNK_ELEMS ? cols : (uint64_t)CHUNK_ELEMS;
            if (c > q->numel) c = q->numel;
            if (c > chunk) chunk = (size_t)c;
        }
    }
    f32 = (float *)mq__malloc(ctx, chunk * sizeof(float));
    conv = mq__malloc(ctx, chunk * 8);
    if (!f32 || !conv) goto done;
    st = mq_writer_open(ctx, out, fmt, descs, qm->n, meta, nmeta, &w);
    if (st == MQ_OK) st = write_plain(qm, w, descs, f32, conv, chunk);
    if (st == MQ_OK) st = mq_writer_commit(w);
done:
    mq_writer_free(w);
    mq__free(ctx, f32);
    mq__free(ctx, conv);
    mq__free(ctx, descs);
    mq__free(ctx, meta);
    return st;
}
