/* mq_calibrator_set_hessian: `<layer>.hessian` is the mean of x x^T over rows, independent
 * of the thread count and of merging; Conv inputs get none; read back by
 * mq_calib_stats_find; enabling it late is refused. */
#include "harness.h"
#include "monoquant.h"

#include <math.h>
#include <stdio.h>

/* The statistics of `layer` copied to *out: 1, or 0 when the file has none. */
static int stats_of(const mq_calib_stats *st, const char *layer, mq_layer_stats *out) {
    const mq_layer_stats *s = mq_calib_stats_layer(st, (size_t)mq_calib_stats_find(st, layer));
    if (s) *out = *s;
    else memset(out, 0, sizeof *out);
    return s != NULL;
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/hess_%s", test_tmpdir(), name);
    return b;
}

enum { C = 12, ROWS = 50 };

static void fill(float *x, int n, unsigned seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((int)(seed >> 9) % 2001 - 1000) / 250.0f;
    }
}

static mq_calibrator *make(mq_ctx *ctx) {
    mq_calibrator *cal = NULL;
    if (mq_calibrator_create(ctx, NULL, &cal) != MQ_OK) return NULL;
    if (mq_calibrator_set_hessian(cal, 1) != MQ_OK || mq_calibrator_add_layer(cal, "fc", C) ||
        mq_calibrator_add_layer(cal, "conv", 3)) {
        mq_calibrator_free(cal);
        return NULL;
    }
    return cal;
}

TEST(mean_of_outer_products_threads_and_merge) {
    mq_ctx *ctx = mq_ctx_create();
    float x[2][ROWS * C], img[2 * 3 * 4 * 4];
    fill(x[0], ROWS * C, 1);
    fill(x[1], ROWS * C, 2);
    fill(img, 2 * 3 * 4 * 4, 3);
    int64_t shape[2] = {ROWS, C}, ishape[4] = {2, 3, 4, 4};
    const char *paths[3] = {tmp_path("a.safetensors"), tmp_path("b.safetensors"),
                            tmp_path("m.safetensors")};
    for (int t = 0; t < 2; t++) {
        CHECK(mq_ctx_set_threads(ctx, t ? 2 : 1) == MQ_OK);
        mq_calibrator *cal = make(ctx);
        CHECK(cal != NULL);
        for (int b = 0; b < 2 && cal; b++)
            CHECK(mq_calibrator_update(cal, "fc", MQ_F32, x[b], 2, shape, -1) == MQ_OK);
        if (cal) CHECK(mq_calibrator_update(cal, "conv", MQ_F32, img, 4, ishape, 1) == MQ_OK);
        if (cal) CHECK(mq_calibrator_save(cal, paths[t], NULL, 0) == MQ_OK);
        mq_calibrator_free(cal);
    }
    /* the same batches through two calibrators, merged */
    mq_calibrator *a = make(ctx), *b = make(ctx);
    CHECK(a && b);
    if (a && b) {
        CHECK(mq_calibrator_update(a, "fc", MQ_F32, x[0], 2, shape, -1) == MQ_OK);
        CHECK(mq_calibrator_update(b, "fc", MQ_F32, x[1], 2, shape, -1) == MQ_OK);
        CHECK(mq_calibrator_merge(a, b) == MQ_OK);
        CHECK(mq_calibrator_save(a, paths[2], NULL, 0) == MQ_OK);
    }
    mq_calibrator_free(a);
    mq_calibrator_free(b);

    double ref[C * C] = {0};
    for (int bt = 0; bt < 2; bt++)
        for (int r = 0; r < ROWS; r++)
            for (int i = 0; i < C; i++)
                for (int k = 0; k < C; k++)
                    ref[i * C + k] += (double)x[bt][r * C + i] * x[bt][r * C + k];
    const float *first = NULL;
    mq_calib_stats *st[3] = {0};
    for (int f = 0; f < 3; f++) {
        CHECK(mq_calib_stats_open(ctx, paths[f], &st[f]) == MQ_OK);
        mq_layer_stats ls;
        CHECK(stats_of(st[f], "fc", &ls) && ls.hessian);
        if (!ls.hessian) continue;
        int bad = 0;
        for (int i = 0; i < C * C; i++)
            bad += fabs(ls.hessian[i] - ref[i] / (2 * ROWS)) > 1e-6 * (1 + fabs(ref[i]) / 100);
        CHECK_EQ_INT(bad, 0);
        if (!first) first = ls.hessian;
        else CHECK(!memcmp(first, ls.hessian, sizeof(float) * C * C));
        if (f < 2) {
            CHECK(stats_of(st[f], "conv", &ls) && ls.hessian == NULL);
        }
    }
    for (int f = 0; f < 3; f++) mq_calib_stats_free(st[f]);
    mq_ctx_free(ctx);
}

TEST(enable_before_layers) {
    mq_ctx *ctx = mq_ctx_create();
    mq_calibrator *cal = NULL;
    CHECK(mq_calibrator_create(ctx, NULL, &cal) == MQ_OK);
    CHECK(mq_calibrator_add_layer(cal, "fc", 4) == MQ_OK);
    CHECK_EQ_INT(mq_calibrator_set_hessian(cal, 1), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "before adding layers");
    /* without it: no Hessian in the file */
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int64_t shape[2] = {2, 4};
    CHECK(mq_calibrator_update(cal, "fc", MQ_F32, x, 2, shape, -1) == MQ_OK);
    const char *p = tmp_path("none.safetensors");
    CHECK(mq_calibrator_save(cal, p, NULL, 0) == MQ_OK);
    mq_calib_stats *st = NULL;
    mq_layer_stats ls;
    CHECK(mq_calib_stats_open(ctx, p, &st) == MQ_OK);
    CHECK(stats_of(st, "fc", &ls) && ls.hessian == NULL);
    mq_calib_stats_free(st);
    mq_calibrator_free(cal);
    mq_ctx_free(ctx);
}

/* A layer wider than one tile (partial tiles on both axes, rows across the f32 chunks): the
 * same bytes for 1 and 3 threads and on every instruction set, within 1e-6 of the f64 sum
 * (relative to the largest entry). */
TEST(blocked_update_matches_f64_on_every_isa) {
    enum { W = 300, R = 203 };
    mq_ctx *ctx = mq_ctx_create();
    float *x = malloc(sizeof(float) * W * R), *first = malloc(sizeof(float) * W * W);
    unsigned seed = 5;
    for (int i = 0; i < W * R; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((double)(seed >> 8) / 16777216.0 - 0.5) * (i % W % 5 == 0 ? 8.0f : 1.0f);
    }
    double *ref = calloc(W * W, sizeof(double)), big = 0;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < W; i++)
            for (int k = 0; k < W; k++) ref[i * W + k] += (double)x[r * W + i] * x[r * W + k];
    for (int i = 0; i < W * W; i++)
        if (fabs(ref[i] / R) > big) big = fabs(ref[i] / R);
    int64_t shape[2] = {R, W};
    int runs = 0;
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa))
        for (int t = 1; t <= 3; t += 2) {
            CHECK(mq_ctx_set_isa(ctx, (mq_isa)isa) == MQ_OK && mq_ctx_set_threads(ctx, t) == MQ_OK);
            mq_calibrator *cal = NULL;
            CHECK(mq_calibrator_create(ctx, NULL, &cal) == MQ_OK);
            CHECK(mq_calibrator_set_hessian(cal, 1) == MQ_OK);
            CHECK(mq_calibrator_add_layer(cal, "fc", W) == MQ_OK);
            CHECK(mq_calibrator_update(cal, "fc", MQ_F32, x, 2, shape, -1) == MQ_OK);
            char name[64];
            snprintf(name, sizeof name, "wide_%d_%d.safetensors", isa, t);
            const char *path = tmp_path(name);
            CHECK(mq_calibrator_save(cal, path, NULL, 0) == MQ_OK);
            mq_calibrator_free(cal);
            mq_calib_stats *st = NULL;
            mq_layer_stats ls;
            CHECK(mq_calib_stats_open(ctx, path, &st) == MQ_OK);
            CHECK(stats_of(st, "fc", &ls) && ls.hessian);
            if (st && ls.hessian) {
                double worst = 0;
                /* an explicit compare: gcc 12 for aarch64 crashes vectorizing an fmax reduction here */
                for (int i = 0; i < W * W; i++) {
                    double d = fabs(ls.hessian[i] - ref[i] / R) / big;
                    if (d > worst) worst = d;
                }
                CHECK_MSG(worst < 1e-6, "isa %d threads %d: %g", isa, t, worst);
                if (getenv("MQ_TEST_VERBOSE")) printf("# worst %g\n", worst);
                if (runs++ == 0) memcpy(first, ls.hessian, sizeof(float) * W * W);
                else CHECK_MSG(!memcmp(first, ls.hessian, sizeof(float) * W * W), "isa %d threads %d", isa, t);
            }
            mq_calib_stats_free(st);
        }
    free(x);
    free(first);
    free(ref);
    mq_ctx_free(ctx);
}

/* The saved Hessian of one batch (dtype, rows x w) into out (w x w): 1, or 0 on failure. */
static int hessian_of(mq_ctx *ctx, mq_dtype dt, const void *x, int64_t rows, int64_t w,
                      const char *name, float *out) {
    mq_calibrator *cal = NULL;
    int64_t shape[2] = {rows, w};
    int ok = mq_calibrator_create(ctx, NULL, &cal) == MQ_OK &&
             mq_calibrator_set_hessian(cal, 1) == MQ_OK &&
             mq_calibrator_add_layer(cal, "fc", w) == MQ_OK &&
             mq_calibrator_update(cal, "fc", dt, x, 2, shape, -1) == MQ_OK &&
             mq_calibrator_save(cal, tmp_path(name), NULL, 0) == MQ_OK;
    mq_calibrator_free(cal);
    mq_calib_stats *st = NULL;
    mq_layer_stats ls;
    ok = ok && mq_calib_stats_open(ctx, tmp_path(name), &st) == MQ_OK &&
         stats_of(st, "fc", &ls) && ls.hessian;
    if (ok) memcpy(out, ls.hessian, sizeof(float) * (size_t)(w * w));
    mq_calib_stats_free(st);
    return ok;
}

/* BF16 input and F32 input at an odd address go through the same f32 column blocks: the
 * same bytes as aligned F32 input of the same values. */
TEST(bf16_and_unaligned_inputs_as_f32) {
    enum { W = 270, R = 140 };
    mq_ctx *ctx = mq_ctx_create();
    CHECK(mq_ctx_set_threads(ctx, 2) == MQ_OK);
    float *x = malloc(sizeof(float) * W * R), *h[3];
    uint16_t *xb = malloc(2 * W * R);
    unsigned char *raw = malloc(sizeof(float) * W * R + 1);
    for (int i = 0; i < 3; i++) h[i] = malloc(sizeof(float) * W * W);
    fill(x, W * R, 9);
    CHECK(mq_convert(ctx, MQ_BF16, xb, MQ_F32, x, W * R) == MQ_OK);
    CHECK(mq_convert(ctx, MQ_F32, x, MQ_BF16, xb, W * R) == MQ_OK); /* the values bf16 holds */
    memcpy(raw + 1, x, sizeof(float) * W * R);
    CHECK(hessian_of(ctx, MQ_F32, x, R, W, "in_f32.safetensors", h[0]));
    CHECK(hessian_of(ctx, MQ_BF16, xb, R, W, "in_bf16.safetensors", h[1]));
    CHECK(hessian_of(ctx, MQ_F32, raw + 1, R, W, "in_odd.safetensors", h[2]));
    CHECK(!memcmp(h[0], h[1], sizeof(float) * W * W));
    CHECK(!memcmp(h[0], h[2], sizeof(float) * W * W));
    double big = 0;
    for (int i = 0; i < W * W; i++) big = fabs(h[0][i]) > big ? fabs(h[0][i]) : big;
    CHECK(big > 0);
    for (int i = 0; i < 3; i++) free(h[i]);
    free(x);
    free(xb);
    free(raw);
    mq_ctx_free(ctx);
}

/* The whole file of a path into a new buffer (*n bytes), or NULL. */
static unsigned char *file_bytes(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    if (f && fseek(f, 0, SEEK_END) == 0 && (*n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (b = malloc((size_t)*n)) && fread(b, 1, (size_t)*n, f) != (size_t)*n) {
        free(b);
        b = NULL;
    }
    if (f) fclose(f);
    return b;
}

/* A batch the observer refuses (a NaN) on the Hessian path: the error names the layer and the
 * value's place, and the layer is left as it was (statistics, Hessian and observer: the saved
 * file has the same bytes as without that batch), on 1 and 2 threads. */
TEST(refused_batch_leaves_the_layer) {
    enum { W = 70, R = 9 };
    mq_ctx *ctx = mq_ctx_create();
    float x[R * W], bad[R * W];
    fill(x, R * W, 3);
    memcpy(bad, x, sizeof bad);
    bad[5 * W + 3] = NAN;
    int64_t shape[2] = {R, W};
    for (int t = 1; t <= 2; t++) {
        CHECK(mq_ctx_set_threads(ctx, t) == MQ_OK);
        unsigned char *bytes[2] = {NULL, NULL};
        long n[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            mq_calibrator *cal = NULL;
            CHECK(mq_calibrator_create(ctx, NULL, &cal) == MQ_OK);
            CHECK(mq_calibrator_set_hessian(cal, 1) == MQ_OK);
            CHECK(mq_calibrator_add_layer(cal, "fc", W) == MQ_OK);
            CHECK(mq_calibrator_update(cal, "fc", MQ_F32, x, 2, shape, -1) == MQ_OK);
            if (k) {
                CHECK(mq_calibrator_update(cal, "fc", MQ_F32, bad, 2, shape, -1) != MQ_OK);
                const char *msg = mq_ctx_message(ctx);
                CHECK_MSG(strstr(msg, "layer 'fc'") && strstr(msg, "[5, 3]"), "%s", msg);
            }
            CHECK(mq_calibrator_update(cal, "fc", MQ_F32, x, 2, shape, -1) == MQ_OK);
            char name[64];
            snprintf(name, sizeof name, "%s_%d.safetensors", k ? "refused" : "plain", t);
            const char *path = tmp_path(name);
            CHECK_MSG(mq_calibrator_save(cal, path, NULL, 0) == MQ_OK, "%s", mq_ctx_message(ctx));
            mq_calibrator_free(cal);
            bytes[k] = file_bytes(path, &n[k]);
            CHECK(bytes[k] != NULL);
        }
        CHECK_MSG(bytes[0] && bytes[1] && n[0] == n[1] && !memcmp(bytes[0], bytes[1], (size_t)n[0]),
                  "threads %d", t);
        free(bytes[0]);
        free(bytes[1]);
    }
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(blocked_update_matches_f64_on_every_isa);
    RUN(bf16_and_unaligned_inputs_as_f32);
    RUN(mean_of_outer_products_threads_and_merge);
    RUN(enable_before_layers);
    RUN(refused_batch_leaves_the_layer);
    return test_summary();
}
