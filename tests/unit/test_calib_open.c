/* mq_calibrator_open: a statistics file read back saves the same file again, merges like the
 * calibrators it came from, and other files are refused. */
#include "harness.h"
#include "monoquant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

/* A calibrator over layers "a" (Linear, 8 channels) and "b" (Conv, 3 channels) fed batches
 * [first, last) of a fixed sequence. */
static mq_calibrator *fed(mq_ctx *ctx, mq_observer_kind kind, int hessian, int first, int last) {
    mq_observer_options o;
    mq_observer_options_default(&o, kind);
    mq_calibrator *cal = NULL;
    if (mq_calibrator_create(ctx, &o, &cal) != MQ_OK) return NULL;
    if (hessian) mq_calibrator_set_hessian(cal, 1);
    mq_calibrator_add_layer(cal, "a", 8);
    mq_calibrator_add_layer(cal, "b", 3);
    for (int k = first; k < last; k++) {
        float x[4 * 8], y[2 * 3 * 2 * 2];
        for (int i = 0; i < 32; i++) x[i] = (float)((i * 7 + k * 13) % 17) / 4.0f - 2.0f;
        for (int i = 0; i < 24; i++) y[i] = (float)((i * 5 + k * 3) % 11) / 2.0f - 1.5f;
        int64_t sx[2] = {4, 8}, sy[4] = {2, 3, 2, 2};
        mq_calibrator_update(cal, "a", MQ_F32, x, 2, sx, -1);
        mq_calibrator_update(cal, "b", MQ_F32, y, 4, sy, 1);
    }
    return cal;
}

static void path(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

TEST(round_trip_same_file) {
    mq_ctx *ctx = mq_ctx_create();
    char p1[400], p2[400];
    path(p1, sizeof p1, "one.safetensors");
    path(p2, sizeof p2, "again.safetensors");
    mq_calibrator *cal = fed(ctx, MQ_OBS_HISTOGRAM, 1, 0, 5), *back = NULL;
    CHECK_EQ_INT(mq_calibrator_save(cal, p1, NULL, 0), MQ_OK);
    CHECK_EQ_INT(mq_calibrator_open(ctx, p1, &back), MQ_OK);
    if (back) {
        CHECK_EQ_INT(mq_calibrator_layer_rows(back, (size_t)mq_calibrator_find(back, "a")), 20);
        CHECK_EQ_INT(mq_calibrator_layer_rows(back, (size_t)mq_calibrator_find(back, "b")), 40);
        CHECK_EQ_INT(mq_calibrator_save(back, p2, NULL, 0), MQ_OK);
        CHECK(test_same_files(p1, p2));
    }
    mq_calibrator_free(back);
    mq_calibrator_free(cal);
    mq_ctx_free(ctx);
}

TEST(files_merge_as_calibrators) {
    mq_ctx *ctx = mq_ctx_create();
    char pa[400], pb[400], pm[400], pw[400];
    path(pa, sizeof pa, "a.safetensors");
    path(pb, sizeof pb, "b.safetensors");
    path(pm, sizeof pm, "merged.safetensors");
    path(pw, sizeof pw, "whole.safetensors");
    mq_calibrator *a = fed(ctx, MQ_OBS_MINMAX, 0, 0, 3), *b = fed(ctx, MQ_OBS_MINMAX, 0, 3, 7);
    mq_calibrator *whole = fed(ctx, MQ_OBS_MINMAX, 0, 0, 7), *ra = NULL, *rb = NULL;
    CHECK_EQ_INT(mq_calibrator_save(a, pa, NULL, 0), MQ_OK);
    CHECK_EQ_INT(mq_calibrator_save(b, pb, NULL, 0), MQ_OK);
    CHECK_EQ_INT(mq_calibrator_save(whole, pw, NULL, 0), MQ_OK);
    CHECK_EQ_INT(mq_calibrator_open(ctx, pa, &ra), MQ_OK);
    CHECK_EQ_INT(mq_calibrator_open(ctx, pb, &rb), MQ_OK);
    if (ra && rb) {
        CHECK_EQ_INT(mq_calibrator_merge(ra, rb), MQ_OK);
        CHECK_EQ_INT(mq_calibrator_save(ra, pm, NULL, 0), MQ_OK);
        mq_calib_stats *m = NULL, *w = NULL;
        CHECK_EQ_INT(mq_calib_stats_open(ctx, pm, &m), MQ_OK);
        CHECK_EQ_INT(mq_calib_stats_open(ctx, pw, &w), MQ_OK);
        int64_t im = m ? mq_calib_stats_find(m, "a") : -1, iw = w ? mq_calib_stats_find(w, "a") : -1;
        if (im >= 0 && iw >= 0) {
            mq_layer_stats lm = *mq_calib_stats_layer(m, (size_t)im);
            mq_layer_stats lw = *mq_calib_stats_layer(w, (size_t)iw);
            CHECK(lm.count == lw.count && lm.input_scale == lw.input_scale);
            CHECK(lm.input_zero_point == lw.input_zero_point);
            CHECK(!memcmp(lm.max_abs, lw.max_abs, 8 * sizeof(float)));
            for (int c = 0; c < 8; c++)
                CHECK(lm.mean_sq[c] >= lw.mean_sq[c] * 0.99999f &&
                      lm.mean_sq[c] <= lw.mean_sq[c] * 1.00001f);
        } else {
            CHECK(!"layer a missing");
        }
        mq_calib_stats_free(m);
        mq_calib_stats_free(w);
    }
    mq_calibrator_free(ra);
    mq_calibrator_free(rb);
    mq_calibrator_free(a);
    mq_calibrator_free(b);
    mq_calibrator_free(whole);
    mq_ctx_free(ctx);
}

TEST(other_files_refused) {
    mq_ctx *ctx = mq_ctx_create();
    char p[400];
    path(p, sizeof p, "plain.safetensors");
    mq_tensor_desc d = {"w", MQ_F32, 1, {2}};
    float v[2] = {1, 2};
    mq_writer *w = NULL;
    CHECK_EQ_INT(mq_writer_open(ctx, p, MQ_FORMAT_AUTO, &d, 1, NULL, 0, &w), MQ_OK);
    if (w) {
        mq_writer_write(w, v, sizeof v);
        CHECK_EQ_INT(mq_writer_commit(w), MQ_OK);
    }
    mq_writer_free(w);
    mq_calibrator *cal = NULL;
    CHECK_EQ_INT(mq_calibrator_open(ctx, p, &cal), MQ_ERR_FORMAT);
    CHECK(strstr(mq_ctx_message(ctx), "not a statistics file") != NULL);
    CHECK(cal == NULL);
    path(p, sizeof p, "missing.safetensors");
    CHECK_EQ_INT(mq_calibrator_open(ctx, p, &cal), MQ_ERR_IO);
    mq_ctx_free(ctx);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/mq_calopen_XXXXXX",
             getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) return 1;
    RUN(round_trip_same_file);
    RUN(files_merge_as_calibrators);
    RUN(other_files_refused);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
