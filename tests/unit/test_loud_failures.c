/* Results that used to come out wrong but "fine" now fail or warn: cast overflow, scales
 * that overflow float32, gates that could not run, NaN/Inf scales in a quantized file,
 * already-quantized inputs, and options or rules that have no effect. */
#include "harness.h"
#include "monoquant.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char dir[512];

static const char *path(const char *name) {
    static char buf[4][700];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* Tests rewrite their scratch files: a context that may replace them. */
static mq_ctx *new_ctx(void) {
    mq_ctx *ctx = mq_ctx_create();
    if (ctx) mq_ctx_set_overwrite(ctx, 1);
    return ctx;
}

/* One tensor per desc; values from fill(tensor index, element index). Data is F32 unless the
 * desc says otherwise (then zeros of that size). */
typedef float (*fill_fn)(int t, uint64_t i);
static int write_model(const char *p, const mq_tensor_desc *d, size_t n, fill_fn fill) {
    mq_ctx *ctx = new_ctx();
    mq_writer *w = NULL;
    int ok = mq_writer_open(ctx, p, MQ_FORMAT_AUTO, d, n, NULL, 0, &w) == MQ_OK;
    for (size_t t = 0; ok && t < n; t++) {
        uint64_t numel = 1;
        for (int k = 0; k < d[t].ndim; k++) numel *= (uint64_t)d[t].shape[k];
        for (uint64_t i = 0; ok && i < numel; i++) {
            if (d[t].dtype == MQ_F32) {
                float v = fill((int)t, i);
                ok = mq_writer_write(w, &v, 4) == MQ_OK;
            } else {
                uint8_t z[8] = {0};
                ok = mq_writer_write(w, z, mq_dtype_size(d[t].dtype)) == MQ_OK;
            }
        }
    }
    ok = ok && mq_writer_commit(w) == MQ_OK;
    mq_writer_free(w);
    mq_ctx_free(ctx);
    return ok;
}

static float gentle(int t, uint64_t i) { return (float)((i * 7 + (uint64_t)t * 3) % 23) * 0.05f - 0.5f; }
static float big_at_5(int t, uint64_t i) { return t == 0 && i == 5 ? 70000.0f : gentle(t, i); }
static float flt_max_at_5(int t, uint64_t i) {
    return t == 0 && i == 5 ? FLT_MAX : t == 0 && i == 6 ? -FLT_MAX : gentle(t, i);
}

static const mq_tensor_desc two_layers[] = {{"blocks.0.fc.weight", MQ_F32, 2, {16, 64}},
                                            {"blocks.0.fc.bias", MQ_F32, 1, {16}},
                                            {"blocks.0.norm.weight", MQ_F32, 1, {64}},
                                            {"blocks.1.fc.weight", MQ_F32, 2, {16, 64}}};

TEST(cast_overflow_fails_or_clamps) {
    const char *in = path("big.safetensors"), *out = path("big.f16.safetensors");
    CHECK(write_model(in, two_layers, 4, big_at_5));
    mq_ctx *ctx = new_ctx();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    mq_qspec_recommended(&o.spec, MQ_Q_FP16);
    mq_report *r = NULL;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "tensor 'blocks.0.fc.weight': element 5 (70000) is beyond the FP16 range");
    CHECK(r == NULL);
    CHECK(access(out, F_OK) != 0);
    o.clamp_casts = 1;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_OK);
    CHECK(r != NULL);
    if (r) {
        CHECK_EQ_INT(mq_report_tensor_clamped(r, 0), 1);
        CHECK_EQ_INT(mq_report_tensor_clamped(r, 3), 0);
        mq_error_stats es;
        CHECK(mq_report_tensor_error(r, 0, &es) && isfinite(es.sqnr_db));
    }
    mq_report_free(r);
    mq_model *m = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, out, NULL, &m), MQ_OK);
    if (m) {
        const mq_tensor *t = mq_model_tensor(m, (size_t)mq_model_find(m, "blocks.0.fc.weight"));
        uint16_t h;
        memcpy(&h, (const uint8_t *)t->data + 10, 2);
        CHECK_EQ_INT(h, 0x7bff); /* 65504 */
    }
    mq_model_free(m);
    remove(out);
    remove(in);
    /* BF16: FLT_MAX rounds to Inf */
    CHECK(write_model(in, two_layers, 4, flt_max_at_5));
    mq_qspec_recommended(&o.spec, MQ_Q_BF16);
    o.clamp_casts = 0;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, NULL), MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "beyond the BF16 range");
    CHECK(access(out, F_OK) != 0);
    /* the in-memory call refuses as well */
    mq_qspec s;
    mq_qspec_recommended(&s, MQ_Q_BF16);
    int64_t shape[2] = {1, 2};
    float x[2] = {FLT_MAX, 1.0f};
    mq_qlayout L;
    uint16_t y[2];
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_OK);
    CHECK_EQ_INT(mq_quantize_rows(ctx, &s, &L, NULL, MQ_F32, x, 0, 1, y, NULL, NULL), MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "beyond the BF16 range");
    remove(in);
    mq_ctx_free(ctx);
}

/* Ranges near FLT_MAX: (max - min) / 255 is Inf in float32; a finite scale whose grid ends
 * beyond FLT_MAX would dequantize to Inf. Both fail naming the tensor. */
TEST(scale_overflow_fails) {
    const char *in = path("huge.safetensors"), *out = path("huge.q.safetensors");
    CHECK(write_model(in, two_layers, 4, flt_max_at_5));
    mq_ctx *ctx = new_ctx();
    static const mq_qtype types[] = {MQ_Q_UINT8, MQ_Q_INT8, MQ_Q_INT4};
    for (size_t k = 0; k < 3; k++) {
        mq_quantize_options o;
        mq_quantize_options_default(&o);
        mq_qspec_recommended(&o.spec, types[k]);
        o.default_skip = 0;
        CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, NULL), MQ_ERR_QUANT);
        CHECK_MSG_HAS(ctx, "blocks.0.fc.weight");
        CHECK_MSG_HAS(ctx, "overflows float32");
        CHECK(access(out, F_OK) != 0);
    }
    /* per tensor too */
    mq_qspec s;
    mq_qspec_recommended(&s, MQ_Q_UINT8);
    s.granularity = MQ_PER_TENSOR;
    int64_t shape[2] = {2, 2};
    float x[4] = {FLT_MAX, -FLT_MAX, 0, 1};
    mq_qlayout L;
    uint8_t q[4], zp[1];
    float scale[1];
    CHECK_EQ_INT(mq_qlayout_init(ctx, &s, 2, shape, &L), MQ_OK);
    CHECK_EQ_INT(mq_quantize_rows(ctx, &s, &L, NULL, MQ_F32, x, 0, 2, q, scale, zp), MQ_ERR_QUANT);
    remove(in);
    mq_ctx_free(ctx);
}

static float neg_flt_max_at_5(int t, uint64_t i) { return t == 0 && i == 5 ? -FLT_MAX : gentle(t, i); }

/* UINT8 holds a row with -FLT_MAX (its grid just fits): the figures must not overflow into
 * an "exact" +inf dB. */
TEST(error_figures_of_huge_values) {
    const char *in = path("neg.safetensors"), *out = path("neg.q.safetensors");
    CHECK(write_model(in, two_layers, 4, neg_flt_max_at_5));
    mq_ctx *ctx = new_ctx();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    mq_qspec_recommended(&o.spec, MQ_Q_UINT8);
    mq_report *r = NULL;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_OK);
    mq_error_stats es;
    CHECK(r && mq_report_tensor_error(r, 0, &es) && isfinite(es.sqnr_db) && es.rel_fro > 0);
    mq_report_free(r);
    remove(out);
    remove(in);
    mq_ctx_free(ctx);
}

TEST(sqnr_gate_without_figures_is_invalid) {
    const char *in = path("gate.safetensors"), *out = path("gate.q.safetensors");
    CHECK(write_model(in, two_layers, 4, gentle));
    mq_ctx *ctx = new_ctx();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    o.sqnr_warn_db = 30;
    o.error_stats = 0;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, NULL), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "--no-error-stats");
    CHECK(access(out, F_OK) != 0);
    o.error_stats = 1;
    o.sqnr_warn_db = 200;
    mq_report *r = NULL;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_OK);
    CHECK(r && mq_report_warning_count(r) == 2);
    mq_report_free(r);
    remove(out);
    remove(in);
    mq_ctx_free(ctx);
}

/* Copies `src` to `dst` tensor by tensor (metadata too), with the first F32 value of tensor
 * `poison` replaced by v. */
static int copy_poisoned(const char *src, const char *dst, const char *poison, float v) {
    mq_ctx *ctx = new_ctx();
    mq_model *m = NULL;
    if (mq_model_open(ctx, src, NULL, &m) != MQ_OK) return 0;
    size_t n = mq_model_tensor_count(m), nm = mq_model_metadata_count(m);
    mq_tensor_desc d[32];
    mq_kv kv[64];
    if (n > 32 || nm > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        d[i].name = t->name;
        d[i].dtype = t->dtype;
        d[i].ndim = t->ndim;
        memcpy(d[i].shape, t->shape, sizeof d[i].shape);
    }
    size_t k = 0;
    for (size_t i = 0; i < nm; i++)
        if (strcmp(mq_model_metadata_key(m, i), "format"))
            kv[k++] = (mq_kv){mq_model_metadata_key(m, i), mq_model_metadata_value(m, i)};
    mq_writer *w = NULL;
    int ok = mq_writer_open(ctx, dst, MQ_FORMAT_AUTO, d, n, kv, k, &w) == MQ_OK;
    for (size_t i = 0; ok && i < n; i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        if (!strcmp(t->name, poison) && t->dtype == MQ_F32 && t->nbytes >= 4) {
            ok = mq_writer_write(w, &v, 4) == MQ_OK &&
                 mq_writer_write(w, (const uint8_t *)t->data + 4, (size_t)t->nbytes - 4) == MQ_OK;
        } else if (!strcmp(t->name, poison) && t->dtype == MQ_F16 && t->nbytes >= 2) {
            uint16_t h = mq_f32_to_f16(v);
            ok = mq_writer_write(w, &h, 2) == MQ_OK &&
                 mq_writer_write(w, (const uint8_t *)t->data + 2, (size_t)t->nbytes - 2) == MQ_OK;
        } else {
            ok = mq_writer_write(w, t->data, (size_t)t->nbytes) == MQ_OK;
        }
    }
    ok = ok && mq_writer_commit(w) == MQ_OK;
    mq_writer_free(w);
    mq_model_free(m);
    mq_ctx_free(ctx);
    return ok;
}

TEST(nonfinite_scales_are_rejected_by_readers) {
    mq_qmodel *qm = NULL;
    const char *in = path("plain.safetensors"), *q = path("plain.q.safetensors");
    const char *bad = path("bad.q.safetensors"), *deq = path("bad.deq.safetensors");
    CHECK(write_model(in, two_layers, 4, gentle));
    mq_ctx *ctx = new_ctx();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    CHECK_EQ_INT(mq_quantize_file(ctx, in, q, &o, NULL), MQ_OK);
    const float vals[3] = {NAN, INFINITY, FLT_MAX};
    for (int k = 0; k < 3; k++) {
        CHECK(copy_poisoned(q, bad, "blocks.1.fc.weight_scale", vals[k]));
        CHECK_EQ_INT(mq_qmodel_open(ctx, bad, &qm), MQ_ERR_VALIDATION);
        CHECK(qm == NULL);
        CHECK_MSG_HAS(ctx, "tensor 'blocks.1.fc.weight': scale 0 is");
        CHECK_EQ_INT(mq_dequantize_file(ctx, bad, deq, MQ_DTYPE_INVALID, MQ_FORMAT_AUTO),
                     MQ_ERR_VALIDATION);
        CHECK_MSG_HAS(ctx, "blocks.1.fc.weight");
        CHECK(access(deq, F_OK) != 0);
    }
    /* an Inf in a cast tensor (an overflowed cast of an older writer): verify says so */
    mq_qspec_recommended(&o.spec, MQ_Q_FP16);
    CHECK_EQ_INT(mq_quantize_file(ctx, in, deq, &o, NULL), MQ_OK);
    CHECK(copy_poisoned(deq, bad, "blocks.1.fc.weight", INFINITY));
    CHECK_EQ_INT(mq_qmodel_open(ctx, bad, &qm), MQ_OK);
    if (qm) {
        long k = mq_qmodel_find(qm, "blocks.1.fc.weight");
        CHECK(k >= 0 && mq_qmodel_verify(qm, (size_t)k) == MQ_ERR_VALIDATION);
        CHECK_MSG_HAS(ctx, "tensor 'blocks.1.fc.weight': F16 element 0 is Inf or NaN");
        CHECK(mq_qmodel_verify(qm, (size_t)mq_qmodel_find(qm, "blocks.0.fc.weight")) == MQ_OK);
    }
    mq_qmodel_free(qm);
    remove(deq);
    /* the untouched copy reads */
    CHECK(copy_poisoned(q, bad, "none", 0));
    CHECK_EQ_INT(mq_qmodel_open(ctx, bad, &qm), MQ_OK);
    mq_qmodel_free(qm);
    remove(in);
    remove(q);
    remove(bad);
    mq_ctx_free(ctx);
}

TEST(already_quantized_input_is_refused) {
    const char *in = path("aq.safetensors"), *q = path("aq.q.safetensors");
    const char *qq = path("aq.qq.safetensors");
    CHECK(write_model(in, two_layers, 4, gentle));
    mq_ctx *ctx = new_ctx();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    CHECK_EQ_INT(mq_quantize_file(ctx, in, q, &o, NULL), MQ_OK);
    o.kinds |= MQ_KIND_BIT(MQ_KIND_OTHER); /* would quantize the scales */
    CHECK_EQ_INT(mq_quantize_file(ctx, q, qq, &o, NULL), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "already quantized by monoquant");
    CHECK(access(qq, F_OK) != 0);
    mq_qspec_recommended(&o.spec, MQ_Q_FP16);
    CHECK_EQ_INT(mq_quantize_file(ctx, q, qq, &o, NULL), MQ_ERR_INVALID);
    /* compressed-tensors and GPTQ names without our metadata */
    static const mq_tensor_desc ct[] = {{"l.weight_packed", MQ_I32, 2, {16, 8}},
                                        {"l.weight_scale", MQ_F32, 2, {16, 1}},
                                        {"l.weight_shape", MQ_I64, 1, {2}}};
    static const mq_tensor_desc gptq[] = {{"l.qweight", MQ_I32, 2, {8, 16}},
                                          {"l.qzeros", MQ_I32, 2, {1, 2}},
                                          {"l.scales", MQ_F32, 2, {1, 16}},
                                          {"other.weight", MQ_F32, 2, {16, 16}}};
    CHECK(write_model(in, ct, 3, gentle));
    CHECK_EQ_INT(mq_quantize_file(ctx, in, qq, &o, NULL), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "tensor 'l.weight_packed': the compressed-tensors layout");
    CHECK(write_model(in, gptq, 4, gentle));
    CHECK_EQ_INT(mq_quantize_file(ctx, in, qq, &o, NULL), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "tensor 'l.qweight': a GPTQ/AWQ layout");
    CHECK(access(qq, F_OK) != 0);
    /* names that merely contain those words are not quantized checkpoints */
    static const mq_tensor_desc fine[] = {{"logit_scale", MQ_F32, 2, {4, 4}},
                                          {"layer_scales.weight", MQ_F32, 2, {4, 4}}};
    CHECK(write_model(in, fine, 2, gentle));
    CHECK_EQ_INT(mq_quantize_file(ctx, in, qq, &o, NULL), MQ_OK);
    remove(in);
    remove(q);
    remove(qq);
    mq_ctx_free(ctx);
}

static mq_scale_search search_of(const mq_report *r, size_t i) {
    mq_qspec s;
    mq_report_tensor_spec(r, i, &s);
    return s.search;
}

static int has_warning(const mq_report *r, const char *needle) {
    for (size_t i = 0; r && i < mq_report_warning_count(r); i++)
        if (strstr(mq_report_warning(r, i), needle)) return 1;
    return 0;
}

/* A statistics file for `layer` with `channels` inputs (Hessian when asked). */
static int write_stats(const char *p, const char *layer, int64_t channels, int hessian) {
    mq_ctx *ctx = new_ctx();
    mq_calibrator *cal = NULL;
    int ok = mq_calibrator_create(ctx, NULL, &cal) == MQ_OK &&
             mq_calibrator_set_hessian(cal, hessian) == MQ_OK &&
             mq_calibrator_add_layer(cal, layer, channels) == MQ_OK;
    float x[4 * 64];
    for (int i = 0; i < 4 * 64; i++) x[i] = gentle(1, (uint64_t)i);
    int64_t shape[2] = {4, channels};
    ok = ok && channels <= 64 &&
         mq_calibrator_update(cal, layer, MQ_F32, x, 2, shape, -1) == MQ_OK &&
         mq_calibrator_save(cal, p, NULL, 0) == MQ_OK;
    mq_calibrator_free(cal);
    mq_ctx_free(ctx);
    return ok;
}

TEST(ignored_options_warn) {
    const char *in = path("warn.safetensors"), *out = path("warn.q.safetensors");
    const char *stats = path("warn.stats.safetensors");
    CHECK(write_model(in, two_layers, 4, gentle));
    mq_ctx *ctx = new_ctx();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    mq_report *r = NULL;
    /* a plain run: no warning */
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_OK);
    CHECK(r && mq_report_warning_count(r) == 0);
    mq_report_free(r);
    /* a rule that matches nothing */
    mq_layer_rule rules[2] = {{"blocks.*.fc.weight", MQ_Q_INT4}, {"decoder.*", MQ_Q_NONE}};
    o.rules = rules;
    o.nrules = 2;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_OK);
    CHECK(r && mq_report_warning_count(r) == 1 && has_warning(r, "layer rule 'decoder.*=none' matches no tensor"));
    mq_report_free(r);
    o.strict = 1;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, NULL), MQ_ERR_QUANT);
    o.strict = 0;
    o.nrules = 0;
    /* norm/bias kinds: 1-D tensors are always kept */
    o.kinds |= MQ_KIND_BIT(MQ_KIND_NORM) | MQ_KIND_BIT(MQ_KIND_BIAS);
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_OK);
    CHECK(r && has_warning(r, "layer kind 'norm' selected") &&
          has_warning(r, "layer kind 'bias' selected"));
    mq_report_free(r);
    mq_quantize_options_default(&o);
    /* statistics of a layer the model does not have: nothing static, and the config says so */
    CHECK(write_stats(stats, "decoder.0.fc", 64, 0));
    o.calibration = stats;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_OK);
    CHECK(r && has_warning(r, "none of their 1 layers matches"));
    CHECK(r && mq_report_config_json(r) && strstr(mq_report_config_json(r), "\"activations\": null"));
    CHECK(r && !mq_report_tensor_has_input_params(r, 0));
    mq_report_free(r);
    /* statistics without a Hessian and GPTQ: the mse search ran, said per tensor */
    CHECK(write_stats(stats, "blocks.0.fc", 64, 0));
    o.spec.search = MQ_SEARCH_GPTQ;
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_OK);
    CHECK(r && has_warning(r, "GPTQ: 2 quantized tensors (first: blocks.0.fc.weight) have no "
                                 "Hessian"));
    CHECK(r && search_of(r, 0) == MQ_SEARCH_MSE);
    CHECK(r && mq_report_tensor_has_input_params(r, 0) && !mq_report_tensor_has_input_params(r, 3));
    CHECK(r && mq_report_config_json(r) && strstr(mq_report_config_json(r), "\"static\": true"));
    mq_report_free(r);
    /* with a Hessian, GPTQ runs and says so */
    CHECK(write_stats(stats, "blocks.0.fc", 64, 1));
    CHECK_EQ_INT(mq_quantize_file(ctx, in, out, &o, &r), MQ_OK);
    CHECK(r && search_of(r, 0) == MQ_SEARCH_GPTQ);
    CHECK(r && search_of(r, 3) == MQ_SEARCH_MSE);
    CHECK(r && has_warning(r, "GPTQ: 1 quantized tensor (first: blocks.1.fc.weight) has no"));
    mq_report_free(r);
    remove(stats);
    remove(out);
    remove(in);
    mq_ctx_free(ctx);
}

/* A .pt whose tensors 'a' and 'b' share one storage (tests/corpus/zip/torch_tied.pt, saved
 * by torch): the output cannot keep the tie, and says so. */
TEST(untied_storage_is_reported) {
    const char *out = path("tied.safetensors");
    mq_ctx *ctx = new_ctx();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    o.kinds |= MQ_KIND_BIT(MQ_KIND_OTHER);
    mq_report *r = NULL;
    CHECK_EQ_INT(mq_quantize_file(ctx, "tests/corpus/zip/torch_tied.pt", out, &o, &r), MQ_OK);
    CHECK(r && has_warning(r, "1 tensor shares storage with another in the input (first: 'a' "
                              "and 'b'"));
    mq_report_free(r);
    remove(out);
    mq_ctx_free(ctx);
}

/* Histogram observers on ranges near FLT_MAX: no undefined float -> integer conversion
 * (the sanitizer build halts on one), and qparams that would overflow fail. */
TEST(observer_ranges_near_flt_max) {
    mq_ctx *ctx = new_ctx();
    for (int kind = MQ_OBS_MINMAX; kind <= MQ_OBS_MSE; kind++) {
        mq_observer_options oo;
        mq_observer_options_default(&oo, (mq_observer_kind)kind);
        mq_observer *obs = NULL;
        CHECK_EQ_INT(mq_observer_create(ctx, &oo, &obs), MQ_OK);
        float a[4] = {0.0f, 0.5f, 1.0f, 0.25f}, b[2] = {-FLT_MAX, FLT_MAX};
        CHECK_EQ_INT(mq_observer_update(obs, a, 1, 4), MQ_OK);
        CHECK_EQ_INT(mq_observer_update(obs, b, 1, 2), MQ_OK);
        float scale;
        int32_t zp;
        mq_status st = mq_observer_qparams(obs, &scale, &zp, NULL, NULL);
        /* searches may settle on a narrower range; min/max cannot */
        CHECK_MSG(st == MQ_ERR_QUANT || (kind != MQ_OBS_MINMAX && st == MQ_OK &&
                                         isfinite(scale) && scale > 0),
                  "kind %d: status %d, scale %g", kind, (int)st, (double)scale);
        if (st != MQ_OK) CHECK_MSG_HAS(ctx, "overflows float32");
        mq_observer_free(obs);
    }
    mq_ctx_free(ctx);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/loudXXXXXX", test_tmpdir());
    if (!mkdtemp(dir)) {
        printf("not ok setup: cannot create %s\n", dir);
        return 1;
    }
    RUN(cast_overflow_fails_or_clamps);
    RUN(scale_overflow_fails);
    RUN(error_figures_of_huge_values);
    RUN(sqnr_gate_without_figures_is_invalid);
    RUN(nonfinite_scales_are_rejected_by_readers);
    RUN(already_quantized_input_is_refused);
    RUN(ignored_options_warn);
    RUN(untied_storage_is_reported);
    RUN(observer_ranges_near_flt_max);
    rmdir(dir);
    return test_summary();
}
