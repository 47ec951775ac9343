/* Quantization parameters: integer formats, PyTorch's min/max rule, clipping candidates for
 * the MSE search, spec defaults and storage layouts. */
#include "quant/quant_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

void mq__qround_init(const mq_qformat *f, mq_qparam p, mq_qround *out) {
    out->scale = p.scale;
    out->inv = 1.0f / p.scale;
    out->lo = (float)(f->qmin - p.zp);
    out->hi = (float)(f->qmax - p.zp);
}

static int32_t clamp_i32(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Symmetric zero point: 0 for signed types, the mid-range for unsigned ones (PyTorch uses 128
 * for quint8). */
static int32_t symmetric_zp(const mq_qformat *f) {
    return f->qmin < 0 ? 0 : (f->qmin + f->qmax + 1) / 2;
}

/* PyTorch's rule on the widened range [lo <= 0, hi >= 0], with the range multiplied by `ratio`
 * (1 for min/max); every step in float32 as torch does. */
static mq_qparam symmetric_param(const mq_qformat *f, float lo, float hi, float ratio) {
    float amax = -lo > hi ? -lo : hi;
    float half = (float)(f->qmax - f->qmin) / 2.0f;
    float s = ratio == 1.0f ? amax : amax * ratio;
    s = s / half;
    if (!(s >= FLT_EPSILON)) s = FLT_EPSILON;
    return (mq_qparam){s, symmetric_zp(f)};
}

static mq_qparam asymmetric_param(const mq_qformat *f, float lo, float hi, float ratio) {
    float width = hi - lo;
    float s = ratio == 1.0f ? width : width * ratio;
    s = s / (float)(f->qmax - f->qmin);
    if (!(s >= FLT_EPSILON)) s = FLT_EPSILON;
    float l = ratio == 1.0f ? lo : lo * ratio;
    int32_t zp = f->qmin - (int32_t)nearbyintf(l / s);
    return (mq_qparam){s, clamp_i32(zp, f->qmin, f->qmax)};
}

mq_qparam mq__qparam_minmax(const mq_qformat *f, mq_scheme scheme, float mn, float mx) {
    float lo = mn < 0.0f ? mn : 0.0f, hi = mx > 0.0f ? mx : 0.0f;
    return scheme == MQ_SYMMETRIC ? symmetric_param(f, lo, hi, 1.0f)
                                  : asymmetric_param(f, lo, hi, 1.0f);
}

int mq__qcandidates(const mq_qformat *f, mq_scheme scheme, float mn, float mx, int stage,
                    float center, mq_qcand *out) {
    float lo = mn < 0.0f ? mn : 0.0f, hi = mx > 0.0f ? mx : 0.0f;
    bool sym = scheme == MQ_SYMMETRIC;
    int n = 0;
    if (stage == 0) {
        /* candidate 0: PyTorch's rule; then ratios 1.1 (symmetric only: the positive side
         * of [qmin, qmax] is one step shorter) down to 0.5 in steps of 0.05 */
        out[n++] = (mq_qcand){sym ? symmetric_param(f, lo, hi, 1.0f)
                                  : asymmetric_param(f, lo, hi, 1.0f), 1.0f};
        if (lo == 0.0f && hi == 0.0f) return n; /* nothing to search */
        for (int k = sym ? -2 : 1; k <= 10; k++) {
            if (k == 0) continue;
            float r = 1.0f - 0.05f * (float)k;
            out[n++] = (mq_qcand){sym ? symmetric_param(f, lo, hi, r)
                                      : asymmetric_param(f, lo, hi, r), r};
        }
        return n;
    }
    /* stage 1: the neighbours half a step either side of the stage-0 winner, and for
     * asymmetric ranges the zero point one step either way at those three ratios */
    for (int k = -1; k <= 1; k++) {
        float r = center + 0.025f * (float)k;
        mq_qparam p = sym ? symmetric_param(f, lo, hi, r) : asymmetric_param(f, lo, hi, r);
        if (k != 0) out[n++] = (mq_qcand){p, r};
        if (sym) continue;
        if (p.zp > f->qmin) out[n++] = (mq_qcand){{p.scale, p.zp - 1}, r};
        if (p.zp < f->qmax) out[n++] = (mq_qcand){{p.scale, p.zp + 1}, r};
    }
    return n;
}

void mq_qspec_default(mq_qspec *spec) {
    if (!spec) return;
    memset(spec, 0, sizeof *spec);
    spec->type = MQ_Q_INT8;
    spec->scheme = MQ_SYMMETRIC;
    spec->granularity = MQ_PER_CHANNEL;
    spec->group_size = 128;
    spec->search = MQ_SEARCH_MINMAX;
}

void mq_calib_data_init_sized(mq_calib_data *data, size_t struct_size) {
    mq_calib_data d;
    memset(&d, 0, sizeof d);
    mq__struct_default(data, struct_size, &d, sizeof d);
}

void mq_qspec_recommended(mq_qspec *spec, mq_qtype type) {
    if (!spec) return;
    mq_qspec_default(spec);
    spec->type = type;
    switch (type) {
    case MQ_Q_UINT8: spec->scheme = MQ_ASYMMETRIC; break;
    case MQ_Q_INT4:
    case MQ_Q_UINT4:
        spec->scheme = type == MQ_Q_INT4 ? MQ_SYMMETRIC : MQ_ASYMMETRIC;
        spec->granularity = MQ_PER_GROUP;
        spec->search = MQ_SEARCH_MSE;
        break;
    default: break;
    }
}

static mq_dtype data_dtype_of(mq_qtype t) {
    const mq_qformat *f = mq__qformat_of(t);
    return f ? f->storage : MQ_DTYPE_INVALID;
}

mq_status mq_qlayout_init(mq_ctx *ctx, const mq_qspec *spec, int ndim, const int64_t *shape,
                          mq_qlayout *out) {
    if (!spec || !out || (ndim > 0 && !shape))
        return mq__fail(ctx, MQ_ERR_INVALID, "quantization layout: NULL argument");
    memset(out, 0, sizeof *out);
    mq_dtype dd = data_dtype_of(spec->type);
    if (dd == MQ_DTYPE_INVALID)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantization layout: type %d has no layout",
                        (int)spec->type);
    if (ndim < 1 || ndim > MQ_MAX_DIMS)
        return mq__fail(ctx, MQ_ERR_INVALID,
                        "quantization layout: %d dimensions (expected 1 to %d)", ndim,
                        MQ_MAX_DIMS);
    uint64_t cols = 1, numel;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1)
            return mq__fail(ctx, MQ_ERR_INVALID,
                            "quantization layout: dimension %d is %lld (empty tensors are "
                            "not quantized)", i, (long long)shape[i]);
        if (i > 0 && !mq__mul_u64(cols, (uint64_t)shape[i], &cols))
            return mq__fail(ctx, MQ_ERR_INVALID, "quantization layout: size overflows");
    }
    uint64_t rows = (uint64_t)shape[0];
    /* every later offset (rows * cols * 8 bytes of F64 input) must fit */
    if (!mq__mul_u64(rows, cols, &numel) || numel > (uint64_t)INT64_MAX / 8)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantization layout: size overflows");
    out->rows = (int64_t)rows;
    out->cols = (int64_t)cols;
    out->data_dtype = dd;
    out->ndata_dims = ndim;
    memcpy(out->data_shape, shape, (size_t)ndim * sizeof *shape);
    mq_qformat f;
    if (!mq__qformat(spec->type, &f)) { /* casts */
        out->row_bytes = cols * 2;
        out->data_bytes = numel * 2;
        out->scale_dtype = MQ_DTYPE_INVALID;
        out->zero_point_dtype = MQ_DTYPE_INVALID;
        return MQ_OK;
    }
    if (spec->scheme != MQ_SYMMETRIC && spec->scheme != MQ_ASYMMETRIC)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantization layout: unknown scheme %d",
                        (int)spec->scheme);
    if (spec->search != MQ_SEARCH_MINMAX && spec->search != MQ_SEARCH_MSE &&
        spec->search != MQ_SEARCH_GPTQ)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantization layout: unknown scale search %d",
                        (int)spec->search);
    out->qmin = f.qmin;
    out->qmax = f.qmax;
    switch (spec->granularity) {
    case MQ_PER_TENSOR:
    case MQ_PER_CHANNEL:
        out->groups_per_row = 1;
        out->group_size = out->last_group_size = (int64_t)cols;
        out->nscales = spec->granularity == MQ_PER_TENSOR ? 1 : (int64_t)rows;
        break;
    case MQ_PER_GROUP: {
        if (spec->group_size < 1)
            return mq__fail(ctx, MQ_ERR_INVALID, "quantization layout: group size %d",
                            spec->group_size);
        uint64_t g = (uint64_t)spec->group_size < cols ? (uint64_t)spec->group_size : cols;
        uint64_t gpr = (cols + g - 1) / g;
        out->group_size = (int64_t)g;
        out->groups_per_row = (int64_t)gpr;
        out->last_group_size = (int64_t)(cols - (gpr - 1) * g);
        out->nscales = (int64_t)(rows * gpr); /* <= numel */
        break;
    }
    default:
        return mq__fail(ctx, MQ_ERR_INVALID, "quantization layout: unknown granularity %d",
                        (int)spec->granularity);
    }
    out->scale_dtype = MQ_F32;
    out->has_zero_point = spec->scheme == MQ_ASYMMETRIC || f.qmin == 0;
    out->zero_point_dtype = f.zero_point_dtype;
    if (f.packed4) {
        uint64_t words = (cols + 7) / 8;
        out->ndata_dims = 2;
        memset(out->data_shape, 0, sizeof out->data_shape);
        out->data_shape[0] = (int64_t)rows;
        out->data_shape[1] = (int64_t)words;
        out->row_bytes = words * 4;
        out->data_bytes = rows * words * 4;
    } else {
        out->row_bytes = cols;
        out->data_bytes = numel;
    }
    return MQ_OK;
}
