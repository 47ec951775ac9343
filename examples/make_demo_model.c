/* make_demo_model OUT.safetensors
 *
 * Writes a small transformer-shaped BF16 checkpoint (about 44 MB, 22 M parameters) with
 * deterministic pseudo-random weights whose statistics look like a trained model's:
 *  - Linear weights ~ N(0, 1/fan_in), with a few input channels 10-20x larger (the
 *    "outlier features" that make activation-aware quantization matter);
 *  - embeddings ~ N(0, 0.02^2)-ish scale, norm weights near 1, biases small.
 *
 * It is also the example of the streaming writer API: describe every tensor up front
 * (mq_writer_open writes the header), then stream the bytes of each tensor in order with
 * mq_writer_write, in chunks of any size, and mq_writer_commit. Nothing reaches OUT until
 * the commit succeeds; on failure, mq_writer_free removes the temporary file. */
#include "monoquant.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Model shape: Llama-like names, LayerNorm with bias, q/k/v biases, SwiGLU MLP. Every Linear
 * in_features (512, 1536) is a multiple of 128, the usual INT4 group size. */
enum { D_MODEL = 512, N_LAYERS = 4, D_FF = 1536, VOCAB = 8192, OUTLIERS = 4 };

typedef enum init_kind { INIT_LINEAR, INIT_EMBED, INIT_NORM, INIT_BIAS } init_kind;

typedef struct demo_tensor {
    char name[96];
    int rows, cols;          /* cols == 0: a vector of `rows` */
    init_kind init;
} demo_tensor;

/* ---- deterministic random numbers (splitmix64 + Box-Muller) ---------------------------- */

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s) { /* in (0, 1) */
    return ((double)(rng_next(s) >> 11) + 0.5) * 0x1p-53;
}

static double rng_gauss(uint64_t *s) {
    double u = rng_uniform(s), v = rng_uniform(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* ---- the tensor list ------------------------------------------------------------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 6, 7)))
#endif
static int add(demo_tensor *t, int n, init_kind init, int rows, int cols, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t[n].name, sizeof t[n].name, fmt, ap);
    va_end(ap);
    t[n].rows = rows;
    t[n].cols = cols;
    t[n].init = init;
    return n + 1;
}

static int build_list(demo_tensor *t) {
    int n = 0;
    n = add(t, n, INIT_EMBED, VOCAB, D_MODEL, "model.embed_tokens.weight");
    for (int l = 0; l < N_LAYERS; l++) {
        n = add(t, n, INIT_NORM, D_MODEL, 0, "model.layers.%d.input_layernorm.weight", l);
        n = add(t, n, INIT_BIAS, D_MODEL, 0, "model.layers.%d.input_layernorm.bias", l);
        n = add(t, n, INIT_LINEAR, D_MODEL, D_MODEL, "model.layers.%d.self_attn.q_proj.weight", l);
        n = add(t, n, INIT_BIAS, D_MODEL, 0, "model.layers.%d.self_attn.q_proj.bias", l);
        n = add(t, n, INIT_LINEAR, D_MODEL, D_MODEL, "model.layers.%d.self_attn.k_proj.weight", l);
        n = add(t, n, INIT_BIAS, D_MODEL, 0, "model.layers.%d.self_attn.k_proj.bias", l);
        n = add(t, n, INIT_LINEAR, D_MODEL, D_MODEL, "model.layers.%d.self_attn.v_proj.weight", l);
        n = add(t, n, INIT_BIAS, D_MODEL, 0, "model.layers.%d.self_attn.v_proj.bias", l);
        n = add(t, n, INIT_LINEAR, D_MODEL, D_MODEL, "model.layers.%d.self_attn.o_proj.weight", l);
        n = add(t, n, INIT_NORM, D_MODEL, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        n = add(t, n, INIT_BIAS, D_MODEL, 0, "model.layers.%d.post_attention_layernorm.bias", l);
        n = add(t, n, INIT_LINEAR, D_FF, D_MODEL, "model.layers.%d.mlp.gate_proj.weight", l);
        n = add(t, n, INIT_LINEAR, D_FF, D_MODEL, "model.layers.%d.mlp.up_proj.weight", l);
        n = add(t, n, INIT_LINEAR, D_MODEL, D_FF, "model.layers.%d.mlp.down_proj.weight", l);
    }
    n = add(t, n, INIT_NORM, D_MODEL, 0, "model.norm.weight");
    n = add(t, n, INIT_BIAS, D_MODEL, 0, "model.norm.bias");
    n = add(t, n, INIT_LINEAR, VOCAB, D_MODEL, "lm_head.weight");
    return n;
}

/* One row of tensor t into out (cols values, or the whole vector). */
static void fill_row(const demo_tensor *t, const float *col_gain, uint64_t *rng, float *out) {
    int n = t->cols ? t->cols : t->rows;
    double std = t->init == INIT_LINEAR ? 1.0 / sqrt((double)t->cols)
               : t->init == INIT_EMBED ? 0.02 : 0.02;
    for (int c = 0; c < n; c++) {
        double g = rng_gauss(rng);
        switch (t->init) {
        case INIT_LINEAR: out[c] = (float)(g * std * col_gain[c]); break;
        case INIT_EMBED: out[c] = (float)(g * std); break;
        case INIT_NORM: out[c] = (float)(1.0 + 0.05 * g); break;
        case INIT_BIAS: out[c] = (float)(g * std); break;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUT.safetensors\n", argv[0]);
        return 2;
    }
    static demo_tensor list[8 + 14 * N_LAYERS];
    int n = build_list(list);

    /* 1. Describe every tensor: the writer lays out the header from these. */
    mq_tensor_desc desc[sizeof list / sizeof *list];
    for (int i = 0; i < n; i++) {
        memset(&desc[i], 0, sizeof desc[i]);
        desc[i].name = list[i].name;
        desc[i].dtype = MQ_BF16;
        desc[i].ndim = list[i].cols ? 2 : 1;
        desc[i].shape[0] = list[i].rows;
        desc[i].shape[1] = list[i].cols;
    }
    char config[256];
    snprintf(config, sizeof config,
             "{\"d_model\": %d, \"layers\": %d, \"d_ff\": %d, \"vocab\": %d, \"seed\": 1}",
             D_MODEL, N_LAYERS, D_FF, VOCAB);
    const mq_kv meta[] = {{"model", "monoquant-demo"}, {"config", config}};

    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return 1;
    mq_writer *w = NULL;
    mq_status st = mq_writer_open(ctx, argv[1], MQ_FORMAT_SAFETENSORS, desc, (size_t)n, meta,
                                  sizeof meta / sizeof *meta, &w);

    /* 2. Stream the data, tensor by tensor and row by row, reusing two row buffers. */
    float row[D_FF > VOCAB ? D_FF : VOCAB], gain[D_FF > D_MODEL ? D_FF : D_MODEL];
    uint16_t row_bf16[sizeof row / sizeof *row];
    uint64_t rng = 1; /* the seed: output is identical on every run and machine */
    for (int i = 0; st == MQ_OK && i < n; i++) {
        const demo_tensor *t = &list[i];
        if (t->init == INIT_LINEAR) { /* a few input channels with 10-20x the magnitude */
            for (int c = 0; c < t->cols; c++) gain[c] = 1.0f;
            for (int k = 0; k < OUTLIERS; k++)
                gain[rng_next(&rng) % (uint64_t)t->cols] = (float)(10.0 + 10.0 * rng_uniform(&rng));
        }
        int rows = t->cols ? t->rows : 1, cols = t->cols ? t->cols : t->rows;
        for (int r = 0; st == MQ_OK && r < rows; r++) {
            fill_row(t, gain, &rng, row);
            st = mq_convert(ctx, MQ_BF16, row_bf16, MQ_F32, row, (size_t)cols);
            if (st == MQ_OK) st = mq_writer_write(w, row_bf16, (size_t)cols * sizeof *row_bf16);
        }
    }

    /* 3. Commit: checks that every byte arrived, fsyncs, renames into place. */
    if (st == MQ_OK) st = mq_writer_commit(w);
    if (st != MQ_OK) fprintf(stderr, "make_demo_model: %s\n", mq_ctx_message(ctx));
    mq_writer_free(w); /* after a failure this also removes the temporary file */
    mq_ctx_free(ctx);
    return st == MQ_OK ? 0 : 1;
}
