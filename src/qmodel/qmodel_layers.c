/* Kernel objects (mq_linear, mq_conv2d) built from the stored tensors of a quantized
 * checkpoint, so that callers never read the storage layout themselves. */
#include "qmodel/qmodel_internal.h"
#include "quant/quant_internal.h"

#include <string.h>

/* Static activation parameters as the kernels take them (quint8: zero point in [0, 255]).
 * Returns false when the checkpoint stores none. */
static bool static_params(const mq_qtensor *q, float *scale, int *zp) {
    if (!q->input_scale || !q->input_zero_point) return false;
    if (q->input_scale->dtype == MQ_F32) memcpy(scale, q->input_scale->data, 4);
    else if (q->input_scale->dtype == MQ_F16)
        *scale = mq_f16_to_f32(mq__load_le16(q->input_scale->data));
    else *scale = mq_bf16_to_f32(mq__load_le16(q->input_scale->data));
    if (q->input_zero_point->dtype == MQ_U8) {
        uint8_t v;
        memcpy(&v, q->input_zero_point->data, 1);
        *zp = v;
    } else { /* qint8: q in [-128, 127] with zero point z is q + 128 with zero point z + 128 */
        int8_t v;
        memcpy(&v, q->input_zero_point->data, 1);
        *zp = v + 128;
    }
    return true;
}

void mq__layer_copy_free(mq_ctx *ctx, mq__layer_copy *c) {
    mq__free(ctx, c->data);
    mq__free(ctx, c->scale);
    mq__free(ctx, c->zp);
    memset(c, 0, sizeof *c);
}

mq_status mq__qmodel_linear_desc(mq_qmodel *qm, size_t i, mq_act_mode *act, mq_linear_desc *d,
                                 mq__layer_copy *copy) {
    memset(copy, 0, sizeof *copy);
    const mq_qtensor *q = mq_qmodel_tensor(qm, i);
    int64_t N = q->shape[0];
    int64_t K = (int64_t)(q->numel / (uint64_t)N);
    if (mq__qtype_is_integer(q->spec.type) && q->storage && strcmp(q->storage, "monoquant") != 0) {
        /* other tools' layouts run from a copy in monoquant's layout */
        mq_status st = mq__foreign_canonical(qm, i, &copy->data, &copy->scale, &copy->zp);
        if (st != MQ_OK) {
            mq__layer_copy_free(mq__qmodel_ctx(qm), copy);
            return st;
        }
        mq_linear_desc_from_qspec(d, &q->spec, N, K, copy->data, copy->scale, copy->zp);
    } else if (mq__qtype_is_cast(q->spec.type)) {
        mq_linear_desc_init(d, q->spec.type, N, K, q->data->data);
        *act = MQ_ACT_F32;
    } else {
        mq_linear_desc_from_qspec(d, &q->spec, N, K, q->data->data,
                                  (const float *)q->scale->data,
                                  q->zero_point ? q->zero_point->data : NULL);
    }
    if (*act == MQ_ACT_STATIC && !static_params(q, &d->input_scale, &d->input_zero_point))
        *act = MQ_ACT_DYNAMIC;
    d->act = *act;
    return MQ_OK;
}

/* Checks index, runnability and mode; fills *d (and *copy, to free after creating). */
static mq_status layer_desc(mq_ctx *ctx, mq_qmodel *qm, size_t i, mq_act_mode *act, const float *bias,
                            mq_linear_desc *d, mq__layer_copy *copy, const char *what) {
    memset(copy, 0, sizeof *copy);
    if (i >= mq_qmodel_count(qm))
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: tensor index %zu out of range", what, i);
    const mq_qtensor *q = mq_qmodel_tensor(qm, i);
    if (!mq_qmodel_runnable(qm, i))
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': not a quantized layer of 2 or more "
                        "dims (stored as %s)", q->name, mq_qtype_name(q->spec.type));
    if (*act != MQ_ACT_F32 && *act != MQ_ACT_DYNAMIC && *act != MQ_ACT_STATIC)
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': unknown activation mode %d", q->name,
                        *act);
    mq_ctx *qctx = mq__qmodel_ctx(qm);
    mq_status st = mq__qmodel_linear_desc(qm, i, act, d, copy);
    if (st != MQ_OK)
        return qctx == ctx ? st : mq__fail(ctx, st, "%s", mq_ctx_message(qctx));
    d->bias = bias;
    return MQ_OK;
}

mq_status mq_qmodel_linear_create(mq_ctx *ctx, mq_qmodel *qm, size_t i, mq_act_mode act,
                                  const float *bias, mq_linear **out, mq_act_mode *act_used) {
    if (out) *out = NULL;
    if (!ctx || !qm || !out) return mq__fail(ctx, MQ_ERR_INVALID, "mq_qmodel_linear_create: NULL argument");
    mq_linear_desc d;
    mq__layer_copy copy;
    MQ_TRY(layer_desc(ctx, qm, i, &act, bias, &d, &copy, "mq_qmodel_linear_create"));
    mq_status st = mq_linear_create(ctx, &d, out);
    mq__layer_copy_free(mq__qmodel_ctx(qm), &copy);
    if (st != MQ_OK) return mq__fail_prefix(ctx, "tensor '%s'", mq_qmodel_tensor(qm, i)->name);
    if (act_used) *act_used = act;
    return MQ_OK;
}

mq_status mq_qmodel_conv2d_create(mq_ctx *ctx, mq_qmodel *qm, size_t i, mq_act_mode act,
                                  const float *bias, const mq_conv2d_desc *geometry,
                                  mq_conv2d **out, mq_act_mode *act_used) {
    if (out) *out = NULL;
    if (!ctx || !qm || !geometry || !out)
        return mq__fail(ctx, MQ_ERR_INVALID, "mq_qmodel_conv2d_create: NULL argument");
    mq_linear_desc d;
    mq__layer_copy copy;
    MQ_TRY(layer_desc(ctx, qm, i, &act, bias, &d, &copy, "mq_qmodel_conv2d_create"));
    mq_status st = mq_conv2d_create(ctx, &d, geometry, out);
    mq__layer_copy_free(mq__qmodel_ctx(qm), &copy);
    if (st != MQ_OK) return mq__fail_prefix(ctx, "tensor '%s'", mq_qmodel_tensor(qm, i)->name);
    if (act_used) *act_used = act;
    return MQ_OK;
}
