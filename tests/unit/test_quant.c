/* Quantization arithmetic: hand-computed cases, layouts, packing, edge cases, errors, thread
 * and instruction-set independence, source dtypes and alignment. */
#include "harness.h"
#include "quant_helpers.h"
#include "monoquant.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

static qres quantize(mq_ctx *ctx, const mq_qspec *spec, int ndim, const int64_t *shape,
                     const float *src) {
    return quantize_chunks(ctx, spec, ndim, shape, MQ_F32, src, 1);
}

/* As quantize, with per-column importance weights (NULL: none). */
static qres quantize_imp(mq_ctx *ctx, const mq_qspec *spec, const float *importance, int ndim,
                         const int64_t *shape, const float *src) {
    mq_calib_data calib;
    mq_calib_data_init(&calib);
    calib.importance = importance;
    return quantize_chunks_with(ctx, spec, &calib, ndim, shape, MQ_F32, src, 1);
}

static mq_qspec make_spec(mq_qtype t, mq_scheme s, mq_granularity g, int gs) {
    mq_qspec spec;
    mq_qspec_default(&spec);
    spec.type = t;
    spec.scheme = s;
    spec.granularity = g;
    spec.group_size = gs;
    return spec;
}


static uint64_t rng = 88172645463325252ull;
static double unif(void) {
    return ((double)(test_xorshift64(&rng) >> 11) + 0.5) * 0x1p-53;
}
static float gauss(void) {
    return (float)(sqrt(-2.0 * log(unif())) * cos(6.283185307179586 * unif()));
}
static float *random_tensor(size_t n, float sigma) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = sigma * gauss();
    return x;
}

static mq_ctx *new_ctx(int threads) {
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_threads(ctx, threads);
    return ctx;
}

/* ---- layouts ---------------------------------------------------------------------------- */

TEST(layout_8bit) {
    mq_ctx *ctx = new_ctx(1);
    int64_t shape[3] = {3, 4, 2};
    mq_qspec s = make_spec(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 128);
    mq_qlayout L;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 3, shape, &L), MQ_OK);
    CHECK_EQ_INT(L.rows, 3);
    CHECK_EQ_INT(L.cols, 8);
    CHECK_EQ_INT(L.nscales, 3);
    CHECK_EQ_INT(L.groups_per_row, 1);
    CHECK_EQ_INT(L.data_dtype, MQ_I8);
    CHECK_EQ_INT(L.ndata_dims, 3);
    CHECK_EQ_INT(L.data_shape[2], 2);
    CHECK_EQ_INT(L.row_bytes, 8);
    CHECK_EQ_INT(L.data_bytes, 24);
    CHECK_EQ_INT(L.scale_dtype, MQ_F32);
    CHECK_EQ_INT(L.has_zero_point, 0);
    CHECK_EQ_INT(L.qmin, -128);
    CHECK_EQ_INT(L.qmax, 127);
    s.scheme = MQ_ASYMMETRIC;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 3, shape, &L), MQ_OK);
    CHECK_EQ_INT(L.has_zero_point, 1);
    CHECK_EQ_INT(L.zero_point_dtype, MQ_I8);
    s = make_spec(MQ_Q_UINT8, MQ_SYMMETRIC, MQ_PER_TENSOR, 128);
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 3, shape, &L), MQ_OK);
    CHECK_EQ_INT(L.nscales, 1);
    CHECK_EQ_INT(L.data_dtype, MQ_U8);
    CHECK_EQ_INT(L.has_zero_point, 1); /* the constant 128 is stored too */
    CHECK_EQ_INT(L.zero_point_dtype, MQ_U8);
    int64_t one[1] = {5};
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 1, one, &L), MQ_OK);
    CHECK_EQ_INT(L.rows, 5);
    CHECK_EQ_INT(L.cols, 1);
    mq_ctx_free(ctx);
}

TEST(layout_4bit_groups) {
    mq_ctx *ctx = new_ctx(1);
    int64_t shape[2] = {5, 20};
    mq_qspec s = make_spec(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 8);
    mq_qlayout L;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_OK);
    CHECK_EQ_INT(L.groups_per_row, 3);
    CHECK_EQ_INT(L.group_size, 8);
    CHECK_EQ_INT(L.last_group_size, 4);
    CHECK_EQ_INT(L.nscales, 15);
    CHECK_EQ_INT(L.data_dtype, MQ_I32);
    CHECK_EQ_INT(L.ndata_dims, 2);
    CHECK_EQ_INT(L.data_shape[0], 5);
    CHECK_EQ_INT(L.data_shape[1], 3);
    CHECK_EQ_INT(L.row_bytes, 12);
    CHECK_EQ_INT(L.data_bytes, 60);
    CHECK_EQ_INT(L.has_zero_point, 0);
    CHECK_EQ_INT(L.qmin, -8);
    s.group_size = 128; /* a row shorter than a group is one group */
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_OK);
    CHECK_EQ_INT(L.groups_per_row, 1);
    CHECK_EQ_INT(L.group_size, 20);
    CHECK_EQ_INT(L.last_group_size, 20);
    int64_t conv[4] = {4, 3, 3, 3}; /* Conv [out, in, kh, kw] groups along in*kh*kw */
    s = make_spec(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 16);
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 4, conv, &L), MQ_OK);
    CHECK_EQ_INT(L.cols, 27);
    CHECK_EQ_INT(L.groups_per_row, 2);
    CHECK_EQ_INT(L.last_group_size, 11);
    CHECK_EQ_INT(L.data_shape[1], 4);
    CHECK_EQ_INT(L.has_zero_point, 1);
    CHECK_EQ_INT(L.zero_point_dtype, MQ_I8);
    s = make_spec(MQ_Q_BF16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 8);
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 4, conv, &L), MQ_OK);
    CHECK_EQ_INT(L.data_dtype, MQ_BF16);
    CHECK_EQ_INT(L.nscales, 0);
    CHECK_EQ_INT(L.row_bytes, 54);
    CHECK_EQ_INT(L.ndata_dims, 4);
    mq_ctx_free(ctx);
}

TEST(layout_errors) {
    mq_ctx *ctx = new_ctx(1);
    mq_qlayout L;
    int64_t shape[2] = {4, 8};
    mq_qspec s = make_spec(MQ_Q_NONE, MQ_SYMMETRIC, MQ_PER_CHANNEL, 8);
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_ERR_INVALID);
    s.type = MQ_Q_INT4;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 0, shape, &L), MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 9, shape, &L), MQ_ERR_INVALID);
    s.granularity = MQ_PER_GROUP;
    s.group_size = 0;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "group size");
    s.group_size = 8;
    int64_t empty[2] = {4, 0};
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, empty, &L), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "empty");
    int64_t huge[3] = {INT64_MAX / 2, 4, 4};
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 3, huge, &L), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "overflow");
    s.scheme = (mq_scheme)7;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_ERR_INVALID);
    mq_ctx_free(ctx);
}

/* ---- hand-computed values --------------------------------------------------------------- */

/* max |x| = 127.5 makes the symmetric 8-bit scale exactly 1. */
TEST(int8_symmetric_hand) {
    mq_ctx *ctx = new_ctx(1);
    float x[8] = {-127.5f, 2.5f, -3.5f, 127.5f, 0.5f, 1.5f, -0.5f, 100.2f};
    int64_t shape[2] = {1, 8};
    mq_qspec s = make_spec(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0);
    qres r = quantize(ctx, &s, 2, shape, x);
    CHECK_EQ_INT(r.st, MQ_OK);
    CHECK(r.scale[0] == 1.0f);
    int8_t want[8] = {-128, 2, -4, 127, 0, 2, 0, 100}; /* ties to even, 128 clamped */
    CHECK(!memcmp(r.data, want, 8));
    qres_free(&r);
    s.type = MQ_Q_UINT8; /* zero point 128 */
    r = quantize(ctx, &s, 2, shape, x);
    CHECK_EQ_INT(r.st, MQ_OK);
    CHECK(r.scale[0] == 1.0f);
    CHECK_EQ_INT(r.zp[0], 128);
    uint8_t wantu[8] = {0, 130, 124, 255, 128, 130, 128, 228};
    CHECK(!memcmp(r.data, wantu, 8));
    qres_free(&r);
    mq_ctx_free(ctx);
}

/* Range [-10, 245]: width 255, asymmetric 8-bit scale exactly 1. */
TEST(int8_asymmetric_hand) {
    mq_ctx *ctx = new_ctx(1);
    float x[6] = {-10.0f, 245.0f, 3.5f, 4.5f, 0.0f, -9.5f};
    int64_t shape[2] = {1, 6};
    mq_qspec s = make_spec(MQ_Q_INT8, MQ_ASYMMETRIC, MQ_PER_TENSOR, 0);
    qres r = quantize(ctx, &s, 2, shape, x);
    CHECK_EQ_INT(r.st, MQ_OK);
    CHECK(r.scale[0] == 1.0f);
    CHECK_EQ_INT((int8_t)r.zp[0], -118);
    int8_t want[6] = {-128, 127, -114, -114, -118, -128};
    CHECK(!memcmp(r.data, want, 6));
    qres_free(&r);
    s.type = MQ_Q_UINT8;
    r = quantize(ctx, &s, 2, shape, x);
    CHECK_EQ_INT(r.zp[0], 10);
    uint8_t wantu[6] = {0, 255, 14, 14, 10, 0};
    CHECK(!memcmp(r.data, wantu, 6));
    qres_free(&r);
    mq_ctx_free(ctx);
}

TEST(one_sided_zero_and_constant) {
    mq_ctx *ctx = new_ctx(1);
    int64_t shape[2] = {1, 3};
    /* all positive: the range widens to include 0, zero point at qmin */
    float pos[3] = {1.0f, 2.0f, 255.0f};
    mq_qspec s = make_spec(MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0);
    qres r = quantize(ctx, &s, 2, shape, pos);
    CHECK(r.scale[0] == 1.0f);
    CHECK_EQ_INT(r.zp[0], 0);
    CHECK(r.data[0] == 1 && r.data[1] == 2 && r.data[2] == 255);
    qres_free(&r);
    /* all negative: zero point at qmax */
    float neg[3] = {-255.0f, -1.0f, -0.25f};
    r = quantize(ctx, &s, 2, shape, neg);
    CHECK(r.scale[0] == 1.0f);
    CHECK_EQ_INT(r.zp[0], 255);
    CHECK(r.data[0] == 0 && r.data[1] == 254 && r.data[2] == 255);
    qres_free(&r);
    /* all zero: scale clamped to FLT_EPSILON, every value at the zero point */
    float zero[3] = {0, 0, 0};
    s.type = MQ_Q_INT8;
    r = quantize(ctx, &s, 2, shape, zero);
    CHECK(r.scale[0] == FLT_EPSILON);
    CHECK_EQ_INT((int8_t)r.zp[0], -128);
    CHECK(r.data[0] == 0x80 && r.data[1] == 0x80 && r.data[2] == 0x80);
    qres_free(&r);
    s.scheme = MQ_SYMMETRIC;
    r = quantize(ctx, &s, 2, shape, zero);
    CHECK(r.scale[0] == FLT_EPSILON);
    CHECK(r.data[0] == 0 && r.data[1] == 0 && r.data[2] == 0);
    qres_free(&r);
    /* constant: symmetric scale c / 127.5, values at 128 clamped to 127 */
    float c[3] = {3.0f, 3.0f, 3.0f};
    r = quantize(ctx, &s, 2, shape, c);
    CHECK(r.scale[0] == 3.0f / 127.5f);
    CHECK(r.data[0] == 127 && r.data[2] == 127);
    qres_free(&r);
    s.search = MQ_SEARCH_MSE; /* the search handles a zero range too */
    r = quantize(ctx, &s, 2, shape, zero);
    CHECK_EQ_INT(r.st, MQ_OK);
    CHECK(r.scale[0] == FLT_EPSILON);
    qres_free(&r);
    mq_ctx_free(ctx);
}

/* max |x| = 7.5 makes the symmetric 4-bit scale exactly 1; values are stored + 8, eight per
 * little-endian word, low nibble first. */
TEST(int4_packing_bytes) {
    mq_ctx *ctx = new_ctx(1);
    float x[10] = {0, 1, -1, 7.5f, -7.5f, 2.5f, 3, -3, 5.5f, 6};
    int64_t shape[2] = {1, 10};
    mq_qspec s = make_spec(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 128);
    qres r = quantize(ctx, &s, 2, shape, x);
    CHECK_EQ_INT(r.st, MQ_OK);
    CHECK_EQ_INT(r.L.row_bytes, 8);
    CHECK(r.scale[0] == 1.0f);
    /* q = 0 1 -1 7 -8 2 3 -3 6 6  ->  codes 8 9 7 15 0 10 11 5 14 14 */
    uint8_t want[8] = {0x98, 0xf7, 0xa0, 0x5b, 0xee, 0, 0, 0};
    CHECK(!memcmp(r.data, want, 8));
    uint32_t w0;
    memcpy(&w0, r.data, 4);
    CHECK_EQ_INT(w0 & 15, 8); /* lowest bits: element 0 */
    CHECK_EQ_INT(w0 >> 28, 5); /* highest: element 7 */
    qres_free(&r);
    /* UINT4 asymmetric: range [-1, 14] -> scale 1, zero point 1 */
    float u[9] = {-1, 14, 0, 3, 2.5f, 13.5f, 7, 8, 1};
    int64_t ushape[2] = {1, 9};
    s = make_spec(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0);
    r = quantize(ctx, &s, 2, ushape, u);
    CHECK(r.scale[0] == 1.0f);
    CHECK_EQ_INT(r.zp[0], 1);
    /* codes 0 15 1 4 3 15 8 9 2 */
    uint8_t wantu[8] = {0xf0, 0x41, 0xf3, 0x98, 0x02, 0, 0, 0};
    CHECK(!memcmp(r.data, wantu, 8));
    qres_free(&r);
    mq_ctx_free(ctx);
}

/* Groups of 4 along a row of 10: two full groups and a partial one, each its own scale. */
TEST(partial_groups) {
    mq_ctx *ctx = new_ctx(1);
    float x[20] = {7.5f, 1, 2, 3, 15, -2, 4, 0, 0.75f, -0.5f,
                   -7.5f, 0, 0, 0, 1, 1, 1, 1.5f, 30, 2};
    int64_t shape[2] = {2, 10};
    mq_qspec s = make_spec(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 4);
    qres r = quantize(ctx, &s, 2, shape, x);
    CHECK_EQ_INT(r.st, MQ_OK);
    CHECK_EQ_INT(r.L.nscales, 6);
    CHECK(r.scale[0] == 1.0f);
    CHECK(r.scale[1] == 2.0f);
    CHECK(r.scale[2] == 0.75f / 7.5f);
    CHECK(r.scale[3] == 1.0f);
    CHECK(r.scale[4] == 1.5f / 7.5f);
    CHECK(r.scale[5] == 30.0f / 7.5f);
    float out[20];
    CHECK_EQ_INT(mq_dequantize_rows(ctx, &s, &r.L, r.data, r.scale, NULL, 0, 2, out), MQ_OK);
    CHECK(out[0] == 7.0f && out[1] == 1.0f && out[4] == 14.0f && out[5] == -2.0f);
    CHECK(out[10] == -8.0f && out[18] == 28.0f && out[19] == 0.0f); /* 0.5 ties to 0 */
    for (int i = 0; i < 20; i++) {
        int g = (i % 10) / 4;
        float sc = r.scale[(i / 10) * 3 + g];
        CHECK_MSG(fabsf(out[i] - x[i]) <= sc * 1.0001f, "element %d: %g vs %g", i,
                  (double)out[i], (double)x[i]);
    }
    qres_free(&r);
    mq_ctx_free(ctx);
}

TEST(nonfinite_values_fail_naming_the_row) {
    mq_ctx *ctx = new_ctx(2);
    float *x = random_tensor(6 * 40, 1.0f);
    int64_t shape[2] = {6, 40};
    mq_granularity grans[3] = {MQ_PER_TENSOR, MQ_PER_CHANNEL, MQ_PER_GROUP};
    for (int k = 0; k < 2; k++) {
        x[4 * 40 + 17] = k ? INFINITY : NAN;
        for (int g = 0; g < 3; g++) {
            mq_qspec s = make_spec(MQ_Q_INT4, MQ_ASYMMETRIC, grans[g], 16);
            qres r = quantize(ctx, &s, 2, shape, x);
            CHECK_EQ_INT(r.st, MQ_ERR_QUANT);
            CHECK_MSG_HAS(ctx, "row 4, column 17");
            CHECK_MSG_HAS(ctx, k ? "Inf" : "NaN");
            qres_free(&r);
        }
        mq_qspec s = make_spec(MQ_Q_BF16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0);
        qres r = quantize(ctx, &s, 2, shape, x);
        CHECK_EQ_INT(r.st, MQ_ERR_QUANT);
        CHECK_MSG_HAS(ctx, "row 4");
        qres_free(&r);
    }
    x[4 * 40 + 17] = 1e6f; /* finite, but beyond F16 */
    mq_qspec s = make_spec(MQ_Q_FP16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0);
    qres r = quantize(ctx, &s, 2, shape, x);
    CHECK_EQ_INT(r.st, MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "F16 range");
    qres_free(&r);
    free(x);
    mq_ctx_free(ctx);
}

/* ---- consistency: chunks, threads, instruction sets, dtypes, alignment ------------------- */

typedef struct cfg {
    mq_qtype t;
    mq_scheme s;
    mq_granularity g;
    int gs;
    mq_scale_search search;
} cfg;

static const cfg CONFIGS[] = {
    {MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX},
    {MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_TENSOR, 0, MQ_SEARCH_MINMAX},
    {MQ_Q_INT8, MQ_ASYMMETRIC, MQ_PER_TENSOR, 0, MQ_SEARCH_MSE},
    {MQ_Q_UINT8, MQ_SYMMETRIC, MQ_PER_GROUP, 32, MQ_SEARCH_MSE},
    {MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 16, MQ_SEARCH_MINMAX},
    {MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 24, MQ_SEARCH_MSE},
    {MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 40, MQ_SEARCH_MSE},
    {MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MSE},
    {MQ_Q_UINT4, MQ_SYMMETRIC, MQ_PER_TENSOR, 0, MQ_SEARCH_MSE},
    {MQ_Q_FP16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX},
    {MQ_Q_BF16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX},
    /* 4-bit groups of odd size (codes packed across group ends), one packed group per row,
     * 8-bit groups, and the recommended INT4 g128 (a partial last group) */
    {MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 33, MQ_SEARCH_MINMAX},
    {MQ_Q_UINT4, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX},
    {MQ_Q_INT8, MQ_ASYMMETRIC, MQ_PER_GROUP, 20, MQ_SEARCH_MINMAX},
    {MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX},
    {MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 128, MQ_SEARCH_MSE},
    {MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 64, MQ_SEARCH_MSE},
};
#define NCONFIGS (sizeof CONFIGS / sizeof CONFIGS[0])

static mq_qspec spec_of(const cfg *c) {
    mq_qspec s = make_spec(c->t, c->s, c->g, c->gs);
    s.search = c->search;
    return s;
}

TEST(per_tensor_in_row_chunks) {
    mq_ctx *ctx = new_ctx(2);
    int64_t shape[2] = {10, 33};
    float *x = random_tensor(330, 0.3f);
    for (size_t c = 0; c < NCONFIGS; c++) {
        mq_qspec s = spec_of(&CONFIGS[c]);
        qres a = quantize_chunks(ctx, &s, 2, shape, MQ_F32, x, 1);
        qres b = quantize_chunks(ctx, &s, 2, shape, MQ_F32, x, 3);
        qres d = quantize_chunks(ctx, &s, 2, shape, MQ_F32, x, 10);
        CHECK_MSG(same_result(&a, &b) && same_result(&a, &d), "config %zu", c);
        qres_free(&a);
        qres_free(&b);
        qres_free(&d);
    }
    /* a later chunk without the first one: the per-tensor scale is missing */
    mq_qspec s = make_spec(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_TENSOR, 0);
    mq_qlayout L;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_OK);
    float scale = 0;
    int8_t data[330];
    CHECK_EQ_INT(mq_quantize_rows(ctx, &s, &L, NULL, MQ_F32, x, 3, 5, data, &scale, NULL),
                 MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "rows from 0");
    free(x);
    mq_ctx_free(ctx);
}

TEST(thread_count_independence) {
    int64_t shape[2] = {97, 300};
    float *x = random_tensor(97 * 300, 0.05f);
    float imp[300];
    for (int i = 0; i < 300; i++) imp[i] = (float)unif() * 3.0f;
    for (size_t c = 0; c < NCONFIGS; c++) {
        for (int w = 0; w < 2; w++) {
            mq_qspec s = spec_of(&CONFIGS[c]);
            qres ref;
            for (int th = 1; th <= 3; th++) {
                mq_ctx *ctx = new_ctx(th);
                qres r = quantize_imp(ctx, &s, w ? imp : NULL, 2, shape, x);
                CHECK_EQ_INT(r.st, MQ_OK);
                if (th == 1) ref = r;
                else {
                    CHECK_MSG(same_result(&ref, &r), "config %zu, %d threads", c, th);
                    qres_free(&r);
                }
                mq_ctx_free(ctx);
            }
            qres_free(&ref);
        }
    }
    free(x);
}

TEST(simd_paths_equal_scalar) {
    mq_isa best = mq_isa_supported();
    mq_ctx *sc = new_ctx(2), *vc = new_ctx(2);
    CHECK_EQ_INT(mq_ctx_set_isa(sc, MQ_ISA_SCALAR), MQ_OK);
    float *x = random_tensor(7 * 203, 1.0f);
    for (int i = 0; i < 7 * 203; i += 37) x[i] *= 20.0f; /* outliers */
    float imp[203];
    for (int i = 0; i < 203; i++) imp[i] = (float)unif();
    int checked = 0;
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(vc, (mq_isa)isa), MQ_OK);
        for (int64_t cols = 1; cols <= 203; cols += (cols < 70 ? 1 : 19)) {
            int64_t shape[2] = {7, cols};
            for (size_t c = 0; c < NCONFIGS; c++) {
                for (int w = 0; w < 2; w++) {
                    mq_qspec s = spec_of(&CONFIGS[c]);
                    const float *wi = w ? imp : NULL;
                    qres a = quantize_imp(sc, &s, wi, 2, shape, x);
                    qres b = quantize_imp(vc, &s, wi, 2, shape, x);
                    CHECK_MSG(same_result(&a, &b), "isa %s, cols %lld, config %zu, weighted %d",
                              mq_isa_name((mq_isa)isa), (long long)cols, c, w);
                    float *da = malloc((size_t)(7 * cols) * 4), *db = malloc((size_t)(7 * cols) * 4);
                    CHECK_EQ_INT(mq_dequantize_rows(sc, &s, &a.L, a.data, a.scale, a.zp, 0, 7, da), MQ_OK);
                    CHECK_EQ_INT(mq_dequantize_rows(vc, &s, &b.L, b.data, b.scale, b.zp, 0, 7, db), MQ_OK);
                    CHECK_MSG(!memcmp(da, db, (size_t)(7 * cols) * 4), "dequantize isa %d cols %lld config %zu",
                              isa, (long long)cols, c);
                    free(da);
                    free(db);
                    qres_free(&a);
                    qres_free(&b);
                    checked++;
                }
            }
        }
    }
    /* on a machine without AVX2 only the scalar path exists: nothing to compare */
    CHECK(best == MQ_ISA_SCALAR || checked > 0);
    free(x);
    mq_ctx_free(sc);
    mq_ctx_free(vc);
}

/* F16 and BF16 sources (read in place by the vector kernels), aligned or not, against the
 * scalar reference at one thread: every level, 3 threads, every config. */
TEST(simd_paths_equal_scalar_half_sources) {
    mq_isa best = mq_isa_supported();
    mq_ctx *sc = new_ctx(1), *vc = new_ctx(3);
    CHECK_EQ_INT(mq_ctx_set_isa(sc, MQ_ISA_SCALAR), MQ_OK);
    enum { R = 5, C = 261 };
    float *x = random_tensor(R * C, 1.0f);
    for (int i = 0; i < R * C; i += 29) x[i] *= 16.0f; /* outliers */
    uint16_t *h = malloc(R * C * 2), *bf = malloc(R * C * 2);
    uint8_t *raw = malloc(R * C * 2 + 1);
    for (int i = 0; i < R * C; i++) {
        h[i] = mq_f32_to_f16(x[i]);
        bf[i] = mq_f32_to_bf16(x[i]);
    }
    int checked = 0;
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(vc, (mq_isa)isa), MQ_OK);
        for (int64_t cols = 1; cols <= C; cols += (cols < 40 ? 1 : 37)) {
            int64_t shape[2] = {R, cols};
            for (size_t c = 0; c < NCONFIGS; c++) {
                mq_qspec s = spec_of(&CONFIGS[c]);
                for (int k = 0; k < 4; k++) {
                    mq_dtype dt = k % 2 ? MQ_BF16 : MQ_F16;
                    const void *src = k % 2 ? (const void *)bf : (const void *)h;
                    if (k >= 2) src = memcpy(raw + 1, src, (size_t)(R * cols) * 2);
                    qres a = quantize_chunks(sc, &s, 2, shape, dt, src, 1);
                    qres b = quantize_chunks(vc, &s, 2, shape, dt, src, 2);
                    CHECK_MSG(same_result(&a, &b), "isa %s, cols %lld, config %zu, %s%s",
                              mq_isa_name((mq_isa)isa), (long long)cols, c, mq_dtype_name(dt),
                              k >= 2 ? " unaligned" : "");
                    qres_free(&a);
                    qres_free(&b);
                    checked++;
                }
            }
        }
    }
    CHECK(best == MQ_ISA_SCALAR || checked > 0);
    /* a NaN in a BF16 source is reported at its row and column */
    mq_ctx *ctx = new_ctx(2);
    bf[3 * C + 100] = 0x7fc0;
    int64_t shape[2] = {R, C};
    mq_granularity grans[3] = {MQ_PER_TENSOR, MQ_PER_CHANNEL, MQ_PER_GROUP};
    for (int g = 0; g < 3; g++) {
        mq_qspec s = make_spec(MQ_Q_INT4, MQ_SYMMETRIC, grans[g], 64);
        qres r = quantize_chunks(ctx, &s, 2, shape, MQ_BF16, bf, 1);
        CHECK_EQ_INT(r.st, MQ_ERR_QUANT);
        CHECK_MSG_HAS(ctx, "row 3, column 100");
        qres_free(&r);
    }
    mq_ctx_free(ctx);
    free(x);
    free(h);
    free(bf);
    free(raw);
    mq_ctx_free(sc);
    mq_ctx_free(vc);
}

TEST(source_dtypes_and_alignment) {
    mq_ctx *ctx = new_ctx(2);
    int64_t shape[2] = {9, 45};
    size_t n = 9 * 45;
    float *x = random_tensor(n, 0.7f);
    uint16_t *h = malloc(n * 2), *bf = malloc(n * 2);
    double *d = malloc(n * 8);
    /* values exact in every dtype: rounded to bf16 then to f16 precision */
    for (size_t i = 0; i < n; i++) {
        x[i] = mq_bf16_to_f32(mq_f32_to_bf16(x[i]));
        h[i] = mq_f32_to_f16(x[i]);
        x[i] = mq_f16_to_f32(h[i]);
        bf[i] = mq_f32_to_bf16(x[i]);
        d[i] = x[i];
        CHECK(mq_bf16_to_f32(bf[i]) == x[i]);
    }
    uint8_t *raw = malloc(n * 8 + 1);
    for (size_t c = 0; c < NCONFIGS; c++) {
        mq_qspec s = spec_of(&CONFIGS[c]);
        qres ref = quantize(ctx, &s, 2, shape, x);
        CHECK_EQ_INT(ref.st, MQ_OK);
        const void *srcs[4] = {x, h, bf, d};
        mq_dtype dts[4] = {MQ_F32, MQ_F16, MQ_BF16, MQ_F64};
        for (int k = 0; k < 4; k++) {
            size_t bytes = n * mq_dtype_size(dts[k]);
            qres a = quantize_chunks(ctx, &s, 2, shape, dts[k], srcs[k], 2);
            memcpy(raw + 1, srcs[k], bytes); /* unaligned for its dtype */
            qres b = quantize_chunks(ctx, &s, 2, shape, dts[k], raw + 1, 2);
            CHECK_MSG(same_result(&ref, &a), "config %zu from %s", c, mq_dtype_name(dts[k]));
            CHECK_MSG(same_result(&ref, &b), "config %zu from unaligned %s", c,
                      mq_dtype_name(dts[k]));
            qres_free(&a);
            qres_free(&b);
        }
        qres_free(&ref);
    }
    mq_qspec s = make_spec(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0);
    mq_qlayout L;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_OK);
    float scale[9];
    CHECK_EQ_INT(mq_quantize_rows(ctx, &s, &L, NULL, MQ_I32, x, 0, 9, raw, scale, NULL), MQ_ERR_INVALID);
    free(raw);
    free(x);
    free(h);
    free(bf);
    free(d);
    mq_ctx_free(ctx);
}

/* ---- casts and round trips ---------------------------------------------------------------- */

TEST(casts_round_to_nearest_even) {
    mq_ctx *ctx = new_ctx(1);
    float x[4] = {1.0f, 1.0f + 0x1p-11f, 1.0f + 0x1p-8f, -65504.0f};
    int64_t shape[1] = {4};
    mq_qspec s = make_spec(MQ_Q_FP16, MQ_SYMMETRIC, MQ_PER_TENSOR, 0);
    qres r = quantize(ctx, &s, 1, shape, x);
    CHECK_EQ_INT(r.st, MQ_OK);
    uint16_t h[4];
    memcpy(h, r.data, 8);
    CHECK_EQ_INT(h[0], 0x3c00);
    CHECK_EQ_INT(h[1], 0x3c00); /* tie to even */
    CHECK_EQ_INT(h[2], 0x3c04);
    CHECK_EQ_INT(h[3], 0xfbff);
    float back[4];
    CHECK_EQ_INT(mq_dequantize_rows(ctx, &s, &r.L, r.data, NULL, NULL, 0, 4, back), MQ_OK);
    CHECK(back[2] == x[2] && back[3] == x[3]);
    qres_free(&r);
    s.type = MQ_Q_BF16;
    r = quantize(ctx, &s, 1, shape, x);
    memcpy(h, r.data, 8);
    CHECK_EQ_INT(h[2], 0x3f80); /* 1 + 2^-8 is a tie between bf16 neighbours: even */
    qres_free(&r);
    /* F64 converts once (no double rounding through f32) */
    double dx[1] = {1.0 + 0x1p-8 + 0x1p-30};
    int64_t one[1] = {1};
    mq_qlayout L;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 1, one, &L), MQ_OK);
    uint16_t o;
    CHECK_EQ_INT(mq_quantize_rows(ctx, &s, &L, NULL, MQ_F64, dx, 0, 1, &o, NULL, NULL), MQ_OK);
    CHECK_EQ_INT(o, 0x3f81);
    mq_ctx_free(ctx);
}

TEST(dequantize_every_type_within_half_step) {
    mq_ctx *ctx = new_ctx(2);
    int64_t shape[2] = {13, 70};
    float *x = random_tensor(13 * 70, 2.0f);
    float *out = malloc(13 * 70 * 4);
    for (size_t c = 0; c < NCONFIGS; c++) {
        mq_qspec s = spec_of(&CONFIGS[c]);
        s.search = MQ_SEARCH_MINMAX; /* no clipping: every value within half a step */
        qres r = quantize(ctx, &s, 2, shape, x);
        CHECK_EQ_INT(mq_dequantize_rows(ctx, &s, &r.L, r.data, r.scale, r.zp, 0, 13, out), MQ_OK);
        /* rows 5..8 only, into the start of out */
        float part[4 * 70];
        CHECK_EQ_INT(mq_dequantize_rows(ctx, &s, &r.L, r.data, r.scale, r.zp, 5, 9, part), MQ_OK);
        CHECK(!memcmp(part, out + 5 * 70, sizeof part));
        for (int i = 0; i < 13 * 70; i++) {
            float step;
            if (r.L.nscales == 0) step = fabsf(x[i]) * 0x1p-7f;
            else {
                int64_t row = i / 70, g = (i % 70) / r.L.group_size;
                step = r.scale[s.granularity == MQ_PER_TENSOR ? 0 : row * r.L.groups_per_row + g];
            }
            /* the symmetric rule clips max|x| by half a step at the positive end */
            if (!(fabsf(out[i] - x[i]) <= step * 0.5001f + 1e-30f)) {
                if (!(s.scheme == MQ_SYMMETRIC && fabsf(out[i] - x[i]) <= step * 1.0001f)) {
                    CHECK_MSG(0, "config %zu element %d: %g vs %g (step %g)", c, i,
                              (double)out[i], (double)x[i], (double)step);
                    break;
                }
            }
        }
        qres_free(&r);
    }
    free(x);
    free(out);
    mq_ctx_free(ctx);
}

/* ---- the scale search --------------------------------------------------------------------- */

static double weighted_err(const float *a, const float *b, const float *w, int64_t rows,
                           int64_t cols) {
    double e = 0;
    for (int64_t i = 0; i < rows * cols; i++) {
        double d = (double)a[i] - b[i];
        e += d * d * (w ? w[i % cols] : 1.0);
    }
    return e;
}

TEST(mse_search_lowers_the_error) {
    mq_ctx *ctx = new_ctx(2);
    int64_t shape[2] = {64, 256};
    float *x = random_tensor(64 * 256, 1.0f);
    float *out = malloc(64 * 256 * 4);
    float imp[256];
    for (int i = 0; i < 256; i++) imp[i] = i < 16 ? 50.0f : 0.1f; /* a few salient inputs */
    for (int k = 0; k < 4; k++) {
        cfg c = {k % 2 ? MQ_Q_UINT4 : MQ_Q_INT4, k % 2 ? MQ_ASYMMETRIC : MQ_SYMMETRIC,
                 MQ_PER_GROUP, 128, MQ_SEARCH_MINMAX};
        const float *w = k >= 2 ? imp : NULL;
        mq_qspec s = spec_of(&c);
        qres a = quantize_imp(ctx, &s, w, 2, shape, x);
        mq_dequantize_rows(ctx, &s, &a.L, a.data, a.scale, a.zp, 0, 64, out);
        double e_minmax = weighted_err(x, out, w, 64, 256);
        s.search = MQ_SEARCH_MSE;
        qres b = quantize_imp(ctx, &s, w, 2, shape, x);
        mq_dequantize_rows(ctx, &s, &b.L, b.data, b.scale, b.zp, 0, 64, out);
        double e_mse = weighted_err(x, out, w, 64, 256);
        /* Gaussian 4-bit groups: the search removes over 5% of the error */
        CHECK_MSG(e_mse < 0.95 * e_minmax, "case %d: %g vs %g", k, e_mse, e_minmax);
        if (w) { /* weighting lowers the error on the salient inputs */
            qres u = quantize(ctx, &s, 2, shape, x);
            mq_dequantize_rows(ctx, &s, &u.L, u.data, u.scale, u.zp, 0, 64, out);
            CHECK_MSG(weighted_err(x, out, w, 64, 256) > e_mse, "case %d", k);
            qres_free(&u);
        }
        qres_free(&a);
        qres_free(&b);
    }
    imp[3] = -1.0f;
    mq_qspec s = make_spec(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 128);
    s.search = MQ_SEARCH_MSE;
    qres r = quantize_imp(ctx, &s, imp, 2, shape, x);
    CHECK_EQ_INT(r.st, MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "importance[3]");
    qres_free(&r);
    free(x);
    free(out);
    mq_ctx_free(ctx);
}

/* Values on the min/max grid have no error: the search keeps min/max (ties keep it). */
TEST(mse_search_keeps_exact_min_max) {
    mq_ctx *ctx = new_ctx(1);
    float x[32];
    for (int i = 0; i < 32; i++) x[i] = (float)(i % 16) * 0.5f; /* 0 .. 7.5: scale 0.5 */
    int64_t shape[2] = {2, 16};
    mq_qspec s = make_spec(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0);
    qres a = quantize(ctx, &s, 2, shape, x);
    s.search = MQ_SEARCH_MSE;
    qres b = quantize(ctx, &s, 2, shape, x);
    CHECK(same_result(&a, &b));
    CHECK(b.scale[0] == 0.5f && b.zp[0] == 0);
    float out[32];
    CHECK_EQ_INT(mq_dequantize_rows(ctx, &s, &b.L, b.data, b.scale, b.zp, 0, 2, out), MQ_OK);
    CHECK(!memcmp(out, x, sizeof x));
    qres_free(&a);
    qres_free(&b);
    mq_ctx_free(ctx);
}

TEST(recommended_specs) {
    mq_qspec s;
    mq_qspec_default(&s);
    CHECK_EQ_INT(s.type, MQ_Q_INT8);
    CHECK_EQ_INT(s.granularity, MQ_PER_CHANNEL);
    CHECK_EQ_INT(s.search, MQ_SEARCH_MINMAX);
    CHECK_EQ_INT(s.group_size, 128);
    mq_qspec_recommended(&s, MQ_Q_INT4);
    CHECK_EQ_INT(s.granularity, MQ_PER_GROUP);
    CHECK_EQ_INT(s.scheme, MQ_SYMMETRIC);
    CHECK_EQ_INT(s.search, MQ_SEARCH_MSE);
    mq_qspec_recommended(&s, MQ_Q_UINT8);
    CHECK_EQ_INT(s.scheme, MQ_ASYMMETRIC);
    CHECK_EQ_INT(s.search, MQ_SEARCH_MINMAX);
}

/* ---- arguments, allocation failures, error figures ---------------------------------------- */

TEST(bad_arguments) {
    mq_ctx *ctx = new_ctx(1);
    float x[8] = {0};
    int64_t shape[2] = {2, 4};
    mq_qspec s = make_spec(MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0);
    mq_qlayout L;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_OK);
    uint8_t data[8], zp[2];
    float scale[2];
    CHECK_EQ_INT(mq_quantize_rows(ctx, &s, &L, NULL, MQ_F32, x, 1, 3, data, scale, zp), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "outside");
    CHECK_EQ_INT(mq_quantize_rows(ctx, &s, &L, NULL, MQ_F32, x, 0, 2, data, scale, NULL), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "zero-point");
    CHECK_EQ_INT(mq_quantize_rows(ctx, &s, &L, NULL, MQ_F32, x, 0, 2, data, NULL, zp), MQ_ERR_INVALID);
    mq_qspec other = s;
    other.type = MQ_Q_INT4;
    CHECK_EQ_INT(mq_quantize_rows(ctx, &other, &L, NULL, MQ_F32, x, 0, 2, data, scale, zp), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "layout");
    other = s;
    other.scheme = MQ_SYMMETRIC; /* UINT8 symmetric also stores its zero point: still fine */
    CHECK_EQ_INT(mq_quantize_rows(ctx, &other, &L, NULL, MQ_F32, x, 0, 2, data, scale, zp), MQ_OK);
    CHECK_EQ_INT(zp[0], 128);
    other.granularity = MQ_PER_TENSOR; /* 2 scales in the layout */
    CHECK_EQ_INT(mq_quantize_rows(ctx, &other, &L, NULL, MQ_F32, x, 0, 2, data, scale, zp), MQ_ERR_INVALID);
    mq_qspec i8 = make_spec(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0);
    mq_qlayout L8;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &i8, 2, shape, &L8), MQ_OK);
    i8.scheme = MQ_ASYMMETRIC; /* the layout has no zero points */
    CHECK_EQ_INT(mq_quantize_rows(ctx, &i8, &L8, NULL, MQ_F32, x, 0, 2, data, scale, zp), MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_quantize_rows(ctx, &s, &L, NULL, MQ_F32, x, 1, 1, data, scale, zp), MQ_OK);
    mq_ctx_free(ctx);
}

static int fail_at, alloc_count, live;
static void *counting_alloc(void *ud, size_t n) {
    (void)ud;
    if (++alloc_count == fail_at) return NULL;
    void *p = malloc(n);
    if (p) __atomic_add_fetch(&live, 1, __ATOMIC_RELAXED);
    return p;
}
static void counting_free(void *ud, void *p) {
    (void)ud;
    if (p) __atomic_sub_fetch(&live, 1, __ATOMIC_RELAXED);
    free(p);
}

TEST(allocation_failures_are_clean) {
    float *x = random_tensor(6 * 50, 1.0f);
    int64_t shape[2] = {6, 50};
    mq_qspec s = make_spec(MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_TENSOR, 0);
    s.search = MQ_SEARCH_MSE;
    int saw_ok = 0;
    for (fail_at = 1; fail_at < 40 && !saw_ok; fail_at++) {
        alloc_count = 0;
        live = 0;
        mq_allocator a = {counting_alloc, counting_free, NULL};
        mq_ctx *ctx = mq_ctx_create_with_allocator(&a);
        if (!ctx) continue;
        mq_ctx_set_threads(ctx, 1);
        qres r = quantize(ctx, &s, 2, shape, x);
        if (r.st == MQ_OK) saw_ok = 1;
        else CHECK_EQ_INT(r.st, MQ_ERR_NOMEM);
        qres_free(&r);
        mq_ctx_free(ctx);
        CHECK_EQ_INT(live, 0);
    }
    CHECK(saw_ok);
    free(x);
}

TEST(error_stats) {
    float a[4] = {1, -2, 3, 0}, b[4] = {1, -2, 2, 1};
    mq_error_stats st;
    mq_error_stats_compute(a, b, 4, &st);
    CHECK(fabs(st.mse - 0.5) < 1e-15);
    CHECK(fabs(st.max_abs - 1.0) < 1e-15);
    CHECK(fabs(st.sqnr_db - 10.0 * log10(14.0 / 2.0)) < 1e-12);
    CHECK(fabs(st.rel_fro - sqrt(2.0 / 14.0)) < 1e-15);
    CHECK(fabs(st.cosine - 11.0 / (sqrt(14.0) * sqrt(10.0))) < 1e-15);
    mq_error_stats_compute(a, a, 4, &st);
    CHECK(isinf(st.sqnr_db) && st.sqnr_db > 0);
    CHECK(st.rel_fro == 0 && st.max_abs == 0 && fabs(st.cosine - 1.0) < 1e-15);
    float z[2] = {0, 0};
    mq_error_stats_compute(z, z, 2, &st);
    CHECK(st.cosine == 1.0);
    mq_error_stats_compute(z, a, 2, &st);
    CHECK(st.cosine == 0.0 && isinf(st.rel_fro));
}

int main(void) {
    RUN(layout_8bit);
    RUN(layout_4bit_groups);
    RUN(layout_errors);
    RUN(int8_symmetric_hand);
    RUN(int8_asymmetric_hand);
    RUN(one_sided_zero_and_constant);
    RUN(int4_packing_bytes);
    RUN(partial_groups);
    RUN(nonfinite_values_fail_naming_the_row);
    RUN(per_tensor_in_row_chunks);
    RUN(thread_count_independence);
    RUN(simd_paths_equal_scalar);
    RUN(simd_paths_equal_scalar_half_sources);
    RUN(source_dtypes_and_alignment);
    RUN(casts_round_to_nearest_even);
    RUN(dequantize_every_type_within_half_step);
    RUN(mse_search_lowers_the_error);
    RUN(mse_search_keeps_exact_min_max);
    RUN(recommended_specs);
    RUN(bad_arguments);
    RUN(allocation_failures_are_clean);
    RUN(error_stats);
    return test_summary();
}
