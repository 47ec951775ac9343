/* Conv2d (im2col over the Linear kernels) against a direct convolution, on every
 * instruction-set path; and the layer check behind `validate --run`. */
#include "harness.h"
#include "monoquant.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static uint64_t rng = 0x853c49e6748fea9bull;
static uint32_t rnd(void) {
    return (uint32_t)(test_xorshift64(&rng) >> 11);
}
static float frand(void) { return (float)((int)(rnd() % 20001) - 10000) / 10000.0f; }

/* Direct convolution of the documented semantics (double); dynamic mode quantizes each output
 * pixel's receptive field (padding included) as one activation row. */
static void conv_expected(const mq_linear_desc *wd, const mq_conv2d_desc *d, const double *wdq,
                          const float *x, int64_t B, int64_t H, int64_t W, int64_t OH,
                          int64_t OW, double *y, double *mag) {
    int64_t icg = d->in_channels / d->groups, ocg = wd->out_features / d->groups;
    int64_t K = icg * d->kernel_h * d->kernel_w;
    float *patch = malloc((size_t)K * 4);
    double *q = malloc((size_t)K * 8);
    for (int64_t b = 0; b < B; b++)
        for (int g = 0; g < d->groups; g++)
            for (int64_t oy = 0; oy < OH; oy++)
                for (int64_t ox = 0; ox < OW; ox++) {
                    int64_t k = 0;
                    for (int64_t c = 0; c < icg; c++)
                        for (int i = 0; i < d->kernel_h; i++)
                            for (int j = 0; j < d->kernel_w; j++) {
                                int64_t iy = oy * d->stride_h - d->pad_h + i * d->dilation_h;
                                int64_t ix = ox * d->stride_w - d->pad_w + j * d->dilation_w;
                                bool in = iy >= 0 && iy < H && ix >= 0 && ix < W;
                                patch[k++] = in ? x[((b * d->in_channels + g * icg + c) * H + iy) * W + ix] : 0;
                            }
                    double s = 1;
                    if (wd->act == MQ_ACT_DYNAMIC) {
                        float amax = 0;
                        for (k = 0; k < K; k++) amax = fmaxf(amax, fabsf(patch[k]));
                        float sf = amax > 0 ? amax / 127.0f : 1.0f;
                        for (k = 0; k < K; k++) q[k] = nearbyintf(patch[k] / sf);
                        s = sf;
                    } else {
                        for (k = 0; k < K; k++) q[k] = patch[k];
                    }
                    for (int64_t o = 0; o < ocg; o++) {
                        int64_t oc = g * ocg + o;
                        double acc = 0, ab = 0;
                        for (k = 0; k < K; k++) {
                            acc += q[k] * wdq[oc * K + k];
                            ab += fabs(q[k] * wdq[oc * K + k]);
                        }
                        double bias = wd->bias ? wd->bias[oc] : 0;
                        int64_t yi = ((b * wd->out_features + oc) * OH + oy) * OW + ox;
                        y[yi] = acc * s + bias;
                        mag[yi] = ab * s + fabs(bias);
                    }
                }
    free(patch);
    free(q);
}

static int conv_case(mq_qtype type, mq_act_mode act) {
    mq_conv2d_desc d;
    mq_conv2d_desc_init(&d, 0, 0, 0);
    mq_linear_desc wd;
    static const int cins[] = {1, 2, 3, 4, 6};
    d.groups = 1 + (int)(rnd() % 2);
    d.in_channels = cins[rnd() % 5] * d.groups;
    int64_t cout = (1 + rnd() % 20) * d.groups;
    d.kernel_h = 1 + (int)(rnd() % 3);
    d.kernel_w = 1 + (int)(rnd() % 3);
    d.stride_h = 1 + (int)(rnd() % 2);
    d.stride_w = rnd() % 3 ? 1 : 2;
    d.pad_h = (int)(rnd() % 3);
    d.pad_w = (int)(rnd() % 2);
    d.dilation_h = 1 + (int)(rnd() % 2);
    d.dilation_w = 1;
    int64_t K = d.in_channels / d.groups * d.kernel_h * d.kernel_w;
    int64_t B = 1 + rnd() % 2, H = 3 + rnd() % 6, W = 3 + rnd() % 7;
    float *wf = malloc((size_t)(cout * K) * 4), *bias = malloc((size_t)cout * 4),
          *sc = malloc((size_t)cout * 4);
    int8_t *wq = malloc((size_t)(cout * K));
    double *wdq = malloc((size_t)(cout * K) * 8);
    for (int64_t o = 0; o < cout; o++) {
        bias[o] = frand();
        sc[o] = (float)(rnd() % 100 + 1) / 2048.0f;
    }
    for (int64_t i = 0; i < cout * K; i++) {
        wf[i] = frand();
        wq[i] = (int8_t)((int)(rnd() % 256) - 128);
        wdq[i] = type == MQ_Q_NONE ? wf[i] : wq[i] * (double)sc[i / K];
    }
    mq_linear_desc_init(&wd, type, cout, K, type == MQ_Q_NONE ? (void *)wf : (void *)wq);
    wd.scale = sc;
    wd.bias = rnd() % 2 ? bias : NULL;
    wd.act = act;
    mq_ctx *ctx = mq_ctx_create();
    mq_conv2d *conv = NULL;
    int ok = 1;
    if (mq_conv2d_create(ctx, &wd, &d, &conv) != MQ_OK) {
        TH_FAIL("create: %s", mq_ctx_message(ctx));
        ok = 0;
    }
    int64_t OH = 0, OW = 0;
    if (ok && mq_conv2d_output_size(ctx, conv, H, W, &OH, &OW) != MQ_OK) {
        /* kernel larger than the padded input: a clean error, nothing to run */
        CHECK_MSG_HAS(ctx, "smaller than");
        ok = 0;
    }
    if (ok) {
        float *x = malloc((size_t)(B * d.in_channels * H * W) * 4);
        for (int64_t i = 0; i < B * d.in_channels * H * W; i++) x[i] = frand();
        size_t ny = (size_t)(B * cout * OH * OW);
        float *ref = malloc(ny * 4), *got = malloc(ny * 4);
        double *e = malloc(ny * 8), *mag = malloc(ny * 8);
        mq_ctx_set_isa(ctx, MQ_ISA_SCALAR);
        CHECK_EQ_INT(mq_conv2d_forward(ctx, conv, x, B, H, W, ref), MQ_OK);
        conv_expected(&wd, &d, wdq, x, B, H, W, OH, OW, e, mag);
        for (size_t i = 0; i < ny && ok; i++)
            if (!(fabs(ref[i] - e[i]) <= 2e-6 * mag[i] + 1e-30)) {
                TH_FAIL("type %d act %d: y[%zu] = %.8g, expected %.8g", (int)type, (int)act, i,
                        ref[i], e[i]);
                ok = 0;
            }
        for (int isa = test_next_isa(0); isa >= 0 && ok; isa = test_next_isa(isa)) {
            mq_ctx_set_isa(ctx, (mq_isa)isa);
            mq_ctx_set_threads(ctx, isa + 1);
            CHECK_EQ_INT(mq_conv2d_forward(ctx, conv, x, B, H, W, got), MQ_OK);
            if (memcmp(got, ref, ny * 4)) {
                TH_FAIL("%s differs from the reference", mq_isa_name((mq_isa)isa));
                ok = 0;
            }
        }
        free(x);
        free(ref);
        free(got);
        free(e);
        free(mag);
    }
    mq_conv2d_free(conv);
    mq_ctx_free(ctx);
    free(wf);
    free(bias);
    free(sc);
    free(wq);
    free(wdq);
    return ok;
}

TEST(conv2d_matches_direct) {
    int ran = 0;
    for (int i = 0; i < 40; i++) ran += conv_case(MQ_Q_NONE, MQ_ACT_F32);
    for (int i = 0; i < 40; i++) ran += conv_case(MQ_Q_INT8, MQ_ACT_F32);
    for (int i = 0; i < 40; i++) ran += conv_case(MQ_Q_INT8, MQ_ACT_DYNAMIC);
    CHECK(ran >= 60); /* most random geometries fit their input */
}

TEST(conv2d_errors) {
    mq_ctx *ctx = mq_ctx_create();
    float w[2 * 3 * 3 * 3] = {0};
    mq_conv2d_desc d;
    mq_conv2d_desc_init(&d, 0, 0, 0);
    mq_linear_desc wd;
    mq_linear_desc_init(&wd, MQ_Q_NONE, 2, 27, w);
    d.in_channels = 3;
    d.kernel_h = d.kernel_w = 3;
    d.groups = 2; /* does not divide 3 input channels */
    mq_conv2d *c = NULL;
    CHECK_EQ_INT(mq_conv2d_create(ctx, &wd, &d, &c), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "geometry");
    d.groups = 1;
    wd.in_features = 26;
    CHECK_EQ_INT(mq_conv2d_create(ctx, &wd, &d, &c), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "in_features");
    wd.in_features = 27;
    CHECK_EQ_INT(mq_conv2d_create(ctx, &wd, &d, &c), MQ_OK);
    int64_t oh, ow;
    CHECK_EQ_INT(mq_conv2d_output_size(ctx, c, 2, 5, &oh, &ow), MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_conv2d_output_size(ctx, c, 3, 5, &oh, &ow), MQ_OK);
    CHECK(oh == 1 && ow == 3);
    mq_conv2d_free(c);
    mq_conv2d_free(NULL);
    mq_ctx_free(ctx);
}

/* The check behind `validate --run`: exact reference weights give only float rounding error,
 * quantized weights a plausible SQNR, and dynamic activations a lower one. */
TEST(linear_check) {
    enum { N = 48, K = 96 };
    float wf[N * K], wdq[N * K], sc[N], bias[N];
    int8_t wq[N * K];
    for (int n = 0; n < N; n++) {
        float amax = 0;
        for (int k = 0; k < K; k++) {
            wf[n * K + k] = frand();
            amax = fmaxf(amax, fabsf(wf[n * K + k]));
        }
        sc[n] = amax / 127.0f;
        bias[n] = frand();
        for (int k = 0; k < K; k++) {
            wq[n * K + k] = (int8_t)nearbyintf(wf[n * K + k] / sc[n]);
            wdq[n * K + k] = wq[n * K + k] * sc[n];
        }
    }
    mq_ctx *ctx = mq_ctx_create();
    mq_linear_desc d;
    mq_linear_desc_init(&d, MQ_Q_INT8, N, K, wq);
    d.scale = sc;
    d.bias = bias;
    mq_linear *lin = NULL;
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_OK);
    mq_error_stats exact, quant, dyn;
    CHECK_EQ_INT(mq_linear_check(ctx, lin, wdq, bias, NULL, 8, 1, &exact), MQ_OK);
    CHECK_EQ_INT(mq_linear_check(ctx, lin, wf, bias, NULL, 8, 1, &quant), MQ_OK);
    CHECK_MSG(exact.sqnr_db > 100, "sqnr %g", exact.sqnr_db);
    CHECK_MSG(quant.sqnr_db > 30 && quant.sqnr_db < 70, "sqnr %g", quant.sqnr_db);
    CHECK(quant.cosine > 0.999 && quant.max_abs > 0 && quant.rel_fro < 0.05);
    CHECK(quant.mse > 0);
    mq_linear_free(lin);
    d.act = MQ_ACT_DYNAMIC;
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_OK);
    float x[3 * K];
    for (int i = 0; i < 3 * K; i++) x[i] = frand();
    CHECK_EQ_INT(mq_linear_check(ctx, lin, wdq, bias, x, 3, 0, &dyn), MQ_OK);
    CHECK_MSG(dyn.sqnr_db > 25 && dyn.sqnr_db < exact.sqnr_db, "sqnr %g", dyn.sqnr_db);
    /* a different seed gives different inputs, hence different figures */
    mq_error_stats other;
    CHECK_EQ_INT(mq_linear_check(ctx, lin, wf, bias, NULL, 8, 2, &other), MQ_OK);
    CHECK(other.mse != quant.mse);
    CHECK_EQ_INT(mq_linear_check(ctx, lin, wf, bias, NULL, 0, 1, &other), MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_linear_check(ctx, lin, NULL, bias, NULL, 1, 1, &other), MQ_ERR_INVALID);
    mq_linear_free(lin);
    mq_ctx_free(ctx);
}

/* Allocation k fails, for every k: each call fails cleanly with MQ_ERR_NOMEM (ASan builds
 * also check that nothing leaks), and once enough allocations succeed everything works. */
static int alloc_budget;
static void *budget_alloc(void *ud, size_t n) {
    (void)ud;
    return alloc_budget-- > 0 ? malloc(n) : NULL;
}
static void budget_free(void *ud, void *p) {
    (void)ud;
    free(p);
}

TEST(allocation_failures) {
    enum { N = 20, K = 27 };
    int8_t w[N * K];
    float sc[N], wf[N * K], x[2 * 3 * 5 * 5], y[2 * N * 9];
    for (int i = 0; i < N * K; i++) w[i] = (int8_t)(i * 7), wf[i] = frand();
    for (int i = 0; i < N; i++) sc[i] = 0.01f;
    for (int i = 0; i < 2 * 3 * 5 * 5; i++) x[i] = frand();
    mq_allocator al = {budget_alloc, budget_free, NULL};
    int succeeded = 0;
    for (int k = 0; k < 40 && !succeeded; k++) {
        alloc_budget = 1000;
        mq_ctx *ctx = mq_ctx_create_with_allocator(&al);
        mq_ctx_set_threads(ctx, 1);
        mq_conv2d_desc d;
        mq_conv2d_desc_init(&d, 0, 0, 0);
        mq_linear_desc wd;
        mq_linear_desc_init(&wd, MQ_Q_INT8, N, K, w);
        wd.scale = sc;
        wd.act = MQ_ACT_DYNAMIC;
        d.in_channels = 3;
        d.kernel_h = d.kernel_w = 3;
        alloc_budget = k;
        mq_conv2d *c = NULL;
        mq_status st = mq_conv2d_create(ctx, &wd, &d, &c);
        if (st == MQ_OK) st = mq_conv2d_forward(ctx, c, x, 2, 5, 5, y);
        mq_error_stats es;
        mq_linear *lin = NULL;
        if (st == MQ_OK) st = mq_linear_create(ctx, &wd, &lin);
        if (st == MQ_OK) st = mq_linear_check(ctx, lin, wf, NULL, NULL, 2, 1, &es);
        CHECK_MSG(st == MQ_OK || st == MQ_ERR_NOMEM, "allocation %d: %s", k, mq_status_str(st));
        if (st == MQ_ERR_NOMEM) CHECK_MSG_HAS(ctx, "memory");
        succeeded = st == MQ_OK;
        mq_linear_free(lin);
        mq_conv2d_free(c);
        alloc_budget = 1000;
        mq_ctx_free(ctx);
    }
    CHECK(succeeded);
}

int main(void) {
    RUN(conv2d_matches_direct);
    RUN(conv2d_errors);
    RUN(linear_check);
    RUN(allocation_failures);
    return test_summary();
}
