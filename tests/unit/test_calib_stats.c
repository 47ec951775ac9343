/* Calibrator and statistics files: channel statistics, save, read back, merge, errors. */
#include "harness.h"
#include "monoquant.h"
#include "api_helpers.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* The statistics of `layer` copied to *out: 1, or 0 when the file has none. */
static int stats_of(const mq_calib_stats *st, const char *layer, mq_layer_stats *out) {
    const mq_layer_stats *s = mq_calib_stats_layer(st, (size_t)mq_calib_stats_find(st, layer));
    if (s) *out = *s;
    else memset(out, 0, sizeof *out);
    return s != NULL;
}

static uint64_t rows_of(const mq_calibrator *cal, const char *layer) {
    int64_t i = mq_calibrator_find(cal, layer);
    return i < 0 ? 0 : mq_calibrator_layer_rows(cal, (size_t)i);
}
static const mq_observer *observer_of(const mq_calibrator *cal, const char *layer) {
    int64_t i = mq_calibrator_find(cal, layer);
    return i < 0 ? NULL : mq_calibrator_observer(cal, (size_t)i);
}

/* Each call returns a fresh buffer (a few are live at once). */
static const char *tmp_path(const char *name) {
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/calib_%s", test_tmpdir(), name);
    return b;
}

static mq_calibrator *make_cal(mq_ctx *ctx, mq_observer_kind kind, bool per_channel) {
    mq_observer_options o;
    mq_observer_options_default(&o, kind);
    if (per_channel) o.granularity = MQ_PER_CHANNEL;
    mq_calibrator *cal = NULL;
    mq_calibrator_create(ctx, &o, &cal);
    return cal;
}

TEST(channel_statistics_and_round_trip) {
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1); /* the files are rewritten by later cases */
    for (int pc = 0; pc < 2; pc++) {
        mq_calibrator *cal = make_cal(ctx, MQ_OBS_MINMAX, pc);
        CHECK(cal != NULL);
        CHECK_EQ_INT(mq_calibrator_add_layer(cal, "fc", 4), MQ_OK);
        CHECK_EQ_INT(mq_calibrator_add_layer(cal, "fc", 4), MQ_OK);
        CHECK_EQ_INT(mq_calibrator_add_layer(cal, "fc", 5), MQ_ERR_INVALID);
        CHECK_EQ_INT(mq_calibrator_add_layer(cal, "conv", 2), MQ_OK);
        CHECK_EQ_INT(mq_calibrator_add_layer(cal, "unused", 3), MQ_OK);
        /* Linear input [2, 3, 4]: 6 rows; channel c holds c+1 times (row - 2) */
        float lin[24];
        for (int r = 0; r < 6; r++)
            for (int c = 0; c < 4; c++) lin[r * 4 + c] = (float)(c + 1) * (float)(r - 2);
        int64_t ls[3] = {2, 3, 4};
        CHECK_EQ_INT(mq_calibrator_update(cal, "fc", MQ_F32, lin, 3, ls, -1), MQ_OK);
        /* Conv input [N=2, C=2, H=2, W=1]: channel 0 all 1, channel 1 all -3 */
        float conv[8] = {1, 1, -3, -3, 1, 1, -3, -3};
        int64_t cs[4] = {2, 2, 2, 1};
        CHECK_EQ_INT(mq_calibrator_update(cal, "conv", MQ_F32, conv, 4, cs, 1), MQ_OK);
        CHECK_EQ_INT(mq_calibrator_update(cal, "nope", MQ_F32, conv, 4, cs, 1), MQ_ERR_INVALID);
        CHECK_MSG_HAS(ctx, "unknown layer 'nope'");
        CHECK_EQ_INT(mq_calibrator_update(cal, "fc", MQ_F32, conv, 4, cs, 1), MQ_ERR_INVALID);
        CHECK_MSG_HAS(ctx, "layer 'fc'");
        CHECK_EQ_INT(rows_of(cal, "fc"), 6);
        CHECK_EQ_INT(rows_of(cal, "conv"), 4);
        CHECK_EQ_INT(rows_of(cal, "unused"), 0);
        CHECK_EQ_INT(mq_calibrator_layer_count(cal), 3);
        CHECK_EQ_STR(mq_calibrator_layer_name(cal, 1), "conv");
        CHECK(observer_of(cal, "fc") != NULL);
        const char *path = tmp_path(pc ? "pc.safetensors" : "pt.safetensors");
        CHECK_EQ_INT(mq_calibrator_save(cal, path, NULL, 0), MQ_OK);
        mq_calib_stats *st = NULL;
        CHECK_EQ_INT(mq_calib_stats_open(ctx, path, &st), MQ_OK);
        CHECK_EQ_INT(mq_calib_stats_count(st), 2);
        mq_layer_stats s;
        CHECK(!stats_of(st, "unused", &s));
        CHECK(stats_of(st, "fc", &s));
        CHECK_EQ_STR(s.layer, "fc");
        CHECK_EQ_INT(s.channels, 4);
        CHECK_EQ_INT(s.count, 6);
        CHECK_EQ_STR(s.observer, "minmax");
        CHECK_EQ_INT(s.input_type, MQ_Q_UINT8);
        CHECK_EQ_INT(s.input_scheme, MQ_ASYMMETRIC);
        /* mean of (r-2)^2 over r = 0..5 is 19/6; max |x| is 3 (c + 1) */
        for (int c = 0; c < 4; c++) {
            float want = (float)((c + 1) * (c + 1)) * 19.0f / 6.0f;
            CHECK_MSG(fabsf(s.mean_sq[c] - want) < 1e-5f * want, "mean_sq[%d] %g", c, s.mean_sq[c]);
            CHECK(s.max_abs[c] == 3.0f * (float)(c + 1));
        }
        CHECK(s.input_min == -8.0f && s.input_max == 12.0f); /* union of channel ranges */
        CHECK(s.input_scale == 20.0f / 255.0f);
        CHECK_EQ_INT(s.input_zero_point, 102);
        CHECK(pc ? s.channel_input_scale != NULL : s.channel_input_scale == NULL);
        if (pc) {
            CHECK(s.channel_input_scale[0] == 5.0f / 255.0f); /* channel 0: [-2, 3] */
            CHECK_EQ_INT(s.channel_input_zero_point[0], 102);
        }
        CHECK(stats_of(st, "conv", &s));
        CHECK_EQ_INT(s.channels, 2);
        CHECK(s.mean_sq[0] == 1.0f && s.mean_sq[1] == 9.0f && s.max_abs[1] == 3.0f);
        CHECK(s.input_min == -3.0f && s.input_max == 1.0f);
        mq_calib_stats_free(st);
        mq_calibrator_free(cal);
    }
    mq_calibrator_free(NULL);
    mq_calib_stats_free(NULL);
    mq_ctx_free(ctx);
}

/* Two calibrators over halves of the data, merged, save the same file as one over all. */
TEST(merged_calibrators_equal_one) {
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1); /* the files are rewritten by later cases */
    mq_calibrator *all = make_cal(ctx, MQ_OBS_MINMAX, false);
    mq_calibrator *a = make_cal(ctx, MQ_OBS_MINMAX, false);
    mq_calibrator *b = make_cal(ctx, MQ_OBS_MINMAX, false);
    mq_calibrator_add_layer(all, "l", 3);
    mq_calibrator_add_layer(a, "l", 3);
    mq_calibrator_add_layer(b, "l", 3);
    mq_calibrator_add_layer(b, "only_b", 1);
    float x[12] = {1, -2, 3, 4, 5, -6, 0.5f, 0.25f, 8, -1, 2, 3};
    int64_t sh[2] = {2, 3}, sh1[1] = {1};
    mq_calibrator_update(all, "l", MQ_F32, x, 2, sh, -1);
    mq_calibrator_update(all, "l", MQ_F32, x + 6, 2, sh, -1);
    mq_calibrator_update(a, "l", MQ_F32, x, 2, sh, -1);
    mq_calibrator_update(b, "l", MQ_F32, x + 6, 2, sh, -1);
    mq_calibrator_update(b, "only_b", MQ_F32, x, 1, sh1, -1);
    CHECK_EQ_INT(mq_calibrator_merge(a, b), MQ_OK);
    CHECK_EQ_INT(rows_of(a, "only_b"), 1);
    mq_calib_stats *s1, *s2;
    CHECK_EQ_INT(mq_calibrator_save(all, tmp_path("all.safetensors"), NULL, 0), MQ_OK);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, tmp_path("all.safetensors"), &s1), MQ_OK);
    CHECK_EQ_INT(mq_calibrator_save(a, tmp_path("merged.safetensors"), NULL, 0), MQ_OK);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, tmp_path("merged.safetensors"), &s2), MQ_OK);
    mq_layer_stats p, q;
    CHECK(stats_of(s1, "l", &p) && stats_of(s2, "l", &q));
    CHECK(p.input_scale == q.input_scale && p.input_zero_point == q.input_zero_point);
    CHECK(!memcmp(p.mean_sq, q.mean_sq, 12) && !memcmp(p.max_abs, q.max_abs, 12));
    CHECK_EQ_INT(p.count, q.count);
    mq_calib_stats_free(s1);
    mq_calib_stats_free(s2);
    /* different options or channel counts are refused */
    mq_calibrator *c = make_cal(ctx, MQ_OBS_HISTOGRAM, false);
    CHECK_EQ_INT(mq_calibrator_merge(a, c), MQ_ERR_INVALID);
    mq_calibrator *d = make_cal(ctx, MQ_OBS_MINMAX, false);
    mq_calibrator_add_layer(d, "l", 4);
    CHECK_EQ_INT(mq_calibrator_merge(a, d), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "'l'");
    mq_calibrator_free(all);
    mq_calibrator_free(a);
    mq_calibrator_free(b);
    mq_calibrator_free(c);
    mq_calibrator_free(d);
    mq_ctx_free(ctx);
}

/* Writes a stats-like file whose layer "x" has the given mean_sq[0] and zero point. */
static mq_status write_stats(mq_ctx *ctx, const char *path, float mean_sq0, int32_t zp,
                             bool with_count, const char *observer) {
    float scale = 0.5f, range[2] = {-1, 1}, mean_sq[2] = {mean_sq0, 1}, max_abs[2] = {1, 1};
    int64_t count = 10;
    mq_tensor_desc d[6] = {
        {"x.input_scale", MQ_F32, 1, {1}},      {"x.input_zero_point", MQ_I32, 1, {1}},
        {"x.input_range", MQ_F32, 1, {2}},      {"x.mean_sq", MQ_F32, 1, {2}},
        {"x.max_abs", MQ_F32, 1, {2}},          {"x.count", MQ_I64, 1, {1}},
    };
    const void *data[6] = {&scale, &zp, range, mean_sq, max_abs, &count};
    mq_kv meta[2] = {{"monoquant.calibration", "1"}, {"x.observer", observer}};
    size_t n = with_count ? 6 : 5;
    mq_writer *w = NULL;
    mq_status st = mq_writer_open(ctx, path, MQ_FORMAT_SAFETENSORS, d, n, meta, 2, &w);
    for (size_t i = 0; st == MQ_OK && i < n; i++)
        st = mq_writer_write(w, data[i], (size_t)(mq_dtype_size(d[i].dtype) * (uint64_t)d[i].shape[0]));
    if (st == MQ_OK) st = mq_writer_commit(w);
    mq_writer_free(w);
    return st;
}

TEST(invalid_statistics_files) {
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1); /* the files are rewritten by later cases */
    const char *p = tmp_path("bad.safetensors");
    mq_calib_stats *s = NULL;
    CHECK_EQ_INT(write_stats(ctx, p, 0.5f, 3, true, "minmax"), MQ_OK);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, p, &s), MQ_OK);
    mq_layer_stats ls;
    CHECK(stats_of(s, "x", &ls) && ls.count == 10 && ls.input_zero_point == 3);
    mq_calib_stats_free(s);
    s = NULL;
    CHECK_EQ_INT(write_stats(ctx, p, -0.5f, 3, true, "minmax"), MQ_OK);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, p, &s), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "x.mean_sq");
    CHECK_EQ_INT(write_stats(ctx, p, NAN, 3, true, "minmax"), MQ_OK);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, p, &s), MQ_ERR_FORMAT);
    CHECK_EQ_INT(write_stats(ctx, p, 0.5f, 300, true, "minmax"), MQ_OK);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, p, &s), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "input_zero_point");
    CHECK_EQ_INT(write_stats(ctx, p, 0.5f, 3, false, "minmax"), MQ_OK);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, p, &s), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "'x.count' is missing");
    CHECK_EQ_INT(write_stats(ctx, p, 0.5f, 3, true, "median"), MQ_OK);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, p, &s), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "x.observer");
    CHECK(s == NULL);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, tmp_path("never_written.safetensors"), &s), MQ_ERR_IO);
    /* an ordinary checkpoint is not a statistics file */
    float w[4] = {1, 2, 3, 4};
    mq_tensor_desc d = {"fc.weight", MQ_F32, 2, {2, 2}};
    mq_writer *wr;
    CHECK_EQ_INT(mq_writer_open(ctx, p, MQ_FORMAT_SAFETENSORS, &d, 1, NULL, 0, &wr), MQ_OK);
    mq_writer_write(wr, w, sizeof w);
    CHECK_EQ_INT(mq_writer_commit(wr), MQ_OK);
    mq_writer_free(wr);
    CHECK_EQ_INT(mq_calib_stats_open(ctx, p, &s), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "not a calibration statistics file");
    mq_ctx_free(ctx);
}

/* The state saved in the file restores an observer that gives the same qparams. */
TEST(observer_state_restores_from_file) {
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1); /* the files are rewritten by later cases */
    mq_calibrator *cal = make_cal(ctx, MQ_OBS_HISTOGRAM, false);
    mq_calibrator_add_layer(cal, "h", 8);
    float x[800];
    for (int i = 0; i < 800; i++) x[i] = sinf((float)i * 0.37f) * (float)(1 + i % 8);
    int64_t sh[2] = {100, 8};
    mq_calibrator_update(cal, "h", MQ_F32, x, 2, sh, -1);
    const char *path = tmp_path("state.safetensors");
    CHECK_EQ_INT(mq_calibrator_save(cal, path, NULL, 0), MQ_OK);
    mq_model *m = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, path, NULL, &m), MQ_OK);
    const char *text = meta_get(m, "h.observer");
    CHECK(text != NULL);
    mq_observer_options o;
    mq_observer_options_default(&o, MQ_OBS_MINMAX);
    mq_observer *obs = NULL;
    CHECK_EQ_INT(mq_observer_options_parse(ctx, text ? text : "", &o), MQ_OK);
    CHECK_EQ_INT(mq_observer_create(ctx, &o, &obs), MQ_OK);
    for (size_t i = 0; obs && i < mq_model_tensor_count(m); i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        if (strncmp(t->name, "h.observer.", 11)) continue;
        mq_tensor u = *t;
        u.name = t->name + 11;
        CHECK_EQ_INT(mq_observer_state_set(obs, &u), MQ_OK);
    }
    float s1, s2;
    int32_t z1, z2;
    CHECK_EQ_INT(mq_observer_qparams(observer_of(cal, "h"), &s1, &z1, NULL, NULL), MQ_OK);
    CHECK_EQ_INT(mq_observer_qparams(obs, &s2, &z2, NULL, NULL), MQ_OK);
    CHECK(s1 == s2 && z1 == z2);
    mq_observer_free(obs);
    mq_model_free(m);
    mq_calibrator_free(cal);
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(channel_statistics_and_round_trip);
    RUN(merged_calibrators_equal_one);
    RUN(invalid_statistics_files);
    RUN(observer_state_restores_from_file);
    return test_summary();
}
