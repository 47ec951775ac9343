/* The kernels on weights produced by the quantizer (mq_quantize_rows): the stored layouts
 * agree, so a layer equals the f32 layer with the dequantized weights up to float rounding. */
#include "harness.h"
#include "monoquant.h"

#include <math.h>
#include <stdint.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    return (float)((int)((test_xorshift64(&rng) >> 11) % 20001) - 10000) / 10000.0f;
}

static void run_spec(mq_qtype type, mq_scheme scheme, mq_granularity gran, int gs,
                     mq_scale_search search, int ndim, const int64_t *shape) {
    mq_ctx *ctx = mq_ctx_create();
    mq_qspec spec;
    mq_qspec_default(&spec);
    spec.type = type;
    spec.scheme = scheme;
    spec.granularity = gran;
    if (gs) spec.group_size = gs;
    spec.search = search;
    mq_qlayout lay;
    CHECK_EQ_INT(mq_qlayout_init(ctx, &spec, ndim, shape, &lay), MQ_OK);
    int64_t N = lay.rows, K = lay.cols;
    float *w = malloc((size_t)(N * K) * 4), *dq = malloc((size_t)(N * K) * 4);
    float *bias = malloc((size_t)N * 4);
    for (int64_t i = 0; i < N * K; i++) w[i] = frand() * (float)(1 + i % 5);
    for (int64_t i = 0; i < N; i++) bias[i] = frand();
    void *data = calloc(1, lay.data_bytes);
    float *sc = calloc((size_t)lay.nscales, 4);
    void *zp = lay.has_zero_point ? calloc((size_t)lay.nscales, 1) : NULL;
    CHECK_EQ_INT(mq_quantize_rows(ctx, &spec, &lay, NULL, MQ_F32, w, 0, N, data, sc, zp), MQ_OK);
    CHECK_EQ_INT(mq_dequantize_rows(ctx, &spec, &lay, data, sc, zp, 0, N, dq), MQ_OK);
    for (int act = 0; act < 2; act++) {
        mq_linear_desc d;
        mq_linear_desc_from_qspec(&d, &spec, N, K, data, sc, zp);
        d.bias = bias;
        d.act = (mq_act_mode)act;
        mq_linear *lin = NULL;
        if (mq_linear_create(ctx, &d, &lin) != MQ_OK) {
            TH_FAIL("type %d: create: %s", (int)type, mq_ctx_message(ctx));
            break;
        }
        mq_error_stats e;
        CHECK_EQ_INT(mq_linear_check(ctx, lin, dq, bias, NULL, 5, 3, &e), MQ_OK);
        /* weight-only: float rounding only; dynamic: plus the int8 activations */
        double want = act == MQ_ACT_F32 ? 100 : 30;
        CHECK_MSG(e.sqnr_db > want, "type %d scheme %d gran %d act %d: %.1f dB against the "
                  "dequantized weights", (int)type, (int)scheme, (int)gran, act, e.sqnr_db);
        mq_linear_free(lin);
    }
    free(w);
    free(dq);
    free(bias);
    free(data);
    free(sc);
    free(zp);
    mq_ctx_free(ctx);
}

TEST(quantizer_layouts) {
    const int64_t lin[2] = {37, 300}, conv[4] = {20, 3, 3, 3};
    run_spec(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX, 2, lin);
    run_spec(MQ_Q_INT8, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX, 2, lin);
    run_spec(MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX, 2, lin);
    run_spec(MQ_Q_UINT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX, 2, lin);
    run_spec(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_TENSOR, 0, MQ_SEARCH_MINMAX, 2, lin);
    run_spec(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 128, MQ_SEARCH_MINMAX, 2, lin);
    run_spec(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 128, MQ_SEARCH_MSE, 2, lin);
    run_spec(MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 32, MQ_SEARCH_MINMAX, 2, lin);
    run_spec(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 64, MQ_SEARCH_MSE, 2, lin);
    run_spec(MQ_Q_UINT4, MQ_SYMMETRIC, MQ_PER_GROUP, 64, MQ_SEARCH_MINMAX, 2, lin);
    run_spec(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX, 2, lin);
    run_spec(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_MINMAX, 4, conv);
    run_spec(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 16, MQ_SEARCH_MINMAX, 4, conv);
}

int main(void) {
    RUN(quantizer_layouts);
    return test_summary();
}
