/* The ABI policy of monoquant.h: one version, extensible structs read up to their
 * struct_size with defaults for the rest, bad sizes refused, and a caller compiled against
 * the first released (0.2.0) layout of mq_quantize_options still served. */
#include "harness.h"
#include "monoquant.h"
#include "common/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A caller's copy of mq_quantize_options as released in 0.2.0: what a program built then
 * holds, whatever fields later headers append. */
typedef struct quantize_options_0_2_0 {
    size_t struct_size;
    mq_qspec spec;
    unsigned kinds;
    const char *const *include;
    size_t ninclude;
    const char *const *exclude;
    size_t nexclude;
    uint64_t min_params;
    const mq_layer_rule *rules;
    size_t nrules;
    int default_skip;
    int skip_nonfinite;
    int error_stats;
    double sqnr_warn_db;
    const char *calibration;
    mq_format out_format;
    int dry_run;
    const char *key;
    int strict;
} quantize_options_0_2_0;

static char model_path[512];

/* One Linear weight F32 [16, 64] and its bias. */
static int write_model(void) {
    snprintf(model_path, sizeof model_path, "%s/abi_model.safetensors", test_tmpdir());
    remove(model_path);
    mq_ctx *ctx = mq_ctx_create();
    mq_tensor_desc d[2] = {{"fc.weight", MQ_F32, 2, {16, 64}}, {"fc.bias", MQ_F32, 1, {16}}};
    mq_writer *w = NULL;
    int ok = mq_writer_open(ctx, model_path, MQ_FORMAT_AUTO, d, 2, NULL, 0, &w) == MQ_OK;
    uint64_t seed = 99;
    for (int i = 0; ok && i < 16 * 64 + 16; i++) {
        float v = (float)(test_xorshift64(&seed) % 2001) / 1000.0f - 1.0f;
        ok = mq_writer_write(w, &v, sizeof v) == MQ_OK;
    }
    ok = ok && mq_writer_commit(w) == MQ_OK;
    mq_writer_free(w);
    mq_ctx_free(ctx);
    return ok;
}

TEST(version_written_once) {
    CHECK_EQ_INT(MQ_VERSION_NUMBER,
                 MQ_VERSION_MAJOR * 10000 + MQ_VERSION_MINOR * 100 + MQ_VERSION_PATCH);
    CHECK_EQ_INT(mq_version_number(), MQ_VERSION_NUMBER);
    char text[32];
    snprintf(text, sizeof text, "%d.%d.%d", MQ_VERSION_MAJOR, MQ_VERSION_MINOR, MQ_VERSION_PATCH);
    CHECK_EQ_STR(mq_version(), text);
    CHECK_EQ_STR(MQ_VERSION_STRING, text);
}

/* The default functions fill exactly the caller's struct_size bytes. */
TEST(defaults_fill_only_the_callers_size) {
    size_t old = sizeof(quantize_options_0_2_0);
    unsigned char *buf = malloc(old + 64);
    memset(buf, 0xAB, old + 64);
    mq_quantize_options_default_sized((mq_quantize_options *)(void *)buf, old);
    size_t size;
    memcpy(&size, buf, sizeof size);
    CHECK_EQ_INT(size, old);
    int untouched = 1;
    for (size_t i = old; i < old + 64; i++) untouched &= buf[i] == 0xAB;
    CHECK(untouched);
    quantize_options_0_2_0 o;
    memcpy(&o, buf, sizeof o);
    CHECK_EQ_INT(o.spec.type, MQ_Q_INT8);
    CHECK_EQ_INT(o.error_stats, 1);
    free(buf);

    mq_observer_options full;
    mq_observer_options_default(&full, MQ_OBS_HISTOGRAM);
    CHECK_EQ_INT(full.struct_size, sizeof full);
    CHECK_EQ_INT(full.bins, 2048);
    mq_linear_desc ld;
    mq_linear_desc_init(&ld, MQ_Q_INT8, 4, 8, NULL);
    CHECK_EQ_INT(ld.struct_size, sizeof ld);
    mq_conv2d_desc cd;
    mq_conv2d_desc_init(&cd, 3, 3, 3);
    CHECK(cd.struct_size == sizeof cd && cd.stride_h == 1 && cd.groups == 1);
    mq_open_options oo;
    mq_open_options_default(&oo);
    CHECK(oo.struct_size == sizeof oo && oo.format == MQ_FORMAT_AUTO && !oo.key);
    mq_calib_data cdat;
    mq_calib_data_init(&cdat);
    CHECK(cdat.struct_size == sizeof cdat && !cdat.importance && !cdat.hessian);
}

/* A caller built against the 0.2.0 layout gets the same output as one built against the
 * current header with the same settings; fields past its struct_size take their defaults.
 * The old struct lives in a block of exactly its size, so a read past it is caught by the
 * sanitizer build. */
TEST(older_quantize_options_accepted) {
    CHECK(write_model());
    char out_old[600], out_new[600];
    snprintf(out_old, sizeof out_old, "%s/abi_old.safetensors", test_tmpdir());
    snprintf(out_new, sizeof out_new, "%s/abi_new.safetensors", test_tmpdir());
    mq_ctx *ctx = mq_ctx_create();

    quantize_options_0_2_0 *old = malloc(sizeof *old);
    mq_quantize_options_default_sized((mq_quantize_options *)(void *)old, sizeof *old);
    mq_qspec_recommended(&old->spec, MQ_Q_INT4);
    old->spec.group_size = 32;
    old->default_skip = 0;
    mq_report *r = NULL;
    CHECK_EQ_INT(mq_quantize_file(ctx, model_path, out_old, (const mq_quantize_options *)old, &r),
                 MQ_OK);
    CHECK_EQ_INT(mq_report_action_count(r, MQ_ACTION_QUANTIZE), 1);
    mq_report_free(r);

    mq_quantize_options cur;
    mq_quantize_options_default(&cur);
    mq_qspec_recommended(&cur.spec, MQ_Q_INT4);
    cur.spec.group_size = 32;
    cur.default_skip = 0;
    CHECK_EQ_INT(mq_quantize_file(ctx, model_path, out_new, &cur, NULL), MQ_OK);
    CHECK(test_same_files(out_old, out_new));
    free(old);
    remove(out_old);
    remove(out_new);
    mq_ctx_free(ctx);
}

/* struct_size 0, below the first layout or above the library's own: MQ_ERR_INVALID naming
 * the struct, and nothing written. */
TEST(bad_struct_sizes_refused) {
    CHECK(write_model());
    char out[600];
    snprintf(out, sizeof out, "%s/abi_bad.safetensors", test_tmpdir());
    remove(out);
    mq_ctx *ctx = mq_ctx_create();
    mq_quantize_options o;
    size_t sizes[3] = {0, offsetof(mq_quantize_options, strict), sizeof o + 8};
    const char *why[3] = {"struct_size is 0", "below the first released layout", "above"};
    for (int i = 0; i < 3; i++) {
        mq_quantize_options_default(&o);
        o.struct_size = sizes[i];
        CHECK_EQ_INT(mq_quantize_file(ctx, model_path, out, &o, NULL), MQ_ERR_INVALID);
        CHECK_MSG_HAS(ctx, "mq_quantize_options");
        CHECK_MSG_HAS(ctx, why[i]);
        FILE *f = fopen(out, "rb");
        CHECK(f == NULL);
        if (f) fclose(f);
    }

    mq_open_options oo;
    mq_open_options_default(&oo);
    oo.struct_size = 0;
    mq_model *m = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, model_path, &oo, &m), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "mq_open_options");
    CHECK(m == NULL);

    mq_observer_options obo;
    mq_observer_options_default(&obo, MQ_OBS_MINMAX);
    obo.struct_size = sizeof obo + 1;
    mq_observer *obs = NULL;
    CHECK_EQ_INT(mq_observer_create(ctx, &obo, &obs), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "mq_observer_options");
    mq_calibrator *cal = NULL;
    CHECK_EQ_INT(mq_calibrator_create(ctx, &obo, &cal), MQ_ERR_INVALID);
    obo.struct_size = 0;
    CHECK_EQ_INT(mq_observer_options_parse(ctx, "minmax", &obo), MQ_ERR_INVALID);

    float w[4 * 8] = {0}, scale[4] = {1, 1, 1, 1};
    mq_linear_desc ld;
    mq_linear_desc_init(&ld, MQ_Q_NONE, 4, 8, w);
    ld.struct_size = 3;
    mq_linear *lin = NULL;
    CHECK_EQ_INT(mq_linear_create(ctx, &ld, &lin), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "mq_linear_desc");
    mq_linear_desc_init(&ld, MQ_Q_NONE, 4, 8, w);
    mq_conv2d_desc cd;
    mq_conv2d_desc_init(&cd, 2, 2, 2);
    cd.struct_size = sizeof cd * 2;
    mq_conv2d *conv = NULL;
    CHECK_EQ_INT(mq_conv2d_create(ctx, &ld, &cd, &conv), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "mq_conv2d_desc");
    mq_conv2d_desc_init(&cd, 2, 2, 2);
    CHECK_EQ_INT(mq_conv2d_create(ctx, &ld, &cd, &conv), MQ_OK);
    mq_conv2d_free(conv);

    mq_qspec spec;
    mq_qspec_default(&spec);
    int64_t shape[2] = {4, 8};
    mq_qlayout lay;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &spec, 2, shape, &lay), MQ_OK);
    mq_calib_data cdat;
    mq_calib_data_init(&cdat);
    cdat.struct_size = 1;
    int8_t q[32];
    CHECK_EQ_INT(mq_quantize_rows(ctx, &spec, &lay, &cdat, MQ_F32, w, 0, 4, q, scale, NULL),
                 MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "mq_calib_data");
    mq_ctx_free(ctx);
}

/* The library side: a struct of an older, smaller layout is copied over the defaults, so
 * the fields it lacks keep them. A field appended into the old layout's tail padding (b here)
 * is within the old struct_size: the old caller's _default call (run by the newer library)
 * wrote its default there. */
typedef struct demo_v1 {
    size_t struct_size;
    int a;
} demo_v1;
typedef struct demo_v2 {
    size_t struct_size;
    int a;
    int b;       /* appended later: default 7 */
    double c;    /* appended later: default 2.5 */
} demo_v2;

TEST(missing_fields_take_defaults) {
    mq_ctx *ctx = mq_ctx_create();
    demo_v2 defaults = {sizeof(demo_v2), 1, 7, 2.5}, got;
    demo_v1 old;
    mq__struct_default(&old, sizeof old, &defaults, sizeof defaults);
    old.a = 42;
    got = defaults;
    CHECK_EQ_INT(mq__struct_read(ctx, "demo", &old, &got, sizeof got, sizeof old), MQ_OK);
    CHECK(got.a == 42 && got.b == 7 && got.c == 2.5 && got.struct_size == sizeof got);
    demo_v2 cur = {sizeof cur, 5, 6, -1.0};
    got = defaults;
    CHECK_EQ_INT(mq__struct_read(ctx, "demo", &cur, &got, sizeof got, sizeof old), MQ_OK);
    CHECK(got.a == 5 && got.b == 6 && got.c == -1.0);
    cur.struct_size = sizeof cur + 8;
    CHECK_EQ_INT(mq__struct_read(ctx, "demo", &cur, &got, sizeof got, sizeof old), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "demo: struct_size");

    unsigned char buf[sizeof(demo_v2) + 8];
    memset(buf, 0xCD, sizeof buf);
    mq__struct_default(buf, sizeof(demo_v1), &defaults, sizeof defaults);
    demo_v1 back;
    memcpy(&back, buf, sizeof back);
    CHECK(back.struct_size == sizeof(demo_v1) && back.a == 1);
    CHECK(buf[sizeof(demo_v1)] == 0xCD);
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(version_written_once);
    RUN(defaults_fill_only_the_callers_size);
    RUN(older_quantize_options_accepted);
    RUN(bad_struct_sizes_refused);
    RUN(missing_fields_take_defaults);
    remove(model_path);
    return test_summary();
}
