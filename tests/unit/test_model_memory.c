/* In-memory models (mq_model_create / mq_model_add_view) through mq_quantize_model: the same
 * bytes as mq_quantize_file on a checkpoint of the same tensors, caller memory untouched,
 * and the argument checks. */
#include "harness.h"
#include "monoquant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256], in_path[512];

static const mq_tensor_desc descs[3] = {{"fc.weight", MQ_F32, 2, {64, 256}},
                                        {"fc.bias", MQ_F32, 1, {64}},
                                        {"head.weight", MQ_BF16, 2, {48, 128}}};
static float w0[64 * 256], b0[64];
static uint16_t w1[48 * 128];

static void fill(void) {
    uint32_t seed = 11;
    for (size_t i = 0; i < 64 * 256; i++) {
        seed = seed * 1664525u + 1013904223u;
        w0[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * (i % 13 == 0 ? 2.0f : 0.2f);
    }
    for (size_t i = 0; i < 64; i++) b0[i] = (float)i / 64.0f;
    for (size_t i = 0; i < 48 * 128; i++) w1[i] = mq_f32_to_bf16(w0[i] * 0.5f);
}

static int write_file(const char *path) {
    mq_ctx *ctx = mq_ctx_create();
    mq_writer *w = NULL;
    int ok = mq_writer_open(ctx, path, MQ_FORMAT_AUTO, descs, 3, NULL, 0, &w) == MQ_OK;
    ok = ok && mq_writer_write(w, w0, sizeof w0) == MQ_OK;
    ok = ok && mq_writer_write(w, b0, sizeof b0) == MQ_OK;
    ok = ok && mq_writer_write(w, w1, sizeof w1) == MQ_OK;
    ok = ok && mq_writer_commit(w) == MQ_OK;
    mq_writer_free(w);
    mq_ctx_free(ctx);
    return ok;
}

static mq_model *memory_model(mq_ctx *ctx) {
    mq_model *m = NULL;
    const void *data[3] = {w0, b0, w1};
    if (mq_model_create(ctx, &m) != MQ_OK) return NULL;
    for (int i = 0; i < 3; i++)
        if (mq_model_add_view(m, descs[i].name, descs[i].dtype, descs[i].ndim, descs[i].shape,
                              data[i]) != MQ_OK) {
            mq_model_free(m);
            return NULL;
        }
    return m;
}

static void same_as_file(int bits, const char *ext) {
    mq_ctx *ctx = mq_ctx_create();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    if (bits == 4) {
        mq_qspec_recommended(&o.spec, MQ_Q_INT4);
        o.default_skip = 0;
    }
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/file%d.%s", dir, bits, ext);
    snprintf(b, sizeof b, "%s/memory%d.%s", dir, bits, ext);
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, a, &o, NULL), MQ_OK);
    float copy[64];
    memcpy(copy, b0, sizeof copy);
    mq_model *m = memory_model(ctx);
    CHECK(m != NULL);
    mq_report *r = NULL;
    if (m) CHECK_EQ_INT(mq_quantize_model(ctx, m, b, &o, &r), MQ_OK);
    CHECK(r != NULL);
    CHECK_MSG(test_same_files(a, b), "int%d .%s outputs differ", bits, ext);
    CHECK(!memcmp(copy, b0, sizeof copy));
    mq_report_free(r);
    mq_model_free(m);
    mq_ctx_free(ctx);
}

TEST(same_bytes_as_file_int8_safetensors) { same_as_file(8, "safetensors"); }
TEST(same_bytes_as_file_int4_safetensors) { same_as_file(4, "safetensors"); }
TEST(same_bytes_as_file_int8_pt) { same_as_file(8, "pt"); }

TEST(views_are_not_copied) {
    mq_ctx *ctx = mq_ctx_create();
    mq_model *m = memory_model(ctx);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(mq_model_tensor_count(m), 3);
        CHECK(mq_model_tensor(m, 0)->data == (const void *)w0);
        CHECK_EQ_INT(mq_model_tensor(m, 2)->nbytes, sizeof w1);
        CHECK_EQ_INT(mq_model_find(m, "fc.bias"), 1);
        CHECK_EQ_INT(mq_model_format(m), MQ_FORMAT_AUTO);
        CHECK_EQ_INT(mq_model_set_metadata(m, "source", "memory"), MQ_OK);
        int64_t k = mq_model_metadata_find(m, "source");
        CHECK(k >= 0);
        if (k >= 0) CHECK_EQ_STR(mq_model_metadata_value(m, (size_t)k), "memory");
    }
    mq_model_free(m);
    mq_ctx_free(ctx);
}

TEST(bad_views_rejected) {
    mq_ctx *ctx = mq_ctx_create();
    mq_model *m = memory_model(ctx);
    CHECK(m != NULL);
    if (m) {
        int64_t neg[2] = {4, -1}, ok2[2] = {4, 4};
        CHECK_EQ_INT(mq_model_add_view(m, "fc.weight", MQ_F32, 2, ok2, w0), MQ_ERR_INVALID);
        CHECK(strstr(mq_ctx_message(ctx), "duplicate tensor name 'fc.weight'") != NULL);
        CHECK_EQ_INT(mq_model_add_view(m, "x", MQ_F32, 2, neg, w0), MQ_ERR_INVALID);
        CHECK_EQ_INT(mq_model_add_view(m, "x", MQ_F32, 2, ok2, NULL), MQ_ERR_INVALID);
        CHECK_EQ_INT(mq_model_add_view(m, "x", (mq_dtype)99, 2, ok2, w0), MQ_ERR_INVALID);
        CHECK_EQ_INT(mq_model_add_view(m, "", MQ_F32, 2, ok2, w0), MQ_ERR_INVALID);
        CHECK_EQ_INT(mq_model_add_view(m, "x", MQ_F32, MQ_MAX_DIMS + 1, ok2, w0), MQ_ERR_INVALID);
        CHECK_EQ_INT(mq_model_tensor_count(m), 3);
        CHECK_EQ_INT(mq_quantize_model(ctx, m, NULL, NULL, NULL), MQ_ERR_INVALID);
    }
    mq_model_free(m);
    /* a model opened from a file takes no views, and may not be its own output */
    mq_model *f = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, in_path, NULL, &f), MQ_OK);
    if (f) {
        int64_t s[1] = {1};
        CHECK_EQ_INT(mq_model_add_view(f, "x", MQ_F32, 1, s, b0), MQ_ERR_INVALID);
        CHECK_EQ_INT(mq_quantize_model(ctx, f, in_path, NULL, NULL), MQ_ERR_INVALID);
    }
    mq_model_free(f);
    mq_ctx_free(ctx);
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* An in-memory model given its source folder writes the folder mq_quantize_file writes for a
 * checkpoint in that folder: the same weights, config.json with the quantization_config, the
 * other files copied. */
TEST(source_folder_output) {
    mq_ctx *ctx = mq_ctx_create();
    char hf[400], path[600], a[400], b[400], fa[700], fb[700];
    snprintf(hf, sizeof hf, "%s/hf", dir);
    CHECK(mkdir(hf, 0755) == 0);
    snprintf(path, sizeof path, "%s/model.safetensors", hf);
    CHECK(write_file(path));
    snprintf(path, sizeof path, "%s/config.json", hf);
    CHECK(write_text(path, "{\n  \"model_type\": \"toy\",\n  \"hidden_size\": 256\n}\n"));
    snprintf(path, sizeof path, "%s/tokenizer.json", hf);
    CHECK(write_text(path, "{\"version\": \"1.0\"}\n"));
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    o.output_folder = 1;
    snprintf(a, sizeof a, "%s/out_file", dir);
    snprintf(b, sizeof b, "%s/out_memory", dir);
    CHECK_EQ_INT(mq_quantize_file(ctx, hf, a, &o, NULL), MQ_OK);
    mq_model *m = memory_model(ctx);
    CHECK(m != NULL);
    if (m) {
        CHECK_EQ_INT(mq_model_set_source_folder(m, path), MQ_ERR_IO); /* a file */
        CHECK_EQ_INT(mq_model_set_source_folder(m, hf), MQ_OK);
        mq_ctx_set_overwrite(ctx, 1); /* even so */
        CHECK_EQ_INT(mq_quantize_model(ctx, m, hf, &o, NULL), MQ_ERR_INVALID);
        CHECK_MSG_HAS(ctx, "own folder");
        mq_ctx_set_overwrite(ctx, 0);
        CHECK_EQ_INT(mq_quantize_model(ctx, m, b, &o, NULL), MQ_OK);
    }
    static const char *const names[] = {"model.safetensors", "config.json", "tokenizer.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(fa, sizeof fa, "%s/%s", a, names[i]);
        snprintf(fb, sizeof fb, "%s/%s", b, names[i]);
        CHECK_MSG(test_same_files(fa, fb), "%s differs", names[i]);
    }
    mq_model_free(m);
    mq_model *f = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, in_path, NULL, &f), MQ_OK);
    if (f) CHECK_EQ_INT(mq_model_set_source_folder(f, hf), MQ_ERR_INVALID);
    mq_model_free(f);
    mq_ctx_free(ctx);
}

/* mq_qmodel_linear_create runs a stored layer: weight-only INT8 output close to x W^T + b
 * with the dequantized weights, and bad indices / modes are refused. */
TEST(qmodel_linear_create) {
    mq_ctx *ctx = mq_ctx_create();
    char q[600];
    snprintf(q, sizeof q, "%s/file8.safetensors", dir);
    mq_qmodel *qm = NULL;
    CHECK_EQ_INT(mq_qmodel_open(ctx, q, &qm), MQ_OK);
    if (!qm) goto out;
    int64_t i = mq_qmodel_find(qm, "fc.weight");
    CHECK(i >= 0);
    mq_linear *lin = NULL;
    mq_act_mode act = MQ_ACT_F32;
    CHECK_EQ_INT(mq_qmodel_linear_create(ctx, qm, (size_t)i, MQ_ACT_STATIC, b0, &lin, &act),
                 MQ_OK);
    CHECK_EQ_INT(act, MQ_ACT_DYNAMIC); /* no stored input parameters */
    mq_linear_free(lin);
    lin = NULL;
    CHECK_EQ_INT(mq_qmodel_linear_create(ctx, qm, (size_t)i, MQ_ACT_F32, b0, &lin, &act), MQ_OK);
    static float w[64 * 256], x[256], y[64];
    CHECK_EQ_INT(mq_qmodel_read_rows(qm, (size_t)i, 0, 64, w), MQ_OK);
    for (int k = 0; k < 256; k++) x[k] = (float)((k % 7) - 3) * 0.25f;
    if (lin) CHECK_EQ_INT(mq_linear_forward(ctx, lin, x, 1, y), MQ_OK);
    for (int n = 0; lin && n < 64; n++) {
        double ref = b0[n];
        for (int k = 0; k < 256; k++) ref += (double)w[n * 256 + k] * x[k];
        CHECK_MSG(y[n] > ref - 1e-3 && y[n] < ref + 1e-3, "row %d: %g vs %g", n, y[n], ref);
    }
    mq_linear_free(lin);
    lin = NULL;
    int64_t b = mq_qmodel_find(qm, "fc.bias");
    CHECK_EQ_INT(mq_qmodel_linear_create(ctx, qm, (size_t)b, MQ_ACT_F32, NULL, &lin, NULL),
                 MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_qmodel_linear_create(ctx, qm, 999, MQ_ACT_F32, NULL, &lin, NULL),
                 MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_qmodel_linear_create(ctx, qm, (size_t)i, (mq_act_mode)7, NULL, &lin, NULL),
                 MQ_ERR_INVALID);
    CHECK(lin == NULL);
out:
    mq_qmodel_free(qm);
    mq_ctx_free(ctx);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/mq_memory_XXXXXX", getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) return 1;
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    fill();
    if (!write_file(in_path)) return 1;
    RUN(same_bytes_as_file_int8_safetensors);
    RUN(same_bytes_as_file_int4_safetensors);
    RUN(same_bytes_as_file_int8_pt);
    RUN(views_are_not_copied);
    RUN(bad_views_rejected);
    RUN(qmodel_linear_create);
    RUN(source_folder_output);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
