/* Strided batches of F32/F16/BF16/F64 values, walked in row-major order in float chunks. */
#include "calib/calib_internal.h"

#include <stdio.h>
#include <string.h>

#define CHUNK 1024

mq_status mq__batch_view_init(mq_ctx *ctx, const char *what, mq_dtype dtype, const void *x,
                              int ndim, const int64_t *shape, const int64_t *strides, int axis,
                              bool per_tensor, int64_t channels, mq_batch_view *out) {
    memset(out, 0, sizeof *out);
    if (dtype != MQ_F32 && dtype != MQ_F16 && dtype != MQ_BF16 && dtype != MQ_F64)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: values of dtype %s cannot be observed "
                        "(F32, F16, BF16 or F64)", what, mq_dtype_name(dtype));
    if (ndim < 1 || ndim > MQ_MAX_DIMS || !shape)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: a batch needs 1 to %d dimensions, not %d",
                        what, MQ_MAX_DIMS, ndim);
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || !mq__mul_u64(numel, (uint64_t)shape[d], &numel))
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: invalid batch shape (dimension %d is %lld)",
                            what, d, (long long)shape[d]);
        if (strides && strides[d] < 0)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: negative stride in dimension %d", what, d);
    }
    if (numel && !x) return mq__fail(ctx, MQ_ERR_INVALID, "%s: NULL data", what);
    int ax = -1;
    if (!per_tensor) {
        ax = axis < 0 ? axis + ndim : axis;
        if (ax < 0 || ax >= ndim)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: channel axis %d is out of range for %d "
                            "dimensions", what, axis, ndim);
        if (channels > 0 && shape[ax] != channels)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: the batch has %lld channels (dimension "
                            "%d), the observer %lld", what, (long long)shape[ax], ax,
                            (long long)channels);
    }
    out->base = (const uint8_t *)x;
    out->dtype = dtype;
    out->numel = numel;
    out->orig_ndim = ndim;
    for (int d = 0; d < ndim; d++) out->orig_shape[d] = shape[d];
    /* Contiguous strides where none are given, then merge neighbours that are contiguous with
     * each other and are not the channel axis: fewer, longer runs. */
    int64_t st[MQ_MAX_DIMS];
    int64_t acc = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        st[d] = strides ? strides[d] : acc;
        acc *= shape[d] ? shape[d] : 1;
    }
    int n = 0;
    for (int d = 0; d < ndim; d++) {
        if (n > 0 && d != ax && d - 1 != ax && out->stride[n - 1] == shape[d] * st[d]) {
            out->shape[n - 1] *= shape[d];
            out->stride[n - 1] = st[d];
            continue;
        }
        if (d == ax) out->axis = n;
        out->shape[n] = shape[d];
        out->stride[n] = st[d];
        n++;
    }
    out->ndim = n;
    if (ax < 0) out->axis = -1;
    return MQ_OK;
}

static void load_chunk(const mq_batch_view *v, const uint8_t *p, int64_t stride, int64_t n,
                       float *dst) {
    switch (v->dtype) {
    case MQ_F32:
        if (stride == 1) memcpy(dst, p, (size_t)n * 4);
        else
            for (int64_t i = 0; i < n; i++) memcpy(&dst[i], p + (size_t)(i * stride) * 4, 4);
        break;
    case MQ_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + (size_t)(i * stride) * 8, 8);
            dst[i] = (float)d;
        }
        break;
    case MQ_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = mq_f16_to_f32(mq__load_le16(p + (size_t)(i * stride) * 2));
        break;
    default: /* BF16 */
        for (int64_t i = 0; i < n; i++)
            dst[i] = mq_bf16_to_f32(mq__load_le16(p + (size_t)(i * stride) * 2));
        break;
    }
}

bool mq__batch_view_walk(const mq_batch_view *v, mq_chunk_fn fn, void *arg) {
    if (!v->numel) return true;
    float buf[CHUNK];
    size_t es = mq_dtype_size(v->dtype);
    int last = v->ndim - 1;
    int64_t idx[MQ_MAX_DIMS] = {0};
    int64_t len = v->shape[last], sl = v->stride[last];
    uint64_t flat = 0;
    for (;;) {
        int64_t off = 0;
        for (int d = 0; d < last; d++) off += idx[d] * v->stride[d];
        const uint8_t *row = v->base + (size_t)off * es;
        for (int64_t j = 0; j < len; j += CHUNK) {
            int64_t k = len - j < CHUNK ? len - j : CHUNK;
            load_chunk(v, row + (size_t)(j * sl) * es, sl, k, buf);
            int64_t ch = 0;
            int step = 0;
            if (v->axis == last) ch = j, step = 1;
            else if (v->axis >= 0) ch = idx[v->axis];
            if (!fn(arg, buf, k, ch, step, flat + (uint64_t)j)) return false;
        }
        flat += (uint64_t)len;
        int d = last - 1;
        for (; d >= 0; d--) {
            if (++idx[d] < v->shape[d]) break;
            idx[d] = 0;
        }
        if (d < 0) return true;
    }
}

void mq__batch_view_index(const mq_batch_view *v, uint64_t flat, char *buf, size_t cap) {
    int64_t idx[MQ_MAX_DIMS];
    for (int d = v->orig_ndim - 1; d >= 0; d--) {
        int64_t s = v->orig_shape[d] ? v->orig_shape[d] : 1;
        idx[d] = (int64_t)(flat % (uint64_t)s);
        flat /= (uint64_t)s;
    }
    size_t used = 0;
    for (int d = 0; d < v->orig_ndim && used < cap; d++) {
        int k = snprintf(buf + used, cap - used, "%s%lld", d ? ", " : "[", (long long)idx[d]);
        if (k < 0) break;
        used += (size_t)k;
    }
    if (used < cap) snprintf(buf + used, cap - used, "]");
}
