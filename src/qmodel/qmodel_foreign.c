/* Reading quantized layouts written by other tools (docs/FORMAT.md, "Reading other tools'
 * checkpoints"):
 *  - compressed-tensors pack-quantized: `<p>.weight_packed` I32 [N, ceil(K / (32/b))], fields
 *    of b bits lowest first along the row holding q + 2^(b-1); `<p>.weight_shape`; scales
 *    [N, G] / [N, 1] / [1] in F32, F16 or BF16; asymmetric group/channel zero points packed
 *    the same way along the OUTPUT dim, I32 [ceil(N / (32/b)), G]; per-tensor ones unpacked;
 *    optional `<p>.weight_g_idx` (activation order).
 *  - compressed-tensors int-quantized: `<p>.weight` I8, zero points I8 unpacked.
 *  - GPTQ: `<p>.qweight` I32 [K / (32/b), N] packed along the INPUT dim, `<p>.qzeros` I32
 *    [G, N / (32/b)] holding zero - 1 (v1) or zero (checkpoint_format gptq_v2), `<p>.scales`
 *    [G, N], `<p>.g_idx` I32 [K] (the group of each input column; any order with desc_act).
 * Every layout decodes as x = (code - zero) * scale with scale, code and zero as stored; the
 * F32 product of a small integer and a 16-bit scale is exact, so converting it to the scale's
 * dtype gives what the reference decoders (which compute in that dtype) give. */
#include "qmodel/qmodel_internal.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static mq_status bad(mq_ctx *ctx, const char *path, const char *name, const char *fmt, ...)
    MQ_PRINTF(4, 5);
static mq_status bad(mq_ctx *ctx, const char *path, const char *name, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return mq__fail(ctx, MQ_ERR_VALIDATION, "%s: tensor '%s': %s", path, name, what);
}

static bool is_float16ish(mq_dtype d) { return d == MQ_F32 || d == MQ_F16 || d == MQ_BF16; }

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static void shape_text(const mq_tensor *t, char *buf, size_t cap) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* Static input parameters of `<module>.weight`: a float scale and an integer zero point of
 * one value each. */
static mq_status input_params(mq_qmodel *qm, const char *path, mq_qtensor *q) {
    const char *dot = strrchr(q->name, '.');
    if (!dot || strcmp(dot, ".weight") != 0) return MQ_OK;
    size_t ml = (size_t)(dot - q->name);
    q->input_scale = mq__qm_find2(qm->model, q->name, ml, ".input_scale");
    q->input_zero_point = mq__qm_find2(qm->model, q->name, ml, ".input_zero_point");
    if (q->input_scale && (!is_float16ish(q->input_scale->dtype) || q->input_scale->numel != 1))
        return bad(qm->ctx, path, q->input_scale->name, "must be one F32, F16 or BF16 value "
                   "(per-tensor input scale)");
    if (q->input_zero_point && (q->input_zero_point->numel != 1 ||
                                (q->input_zero_point->dtype != MQ_I8 &&
                                 q->input_zero_point->dtype != MQ_U8)))
        return bad(qm->ctx, path, q->input_zero_point->name, "must be one I8 or U8 value");
    return MQ_OK;
}

static void add_bytes(mq_qtensor *q, const mq_tensor *g_idx) {
    const mq_tensor *all[] = {q->data, q->scale, q->zero_point, q->shape_tensor,
                              q->input_scale, q->input_zero_point, g_idx};
    q->stored_bytes = 0;
    for (size_t k = 0; k < sizeof all / sizeof *all; k++)
        if (all[k]) q->stored_bytes += all[k]->nbytes;
}

/* Spec and canonical layout description of a foreign tensor. */
static mq_status finish_spec(mq_qmodel *qm, const char *path, mq_qtensor *q, mq_qtype type,
                             int asym, mq_granularity gran, int64_t group_size) {
    mq_qspec_default(&q->spec);
    q->spec.type = type;
    q->spec.scheme = asym ? MQ_ASYMMETRIC : MQ_SYMMETRIC;
    q->spec.granularity = gran;
    if (gran == MQ_PER_GROUP) {
        if (group_size < 1 || group_size > INT32_MAX)
            return bad(qm->ctx, path, q->name, "group size %lld", (long long)group_size);
        q->spec.group_size = (int)group_size;
    }
    q->numel = 1;
    for (int d = 0; d < q->ndim; d++)
        if (q->shape[d] < 1 || !mq__mul_u64(q->numel, (uint64_t)q->shape[d], &q->numel))
            return bad(qm->ctx, path, q->name, "bad logical shape");
    mq_status st = mq_qlayout_init(qm->ctx, &q->spec, q->ndim, q->shape, &q->layout);
    if (st != MQ_OK)
        return mq__fail(qm->ctx, MQ_ERR_VALIDATION, "%s: tensor '%s': %s", path, q->name,
                        mq_ctx_message(qm->ctx));
    return MQ_OK;
}

/* Scales: a float tensor of `rows * groups` values ([rows, groups], [rows], [1, ...]).
 * Returns the groups per row (0: per tensor). */
static mq_status scale_groups(mq_qmodel *qm, const char *path, const mq_tensor *sc, int64_t rows,
                              int64_t *groups) {
    char sh[128];
    shape_text(sc, sh, sizeof sh);
    if (!is_float16ish(sc->dtype))
        return bad(qm->ctx, path, sc->name, "scales are %s, expected F32, F16 or BF16",
                   mq_dtype_name(sc->dtype));
    if (sc->numel == 1 && rows != 1) {
        *groups = 0;
        return MQ_OK;
    }
    if (sc->ndim < 1 || sc->ndim > 2 || sc->shape[0] != rows || sc->numel == 0)
        return bad(qm->ctx, path, sc->name, "scales %s do not fit %lld output rows", sh,
                   (long long)rows);
    *groups = (int64_t)(sc->numel / (uint64_t)rows);
    return MQ_OK;
}

mq_status mq__ct_assemble(mq_qmodel *qm, const char *path, mq_qtensor *q, mq__qsrc *s,
                          const mq_tensor *data, size_t base_len, const char *meta) {
    mq_ctx *ctx = qm->ctx;
    const mq_model *m = qm->model;
    const char *base = data->name;
    bool packed = base_len != strlen(base);
    char sh[128];
    q->data = data;
    q->scale = mq__qm_find2(m, base, base_len, MQ__SUFFIX_SCALE);
    q->zero_point = mq__qm_find2(m, base, base_len, MQ__SUFFIX_ZERO);
    q->shape_tensor = packed ? mq__qm_find2(m, base, base_len, MQ__SUFFIX_SHAPE) : NULL;
    s->g_idx = mq__qm_find2(m, base, base_len, "_g_idx");
    MQ_TRY(input_params(qm, path, q));

    /* logical shape */
    if (packed) {
        const mq_tensor *st = q->shape_tensor;
        if (!st) return bad(ctx, path, q->name, "packed data without its weight_shape");
        if ((st->dtype != MQ_I64 && st->dtype != MQ_I32) || st->ndim > 1 || st->numel < 1 ||
            st->numel > MQ_MAX_DIMS)
            return bad(ctx, path, st->name, "must be I64 (or I32) [ndim]");
        q->ndim = (int)st->numel;
        for (int d = 0; d < q->ndim; d++)
            q->shape[d] = st->dtype == MQ_I64
                              ? (int64_t)mq__load_le64((const uint8_t *)st->data + 8 * d)
                              : (int32_t)mq__load_le32((const uint8_t *)st->data + 4 * d);
    } else {
        q->ndim = data->ndim;
        memcpy(q->shape, data->shape, sizeof q->shape);
    }
    if (q->ndim < 1) return bad(ctx, path, q->name, "quantized tensor without dimensions");
    int64_t rows = q->shape[0], cols = 1;
    for (int d = 1; d < q->ndim; d++) {
        if (q->shape[d] < 1 || cols > INT64_MAX / q->shape[d])
            return bad(ctx, path, q->name, "bad logical shape");
        cols *= q->shape[d];
    }
    /* bounds that keep every index below in range of int64 */
    if (rows < 1 || rows > ((int64_t)1 << 40) || cols > ((int64_t)1 << 48))
        return bad(ctx, path, q->name, "bad logical shape");

    /* settings: config.json group, else our metadata, else the tensors */
    mq_qspec mspec;
    mq_dtype morig = MQ_DTYPE_INVALID;
    bool have_meta = meta && mq__spec_from_meta(meta, &mspec, &morig);
    const mq__qargs *wa = NULL;
    int ignored = 0;
    size_t ml = base_len;
    if (ml > 7 && !strncmp(base + ml - 7, ".weight", 7)) ml -= 7;
    if (qm->cfg.method == MQ__QM_CT) {
        char *module = mq__strndup(ctx, base, ml);
        if (!module) return MQ_ERR_NOMEM;
        const mq__qgroup *g = mq__hfconfig_match(&qm->cfg, module, &ignored);
        mq__free(ctx, module);
        if (g && g->weights.present) wa = &g->weights;
    }
    if (wa && wa->is_float)
        return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: tensor '%s': float (FP8/FP4) weights are "
                        "not supported", path, q->name);
    int bits = wa && wa->num_bits ? wa->num_bits : 0;
    if (!bits && have_meta)
        bits = mq__qtype_bits(mspec.type) == 4 ? 4 : 8;
    if (!bits && !packed) bits = 8;
    if (!bits && data->ndim == 2) { /* from the packed width */
        if (data->shape[1] == ceil_div(cols, 8)) bits = 4;
        else if (data->shape[1] == ceil_div(cols, 4)) bits = 8;
        else if (data->shape[1] == ceil_div(cols, 16)) bits = 2;
    }
    if (bits != 4 && bits != 8)
        return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: tensor '%s': %d-bit integers are not "
                        "supported (4 and 8 are)", path, q->name, bits);
    int64_t pf = 32 / bits;

    /* data */
    shape_text(data, sh, sizeof sh);
    if (packed) {
        if (data->dtype != MQ_I32 || data->ndim != 2 || data->shape[0] != rows ||
            data->shape[1] != ceil_div(cols, pf))
            return bad(ctx, path, data->name, "is %s %s; %d-bit values of a [%lld, %lld] tensor "
                       "pack into I32 [%lld, %lld]", mq_dtype_name(data->dtype), sh, bits,
                       (long long)rows, (long long)cols, (long long)rows,
                       (long long)ceil_div(cols, pf));
    } else if (data->dtype != MQ_I8) {
        return bad(ctx, path, data->name, "8-bit data is %s, expected I8",
                   mq_dtype_name(data->dtype));
    }

    /* scales and strategy */
    int64_t groups = 0;
    MQ_TRY(scale_groups(qm, path, q->scale, rows, &groups));
    mq__strategy strat = wa ? wa->strategy : MQ__STRAT_UNKNOWN;
    if (strat == MQ__STRAT_UNKNOWN && have_meta)
        strat = mspec.granularity == MQ_PER_TENSOR ? MQ__STRAT_TENSOR
                : mspec.granularity == MQ_PER_CHANNEL ? MQ__STRAT_CHANNEL : MQ__STRAT_GROUP;
    if (strat == MQ__STRAT_UNKNOWN || strat == MQ__STRAT_OTHER || strat == MQ__STRAT_TOKEN)
        strat = groups == 0 ? MQ__STRAT_TENSOR : groups == 1 ? MQ__STRAT_CHANNEL : MQ__STRAT_GROUP;
    int64_t gs = cols;
    mq_granularity gran = MQ_PER_CHANNEL;
    if (strat == MQ__STRAT_TENSOR) {
        if (q->scale->numel != 1)
            return bad(ctx, path, q->scale->name, "per-tensor scheme with %llu scales",
                       (unsigned long long)q->scale->numel);
        gran = MQ_PER_TENSOR;
        groups = 1;
    } else if (strat == MQ__STRAT_CHANNEL) {
        if (groups != 1)
            return bad(ctx, path, q->scale->name, "per-channel scheme with %lld scales per row",
                       (long long)groups);
    } else {
        gs = wa && wa->group_size > 0 ? wa->group_size
             : have_meta && mspec.granularity == MQ_PER_GROUP ? mspec.group_size
             : groups > 0 ? ceil_div(cols, groups) : 0;
        if (groups < 1 || gs < 1)
            return bad(ctx, path, q->scale->name, "group scheme without per-row scales");
        /* with g_idx the groups need not follow the column order, but there are as many */
        int64_t g_need = ceil_div(cols, gs < cols ? gs : cols);
        if (g_need != groups)
            return bad(ctx, path, q->scale->name, "%lld scales per row, but %lld columns in "
                       "groups of %lld need %lld", (long long)groups, (long long)cols,
                       (long long)gs, (long long)g_need);
        gran = groups == 1 && !s->g_idx ? MQ_PER_CHANNEL : MQ_PER_GROUP;
    }
    s->groups = groups;

    /* zero points */
    int asym = q->zero_point != NULL;
    if (!asym && wa && wa->symmetric == 0)
        return bad(ctx, path, q->name, "asymmetric in %s but no weight_zero_point is stored",
                   qm->cfg.source ? qm->cfg.source : "the config");
    int64_t nscales = gran == MQ_PER_TENSOR ? 1 : rows * groups;
    if (asym) {
        const mq_tensor *z = q->zero_point;
        shape_text(z, sh, sizeof sh);
        if (packed && z->dtype == MQ_I32) {
            if (gran == MQ_PER_TENSOR || z->numel != (uint64_t)(ceil_div(rows, pf) * groups) ||
                (z->ndim == 2 && z->shape[1] != groups))
                return bad(ctx, path, z->name, "packed zero points %s; expected I32 [%lld, %lld] "
                           "(%d-bit values packed along the output dim)", sh,
                           (long long)ceil_div(rows, pf), (long long)groups, bits);
            s->zp_offset = 0;
        } else if (z->dtype == MQ_I8 && z->numel == (uint64_t)nscales) {
            s->zp_offset = packed ? 1 << (bits - 1) : 0;
        } else {
            return bad(ctx, path, z->name, "zero points are %s %s; expected %s with %lld values",
                       mq_dtype_name(z->dtype), sh,
                       packed && gran != MQ_PER_TENSOR ? "I32 packed along the output dim"
                                                       : "I8",
                       (long long)(packed && gran != MQ_PER_TENSOR
                                       ? ceil_div(rows, pf) * groups : nscales));
        }
    }
    if (s->g_idx && (s->g_idx->numel != (uint64_t)cols ||
                     (s->g_idx->dtype != MQ_I32 && s->g_idx->dtype != MQ_I64)))
        return bad(ctx, path, s->g_idx->name, "must be I32 with one group index per input "
                   "column (%lld)", (long long)cols);
    s->family = packed ? MQ__QF_CT_PACKED : MQ__QF_CT_INT;
    s->bits = bits;
    s->sym_zero = packed ? 1 << (bits - 1) : 0;
    q->dtype = have_meta ? morig
               : qm->cfg.torch_dtype != MQ_DTYPE_INVALID ? qm->cfg.torch_dtype
               : q->scale->dtype;
    add_bytes(q, s->g_idx);
    (void)ignored; /* a quantized tensor wins over an ignore entry: the tensors are the truth */
    return finish_spec(qm, path, q, bits == 4 ? MQ_Q_INT4 : MQ_Q_INT8, asym, gran, gs);
}

mq_status mq__gptq_assemble(mq_qmodel *qm, const char *path, mq_qtensor *q, mq__qsrc *s,
                            const mq_tensor *qw, size_t prefix_len) {
    mq_ctx *ctx = qm->ctx;
    const mq_model *m = qm->model;
    const char *p = qw->name;
    char sh[128];
    q->data = qw;
    q->scale = mq__qm_find2(m, p, prefix_len, ".scales");
    q->zero_point = mq__qm_find2(m, p, prefix_len, ".qzeros");
    s->g_idx = mq__qm_find2(m, p, prefix_len, ".g_idx");
    MQ_TRY(input_params(qm, path, q));
    const mq__hfconfig *c = &qm->cfg;
    bool have_cfg = c->method == MQ__QM_GPTQ;
    shape_text(qw, sh, sizeof sh);
    if (qw->ndim != 2) return bad(ctx, path, qw->name, "qweight %s is not 2-D", sh);
    int64_t kw = qw->shape[0], n = qw->shape[1];
    int bits = have_cfg ? c->bits : 0;
    if (!bits && s->g_idx && s->g_idx->numel && (uint64_t)kw * 32 % s->g_idx->numel == 0)
        bits = (int)((uint64_t)kw * 32 / s->g_idx->numel);
    if (!bits)
        return bad(ctx, path, qw->name, "GPTQ weights without quantize_config.json or a "
                   "quantization_config in config.json: the bit width is unknown");
    if (bits != 4 && bits != 8)
        return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: tensor '%s': %d-bit GPTQ weights are not "
                        "supported (4 and 8 are)", path, qw->name, bits);
    int64_t pf = 32 / bits;
    int64_t k = s->g_idx ? (int64_t)s->g_idx->numel : kw * pf;
    if (ceil_div(k, pf) != kw || n < 1 || k < 1)
        return bad(ctx, path, qw->name, "qweight %s does not hold %lld input columns of %d bits",
                   sh, (long long)k, bits);
    q->ndim = 2;
    q->shape[0] = n;
    q->shape[1] = k;
    const mq_tensor *sc = q->scale;
    if (!sc) return bad(ctx, path, q->name, "GPTQ layer without scales");
    shape_text(sc, sh, sizeof sh);
    if (!is_float16ish(sc->dtype) || sc->ndim != 2 || sc->shape[1] != n || sc->shape[0] < 1)
        return bad(ctx, path, sc->name, "scales %s %s; expected F16 [groups, %lld]",
                   mq_dtype_name(sc->dtype), sh, (long long)n);
    int64_t groups = sc->shape[0];
    int64_t gs = have_cfg && c->group_size > 0 ? c->group_size
                 : have_cfg && c->group_size == -1 ? k : ceil_div(k, groups);
    if (!s->g_idx && ceil_div(k, gs < k ? gs : k) != groups)
        return bad(ctx, path, sc->name, "%lld groups, but %lld columns in groups of %lld need "
                   "%lld", (long long)groups, (long long)k, (long long)gs,
                   (long long)ceil_div(k, gs));
    if (s->g_idx && s->g_idx->dtype != MQ_I32 && s->g_idx->dtype != MQ_I64)
        return bad(ctx, path, s->g_idx->name, "must be I32");
    if (q->zero_point) {
        const mq_tensor *z = q->zero_point;
        shape_text(z, sh, sizeof sh);
        if (z->dtype != MQ_I32 || z->ndim != 2 || z->shape[0] != groups ||
            z->shape[1] != ceil_div(n, pf))
            return bad(ctx, path, z->name, "qzeros %s %s; expected I32 [%lld, %lld]",
                       mq_dtype_name(z->dtype), sh, (long long)groups,
                       (long long)ceil_div(n, pf));
    }
    s->family = MQ__QF_GPTQ;
    s->bits = bits;
    s->groups = groups;
    s->sym_zero = 1 << (bits - 1);
    s->zp_plus_one = !(have_cfg && c->gptq_v2);
    q->dtype = c->torch_dtype != MQ_DTYPE_INVALID ? c->torch_dtype : sc->dtype;
    add_bytes(q, s->g_idx);
    int sym = have_cfg && c->sym == 1;
    mq_qtype type = bits == 4 ? (sym ? MQ_Q_INT4 : MQ_Q_UINT4) : (sym ? MQ_Q_INT8 : MQ_Q_UINT8);
    mq_granularity gran = groups == 1 && !s->g_idx ? MQ_PER_CHANNEL : MQ_PER_GROUP;
    return finish_spec(qm, path, q, type, !sym, gran, gs < k ? gs : k);
}

/* ---- decoding ------------------------------------------------------------------------- */

static inline uint32_t field(const void *words, int64_t w, int bits, int64_t pos) {
    uint32_t v = mq__load_le32((const uint8_t *)words + 4 * w);
    return (v >> (bits * pos)) & ((1u << bits) - 1u);
}

void mq__foreign_release(mq_qmodel *qm, size_t i) {
    mq__qsrc *s = &qm->src[i];
    mq__free(qm->ctx, s->scale);
    mq__free(qm->ctx, s->zero);
    mq__free(qm->ctx, s->gidx);
    s->scale = NULL;
    s->zero = NULL;
    s->gidx = NULL;
    if (qm->materialized == (long)i) qm->materialized = -1;
}

/* Scales, zero points and g_idx of tensor i as plain arrays in [row][group] order (only one
 * tensor's at a time, so memory does not grow with the model). */
static mq_status materialize(mq_qmodel *qm, size_t i) {
    if (qm->materialized == (long)i) return MQ_OK;
    if (qm->materialized >= 0) mq__foreign_release(qm, (size_t)qm->materialized);
    mq_ctx *ctx = qm->ctx;
    const mq_qtensor *q = &qm->t[i];
    mq__qsrc *s = &qm->src[i];
    int64_t rows = q->shape[0], cols = q->layout.cols, G = s->groups;
    int64_t nsc = q->spec.granularity == MQ_PER_TENSOR ? 1 : rows * G;
    int64_t pf = 32 / s->bits;
    s->scale = (float *)mq__malloc(ctx, (size_t)nsc * sizeof(float));
    if (!s->scale) return MQ_ERR_NOMEM;
    mq_status st = MQ_OK;
    if (s->family == MQ__QF_GPTQ) { /* [G, N] -> [N, G] */
        float *tmp = (float *)mq__malloc(ctx, (size_t)nsc * sizeof(float));
        if (!tmp) st = MQ_ERR_NOMEM;
        if (st == MQ_OK) st = mq_convert(ctx, MQ_F32, tmp, q->scale->dtype, q->scale->data,
                                         (size_t)nsc);
        if (st == MQ_OK)
            for (int64_t g = 0; g < G; g++)
                for (int64_t r = 0; r < rows; r++) s->scale[r * G + g] = tmp[g * rows + r];
        mq__free(ctx, tmp);
    } else {
        st = mq_convert(ctx, MQ_F32, s->scale, q->scale->dtype, q->scale->data, (size_t)nsc);
    }
    const mq_tensor *z = q->zero_point;
    if (st == MQ_OK && z) {
        s->zero = (int32_t *)mq__malloc(ctx, (size_t)nsc * sizeof(int32_t));
        if (!s->zero) st = MQ_ERR_NOMEM;
        else if (s->family == MQ__QF_GPTQ) {
            int64_t nw = z->shape[1];
            for (int64_t r = 0; r < rows; r++)
                for (int64_t g = 0; g < G; g++)
                    s->zero[r * G + g] = (int32_t)field(z->data, g * nw + r / pf, s->bits, r % pf) +
                                         s->zp_plus_one;
        } else if (z->dtype == MQ_I32) { /* compressed-tensors: packed along the output dim */
            for (int64_t r = 0; r < rows; r++)
                for (int64_t g = 0; g < G; g++)
                    s->zero[r * G + g] = (int32_t)field(z->data, (r / pf) * G + g, s->bits, r % pf);
        } else {
            for (int64_t k = 0; k < nsc; k++)
                s->zero[k] = (int32_t)((const int8_t *)z->data)[k] + s->zp_offset;
        }
    }
    if (st == MQ_OK && s->g_idx) {
        s->gidx = (int32_t *)mq__malloc(ctx, (size_t)cols * sizeof(int32_t));
        if (!s->gidx) st = MQ_ERR_NOMEM;
        for (int64_t c = 0; st == MQ_OK && c < cols; c++) {
            int64_t v = s->g_idx->dtype == MQ_I64
                            ? (int64_t)mq__load_le64((const uint8_t *)s->g_idx->data + 8 * c)
                            : (int32_t)mq__load_le32((const uint8_t *)s->g_idx->data + 4 * c);
            if (v < 0 || v >= G)
                st = mq__fail(ctx, MQ_ERR_VALIDATION, "tensor '%s': g_idx[%lld] is %lld, outside "
                              "the %lld groups", q->name, (long long)c, (long long)v, (long long)G);
            else
                s->gidx[c] = (int32_t)v;
        }
    }
    if (st == MQ_OK && s->gidx) { /* GPTQ stores g_idx even when it is just c / group_size */
        bool trivial = true;
        for (int64_t c = 0; c < cols && trivial; c++)
            trivial = s->gidx[c] == c / q->layout.group_size;
        if (trivial) {
            mq__free(ctx, s->gidx);
            s->gidx = NULL;
        }
    }
    if (st != MQ_OK) {
        qm->materialized = (long)i;
        mq__foreign_release(qm, i);
        return st;
    }
    qm->materialized = (long)i;
    return MQ_OK;
}

mq_status mq__foreign_verify(mq_qmodel *qm, size_t i) {
    mq_ctx *ctx = qm->ctx;
    MQ_TRY(materialize(qm, i));
    const mq_qtensor *q = &qm->t[i];
    const mq__qsrc *s = &qm->src[i];
    int64_t nsc = q->spec.granularity == MQ_PER_TENSOR ? 1 : q->shape[0] * s->groups;
    /* |code - zero| stays below 2^(bits+1), so this bounds every dequantized value */
    float span = (float)(2 << s->bits);
    for (int64_t k = 0; k < nsc; k++) {
        if (!isfinite(s->scale[k]) || !(s->scale[k] > 0))
            return mq__fail(ctx, MQ_ERR_VALIDATION, "tensor '%s': scale %lld is %g (must be "
                            "finite and > 0)", q->name, (long long)k, (double)s->scale[k]);
        if (!isfinite(s->scale[k] * span))
            return mq__fail(ctx, MQ_ERR_VALIDATION, "tensor '%s': scale %lld is %g: its "
                            "values dequantize beyond float32", q->name, (long long)k,
                            (double)s->scale[k]);
    }
    if (s->zero) {
        int lo = s->family == MQ__QF_CT_INT ? -128 : 0;
        int hi = s->family == MQ__QF_CT_INT ? 127 : (1 << s->bits) - 1;
        for (int64_t k = 0; k < nsc; k++) {
            int v = s->zero[k];
            if (v >= lo && v <= hi) continue;
            if (s->family == MQ__QF_GPTQ && v == hi + 1)
                return mq__fail(ctx, MQ_ERR_VALIDATION, "tensor '%s': zero point %lld is %d, "
                                "outside [0, %d]: GPTQ v1 stores zero - 1, so a zero point of 0 "
                                "wrapped around (write such layers as gptq_v2)", q->name,
                                (long long)k, v, hi);
            return mq__fail(ctx, MQ_ERR_VALIDATION, "tensor '%s': zero point %lld is %d, "
                            "outside [%d, %d]", q->name, (long long)k, v, lo, hi);
        }
    }
    return MQ_OK;
}

/* The stored code of element (r, c). */
static inline int32_t code_of(const mq_qtensor *q, const mq__qsrc *s, int64_t r, int64_t c) {
    const uint8_t *d = (const uint8_t *)q->data->data;
    int64_t pf = 32 / s->bits;
    switch (s->family) {
    case MQ__QF_CT_PACKED:
        return (int32_t)field(d, r * ((q->layout.cols + pf - 1) / pf) + c / pf, s->bits, c % pf);
    case MQ__QF_GPTQ: return (int32_t)field(d, (c / pf) * q->shape[0] + r, s->bits, c % pf);
    default: return (int8_t)d[r * q->layout.cols + c];
    }
}

mq_status mq__foreign_canonical(mq_qmodel *qm, size_t i, void **data, float **scale, void **zp) {
    mq_ctx *ctx = qm->ctx;
    *data = NULL, *scale = NULL, *zp = NULL;
    MQ_TRY(materialize(qm, i));
    const mq_qtensor *q = &qm->t[i];
    const mq__qsrc *s = &qm->src[i];
    const mq_qlayout *L = &q->layout;
    if (s->gidx)
        return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "tensor '%s': groups in activation order "
                        "(g_idx); the kernels take consecutive groups", q->name);
    /* codes of the signed types are stored + 2^(b-1) (CT int-quantized: as they are) */
    const mq_qformat *fmt = mq__qformat_of(q->spec.type);
    bool is_signed = fmt && fmt->integer && fmt->is_signed;
    int32_t sub = is_signed && s->family != MQ__QF_CT_INT ? 1 << (s->bits - 1) : 0;
    *data = mq__calloc(ctx, 1, (size_t)L->data_bytes);
    *scale = (float *)mq__malloc(ctx, (size_t)L->nscales * sizeof(float));
    if (L->has_zero_point) *zp = mq__malloc(ctx, (size_t)L->nscales);
    if (!*data || !*scale || (L->has_zero_point && !*zp)) return MQ_ERR_NOMEM;
    memcpy(*scale, s->scale, (size_t)L->nscales * sizeof(float));
    for (int64_t k = 0; L->has_zero_point && k < L->nscales; k++) {
        int32_t z = (s->zero ? s->zero[k] : s->sym_zero) - sub;
        ((uint8_t *)*zp)[k] = (uint8_t)z; /* I8 or U8, as the layout says */
    }
    uint8_t *out = (uint8_t *)*data;
    bool packed4 = L->data_dtype == MQ_I32;
    for (int64_t r = 0; r < L->rows; r++)
        for (int64_t c = 0; c < L->cols; c++) {
            int32_t v = code_of(q, s, r, c) - sub;
            if (!packed4) {
                out[r * L->cols + c] = (uint8_t)v;
                continue;
            }
            uint32_t nib = (uint32_t)(q->spec.type == MQ_Q_INT4 ? v + 8 : v) & 15u;
            out[(size_t)r * L->row_bytes + (size_t)c / 2] |= (uint8_t)(nib << (4 * (c % 2)));
        }
    return MQ_OK;
}

typedef struct decode_job {
    const mq_qtensor *q;
    const mq__qsrc *s;
    int64_t rb;
    float *out;
} decode_job;

static mq_status decode_range(void *arg, int64_t b, int64_t e, int tid) {
    (void)tid;
    const decode_job *j = (const decode_job *)arg;
    const mq_qtensor *q = j->q;
    const mq__qsrc *s = j->s;
    int64_t cols = q->layout.cols, G = s->groups, gs = q->layout.group_size;
    bool per_tensor = q->spec.granularity == MQ_PER_TENSOR;
    for (int64_t i = b; i < e; i++) {
        int64_t r = j->rb + i;
        float *o = j->out + i * cols;
        for (int64_t c = 0; c < cols; c++) {
            int32_t code = code_of(q, s, r, c);
            int64_t g = s->gidx ? s->gidx[c] : c / gs;
            int64_t si = per_tensor ? 0 : r * G + g;
            int32_t z = s->zero ? s->zero[si] : s->sym_zero;
            o[c] = (float)(code - z) * s->scale[si];
        }
    }
    return MQ_OK;
}

mq_status mq__foreign_read_rows(mq_qmodel *qm, size_t i, int64_t rb, int64_t re, float *out) {
    MQ_TRY(materialize(qm, i));
    decode_job j = {&qm->t[i], &qm->src[i], rb, out};
    int64_t cols = qm->t[i].layout.cols;
    int64_t grain = cols >= 65536 ? 1 : 65536 / cols;
    return mq__parallel_for(qm->ctx, re - rb, grain, decode_range, &j);
}
