/* Conv2d as im2col + the Linear kernels: one mq_linear per convolution group, whose rows are
 * that group's output channels and whose K runs over (input channel, kernel row, kernel
 * column) as in the flattened weight [C_out, C_in / groups, kh, kw]. */
#include "kernels/kernels.h"

#include <string.h>

struct mq_conv2d {
    mq_ctx *ctx;
    mq_conv2d_desc d;
    int64_t K, ocg, icg;   /* per group: K, output and input channels */
    mq_linear **lin;       /* one per group */
    float *scratch;
    size_t scratch_cap;    /* floats */
};

void mq_conv2d_free(mq_conv2d *c) {
    if (!c) return;
    if (c->lin)
        for (int g = 0; g < c->d.groups; g++) mq_linear_free(c->lin[g]);
    mq__free(c->ctx, c->lin);
    mq__free(c->ctx, c->scratch);
    mq__free(c->ctx, c);
}

/* Bytes of one weight row (K elements) in the stored format. */
static uint64_t row_bytes(const mq_linear_desc *w, int64_t K) {
    switch (w->type) {
    case MQ_Q_NONE: return (uint64_t)K * (w->weight_dtype == MQ_F16 || w->weight_dtype == MQ_BF16 ? 2 : 4);
    case MQ_Q_FP16: case MQ_Q_BF16: return (uint64_t)K * 2;
    case MQ_Q_INT4: case MQ_Q_UINT4: return (uint64_t)(K + 7) / 8 * 4;
    default: return (uint64_t)K;
    }
}

/* Scale (and zero point) entries per output channel; 0 when one is shared by the tensor. */
static int64_t params_per_row(const mq_linear_desc *w, int64_t K) {
    if (w->granularity == MQ_PER_TENSOR) return 0;
    if (w->granularity == MQ_PER_GROUP && w->group_size > 0 && w->group_size < K)
        return (K + w->group_size - 1) / w->group_size;
    return 1;
}

void mq_conv2d_desc_init_sized(mq_conv2d_desc *desc, size_t struct_size, int64_t in_channels,
                               int kernel_h, int kernel_w) {
    mq_conv2d_desc d;
    memset(&d, 0, sizeof d);
    d.in_channels = in_channels;
    d.kernel_h = kernel_h;
    d.kernel_w = kernel_w;
    d.stride_h = d.stride_w = 1;
    d.dilation_h = d.dilation_w = 1;
    d.groups = 1;
    mq__struct_default(desc, struct_size, &d, sizeof d);
}

mq_status mq_conv2d_create(mq_ctx *ctx, const mq_linear_desc *weights,
                           const mq_conv2d_desc *desc, mq_conv2d **out) {
    *out = NULL;
    if (!desc) return mq__fail(ctx, MQ_ERR_INVALID, "conv2d: no description");
    mq_linear_desc wd;
    MQ_TRY(mq__linear_desc_read(ctx, weights, &wd));
    mq_conv2d_desc d;
    mq_conv2d_desc_init(&d, 0, 0, 0);
    MQ_TRY(mq__struct_read(ctx, "mq_conv2d_desc", desc, &d, sizeof d,
                           MQ__LAYOUT_END(mq_conv2d_desc, groups)));
    if (!d.stride_h) d.stride_h = 1;
    if (!d.stride_w) d.stride_w = 1;
    if (!d.dilation_h) d.dilation_h = 1;
    if (!d.dilation_w) d.dilation_w = 1;
    if (!d.groups) d.groups = 1;
    int64_t oc = wd.out_features;
    if (d.kernel_h < 1 || d.kernel_w < 1 || d.stride_h < 1 || d.stride_w < 1 || d.pad_h < 0 ||
        d.pad_w < 0 || d.dilation_h < 1 || d.dilation_w < 1 || d.groups < 1 ||
        d.in_channels < 1 || oc < 1 || d.in_channels % d.groups || oc % d.groups ||
        d.kernel_h > 65536 || d.kernel_w > 65536 || d.in_channels > ((int64_t)1 << 32))
        return mq__fail(ctx, MQ_ERR_INVALID, "conv2d: bad geometry (C_in %lld, C_out %lld, "
                        "kernel %dx%d, stride %dx%d, padding %dx%d, dilation %dx%d, groups %d)",
                        (long long)d.in_channels, (long long)oc, d.kernel_h, d.kernel_w,
                        d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dilation_h, d.dilation_w,
                        d.groups);
    int64_t icg = d.in_channels / d.groups, K = icg * d.kernel_h * d.kernel_w;
    if (wd.in_features != K)
        return mq__fail(ctx, MQ_ERR_INVALID, "conv2d: weight in_features %lld, expected C_in / "
                        "groups * kh * kw = %lld", (long long)wd.in_features, (long long)K);
    mq_conv2d *c = (mq_conv2d *)mq__calloc(ctx, 1, sizeof *c);
    if (!c) return MQ_ERR_NOMEM;
    c->ctx = ctx;
    c->d = d;
    c->K = K;
    c->icg = icg;
    c->ocg = oc / d.groups;
    c->lin = (mq_linear **)mq__calloc(ctx, (size_t)d.groups, sizeof *c->lin);
    if (!c->lin) {
        mq_conv2d_free(c);
        return MQ_ERR_NOMEM;
    }
    int64_t ppr = params_per_row(&wd, K);
    uint64_t rb = row_bytes(&wd, K);
    for (int g = 0; g < d.groups; g++) {
        mq_linear_desc w = wd;
        int64_t r0 = g * c->ocg;
        w.out_features = c->ocg;
        w.weight = wd.weight ? (const char *)wd.weight + (uint64_t)r0 * rb : NULL;
        if (wd.scale && ppr) w.scale = wd.scale + r0 * ppr;
        if (wd.zero_point && ppr) w.zero_point = (const char *)wd.zero_point + r0 * ppr;
        if (wd.bias) w.bias = wd.bias + r0;
        mq_status st = mq_linear_create(ctx, &w, &c->lin[g]);
        if (st != MQ_OK) {
            mq_conv2d_free(c);
            return mq__fail_prefix(ctx, "conv2d group %d", g);
        }
    }
    *out = c;
    return MQ_OK;
}

static bool out_size(const mq_conv2d_desc *d, int64_t h, int64_t w, int64_t *oh, int64_t *ow) {
    int64_t eh = h + 2 * (int64_t)d->pad_h - (int64_t)d->dilation_h * (d->kernel_h - 1) - 1;
    int64_t ew = w + 2 * (int64_t)d->pad_w - (int64_t)d->dilation_w * (d->kernel_w - 1) - 1;
    if (h < 1 || w < 1 || h > ((int64_t)1 << 31) || w > ((int64_t)1 << 31) || eh < 0 || ew < 0)
        return false;
    *oh = eh / d->stride_h + 1;
    *ow = ew / d->stride_w + 1;
    return true;
}

mq_status mq_conv2d_output_size(mq_ctx *ctx, const mq_conv2d *c, int64_t h, int64_t w,
                                int64_t *oh, int64_t *ow) {
    if (!out_size(&c->d, h, w, oh, ow))
        return mq__fail(ctx, MQ_ERR_INVALID, "conv2d: a %lldx%lld input is smaller than the "
                        "dilated kernel", (long long)h, (long long)w);
    return MQ_OK;
}

typedef struct im2col_job {
    const mq_conv2d *c;
    const float *x;
    int64_t h, w, ow;
    float *cols;
} im2col_job;

/* cols[p][k] for the output rows [oy0, oy1): p = output pixel, k = (c, i, j), zeros where the
 * kernel reads padding. */
static mq_status im2col_rows(void *arg, int64_t oy0, int64_t oy1, int tid) {
    (void)tid;
    const im2col_job *jb = (const im2col_job *)arg;
    const mq_conv2d *c = jb->c;
    const mq_conv2d_desc *d = &c->d;
    int64_t h = jb->h, w = jb->w, ow = jb->ow;
    for (int64_t oy = oy0; oy < oy1; oy++)
        for (int64_t ox = 0; ox < ow; ox++) {
            float *row = jb->cols + (oy * ow + ox) * c->K;
            for (int64_t ch = 0; ch < c->icg; ch++)
                for (int i = 0; i < d->kernel_h; i++) {
                    int64_t iy = oy * d->stride_h - d->pad_h + (int64_t)i * d->dilation_h;
                    const float *src = jb->x + (ch * h + iy) * w;
                    for (int j = 0; j < d->kernel_w; j++) {
                        int64_t ix = ox * d->stride_w - d->pad_w + (int64_t)j * d->dilation_w;
                        *row++ = iy >= 0 && iy < h && ix >= 0 && ix < w ? src[ix] : 0.0f;
                    }
                }
        }
    return MQ_OK;
}

mq_status mq_conv2d_forward(mq_ctx *ctx, mq_conv2d *c, const float *x, int64_t batch, int64_t h,
                            int64_t w, float *y) {
    int64_t oh, ow;
    if (batch < 0) return mq__fail(ctx, MQ_ERR_INVALID, "conv2d: batch %lld", (long long)batch);
    MQ_TRY(mq_conv2d_output_size(ctx, c, h, w, &oh, &ow));
    if (batch == 0) return MQ_OK;
    uint64_t P = (uint64_t)oh * (uint64_t)ow, need, outn;
    if (!mq__mul_u64(P, (uint64_t)c->K, &need) || !mq__mul_u64(P, (uint64_t)c->ocg, &outn) ||
        !mq__add_u64(need, outn, &need) || need > SIZE_MAX / 4)
        return mq__fail(ctx, MQ_ERR_NOMEM, "conv2d: output of %llu pixels is too large",
                        (unsigned long long)P);
    if (need > c->scratch_cap) {
        mq__free(c->ctx, c->scratch);
        c->scratch_cap = 0;
        c->scratch = (float *)c->ctx->alloc.alloc(c->ctx->alloc.ud, (size_t)need * 4);
        if (!c->scratch)
            return mq__fail(ctx, MQ_ERR_NOMEM, "conv2d: out of memory (%llu bytes of scratch)",
                            (unsigned long long)need * 4);
        c->scratch_cap = (size_t)need;
    }
    float *cols = c->scratch, *out = c->scratch + P * (uint64_t)c->K;
    int64_t cin = c->d.in_channels, cout = c->ocg * c->d.groups;
    for (int64_t b = 0; b < batch; b++)
        for (int g = 0; g < c->d.groups; g++) {
            im2col_job jb = {c, x + (b * cin + g * c->icg) * h * w, h, w, ow, cols};
            MQ_TRY(mq__parallel_for(ctx, oh, 4, im2col_rows, &jb));
            MQ_TRY(mq_linear_forward(ctx, c->lin[g], cols, (int64_t)P, out));
            float *yb = y + (b * cout + g * c->ocg) * (int64_t)P;
            for (int64_t p = 0; p < (int64_t)P; p++)
                for (int64_t o = 0; o < c->ocg; o++) yb[o * (int64_t)P + p] = out[p * c->ocg + o];
        }
    return MQ_OK;
}
