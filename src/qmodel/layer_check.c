/* Running the layers of a quantized checkpoint through the quantized kernels and measuring
 * their output error against the f32 layer: what `monoquant validate --run` reports. */
#include "qmodel/qmodel_internal.h"
#include "quant/quant_internal.h"

#include <string.h>


int mq_qmodel_runnable(const mq_qmodel *qm, size_t i) {
    const mq_qtensor *q = qm ? mq_qmodel_tensor(qm, i) : NULL;
    return q && q->ndim >= 2 &&
           (mq__qtype_is_integer(q->spec.type) || mq__qtype_is_cast(q->spec.type));
}

/* `<layer>.bias` for the weight `name` when it is a float vector of n values, else -1. */
static long find_bias(const mq_qmodel *qm, const char *name, int64_t n) {
    size_t lp = mq__weight_layer_len(name, strlen(name));
    char bname[1100];
    if (!lp || lp + 6 >= sizeof bname) return -1;
    memcpy(bname, name, lp);
    memcpy(bname + lp, ".bias", 6);
    long b = mq_qmodel_find(qm, bname);
    if (b < 0) return -1;
    const mq_qtensor *t = mq_qmodel_tensor(qm, (size_t)b);
    bool float_data = mq__qtype_is_cast(t->spec.type) ||
                      (t->spec.type == MQ_Q_NONE && mq_dtype_is_float(t->data->dtype));
    return t->ndim == 1 && t->shape[0] == n && float_data ? b : -1;
}

mq_status mq_qmodel_check_layer(mq_qmodel *qm, size_t i, mq_qmodel *ref, mq_act_mode act,
                                const float *x, int64_t M, uint64_t seed, mq_layer_check *out) {
    mq_ctx *ctx = qm ? mq__qmodel_ctx(qm) : NULL;
    if (!qm || !out) return mq__fail(ctx, MQ_ERR_INVALID, "check layer: NULL argument");
    memset(out, 0, sizeof *out);
    if (i >= mq_qmodel_count(qm))
        return mq__fail(ctx, MQ_ERR_INVALID, "check layer: tensor index %zu out of range", i);
    const mq_qtensor *q = mq_qmodel_tensor(qm, i);
    if (!mq_qmodel_runnable(qm, i))
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': not a quantized layer of 2 or more "
                        "dims (stored as %s)", q->name, mq_qtype_name(q->spec.type));
    if (act != MQ_ACT_F32 && act != MQ_ACT_DYNAMIC && act != MQ_ACT_STATIC)
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': unknown activation mode %d", q->name,
                        (int)act);
    if (M < 1 || M > ((int64_t)1 << 24))
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': %lld input rows (1 to 2^24)",
                        q->name, (long long)M);
    int64_t N = q->shape[0];
    int64_t K = (int64_t)(q->numel / (uint64_t)N);
    long r = -1;
    if (ref) {
        r = mq_qmodel_find(ref, q->name);
        if (r < 0)
            return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': not in the reference", q->name);
        const mq_qtensor *rt = mq_qmodel_tensor(ref, (size_t)r);
        if (rt->numel != q->numel || rt->ndim < 1 || rt->shape[0] != N)
            return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': the reference has %llu elements "
                            "in %lld rows, the checkpoint %llu in %lld", q->name,
                            (unsigned long long)rt->numel, (long long)(rt->ndim ? rt->shape[0] : 1),
                            (unsigned long long)q->numel, (long long)N);
    }
    mq_linear_desc d;
    mq__layer_copy copy;
    MQ_TRY(mq__qmodel_linear_desc(qm, i, &act, &d, &copy));

    uint64_t nw;
    mq_status st = MQ_ERR_NOMEM;
    float *w = NULL, *bias = NULL;
    mq_linear *lin = NULL;
    long b = -1;
    if (!mq__mul_u64((uint64_t)N, (uint64_t)K, &nw) || nw > SIZE_MAX / 4) {
        st = mq__fail(ctx, MQ_ERR_NOMEM, "tensor '%s': too large to run", q->name);
        goto done;
    }
    b = find_bias(qm, q->name, N);
    w = (float *)mq__malloc(ctx, (size_t)nw * 4);
    bias = b >= 0 ? (float *)mq__malloc(ctx, (size_t)N * 4) : NULL;
    if (!w || (b >= 0 && !bias)) goto done;
    st = ref ? mq_qmodel_read_rows(ref, (size_t)r, 0, N, w) : mq_qmodel_read_rows(qm, i, 0, N, w);
    if (st == MQ_OK && b >= 0) st = mq_qmodel_read_rows(qm, (size_t)b, 0, N, bias);
    d.bias = bias;
    if (st == MQ_OK) {
        st = mq_linear_create(ctx, &d, &lin);
        if (st != MQ_OK) st = mq__fail_prefix(ctx, "tensor '%s'", q->name);
    }
    if (st == MQ_OK) st = mq_linear_check(ctx, lin, w, bias, x, M, seed, &out->error);
    if (st == MQ_OK) {
        out->out_features = N;
        out->in_features = K;
        out->act = act;
        out->against_reference = ref != NULL;
        out->has_bias = b >= 0;
    }
done:
    mq__layer_copy_free(ctx, &copy);
    mq_linear_free(lin);
    mq__free(ctx, w);
    mq__free(ctx, bias);
    return st;
}
