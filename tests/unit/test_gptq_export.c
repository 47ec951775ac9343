/* GPTQ output layout: tensors quantized in monoquant's layout, packed as GPTQ, written with
 * quantize_config.json and read back by mq_qmodel_open give exactly the values of the
 * original quantization with its scales rounded to F16 (what GPTQ stores). */
#include "harness.h"
#include "pipeline/gptq_export.h"

#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *tmpdir_base(void) {
    const char *t = getenv("TEST_TMPDIR");
    return t && *t ? t : "/tmp";
}

static uint64_t rng = 88172645463325252ull;
static float randn(void) {
    double u = 0;
    for (int i = 0; i < 12; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        u += (double)(rng >> 11) / 9007199254740992.0;
    }
    return (float)(u - 6.0) * 0.05f;
}

/* Quantizes W [n, k] with spec, exports it as GPTQ into a fresh folder, reads it back and
 * compares every value; returns 1 when equal. */
static int roundtrip(const mq_qspec *spec, int64_t n, int64_t k, const char *tag) {
    mq_ctx *ctx = mq_ctx_create();
    int ok = 0;
    float *w = malloc((size_t)(n * k) * 4), *want = malloc((size_t)(n * k) * 4),
          *got = malloc((size_t)(n * k) * 4);
    for (int64_t i = 0; i < n * k; i++) w[i] = randn() + (spec->scheme ? 0.02f : 0.0f);
    int64_t shape[2] = {n, k};
    mq_qlayout L;
    CHECK(mq_qlayout_init(ctx, spec, 2, shape, &L) == MQ_OK);
    uint8_t *data = malloc((size_t)L.data_bytes);
    float *scale = malloc((size_t)L.nscales * 4);
    uint8_t *zp = malloc((size_t)L.nscales);
    CHECK(mq_quantize_rows(ctx, spec, &L, NULL, MQ_F32, w, 0, n, data, scale,
                           L.has_zero_point ? zp : NULL) == MQ_OK);
    mq__gptq_shape g;
    CHECK(mq__gptq_shape_of(ctx, "w", spec, 2, shape, &g) == MQ_OK);
    uint64_t sz[4];
    mq__gptq_sizes(&g, sz);
    uint8_t *buf[4];
    for (int i = 0; i < 4; i++) buf[i] = malloc((size_t)sz[i]);
    /* two chunks of rows, as the pipeline feeds them */
    int64_t half = n / 2;
    CHECK(mq__gptq_pack_rows(ctx, "w", spec, &L, &g, data, scale, L.has_zero_point ? zp : NULL,
                             0, half, buf[0], buf[1], buf[2], buf[3]) == MQ_OK);
    CHECK(mq__gptq_pack_rows(ctx, "w", spec, &L, &g, data + half * L.row_bytes, scale,
                             L.has_zero_point ? zp : NULL, half, n, buf[0], buf[1], buf[2],
                             buf[3]) == MQ_OK);
    /* expected: the original dequantization with F16-rounded scales */
    for (int64_t i = 0; i < L.nscales; i++) scale[i] = mq_f16_to_f32(mq_f32_to_f16(scale[i]));
    CHECK(mq_dequantize_rows(ctx, spec, &L, data, scale, L.has_zero_point ? zp : NULL, 0, n,
                             want) == MQ_OK);

    char dir[512], file[600], cfgpath[600];
    snprintf(dir, sizeof dir, "%s/gptq_%s_XXXXXX", tmpdir_base(), tag);
    CHECK(mkdtemp(dir) != NULL);
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    snprintf(cfgpath, sizeof cfgpath, "%s/quantize_config.json", dir);
    int64_t pf = 32 / g.bits;
    mq_tensor_desc d[4] = {
        {"l.qweight", MQ_I32, 2, {k / pf, n}},
        {"l.qzeros", MQ_I32, 2, {g.groups, n / pf}},
        {"l.scales", MQ_F16, 2, {g.groups, n}},
        {"l.g_idx", MQ_I32, 1, {k}},
    };
    mq_writer *wr = NULL;
    CHECK(mq_writer_open(ctx, file, MQ_FORMAT_SAFETENSORS, d, 4, NULL, 0, &wr) == MQ_OK);
    for (int i = 0; i < 4; i++) CHECK(mq_writer_write(wr, buf[i], (size_t)sz[i]) == MQ_OK);
    CHECK(mq_writer_commit(wr) == MQ_OK);
    mq_writer_free(wr);
    char *cfg = mq__gptq_config_json(ctx, &g, 0);
    FILE *f = fopen(cfgpath, "w");
    CHECK(f && cfg);
    if (f && cfg) fputs(cfg, f);
    if (f) fclose(f);
    mq__free(ctx, cfg);

    mq_qmodel *qm = NULL;
    mq_status st = mq_qmodel_open(ctx, dir, &qm);
    CHECK_MSG(st == MQ_OK, "open: %s", mq_ctx_message(ctx));
    if (st == MQ_OK) {
        long i = mq_qmodel_find(qm, "l.weight");
        CHECK(i >= 0);
        if (i >= 0) {
            const mq_qtensor *q = mq_qmodel_tensor(qm, (size_t)i);
            CHECK_EQ_STR(q->storage, g.sym ? "gptq" : "gptq_v2");
            CHECK(mq_qmodel_verify(qm, (size_t)i) == MQ_OK);
            CHECK(mq_qmodel_read_rows(qm, (size_t)i, 0, n, got) == MQ_OK);
            ok = !memcmp(got, want, (size_t)(n * k) * 4);
            for (int64_t j = 0; j < n * k && !ok; j++)
                if (got[j] != want[j]) {
                    TH_FAIL("%s: element %lld: %g vs %g", tag, (long long)j, (double)got[j],
                            (double)want[j]);
                    break;
                }
        }
    }
    mq_qmodel_free(qm);
    for (int i = 0; i < 4; i++) free(buf[i]);
    free(w), free(want), free(got), free(data), free(scale), free(zp);
    mq_ctx_free(ctx);
    return ok;
}

static mq_qspec spec_of(mq_qtype t, mq_scheme s, mq_granularity gr, int gs) {
    mq_qspec sp;
    mq_qspec_default(&sp);
    sp.type = t, sp.scheme = s, sp.granularity = gr, sp.group_size = gs;
    return sp;
}

TEST(int4_symmetric_group_is_v1) {
    mq_qspec s = spec_of(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 32);
    CHECK(roundtrip(&s, 24, 96, "i4s"));
}

TEST(uint4_asymmetric_group_is_v2) {
    mq_qspec s = spec_of(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 16);
    CHECK(roundtrip(&s, 16, 64, "u4a"));
}

TEST(int4_asymmetric_channel_is_v2) {
    mq_qspec s = spec_of(MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0);
    CHECK(roundtrip(&s, 8, 40, "i4a"));
}

TEST(int8_symmetric_channel_and_uint8_asymmetric_group) {
    mq_qspec s = spec_of(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0);
    CHECK(roundtrip(&s, 12, 36, "i8s"));
    mq_qspec u = spec_of(MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_GROUP, 8);
    CHECK(roundtrip(&u, 12, 32, "u8a"));
}

TEST(config_names_the_format) {
    mq_ctx *ctx = mq_ctx_create();
    mq__gptq_shape g = {4, 1, 8, 256, 2, 128};
    char *c = mq__gptq_config_json(ctx, &g, 0);
    CHECK(c && strstr(c, "\"quant_method\": \"gptq\"") && strstr(c, "\"bits\": 4") &&
          strstr(c, "\"group_size\": 128") && strstr(c, "\"desc_act\": false") &&
          strstr(c, "\"sym\": true") && strstr(c, "\"checkpoint_format\": \"gptq\""));
    mq__free(ctx, c);
    g.sym = 0, g.groups = 1;
    c = mq__gptq_config_json(ctx, &g, 0);
    CHECK(c && strstr(c, "\"group_size\": -1") && strstr(c, "\"sym\": false") &&
          strstr(c, "\"checkpoint_format\": \"gptq_v2\""));
    mq__free(ctx, c);
    mq_ctx_free(ctx);
}

TEST(refuses_what_gptq_loaders_cannot_load) {
    mq_ctx *ctx = mq_ctx_create();
    mq__gptq_shape g;
    int64_t sh[2] = {16, 100}, sh3[3] = {16, 4, 8}, odd[2] = {12, 128};
    mq_qspec s = spec_of(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 32);
    CHECK(mq__gptq_shape_of(ctx, "a.weight", &s, 2, sh, &g) == MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "divide in_features (100)");
    CHECK(mq__gptq_shape_of(ctx, "c.weight", &s, 3, sh3, &g) == MQ_ERR_INVALID);
    CHECK(mq__gptq_shape_of(ctx, "d.weight", &s, 2, odd, &g) == MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "multiple of 8");
    mq_qspec t = spec_of(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_TENSOR, 0);
    CHECK(mq__gptq_shape_of(ctx, "e.weight", &t, 2, odd, &g) == MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "per-tensor");
    mq_qspec f = spec_of(MQ_Q_FP16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0);
    CHECK(mq__gptq_shape_of(ctx, "f.weight", &f, 2, odd, &g) == MQ_ERR_INVALID);
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(int4_symmetric_group_is_v1);
    RUN(uint4_asymmetric_group_is_v2);
    RUN(int4_asymmetric_channel_is_v2);
    RUN(int8_symmetric_channel_and_uint8_asymmetric_group);
    RUN(config_names_the_format);
    RUN(refuses_what_gptq_loaders_cannot_load);
    return test_summary();
}
