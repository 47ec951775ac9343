/* Observers: qparams conventions, kinds, strided and typed batches, merge, state, errors. */
#include "harness.h"
#include "monoquant.h"

#include <float.h>
#include <stdbool.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static mq_observer *make(mq_ctx *ctx, mq_observer_kind kind, mq_qtype type, mq_scheme scheme,
                         int64_t channels) {
    mq_observer_options o;
    mq_observer_options_default(&o, kind);
    o.type = type;
    o.scheme = scheme;
    if (channels) o.granularity = MQ_PER_CHANNEL, o.channels = channels;
    mq_observer *obs = NULL;
    if (mq_observer_create(ctx, &o, &obs) != MQ_OK) return NULL;
    return obs;
}

/* Deterministic pseudo-normal values. */
static uint64_t rng_state = 88172645463325252ull;
static double uniform01(void) {
    return (double)(test_xorshift64(&rng_state) >> 11) / 9007199254740992.0;
}
static float gauss(void) {
    double u = uniform01() + 1e-12, v = uniform01();
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

static void qp1(mq_observer *obs, float *scale, int32_t *zp, float *lo, float *hi) {
    CHECK_EQ_INT(mq_observer_qparams(obs, scale, zp, lo, hi), MQ_OK);
}

TEST(minmax_conventions) {
    mq_ctx *ctx = mq_ctx_create();
    float x[4] = {-1.0f, 0.5f, 2.0f, 3.0f};
    float s, lo, hi;
    int32_t z;
    /* asymmetric uint8: scale = (3 - -1)/255, zp = 0 - round(-1/scale) = 64 */
    mq_observer *o = make(ctx, MQ_OBS_MINMAX, MQ_Q_UINT8, MQ_ASYMMETRIC, 0);
    CHECK_EQ_INT(mq_observer_update(o, x, 1, 4), MQ_OK);
    qp1(o, &s, &z, &lo, &hi);
    CHECK(s == 4.0f / 255.0f);
    CHECK_EQ_INT(z, 64);
    CHECK(lo == -1.0f && hi == 3.0f);
    CHECK_EQ_INT(mq_observer_count(o), 4);
    mq_observer_free(o);
    /* symmetric int8: 3 / 127.5, zp 0; symmetric uint8: zp 128 */
    o = make(ctx, MQ_OBS_MINMAX, MQ_Q_INT8, MQ_SYMMETRIC, 0);
    mq_observer_update(o, x, 2, 2);
    qp1(o, &s, &z, NULL, NULL);
    CHECK(s == 3.0f / 127.5f);
    CHECK_EQ_INT(z, 0);
    mq_observer_free(o);
    o = make(ctx, MQ_OBS_MINMAX, MQ_Q_UINT8, MQ_SYMMETRIC, 0);
    mq_observer_update(o, x, 4, 1);
    qp1(o, &s, &z, NULL, NULL);
    CHECK_EQ_INT(z, 128);
    mq_observer_free(o);
    /* one-sided positive data: the range is widened to 0, so zp = qmin */
    float pos[3] = {1.0f, 2.0f, 5.0f};
    o = make(ctx, MQ_OBS_MINMAX, MQ_Q_INT8, MQ_ASYMMETRIC, 0);
    mq_observer_update(o, pos, 1, 3);
    qp1(o, &s, &z, NULL, NULL);
    CHECK(s == 5.0f / 255.0f);
    CHECK_EQ_INT(z, -128);
    mq_observer_free(o);
    /* all zeros: scale clamped to FLT_EPSILON */
    float zero[2] = {0, 0};
    o = make(ctx, MQ_OBS_MINMAX, MQ_Q_UINT8, MQ_ASYMMETRIC, 0);
    mq_observer_update(o, zero, 1, 2);
    qp1(o, &s, &z, NULL, NULL);
    CHECK(s == FLT_EPSILON);
    CHECK_EQ_INT(z, 0);
    mq_observer_free(o);
    /* 4-bit types */
    o = make(ctx, MQ_OBS_MINMAX, MQ_Q_INT4, MQ_SYMMETRIC, 0);
    mq_observer_update(o, x, 1, 4);
    qp1(o, &s, &z, NULL, NULL);
    CHECK(s == 3.0f / 7.5f);
    mq_observer_free(o);
    o = make(ctx, MQ_OBS_MINMAX, MQ_Q_UINT4, MQ_ASYMMETRIC, 0);
    mq_observer_update(o, x, 1, 4);
    qp1(o, &s, &z, NULL, NULL);
    CHECK(s == 4.0f / 15.0f);
    CHECK_EQ_INT(z, 4); /* 0 - round(-1 / (4/15)) = round(3.75) */
    mq_observer_free(o);
    mq_ctx_free(ctx);
}

TEST(empty_observer_gives_defaults) {
    mq_ctx *ctx = mq_ctx_create();
    for (int k = MQ_OBS_MINMAX; k <= MQ_OBS_MSE; k++) {
        mq_observer *o = make(ctx, (mq_observer_kind)k, MQ_Q_UINT8, MQ_ASYMMETRIC, 3);
        CHECK(o != NULL);
        float s[3], lo[3], hi[3];
        int32_t z[3];
        CHECK_EQ_INT(mq_observer_update(o, NULL, 0, 3), MQ_OK); /* empty batch: ignored */
        CHECK_EQ_INT(mq_observer_qparams(o, s, z, lo, hi), MQ_OK);
        CHECK(s[0] == 1.0f && s[2] == 1.0f && z[1] == 0 && lo[0] == 0 && hi[0] == 0);
        CHECK_EQ_INT(mq_observer_batches(o), 0);
        mq_observer_free(o);
    }
    mq_ctx_free(ctx);
}

TEST(nonfinite_values_are_rejected) {
    mq_ctx *ctx = mq_ctx_create();
    for (int k = MQ_OBS_MINMAX; k <= MQ_OBS_MSE; k++) {
        mq_observer *o = make(ctx, (mq_observer_kind)k, MQ_Q_UINT8, MQ_ASYMMETRIC, 0);
        float good[4] = {1, 2, 3, 4}, bad[6] = {1, 2, 3, 4, NAN, 0};
        CHECK_EQ_INT(mq_observer_update(o, good, 2, 2), MQ_OK);
        CHECK_EQ_INT(mq_observer_update(o, bad, 2, 3), MQ_ERR_QUANT);
        CHECK_MSG_HAS(ctx, "[1, 1]");
        bad[4] = INFINITY;
        CHECK_EQ_INT(mq_observer_update(o, bad, 3, 2), MQ_ERR_QUANT);
        CHECK_MSG_HAS(ctx, "inf");
        CHECK_EQ_INT(mq_observer_count(o), 4); /* unchanged */
        float s, lo, hi;
        int32_t z;
        qp1(o, &s, &z, &lo, &hi);
        CHECK(lo >= 0.99f && hi <= 4.01f);
        mq_observer_free(o);
    }
    mq_ctx_free(ctx);
}

TEST(invalid_options_and_batches) {
    mq_ctx *ctx = mq_ctx_create();
    mq_observer_options o;
    mq_observer *obs = NULL;
    mq_observer_options_default(&o, MQ_OBS_MINMAX);
    o.type = MQ_Q_FP16;
    CHECK_EQ_INT(mq_observer_create(ctx, &o, &obs), MQ_ERR_INVALID);
    mq_observer_options_default(&o, MQ_OBS_MINMAX);
    o.granularity = MQ_PER_CHANNEL;
    CHECK_EQ_INT(mq_observer_create(ctx, &o, &obs), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "channel count");
    mq_observer_options_default(&o, MQ_OBS_MOVING_AVERAGE);
    o.averaging_constant = 0;
    CHECK_EQ_INT(mq_observer_create(ctx, &o, &obs), MQ_ERR_INVALID);
    mq_observer_options_default(&o, MQ_OBS_PERCENTILE);
    o.percentile = 101;
    CHECK_EQ_INT(mq_observer_create(ctx, &o, &obs), MQ_ERR_INVALID);
    mq_observer_options_default(&o, MQ_OBS_HISTOGRAM);
    o.bins = 3;
    CHECK_EQ_INT(mq_observer_create(ctx, &o, &obs), MQ_ERR_INVALID);
    CHECK(obs == NULL);
    obs = make(ctx, MQ_OBS_MINMAX, MQ_Q_INT8, MQ_SYMMETRIC, 4);
    float x[12] = {0};
    CHECK_EQ_INT(mq_observer_update(obs, x, 4, 3), MQ_ERR_INVALID); /* 3 channels, not 4 */
    CHECK_MSG_HAS(ctx, "channels");
    int64_t shape[2] = {3, 4}, strides[2] = {4, -1};
    CHECK_EQ_INT(mq_observer_update_strided(obs, MQ_F32, x, 2, shape, strides, -1), MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_observer_update_strided(obs, MQ_F32, x, 2, shape, NULL, 2), MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_observer_update_strided(obs, MQ_I32, x, 2, shape, NULL, 1), MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_observer_update_strided(obs, MQ_F32, x, 0, shape, NULL, 1), MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_observer_update_strided(obs, MQ_F32, x, 2, shape, NULL, 1), MQ_OK);
    mq_observer_free(obs);
    mq_observer_free(NULL);
    mq_ctx_free(ctx);
}

TEST(options_text_round_trip) {
    mq_ctx *ctx = mq_ctx_create();
    for (int k = MQ_OBS_MINMAX; k <= MQ_OBS_MSE; k++) {
        mq_observer_options o, p;
        mq_observer_options_default(&o, (mq_observer_kind)k);
        mq_observer_options_default(&p, MQ_OBS_MINMAX);
        o.type = MQ_Q_INT4;
        o.scheme = MQ_SYMMETRIC;
        o.granularity = MQ_PER_CHANNEL;
        o.channels = 17;
        o.averaging_constant = 0.125;
        o.percentile = 99.9;
        o.bins = 512;
        char text[256], again[256];
        size_t n = mq_observer_options_format(&o, text, sizeof text);
        CHECK(n == strlen(text));
        CHECK_EQ_INT(mq_observer_options_parse(ctx, text, &p), MQ_OK);
        mq_observer_options_format(&p, again, sizeof again);
        CHECK_EQ_STR(text, again);
    }
    mq_observer_kind kind;
    CHECK(mq_observer_kind_from_name("kl", &kind) && kind == MQ_OBS_ENTROPY);
    CHECK(!mq_observer_kind_from_name("median", &kind));
    CHECK_EQ_STR(mq_observer_kind_name(MQ_OBS_MOVING_AVERAGE), "moving_average");
    mq_observer_options p;
    mq_observer_options_default(&p, MQ_OBS_MINMAX);
    CHECK_EQ_INT(mq_observer_options_parse(ctx, "histogram bins=12x", &p), MQ_ERR_FORMAT);
    CHECK_EQ_INT(mq_observer_options_parse(ctx, "histogram colour=red", &p), MQ_ERR_FORMAT);
    CHECK_EQ_INT(mq_observer_options_parse(ctx, "median", &p), MQ_ERR_FORMAT);
    CHECK_EQ_INT(mq_observer_options_parse(ctx, "minmax granularity=channel", &p), MQ_ERR_FORMAT);
    CHECK_EQ_INT(mq_observer_options_parse(ctx, "percentile", &p), MQ_OK);
    CHECK(p.percentile == 99.999 && p.bins == 2048 && p.type == MQ_Q_UINT8);
    mq_ctx_free(ctx);
}

/* Per channel over columns of [rows, C] equals per channel over axis 1 of the transpose
 * [C, rows] given with strides, over a 4-D [N, C, H, W] with axis 1, and over every dtype. */
TEST(strided_and_typed_batches_agree) {
    mq_ctx *ctx = mq_ctx_create();
    enum { R = 37, C = 5 };
    float x[R * C], xt[C * R];
    for (int i = 0; i < R * C; i++) x[i] = gauss() * (1 + (i % C)) + (float)(i % C) * 0.25f;
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) xt[c * R + r] = x[r * C + c];
    for (int k = MQ_OBS_MINMAX; k <= MQ_OBS_MSE; k++) {
        mq_observer *a = make(ctx, (mq_observer_kind)k, MQ_Q_INT8, MQ_ASYMMETRIC, C);
        mq_observer *b = make(ctx, (mq_observer_kind)k, MQ_Q_INT8, MQ_ASYMMETRIC, C);
        mq_observer *c4 = make(ctx, (mq_observer_kind)k, MQ_Q_INT8, MQ_ASYMMETRIC, C);
        CHECK_EQ_INT(mq_observer_update(a, x, R, C), MQ_OK);
        int64_t shape[2] = {R, C}, strides[2] = {1, R};
        CHECK_EQ_INT(mq_observer_update_strided(b, MQ_F32, xt, 2, shape, strides, 1), MQ_OK);
        /* [N=1, C, H=R, W=1] from the transposed buffer */
        int64_t s4[4] = {1, C, R, 1};
        CHECK_EQ_INT(mq_observer_update_strided(c4, MQ_F32, xt, 4, s4, NULL, 1), MQ_OK);
        float sa[C], sb[C], sc[C];
        int32_t za[C], zb[C], zc[C];
        qp1(a, sa, za, NULL, NULL);
        qp1(b, sb, zb, NULL, NULL);
        qp1(c4, sc, zc, NULL, NULL);
        CHECK(!memcmp(sa, sb, sizeof sa) && !memcmp(za, zb, sizeof za));
        CHECK(!memcmp(sa, sc, sizeof sa) && !memcmp(za, zc, sizeof za));
        mq_observer_free(a);
        mq_observer_free(b);
        mq_observer_free(c4);
    }
    /* F16 / BF16 / F64 buffers holding the same (exactly representable) values */
    float v[8] = {-2.5f, 1.0f, 0.75f, 3.0f, -0.125f, 8.0f, 0.5f, -4.0f};
    uint16_t h[8], bf[8];
    double d[8];
    for (int i = 0; i < 8; i++) h[i] = mq_f32_to_f16(v[i]), bf[i] = mq_f32_to_bf16(v[i]), d[i] = v[i];
    const void *bufs[4] = {v, h, bf, d};
    mq_dtype dts[4] = {MQ_F32, MQ_F16, MQ_BF16, MQ_F64};
    float ref = 0;
    for (int t = 0; t < 4; t++) {
        mq_observer *o = make(ctx, MQ_OBS_HISTOGRAM, MQ_Q_UINT8, MQ_ASYMMETRIC, 0);
        int64_t shape[1] = {8};
        CHECK_EQ_INT(mq_observer_update_strided(o, dts[t], bufs[t], 1, shape, NULL, 0), MQ_OK);
        float s;
        int32_t z;
        qp1(o, &s, &z, NULL, NULL);
        if (t == 0) ref = s;
        CHECK(s == ref);
        mq_observer_free(o);
    }
    mq_ctx_free(ctx);
}

TEST(moving_average_sequence) {
    mq_ctx *ctx = mq_ctx_create();
    mq_observer_options o;
    mq_observer_options_default(&o, MQ_OBS_MOVING_AVERAGE);
    o.averaging_constant = 0.5;
    mq_observer *obs;
    CHECK_EQ_INT(mq_observer_create(ctx, &o, &obs), MQ_OK);
    float b1[2] = {-2, 2}, b2[2] = {-4, 6}, b3[2] = {0, 2};
    mq_observer_update(obs, b1, 1, 2);
    mq_observer_update(obs, b2, 1, 2);
    mq_observer_update(obs, b3, 1, 2);
    float s, lo, hi;
    int32_t z;
    qp1(obs, &s, &z, &lo, &hi);
    /* min: -2 -> -3 -> -1.5; max: 2 -> 4 -> 3 */
    CHECK(lo == -1.5f && hi == 3.0f);
    CHECK_EQ_INT(mq_observer_batches(obs), 3);
    mq_observer_free(obs);
    mq_ctx_free(ctx);
}

TEST(minmax_and_histogram_merge_equal_concatenation) {
    mq_ctx *ctx = mq_ctx_create();
    enum { N = 256, C = 3 };
    static float a[N * C], b[N * C];
    for (int i = 0; i < N * C; i++) a[i] = gauss(), b[i] = 2 * gauss() + 0.5f;
    /* same range in both halves: the histogram merge is then exact */
    for (int c = 0; c < C; c++) {
        a[c] = -8, a[C + c] = 8;
        b[c] = -8, b[C + c] = 8;
    }
    mq_observer_kind kinds[] = {MQ_OBS_MINMAX, MQ_OBS_HISTOGRAM, MQ_OBS_ENTROPY,
                                MQ_OBS_PERCENTILE, MQ_OBS_MSE};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        for (int64_t ch = 0; ch <= C; ch += C) {
            mq_observer *whole = make(ctx, kinds[k], MQ_Q_UINT8, MQ_ASYMMETRIC, ch);
            mq_observer *p = make(ctx, kinds[k], MQ_Q_UINT8, MQ_ASYMMETRIC, ch);
            mq_observer *q = make(ctx, kinds[k], MQ_Q_UINT8, MQ_ASYMMETRIC, ch);
            mq_observer_update(whole, a, N, C);
            mq_observer_update(whole, b, N, C);
            mq_observer_update(p, a, N, C);
            mq_observer_update(q, b, N, C);
            CHECK_EQ_INT(mq_observer_merge(p, q), MQ_OK);
            int64_t np = mq_observer_nparams(p);
            float s1[C], s2[C], l1[C], l2[C], h1[C], h2[C];
            int32_t z1[C], z2[C];
            qp1(whole, s1, z1, l1, h1);
            qp1(p, s2, z2, l2, h2);
            CHECK_MSG(!memcmp(s1, s2, (size_t)np * 4) && !memcmp(z1, z2, (size_t)np * 4),
                      "%s with %lld channels: %g vs %g", mq_observer_kind_name(kinds[k]),
                      (long long)ch, s1[0], s2[0]);
            CHECK_EQ_INT(mq_observer_count(p), mq_observer_count(whole));
            mq_observer_free(whole);
            mq_observer_free(p);
            mq_observer_free(q);
        }
    }
    /* merging into an empty observer copies; different options are refused */
    mq_observer *e = make(ctx, MQ_OBS_MINMAX, MQ_Q_UINT8, MQ_ASYMMETRIC, 0);
    mq_observer *f = make(ctx, MQ_OBS_MINMAX, MQ_Q_UINT8, MQ_ASYMMETRIC, 0);
    mq_observer *g = make(ctx, MQ_OBS_MINMAX, MQ_Q_INT8, MQ_ASYMMETRIC, 0);
    mq_observer_update(f, a, N, C);
    CHECK_EQ_INT(mq_observer_merge(e, f), MQ_OK);
    CHECK_EQ_INT(mq_observer_count(e), N * C);
    CHECK_EQ_INT(mq_observer_merge(e, g), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "options differ");
    CHECK_EQ_INT(mq_observer_merge(e, e), MQ_ERR_INVALID);
    mq_observer_free(e);
    mq_observer_free(f);
    mq_observer_free(g);
    mq_ctx_free(ctx);
}

TEST(moving_average_merge_weights_batches) {
    mq_ctx *ctx = mq_ctx_create();
    mq_observer *p = make(ctx, MQ_OBS_MOVING_AVERAGE, MQ_Q_UINT8, MQ_ASYMMETRIC, 0);
    mq_observer *q = make(ctx, MQ_OBS_MOVING_AVERAGE, MQ_Q_UINT8, MQ_ASYMMETRIC, 0);
    float x[2] = {-1, 1}, y[2] = {-4, 4};
    mq_observer_update(p, x, 1, 2);
    mq_observer_update(q, y, 1, 2);
    mq_observer_update(q, y, 1, 2);
    mq_observer_update(q, y, 1, 2);
    CHECK_EQ_INT(mq_observer_merge(p, q), MQ_OK);
    float s, lo, hi;
    int32_t z;
    qp1(p, &s, &z, &lo, &hi);
    CHECK(lo == -3.25f && hi == 3.25f); /* (1 * 1 + 3 * 4) / 4 */
    CHECK_EQ_INT(mq_observer_batches(p), 4);
    mq_observer_free(p);
    mq_observer_free(q);
    mq_ctx_free(ctx);
}

TEST(histogram_keeps_counts_as_range_grows) {
    mq_ctx *ctx = mq_ctx_create();
    mq_observer *o = make(ctx, MQ_OBS_HISTOGRAM, MQ_Q_UINT8, MQ_ASYMMETRIC, 0);
    float c[16];
    for (int i = 0; i < 16; i++) c[i] = 0.5f; /* a constant first batch */
    mq_observer_update(o, c, 4, 4);
    float w[64];
    for (int i = 0; i < 64; i++) w[i] = gauss() * 10;
    mq_observer_update(o, w, 8, 8);
    float w2[64];
    for (int i = 0; i < 64; i++) w2[i] = gauss() * 100;
    mq_observer_update(o, w2, 8, 8);
    mq_tensor t;
    size_t n = mq_observer_state_count(o);
    CHECK_EQ_INT(n, 5);
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(mq_observer_state_tensor(o, i, &t), MQ_OK);
        if (!strcmp(t.name, "histogram"))
            for (uint64_t k = 0; k < t.numel; k++) total += ((const double *)t.data)[k];
    }
    CHECK_MSG(fabs(total - 144) < 1e-6, "total %g", total);
    float s, lo, hi;
    int32_t z;
    qp1(o, &s, &z, &lo, &hi);
    CHECK(lo < 0 && hi > 0 && s > 0);
    mq_observer_free(o);
    mq_ctx_free(ctx);
}

/* Squared error of quantizing x with scale s and zero point z into [qmin, qmax]. */
static double quant_error(const float *x, int n, float s, int32_t z, int qmin, int qmax) {
    double e = 0;
    for (int i = 0; i < n; i++) {
        double q = nearbyint(x[i] / s) + z;
        q = q < qmin ? qmin : q > qmax ? qmax : q;
        double d = x[i] - (q - z) * s;
        e += d * d;
    }
    return e;
}

/* Heavy-tailed data (g^3): entropy and percentile clip the tails; the histogram and MSE
 * searches never widen the range; MSE's choice is as good as the best of a fine grid. */
TEST(search_kinds_on_heavy_tails) {
    mq_ctx *ctx = mq_ctx_create();
    enum { N = 20000 };
    static float x[N];
    for (int i = 0; i < N; i++) {
        float g = gauss();
        x[i] = g * g * g;
    }
    for (int sym = 0; sym < 2; sym++) {
        mq_scheme scheme = sym ? MQ_SYMMETRIC : MQ_ASYMMETRIC;
        float smm, s, lo, hi;
        int32_t zmm, z;
        mq_observer *mm = make(ctx, MQ_OBS_MINMAX, MQ_Q_INT8, scheme, 0);
        mq_observer_update(mm, x, N, 1);
        qp1(mm, &smm, &zmm, NULL, NULL);
        mq_observer_free(mm);
        for (int k = MQ_OBS_HISTOGRAM; k <= MQ_OBS_MSE; k++) {
            mq_observer_options o;
            mq_observer_options_default(&o, (mq_observer_kind)k);
            o.type = MQ_Q_INT8, o.scheme = scheme, o.percentile = 99.9;
            mq_observer *obs;
            CHECK_EQ_INT(mq_observer_create(ctx, &o, &obs), MQ_OK);
            CHECK_EQ_INT(mq_observer_update(obs, x, 100, N / 100), MQ_OK);
            qp1(obs, &s, &z, &lo, &hi);
            bool clips = k == MQ_OBS_ENTROPY || k == MQ_OBS_PERCENTILE;
            CHECK_MSG(s <= smm && (!clips || s < smm / 2),
                      "%s %s: scale %g (minmax %g) range [%g, %g]",
                      mq_observer_kind_name((mq_observer_kind)k), sym ? "sym" : "asym", s, smm,
                      lo, hi);
            if (k == MQ_OBS_MSE) {
                double mine = quant_error(x, N, s, z, -128, 127), best = INFINITY;
                for (int g = 1; g <= 200; g++) {
                    float gs = smm * (float)g / 200;
                    int32_t gz = sym ? 0 : (int32_t)zmm;
                    double e = quant_error(x, N, gs, gz, -128, 127);
                    if (e < best) best = e;
                }
                CHECK_MSG(mine <= best * 1.02, "mse %s: error %g, grid best %g",
                          sym ? "sym" : "asym", mine, best);
            }
            mq_observer_free(obs);
        }
    }
    mq_ctx_free(ctx);
}

TEST(percentile_of_uniform_values) {
    mq_ctx *ctx = mq_ctx_create();
    mq_observer_options o;
    mq_observer_options_default(&o, MQ_OBS_PERCENTILE);
    o.percentile = 99.0;
    mq_observer *obs;
    CHECK_EQ_INT(mq_observer_create(ctx, &o, &obs), MQ_OK);
    static float x[10000];
    for (int i = 0; i < 10000; i++) x[i] = (float)i / 10; /* uniform on [0, 1000) */
    mq_observer_update(obs, x, 100, 100);
    float s, lo, hi;
    int32_t z;
    qp1(obs, &s, &z, &lo, &hi);
    CHECK_MSG(fabsf(hi - 990) < 1.5f && fabsf(lo - 10) < 1.5f, "range [%g, %g]", lo, hi);
    mq_observer_free(obs);
    mq_ctx_free(ctx);
}

/* MSE on uniform data keeps (almost) the whole range: clipping only adds error there. */
TEST(mse_keeps_uniform_range) {
    mq_ctx *ctx = mq_ctx_create();
    static float x[20000];
    for (int i = 0; i < 20000; i++) x[i] = (float)(uniform01() * 2 - 1);
    for (int sym = 0; sym < 2; sym++) {
        mq_observer *o = make(ctx, MQ_OBS_MSE, MQ_Q_INT8, sym ? MQ_SYMMETRIC : MQ_ASYMMETRIC, 0);
        mq_observer_update(o, x, 200, 100);
        float s, lo, hi;
        int32_t z;
        qp1(o, &s, &z, &lo, &hi);
        CHECK_MSG(hi > 0.97f && lo < -0.97f, "range [%g, %g]", lo, hi);
        mq_observer_free(o);
    }
    mq_ctx_free(ctx);
}

TEST(state_round_trip_and_validation) {
    mq_ctx *ctx = mq_ctx_create();
    static float x[3000];
    for (int i = 0; i < 3000; i++) x[i] = gauss() * (float)(1 + i % 3);
    for (int k = MQ_OBS_MINMAX; k <= MQ_OBS_MSE; k++) {
        mq_observer *a = make(ctx, (mq_observer_kind)k, MQ_Q_INT8, MQ_SYMMETRIC, 3);
        mq_observer_update(a, x, 500, 3);
        mq_observer_update(a, x + 1500, 500, 3);
        mq_observer *b = make(ctx, (mq_observer_kind)k, MQ_Q_INT8, MQ_SYMMETRIC, 3);
        for (size_t i = 0; i < mq_observer_state_count(a); i++) {
            mq_tensor t;
            CHECK_EQ_INT(mq_observer_state_tensor(a, i, &t), MQ_OK);
            CHECK_EQ_INT(mq_observer_state_set(b, &t), MQ_OK);
        }
        float sa[3], sb[3];
        int32_t za[3], zb[3];
        qp1(a, sa, za, NULL, NULL);
        qp1(b, sb, zb, NULL, NULL);
        CHECK(!memcmp(sa, sb, sizeof sa) && !memcmp(za, zb, sizeof za));
        CHECK_EQ_INT(mq_observer_count(b), 3000);
        /* bad states */
        mq_tensor t;
        mq_observer_state_tensor(a, 0, &t); /* min_val */
        float nan3[3] = {NAN, 0, 0}, big[3] = {100, 100, 100};
        t.data = nan3;
        CHECK_EQ_INT(mq_observer_state_set(b, &t), MQ_ERR_FORMAT);
        t.data = big; /* min above max: caught when used */
        CHECK_EQ_INT(mq_observer_state_set(b, &t), MQ_OK);
        CHECK_EQ_INT(mq_observer_qparams(b, sb, zb, NULL, NULL), MQ_ERR_FORMAT);
        CHECK_EQ_INT(mq_observer_update(b, x, 1, 3), MQ_ERR_FORMAT);
        t.shape[0] = 2;
        CHECK_EQ_INT(mq_observer_state_set(b, &t), MQ_ERR_FORMAT);
        t.name = "colour";
        CHECK_EQ_INT(mq_observer_state_set(b, &t), MQ_ERR_FORMAT);
        CHECK_EQ_INT(mq_observer_state_tensor(a, 9, &t), MQ_ERR_INVALID);
        mq_observer_free(a);
        mq_observer_free(b);
    }
    mq_ctx_free(ctx);
}

/* A restored state may claim counts near INT64_MAX: a batch or a merge that would overflow
 * them is refused before anything changes; reaching the limit exactly is fine. */
static void set_counter(mq_observer *o, size_t i, int64_t v) {
    mq_tensor t;
    CHECK_EQ_INT(mq_observer_state_tensor(o, i, &t), MQ_OK); /* 2: count, 3: batches */
    t.data = &v;
    CHECK_EQ_INT(mq_observer_state_set(o, &t), MQ_OK);
}

TEST(counts_that_would_overflow_are_refused) {
    mq_ctx *ctx = mq_ctx_create();
    float x[6] = {-1, 2, 0.5f, 3, -4, 1};
    for (int k = MQ_OBS_MINMAX; k <= MQ_OBS_MSE; k++) {
        mq_observer *a = make(ctx, (mq_observer_kind)k, MQ_Q_INT8, MQ_SYMMETRIC, 3);
        mq_observer *b = make(ctx, (mq_observer_kind)k, MQ_Q_INT8, MQ_SYMMETRIC, 3);
        mq_observer *c = make(ctx, (mq_observer_kind)k, MQ_Q_INT8, MQ_SYMMETRIC, 3);
        CHECK_EQ_INT(mq_observer_update(a, x, 1, 3), MQ_OK);
        CHECK_EQ_INT(mq_observer_update(b, x, 2, 3), MQ_OK);
        float s0[3], s1[3];
        int32_t z0[3], z1[3];
        set_counter(b, 2, INT64_MAX - 2);
        qp1(b, s0, z0, NULL, NULL);
        CHECK_EQ_INT(mq_observer_update(b, x + 3, 1, 3), MQ_ERR_UNSUPPORTED);
        CHECK_MSG(strstr(mq_ctx_message(ctx), "overflow") != NULL, "%s", mq_ctx_message(ctx));
        CHECK_EQ_INT(mq_observer_merge(b, a), MQ_ERR_UNSUPPORTED);
        CHECK(mq_observer_count(b) == (uint64_t)INT64_MAX - 2 && mq_observer_batches(b) == 1);
        qp1(b, s1, z1, NULL, NULL);
        CHECK(!memcmp(s0, s1, sizeof s0) && !memcmp(z0, z1, sizeof z0));
        set_counter(b, 2, INT64_MAX - 3); /* exactly to the limit */
        CHECK_EQ_INT(mq_observer_update(b, x + 3, 1, 3), MQ_OK);
        CHECK(mq_observer_count(b) == (uint64_t)INT64_MAX && mq_observer_batches(b) == 2);
        set_counter(b, 2, 6);
        set_counter(b, 3, INT64_MAX);
        CHECK_EQ_INT(mq_observer_update(b, x, 1, 3), MQ_ERR_UNSUPPORTED);
        CHECK(mq_observer_count(b) == 6);
        CHECK_EQ_INT(mq_observer_merge(c, b), MQ_OK); /* into an empty observer: no sum */
        CHECK_EQ_INT(mq_observer_merge(c, a), MQ_ERR_UNSUPPORTED);
        CHECK(mq_observer_count(c) == 6 && mq_observer_batches(c) == (uint64_t)INT64_MAX);
        mq_observer_free(a);
        mq_observer_free(b);
        mq_observer_free(c);
    }
    mq_ctx_free(ctx);
}

TEST(qparams_do_not_depend_on_threads) {
    enum { R = 300, C = 16 };
    static float x[R * C];
    for (int i = 0; i < R * C; i++) x[i] = gauss() * (float)(1 + i % 5);
    for (int k = MQ_OBS_HISTOGRAM; k <= MQ_OBS_MSE; k++) {
        float s[2][C];
        int32_t z[2][C];
        for (int t = 0; t < 2; t++) {
            mq_ctx *ctx = mq_ctx_create();
            mq_ctx_set_threads(ctx, t ? 4 : 1);
            mq_observer *o = make(ctx, (mq_observer_kind)k, MQ_Q_UINT8, MQ_ASYMMETRIC, C);
            mq_observer_update(o, x, R, C);
            qp1(o, s[t], z[t], NULL, NULL);
            mq_observer_free(o);
            mq_ctx_free(ctx);
        }
        CHECK(!memcmp(s[0], s[1], sizeof s[0]) && !memcmp(z[0], z[1], sizeof z[0]));
    }
}

/* Every allocation failure gives MQ_ERR_NOMEM and no leak (ASan checks the leaks). */
TEST(allocation_failures_are_clean) {
    mq_allocator al = {test_failing_alloc, test_plain_free, NULL};
    float x[64];
    for (int i = 0; i < 64; i++) x[i] = gauss();
    int completed = 0;
    for (int n = 0; n < 40 && !completed; n++) {
        test_allocs_left = 1000;
        mq_ctx *ctx = mq_ctx_create_with_allocator(&al);
        mq_ctx_set_threads(ctx, 1);
        test_allocs_left = n;
        mq_observer *o = make(ctx, MQ_OBS_ENTROPY, MQ_Q_INT8, MQ_ASYMMETRIC, 4);
        mq_status st = o ? mq_observer_update(o, x, 16, 4) : MQ_ERR_NOMEM;
        float s[4];
        int32_t z[4];
        if (st == MQ_OK) st = mq_observer_qparams(o, s, z, NULL, NULL);
        if (st == MQ_OK) completed = 1;
        else CHECK_EQ_INT(st, MQ_ERR_NOMEM);
        mq_observer_free(o);
        test_allocs_left = 1000;
        mq_ctx_free(ctx);
    }
    CHECK(completed);
}

int main(void) {
    RUN(minmax_conventions);
    RUN(empty_observer_gives_defaults);
    RUN(nonfinite_values_are_rejected);
    RUN(invalid_options_and_batches);
    RUN(options_text_round_trip);
    RUN(strided_and_typed_batches_agree);
    RUN(moving_average_sequence);
    RUN(minmax_and_histogram_merge_equal_concatenation);
    RUN(moving_average_merge_weights_batches);
    RUN(histogram_keeps_counts_as_range_grows);
    RUN(search_kinds_on_heavy_tails);
    RUN(percentile_of_uniform_values);
    RUN(mse_keeps_uniform_range);
    RUN(state_round_trip_and_validation);
    RUN(counts_that_would_overflow_are_refused);
    RUN(qparams_do_not_depend_on_threads);
    RUN(allocation_failures_are_clean);
    return test_summary();
}
