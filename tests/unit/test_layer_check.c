/* mq_qmodel_check_layer: the figures equal those of an independent computation (weights from
 * mq_dequantize_rows, activations quantized by the documented formulas, a plain matmul in
 * double), for INT8 and INT4, Linear and Conv, every mode, with and without a reference. */
#include "harness.h"
#include "monoquant.h"

#include <math.h>

enum { FC_N = 48, FC_K = 200, CV_N = 8, CV_K = 27, ROWS = 5 };

static char model_path[512], stats_path[512], q8_path[512], q4_path[512];

static float next_val(uint32_t *s, float amp) {
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f - 0.5f) * amp;
}

/* fc [48, 200] F32 + bias, conv [8, 3, 3, 3] BF16, norm [48] */
static int write_model(void) {
    mq_ctx *ctx = mq_ctx_create();
    mq_tensor_desc d[4] = {{"fc.weight", MQ_F32, 2, {FC_N, FC_K}}, {"fc.bias", MQ_F32, 1, {FC_N}},
                           {"conv.weight", MQ_BF16, 4, {CV_N, 3, 3, 3}},
                           {"norm.weight", MQ_F32, 1, {FC_N}}};
    mq_writer *w = NULL;
    int ok = mq_writer_open(ctx, model_path, MQ_FORMAT_AUTO, d, 4, NULL, 0, &w) == MQ_OK;
    uint32_t seed = 11;
    uint64_t counts[4] = {FC_N * FC_K, FC_N, CV_N * CV_K, FC_N};
    for (int t = 0; ok && t < 4; t++)
        for (uint64_t j = 0; ok && j < counts[t]; j++) {
            float v = next_val(&seed, j % 13 == 0 ? 2.0f : 0.4f);
            if (d[t].dtype == MQ_BF16) {
                uint16_t h = mq_f32_to_bf16(v);
                ok = mq_writer_write(w, &h, 2) == MQ_OK;
            } else {
                ok = mq_writer_write(w, &v, 4) == MQ_OK;
            }
        }
    ok = ok && mq_writer_commit(w) == MQ_OK;
    mq_writer_free(w);
    mq_ctx_free(ctx);
    return ok;
}

static void inputs(float *x, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) x[i] = next_val(&seed, 4.0f);
}

/* Calibration statistics for "fc" (so that the INT8 checkpoint stores its input scale). */
static int write_stats(void) {
    mq_ctx *ctx = mq_ctx_create();
    mq_calibrator *cal = NULL;
    float x[16 * FC_K];
    inputs(x, 16 * FC_K, 3);
    int64_t shape[2] = {16, FC_K};
    int ok = mq_calibrator_create(ctx, NULL, &cal) == MQ_OK &&
             mq_calibrator_add_layer(cal, "fc", FC_K) == MQ_OK &&
             mq_calibrator_update(cal, "fc", MQ_F32, x, 2, shape, -1) == MQ_OK &&
             mq_calibrator_save(cal, stats_path, NULL, 0) == MQ_OK;
    mq_calibrator_free(cal);
    mq_ctx_free(ctx);
    return ok;
}

static int quantize(const char *out, mq_qtype type, const char *calibration) {
    mq_ctx *ctx = mq_ctx_create();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    o.layout = MQ_LAYOUT_NATIVE; /* the native file's rules */
    mq_qspec_recommended(&o.spec, type);
    o.spec.group_size = 64;
    o.default_skip = 0;
    o.calibration = calibration;
    int ok = mq_quantize_file(ctx, model_path, out, &o, NULL) == MQ_OK;
    if (!ok) fprintf(stderr, "%s\n", mq_ctx_message(ctx));
    mq_ctx_free(ctx);
    return ok;
}

static void setup(void) {
    const char *d = test_tmpdir();
    snprintf(model_path, sizeof model_path, "%s/test_layer_check.safetensors", d);
    snprintf(stats_path, sizeof stats_path, "%s/test_layer_check.stats.safetensors", d);
    snprintf(q8_path, sizeof q8_path, "%s/test_layer_check.q8.safetensors", d);
    snprintf(q4_path, sizeof q4_path, "%s/test_layer_check.q4.safetensors", d);
}

/* The activations the kernels see, by the formulas of the kernels section. */
static void emulate_act(const float *x, float *xq, int64_t M, int64_t K, int act, float s, int zp) {
    for (int64_t m = 0; m < M; m++) {
        const float *r = x + m * K;
        float *o = xq + m * K;
        if (act == MQ_ACT_F32) {
            memcpy(o, r, (size_t)K * 4);
            continue;
        }
        if (act == MQ_ACT_DYNAMIC) {
            float mx = 0;
            for (int64_t k = 0; k < K; k++) mx = fmaxf(mx, fabsf(r[k]));
            float sx = mx > 0 ? mx / 127.0f : 1.0f;
            for (int64_t k = 0; k < K; k++)
                o[k] = fminf(fmaxf(rintf(r[k] / sx), -127.0f), 127.0f) * sx;
        } else {
            for (int64_t k = 0; k < K; k++)
                o[k] = (fminf(fmaxf(rintf(r[k] / s) + (float)zp, 0.0f), 255.0f) - (float)zp) * s;
        }
    }
}

/* y [M, N] = x W^T + b in double, rounded to float. */
static void matmul(const float *x, const float *w, const float *b, int64_t M, int64_t N,
                   int64_t K, float *y) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double acc = b ? b[n] : 0.0;
            for (int64_t k = 0; k < K; k++) acc += (double)x[m * K + k] * w[n * K + k];
            y[m * N + n] = (float)acc;
        }
}

static int close_rel(double a, double b, double rel) {
    return fabs(a - b) <= rel * fmax(fabs(a), fabs(b)) + 1e-9;
}

/* Checks layer `name` of `qpath` in mode `act` (with or without the reference) against the
 * independent computation. */
static void check_one(const char *qpath, const char *name, int act, int use_ref, int want_act) {
    mq_ctx *ctx = mq_ctx_create();
    mq_qmodel *qm = NULL, *ref = NULL;
    CHECK(mq_qmodel_open(ctx, qpath, &qm) == MQ_OK);
    CHECK(mq_qmodel_open(ctx, model_path, &ref) == MQ_OK);
    if (!qm || !ref) goto out;
    long i = mq_qmodel_find(qm, name), r = mq_qmodel_find(ref, name);
    CHECK(i >= 0 && r >= 0);
    if (i < 0 || r < 0) goto out;
    CHECK(mq_qmodel_runnable(qm, (size_t)i));
    const mq_qtensor *q = mq_qmodel_tensor(qm, (size_t)i);
    int64_t N = q->shape[0], K = (int64_t)(q->numel / (uint64_t)N);
    float *x = malloc((size_t)(ROWS * K) * 4), *xq = malloc((size_t)(ROWS * K) * 4);
    float *wr = malloc((size_t)(N * K) * 4), *wd = malloc((size_t)(N * K) * 4);
    float *ya = malloc((size_t)(ROWS * N) * 4), *yb = malloc((size_t)(ROWS * N) * 4);
    float bias[FC_N], *scale = malloc((size_t)q->scale->nbytes), s_in = 0;
    void *zp = q->zero_point ? malloc((size_t)q->zero_point->nbytes) : NULL;
    memcpy(scale, q->scale->data, (size_t)q->scale->nbytes);
    if (zp) memcpy(zp, q->zero_point->data, (size_t)q->zero_point->nbytes);
    inputs(x, ROWS * K, 99);
    CHECK(mq_dequantize_rows(ctx, &q->spec, &q->layout, q->data->data, scale, zp, 0, N, wd) == MQ_OK);
    if (use_ref) CHECK(mq_qmodel_read_rows(ref, (size_t)r, 0, N, wr) == MQ_OK);
    else memcpy(wr, wd, (size_t)(N * K) * 4);
    long b = !strcmp(name, "fc.weight") ? mq_qmodel_find(qm, "fc.bias") : -1;
    if (b >= 0) CHECK(mq_qmodel_read_rows(qm, (size_t)b, 0, N, bias) == MQ_OK);
    int zp_in = 0;
    if (want_act == MQ_ACT_STATIC) {
        CHECK(q->input_scale && q->input_zero_point);
        memcpy(&s_in, q->input_scale->data, 4);
        zp_in = q->input_zero_point->dtype == MQ_U8 ? *(const uint8_t *)q->input_zero_point->data
                                                    : *(const int8_t *)q->input_zero_point->data + 128;
    }
    emulate_act(x, xq, ROWS, K, want_act, s_in, zp_in);
    matmul(x, wr, b >= 0 ? bias : NULL, ROWS, N, K, ya);
    matmul(xq, wd, b >= 0 ? bias : NULL, ROWS, N, K, yb);
    mq_error_stats want;
    mq_error_stats_compute(ya, yb, (size_t)(ROWS * N), &want);
    mq_layer_check got;
    mq_status st = mq_qmodel_check_layer(qm, (size_t)i, use_ref ? ref : NULL, act, x, ROWS, 0, &got);
    CHECK_MSG(st == MQ_OK, "%s", mq_ctx_message(ctx));
    CHECK_EQ_INT(got.act, want_act);
    CHECK_EQ_INT(got.out_features, N);
    CHECK_EQ_INT(got.in_features, K);
    CHECK_EQ_INT(got.has_bias, b >= 0);
    CHECK_EQ_INT(got.against_reference, use_ref);
    if (use_ref || want_act != MQ_ACT_F32) {
        CHECK_MSG(fabs(got.error.sqnr_db - want.sqnr_db) < 0.02, "%s act %d ref %d: SQNR %.4f vs %.4f",
                  name, act, use_ref, got.error.sqnr_db, want.sqnr_db);
        CHECK_MSG(close_rel(got.error.rel_fro, want.rel_fro, 3e-3), "rel %.6g vs %.6g",
                  got.error.rel_fro, want.rel_fro);
        CHECK_MSG(close_rel(got.error.max_abs, want.max_abs, 1e-2), "max abs %.6g vs %.6g",
                  got.error.max_abs, want.max_abs);
        CHECK(close_rel(got.error.cosine, want.cosine, 1e-4));
    } else {
        /* against its own dequantized weights, weight-only: only summation order differs */
        CHECK_MSG(got.error.sqnr_db > 100, "kernel-only SQNR %.2f", got.error.sqnr_db);
    }
    free(x), free(xq), free(wr), free(wd), free(ya), free(yb), free(scale), free(zp);
out:
    mq_qmodel_free(qm);
    mq_qmodel_free(ref);
    mq_ctx_free(ctx);
}

TEST(build_checkpoints) {
    setup();
    CHECK(write_model());
    CHECK(write_stats());
    CHECK(quantize(q8_path, MQ_Q_INT8, stats_path));
    CHECK(quantize(q4_path, MQ_Q_INT4, NULL));
}

TEST(int8_linear_all_modes) {
    for (int ref = 0; ref < 2; ref++) {
        check_one(q8_path, "fc.weight", MQ_ACT_F32, ref, MQ_ACT_F32);
        check_one(q8_path, "fc.weight", MQ_ACT_DYNAMIC, ref, MQ_ACT_DYNAMIC);
        check_one(q8_path, "fc.weight", MQ_ACT_STATIC, ref, MQ_ACT_STATIC);
    }
}

TEST(int8_conv_flattened) {
    check_one(q8_path, "conv.weight", MQ_ACT_F32, 1, MQ_ACT_F32);
    /* no input scale stored for conv: static runs dynamic */
    check_one(q8_path, "conv.weight", MQ_ACT_STATIC, 1, MQ_ACT_DYNAMIC);
}

TEST(int4_groups) {
    for (int ref = 0; ref < 2; ref++) {
        check_one(q4_path, "fc.weight", MQ_ACT_F32, ref, MQ_ACT_F32);
        check_one(q4_path, "fc.weight", MQ_ACT_DYNAMIC, ref, MQ_ACT_DYNAMIC);
        check_one(q4_path, "conv.weight", MQ_ACT_DYNAMIC, ref, MQ_ACT_DYNAMIC);
    }
}

TEST(random_inputs_deterministic) {
    mq_ctx *ctx = mq_ctx_create();
    mq_qmodel *qm = NULL, *ref = NULL;
    CHECK(mq_qmodel_open(ctx, q4_path, &qm) == MQ_OK && mq_qmodel_open(ctx, model_path, &ref) == MQ_OK);
    if (qm && ref) {
        size_t i = (size_t)mq_qmodel_find(qm, "fc.weight");
        mq_layer_check a, b, c;
        CHECK(mq_qmodel_check_layer(qm, i, ref, MQ_ACT_DYNAMIC, NULL, 16, 5, &a) == MQ_OK);
        CHECK(mq_qmodel_check_layer(qm, i, ref, MQ_ACT_DYNAMIC, NULL, 16, 5, &b) == MQ_OK);
        CHECK(mq_qmodel_check_layer(qm, i, ref, MQ_ACT_DYNAMIC, NULL, 16, 6, &c) == MQ_OK);
        CHECK(memcmp(&a.error, &b.error, sizeof a.error) == 0);
        CHECK(a.error.sqnr_db != c.error.sqnr_db);
        CHECK_MSG(a.error.sqnr_db > 10 && a.error.sqnr_db < 40, "INT4 SQNR %.2f", a.error.sqnr_db);
    }
    mq_qmodel_free(qm);
    mq_qmodel_free(ref);
    mq_ctx_free(ctx);
}

TEST(errors) {
    mq_ctx *ctx = mq_ctx_create();
    mq_qmodel *qm = NULL, *ref = NULL;
    CHECK(mq_qmodel_open(ctx, q8_path, &qm) == MQ_OK && mq_qmodel_open(ctx, q4_path, &ref) == MQ_OK);
    if (qm && ref) {
        mq_layer_check c;
        long norm = mq_qmodel_find(qm, "norm.weight"), fc = mq_qmodel_find(qm, "fc.weight");
        CHECK(!mq_qmodel_runnable(qm, (size_t)norm));
        CHECK(!mq_qmodel_runnable(qm, 999));
        CHECK(mq_qmodel_check_layer(qm, (size_t)norm, NULL, MQ_ACT_F32, NULL, 4, 0, &c) == MQ_ERR_INVALID);
        CHECK_MSG_HAS(ctx, "norm.weight");
        CHECK(mq_qmodel_check_layer(qm, 999, NULL, MQ_ACT_F32, NULL, 4, 0, &c) == MQ_ERR_INVALID);
        CHECK(mq_qmodel_check_layer(qm, (size_t)fc, NULL, MQ_ACT_F32, NULL, 0, 0, &c) == MQ_ERR_INVALID);
        CHECK(mq_qmodel_check_layer(qm, (size_t)fc, NULL, 7, NULL, 4, 0, &c) == MQ_ERR_INVALID);
        CHECK(mq_qmodel_check_layer(qm, (size_t)fc, NULL, MQ_ACT_F32, NULL, 4, 0, NULL) == MQ_ERR_INVALID);
        /* a quantized reference works too (read dequantized): INT4 as reference of INT8 */
        CHECK(mq_qmodel_check_layer(qm, (size_t)fc, ref, MQ_ACT_F32, NULL, 4, 0, &c) == MQ_OK);
        CHECK(c.error.sqnr_db > 5 && c.error.sqnr_db < 60);
    }
    mq_qmodel_free(qm);
    mq_qmodel_free(ref);
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(build_checkpoints);
    RUN(int8_linear_all_modes);
    RUN(int8_conv_flattened);
    RUN(int4_groups);
    RUN(random_inputs_deterministic);
    RUN(errors);
    remove(model_path), remove(stats_path), remove(q8_path), remove(q4_path);
    return test_summary();
}
