/* The plan: classification, selection rules, reasons, output names and sizes (dry runs of
 * mq_quantize_file on a small synthetic checkpoint). */
#include "harness.h"
#include "monoquant.h"
#include "api_helpers.h"

#include <stdio.h>
#include <string.h>

typedef struct spec_t {
    const char *name;
    mq_dtype dtype;
    int ndim;
    int64_t shape[4];
} spec_t;

static const spec_t MODEL[] = {
    {"model.embed_tokens.weight", MQ_F32, 2, {64, 32}},
    {"model.layers.0.input_layernorm.weight", MQ_F32, 1, {32}},
    {"model.layers.0.self_attn.q_proj.weight", MQ_F32, 2, {32, 32}},
    {"model.layers.0.self_attn.q_proj.bias", MQ_F32, 1, {32}},
    {"model.layers.0.mlp.up_proj.weight", MQ_BF16, 2, {64, 32}},
    {"model.layers.0.mlp.down_proj.weight", MQ_F16, 2, {32, 64}},
    {"model.conv.weight", MQ_F32, 4, {8, 4, 3, 3}},
    {"model.lstm.weight_ih_l0", MQ_F32, 2, {64, 32}},
    {"model.step", MQ_I64, 1, {1}},
    {"lm_head.weight", MQ_F32, 2, {64, 32}},
};
#define NMODEL (sizeof MODEL / sizeof *MODEL)

/* Writes MODEL with deterministic values to path. */
static int write_model(mq_ctx *ctx, const char *path) {
    mq_tensor_desc d[NMODEL];
    for (size_t i = 0; i < NMODEL; i++) {
        memset(&d[i], 0, sizeof d[i]);
        d[i].name = MODEL[i].name;
        d[i].dtype = MODEL[i].dtype;
        d[i].ndim = MODEL[i].ndim;
        memcpy(d[i].shape, MODEL[i].shape, sizeof MODEL[i].shape);
    }
    mq_kv meta[] = {{"model", "unit"}};
    mq_writer *w = NULL;
    if (mq_writer_open(ctx, path, MQ_FORMAT_SAFETENSORS, d, NMODEL, meta, 1, &w) != MQ_OK) return 0;
    uint32_t seed = 1;
    for (size_t i = 0; i < NMODEL; i++) {
        uint64_t n = 1;
        for (int k = 0; k < MODEL[i].ndim; k++) n *= (uint64_t)MODEL[i].shape[k];
        for (uint64_t j = 0; j < n; j++) {
            seed = seed * 1664525u + 1013904223u;
            float v = ((float)(seed >> 8) / 16777216.0f - 0.5f) * 0.2f;
            uint8_t buf[8];
            size_t es = mq_dtype_size(MODEL[i].dtype);
            if (MODEL[i].dtype == MQ_F32) memcpy(buf, &v, 4);
            else if (MODEL[i].dtype == MQ_BF16) {
                uint16_t h = mq_f32_to_bf16(v);
                memcpy(buf, &h, 2);
            } else if (MODEL[i].dtype == MQ_F16) {
                uint16_t h = mq_f32_to_f16(v);
                memcpy(buf, &h, 2);
            } else {
                int64_t x = (int64_t)j;
                memcpy(buf, &x, 8);
            }
            if (mq_writer_write(w, buf, es) != MQ_OK) return 0;
        }
    }
    int ok = mq_writer_commit(w) == MQ_OK;
    mq_writer_free(w);
    return ok;
}

static char path[512];

static const tensor_view *find(const mq_report *r, const char *name) {
    return tensor_view_find(r, name);
}

static mq_report *plan(mq_ctx *ctx, mq_quantize_options *o) {
    o->dry_run = 1;
    mq_report *r = NULL;
    mq_status st = mq_quantize_file(ctx, path, NULL, o, &r);
    if (st != MQ_OK) printf("# %s\n", mq_ctx_message(ctx));
    return r;
}

TEST(classify) {
    mq_tensor t = {.name = "model.layers.0.mlp.up_proj.weight", .ndim = 2};
    CHECK_EQ_INT(mq_classify_tensor(&t), MQ_KIND_LINEAR);
    t.name = "model.conv.weight", t.ndim = 4;
    CHECK_EQ_INT(mq_classify_tensor(&t), MQ_KIND_CONV);
    t.name = "rnn.weight_hh_l1", t.ndim = 2;
    CHECK_EQ_INT(mq_classify_tensor(&t), MQ_KIND_RNN);
    t.name = "transformer.wte.weight";
    CHECK_EQ_INT(mq_classify_tensor(&t), MQ_KIND_EMBEDDING);
    t.name = "ln_f.weight", t.ndim = 1;
    CHECK_EQ_INT(mq_classify_tensor(&t), MQ_KIND_NORM);
    /* nn.MultiheadAttention */
    t.name = "encoder.layers.0.self_attn.in_proj_weight", t.ndim = 2;
    CHECK_EQ_INT(mq_classify_tensor(&t), MQ_KIND_LINEAR);
    t.name = "attn.v_proj_weight";
    CHECK_EQ_INT(mq_classify_tensor(&t), MQ_KIND_LINEAR);
    t.name = "encoder.layers.0.self_attn.in_proj_bias", t.ndim = 1;
    CHECK_EQ_INT(mq_classify_tensor(&t), MQ_KIND_BIAS);
    t.name = "encoder.layers.0.self_attn.out_proj.weight", t.ndim = 2;
    CHECK_EQ_INT(mq_classify_tensor(&t), MQ_KIND_LINEAR);
}

TEST(defaults_int8) {
    mq_ctx *ctx = mq_ctx_create();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    CHECK_EQ_INT(o.spec.type, MQ_Q_INT8);
    CHECK(o.kinds & MQ_KIND_BIT(MQ_KIND_LINEAR));
    CHECK(!(o.kinds & MQ_KIND_BIT(MQ_KIND_EMBEDDING)));
    mq_report *r = plan(ctx, &o);
    CHECK(r != NULL);
    if (!r) goto out;
    CHECK_EQ_INT(mq_report_tensor_count(r), NMODEL);
    const tensor_view *t = find(r, "model.embed_tokens.weight");
    CHECK_EQ_INT(t->kind, MQ_KIND_EMBEDDING);
    CHECK_EQ_INT(t->action, MQ_ACTION_KEEP);
    CHECK_EQ_STR(t->reason, "embedding (not in --types)");
    t = find(r, "model.layers.0.input_layernorm.weight");
    CHECK_EQ_STR(t->reason, "norm (1-D)");
    t = find(r, "model.step");
    CHECK_EQ_STR(t->reason, "I64 tensor (not floating point)");
    t = find(r, "model.conv.weight");
    CHECK_EQ_INT(t->action, MQ_ACTION_QUANTIZE);
    CHECK_EQ_INT(t->bytes_out, 8 * 36 + 8 * 4); /* int8 data + one scale per channel */
    CHECK_EQ_INT(find(r, "model.lstm.weight_ih_l0")->action, MQ_ACTION_QUANTIZE);
    CHECK_EQ_INT(find(r, "lm_head.weight")->action, MQ_ACTION_QUANTIZE); /* 8-bit: no skip */
    CHECK_EQ_INT(mq_report_action_count(r, MQ_ACTION_QUANTIZE), 6);
    CHECK_EQ_INT(mq_report_action_count(r, MQ_ACTION_KEEP), 4);
    const char *cfg = mq_report_config_json(r);
    CHECK(cfg && strstr(cfg, "\"quant_method\": \"monoquant\""));
    CHECK_EQ_INT(mq_report_warning_count(r), 0);
out:
    mq_report_free(r);
    mq_ctx_free(ctx);
}

TEST(int4_default_skip) {
    mq_ctx *ctx = mq_ctx_create();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    mq_qspec_recommended(&o.spec, MQ_Q_INT4);
    o.kinds |= MQ_KIND_BIT(MQ_KIND_EMBEDDING);
    mq_report *r = plan(ctx, &o);
    CHECK(r != NULL);
    if (!r) goto out;
    CHECK_EQ_STR(find(r, "model.embed_tokens.weight")->reason, "embedding (4-bit default skip)");
    CHECK_EQ_STR(find(r, "lm_head.weight")->reason, "output head (4-bit default skip)");
    CHECK_EQ_STR(find(r, "model.conv.weight")->reason, "288 elements, under 512 (4-bit default skip)");
    const tensor_view *t = find(r, "model.layers.0.mlp.down_proj.weight");
    CHECK_EQ_INT(t->action, MQ_ACTION_QUANTIZE);
    /* [32, 64] group 128: one group per row; packed [32, 8] I32 + [32, 1] scales + shape */
    CHECK_EQ_INT(t->bytes_out, 32 * 8 * 4 + 32 * 4 + 2 * 8);
    mq_report_free(r);
    /* turned off: everything quantized, with warnings for the risky ones */
    o.default_skip = 0;
    r = plan(ctx, &o);
    CHECK(r != NULL);
    if (!r) goto out;
    CHECK_EQ_INT(find(r, "lm_head.weight")->action, MQ_ACTION_QUANTIZE);
    CHECK_EQ_INT(find(r, "model.embed_tokens.weight")->action, MQ_ACTION_QUANTIZE);
    CHECK_EQ_INT(mq_report_warning_count(r), 2);
    CHECK(mq_report_warning_count(r) == 2 && strstr(mq_report_warning(r, 0), "embed_tokens"));
out:
    mq_report_free(r);
    mq_ctx_free(ctx);
}

TEST(patterns_and_rules) {
    mq_ctx *ctx = mq_ctx_create();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    const char *inc[] = {"model.*"};
    const char *exc[] = {"*.q_proj.*"};
    mq_layer_rule rules[] = {{"*.mlp.*", MQ_Q_INT4}, {"*.down_proj.*", MQ_Q_BF16},
                             {"model.conv.*", MQ_Q_NONE}};
    o.include = inc, o.ninclude = 1;
    o.exclude = exc, o.nexclude = 1;
    o.rules = rules, o.nrules = 3;
    mq_report *r = plan(ctx, &o);
    CHECK(r != NULL);
    if (!r) goto out;
    CHECK_EQ_STR(find(r, "lm_head.weight")->reason, "not matched by --include");
    CHECK_EQ_STR(find(r, "model.layers.0.self_attn.q_proj.weight")->reason,
                 "excluded by --exclude '*.q_proj.*'");
    const tensor_view *t = find(r, "model.layers.0.mlp.up_proj.weight");
    CHECK_EQ_INT(t->spec.type, MQ_Q_INT4);
    CHECK_EQ_INT(t->spec.granularity, MQ_PER_GROUP);
    t = find(r, "model.layers.0.mlp.down_proj.weight"); /* the last matching rule wins */
    CHECK_EQ_INT(t->action, MQ_ACTION_CAST);
    CHECK_EQ_INT(t->bytes_out, 32 * 64 * 2);
    CHECK_EQ_STR(find(r, "model.conv.weight")->reason, "kept by --layer 'model.conv.*=none'");
    char name[64];
    CHECK_EQ_STR(spec_name(&find(r, "model.layers.0.mlp.up_proj.weight")->spec, name,
                               sizeof name), "int4-g128");
out:
    mq_report_free(r);
    mq_ctx_free(ctx);
}

TEST(nothing_selected_warns) {
    mq_ctx *ctx = mq_ctx_create();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    o.min_params = 1u << 30;
    mq_report *r = plan(ctx, &o);
    CHECK(r != NULL);
    if (r) {
        CHECK_EQ_INT(mq_report_action_count(r, MQ_ACTION_QUANTIZE), 0);
        CHECK(mq_report_warning_count(r) == 1 &&
              strstr(mq_report_warning(r, 0), "nothing is quantized"));
    }
    mq_report_free(r);
    mq_ctx_free(ctx);
}

TEST(scheme_names) {
    mq_qspec s;
    char b[64];
    mq_qspec_recommended(&s, MQ_Q_INT8);
    CHECK_EQ_STR(spec_name(&s, b, sizeof b), "int8");
    mq_qspec_recommended(&s, MQ_Q_UINT8);
    CHECK_EQ_STR(spec_name(&s, b, sizeof b), "uint8-asym");
    mq_qspec_recommended(&s, MQ_Q_INT4);
    s.group_size = 64;
    CHECK_EQ_STR(spec_name(&s, b, sizeof b), "int4-g64");
    mq_qspec_recommended(&s, MQ_Q_BF16);
    CHECK_EQ_STR(spec_name(&s, b, sizeof b), "bf16");
    CHECK_EQ_STR(mq_qtype_name(MQ_Q_UINT4), "uint4");
}

int main(void) {
    snprintf(path, sizeof path, "%s/test_plan_model.safetensors", test_tmpdir());
    mq_ctx *ctx = mq_ctx_create();
    int ok = write_model(ctx, path);
    mq_ctx_free(ctx);
    if (!ok) {
        printf("not ok setup: cannot write %s\n", path);
        return 1;
    }
    RUN(classify);
    RUN(defaults_int8);
    RUN(int4_default_skip);
    RUN(patterns_and_rules);
    RUN(nothing_selected_warns);
    RUN(scheme_names);
    remove(path);
    return test_summary();
}
