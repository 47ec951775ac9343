/* Quantized Linear kernels: the scalar reference against an independent double-precision
 * evaluation of the formulas in monoquant.h; every instruction-set path and thread count
 * bit-identical to the reference; description errors. */
#include "harness.h"
#include "monoquant.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) {
    return (uint32_t)(test_xorshift64(&rng) >> 11);
}
static float frand(void) { return (float)((int)(rnd() % 20001) - 10000) / 10000.0f; }

/* A random layer in its stored format, with its dequantized weights in double. */
typedef struct layer {
    mq_linear_desc d;
    int64_t N, K, G, gs;
    void *w, *zp;
    float *scale, *bias;
    double *deq; /* [N][K] */
} layer;

static void layer_free(layer *l) {
    free(l->w);
    free(l->zp);
    free(l->scale);
    free(l->bias);
    free(l->deq);
}

static uint16_t f2h(float f) {
    uint16_t h;
    mq_ctx *c = mq_ctx_create();
    mq_convert(c, MQ_F16, &h, MQ_F32, &f, 1);
    mq_ctx_free(c);
    return h;
}

/* Zero points stored and used although the scheme says symmetric (unsigned symmetric layouts
 * store their constant mid-range zero point). */
static int force_zp;

static void make_layer(layer *l, mq_qtype t, mq_scheme sch, mq_granularity gran, int gs, int64_t N,
                       int64_t K, mq_act_mode act) {
    memset(l, 0, sizeof *l);
    l->N = N;
    l->K = K;
    l->deq = malloc((size_t)(N * K) * sizeof(double));
    l->bias = malloc((size_t)N * 4);
    for (int64_t n = 0; n < N; n++) l->bias[n] = frand();
    mq_linear_desc_init(&l->d, t, N, K, NULL);
    l->d.scheme = sch;
    l->d.granularity = gran;
    l->d.group_size = gs;
    l->d.act = act;
    l->d.bias = rnd() % 4 ? l->bias : NULL;
    if (!l->d.bias) memset(l->bias, 0, (size_t)N * 4);
    if (t == MQ_Q_NONE || t == MQ_Q_FP16 || t == MQ_Q_BF16) {
        size_t es = t == MQ_Q_NONE ? 4 : 2;
        l->w = malloc((size_t)(N * K) * es + 1);
        for (int64_t i = 0; i < N * K; i++) {
            float f = frand();
            if (t == MQ_Q_NONE) {
                memcpy((char *)l->w + 4 * i, &f, 4);
                l->deq[i] = f;
            } else {
                uint32_t u;
                memcpy(&u, &f, 4);
                uint16_t h = t == MQ_Q_FP16 ? f2h(f) : (uint16_t)(u >> 16);
                memcpy((char *)l->w + 2 * i, &h, 2);
                l->deq[i] = t == MQ_Q_FP16 ? mq_f16_to_f32(h) : mq_bf16_to_f32(h);
            }
        }
        l->d.weight = l->w;
        return;
    }
    bool four = t == MQ_Q_INT4 || t == MQ_Q_UINT4, uns = t == MQ_Q_UINT8 || t == MQ_Q_UINT4;
    int64_t nsc;
    if (gran == MQ_PER_TENSOR) l->G = 1, l->gs = K, nsc = 1;
    else if (gran == MQ_PER_CHANNEL || gs >= K) l->G = 1, l->gs = K, nsc = N;
    else l->gs = gs, l->G = (K + gs - 1) / gs, nsc = N * l->G;
    l->scale = malloc((size_t)nsc * 4);
    l->zp = malloc((size_t)nsc);
    for (int64_t i = 0; i < nsc; i++) {
        l->scale[i] = (float)(rnd() % 1000 + 1) / 4096.0f;
        int zp = four ? (uns ? (int)(rnd() % 16) : (int)(rnd() % 16) - 8)
                      : (uns ? (int)(rnd() % 256) : (int)(rnd() % 256) - 128);
        ((uint8_t *)l->zp)[i] = (uint8_t)zp;
    }
    l->d.scale = l->scale;
    bool use_zp = sch == MQ_ASYMMETRIC || force_zp;
    l->d.zero_point = use_zp ? l->zp : NULL;
    int64_t words = (K + 7) / 8;
    l->w = calloc((size_t)(four ? N * words * 4 : N * K) + 1, 1);
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            int64_t si = gran == MQ_PER_TENSOR ? 0 : (l->G == 1 ? n : n * l->G + k / l->gs);
            int zp = use_zp ? (uns ? ((uint8_t *)l->zp)[si] : ((int8_t *)l->zp)[si]) : 0;
            int v;
            if (four) {
                v = uns ? (int)(rnd() % 16) : (int)(rnd() % 16) - 8;
                int nib = uns ? v : v + 8;
                ((uint8_t *)l->w)[(n * words + k / 8) * 4 + (k % 8) / 2] |=
                    (uint8_t)(nib << (4 * (k % 2)));
            } else {
                v = uns ? (int)(rnd() % 256) : (int)(rnd() % 256) - 128;
                ((uint8_t *)l->w)[n * K + k] = (uint8_t)v;
            }
            l->deq[n * K + k] = (double)(v - zp) * l->scale[si];
        }
    l->d.weight = l->w;
}

/* Independent evaluation (double) of the documented semantics. */
static void expected(const layer *l, const float *x, int64_t M, double *y, double *mag) {
    int64_t K = l->K;
    double *xe = malloc((size_t)K * sizeof(double));
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * K;
        double s = 1;
        if (l->d.act == MQ_ACT_DYNAMIC) {
            float amax = 0;
            for (int64_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(xr[k]));
            float sf = amax > 0 ? amax / 127.0f : 1.0f;
            for (int64_t k = 0; k < K; k++) {
                float v = nearbyintf(xr[k] / sf);
                xe[k] = v > 127 ? 127 : v < -127 ? -127 : v;
            }
            s = sf;
        } else if (l->d.act == MQ_ACT_STATIC) {
            for (int64_t k = 0; k < K; k++) {
                float q = nearbyintf(xr[k] / l->d.input_scale) + (float)l->d.input_zero_point;
                q = q > 255 ? 255 : q < 0 ? 0 : q;
                xe[k] = q - l->d.input_zero_point;
            }
            s = l->d.input_scale;
        } else {
            for (int64_t k = 0; k < K; k++) xe[k] = xr[k];
        }
        for (int64_t n = 0; n < l->N; n++) {
            double acc = 0, ab = 0;
            for (int64_t k = 0; k < K; k++) {
                acc += xe[k] * l->deq[n * K + k];
                ab += fabs(xe[k] * l->deq[n * K + k]);
            }
            y[m * l->N + n] = acc * s + l->bias[n];
            mag[m * l->N + n] = ab * s + fabs(l->bias[n]);
        }
    }
    free(xe);
}

/* Scales the inputs of check_layer (every fifth twice), for magnitudes near the bottom of
 * the float range. */
static float x_factor = 1.0f;

/* Runs the layer at every level and thread count: all bit-identical, and within float
 * rounding of the double evaluation. Returns 1 when all holds. */
static int check_layer(layer *l, int64_t M, const char *what) {
    mq_ctx *ctx = mq_ctx_create();
    mq_linear *lin = NULL;
    int ok = 1;
    if (mq_linear_create(ctx, &l->d, &lin) != MQ_OK) {
        TH_FAIL("%s: create: %s", what, mq_ctx_message(ctx));
        mq_ctx_free(ctx);
        return 0;
    }
    float *x = malloc((size_t)(M * l->K) * 4 + 4);
    for (int64_t i = 0; i < M * l->K; i++)
        x[i] = frand() * (i % 7 == 0 ? 3.0f : 1.0f) * x_factor * (i % 5 == 0 ? x_factor : 1.0f);
    size_t ny = (size_t)(M * l->N);
    float *ref = malloc(ny * 4 + 4), *got = malloc(ny * 4 + 4);
    double *e = malloc(ny * 8 + 8), *mag = malloc(ny * 8 + 8);
    mq_ctx_set_isa(ctx, MQ_ISA_SCALAR);
    mq_ctx_set_threads(ctx, 1);
    if (mq_linear_forward(ctx, lin, x, M, ref) != MQ_OK) {
        TH_FAIL("%s: scalar forward: %s", what, mq_ctx_message(ctx));
        ok = 0;
    }
    expected(l, x, M, e, mag);
    for (size_t i = 0; i < ny && ok; i++)
        if (!(fabs(ref[i] - e[i]) <= 2e-6 * mag[i] + 1e-30)) {
            TH_FAIL("%s: reference y[%zu] = %.9g, expected %.9g", what, i, ref[i], e[i]);
            ok = 0;
        }
    for (int isa = 0; isa >= 0 && ok; isa = test_next_isa(isa))
        for (int th = 1; th <= 3; th += 2) {
            mq_ctx_set_isa(ctx, (mq_isa)isa);
            mq_ctx_set_threads(ctx, th);
            memset(got, 0xff, ny * 4);
            if (mq_linear_forward(ctx, lin, x, M, got) != MQ_OK || memcmp(got, ref, ny * 4)) {
                size_t i = 0;
                while (i < ny && !memcmp(&got[i], &ref[i], 4)) i++;
                TH_FAIL("%s: %s, %d threads: y[%zu] = %.9g, reference %.9g", what,
                        mq_isa_name((mq_isa)isa), th, i, i < ny ? got[i] : 0, i < ny ? ref[i] : 0);
                ok = 0;
                break;
            }
        }
    free(x);
    free(ref);
    free(got);
    free(e);
    free(mag);
    mq_linear_free(lin);
    mq_ctx_free(ctx);
    return ok;
}

static const int64_t Ns[] = {1, 5, 16, 17, 40, 70};
static const int64_t Ks[] = {1, 3, 8, 13, 64, 100, 257};
static const int64_t Ms[] = {1, 2, 4, 5, 9};

static void sweep(mq_qtype t, mq_scheme sch, mq_granularity gran, int gs, mq_act_mode act,
                  int cases) {
    char what[160];
    for (int c = 0; c < cases; c++) {
        int64_t N = Ns[rnd() % 6], K = Ks[rnd() % 7], M = Ms[rnd() % 5];
        layer l;
        make_layer(&l, t, sch, gran, gs, N, K, act);
        if (act == MQ_ACT_STATIC) {
            l.d.input_scale = (float)(rnd() % 100 + 1) / 1000.0f;
            l.d.input_zero_point = (int)(rnd() % 256);
        }
        snprintf(what, sizeof what, "type %d scheme %d gran %d gs %d act %d M %lld N %lld K %lld",
                 (int)t, (int)sch, (int)gran, gs, (int)act, (long long)M, (long long)N,
                 (long long)K);
        int ok = check_layer(&l, M, what);
        layer_free(&l);
        if (!ok) return;
    }
}

TEST(float_weights) {
    sweep(MQ_Q_NONE, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_ACT_F32, 12);
    sweep(MQ_Q_FP16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_ACT_F32, 12);
    sweep(MQ_Q_BF16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_ACT_F32, 12);
}

TEST(int8_all_modes) {
    for (int act = 0; act < 3; act++) {
        sweep(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, (mq_act_mode)act, 10);
        sweep(MQ_Q_INT8, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0, (mq_act_mode)act, 10);
        sweep(MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0, (mq_act_mode)act, 10);
        sweep(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_TENSOR, 0, (mq_act_mode)act, 5);
        sweep(MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_TENSOR, 0, (mq_act_mode)act, 5);
    }
}

/* INT8 per group, 4-bit per tensor, unsigned symmetric with stored zero points. */
TEST(other_granularities) {
    for (int act = 0; act < 3; act++) {
        sweep(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_GROUP, 8, (mq_act_mode)act, 5);
        sweep(MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_GROUP, 32, (mq_act_mode)act, 5);
        sweep(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_TENSOR, 0, (mq_act_mode)act, 4);
        sweep(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_TENSOR, 0, (mq_act_mode)act, 4);
        force_zp = 1;
        sweep(MQ_Q_UINT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, (mq_act_mode)act, 5);
        sweep(MQ_Q_UINT4, MQ_SYMMETRIC, MQ_PER_GROUP, 16, (mq_act_mode)act, 5);
        force_zp = 0;
    }
    /* the description built from a quantization spec is the same layer */
    layer l;
    make_layer(&l, MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 16, 9, 50, MQ_ACT_F32);
    mq_qspec spec;
    memset(&spec, 0, sizeof spec);
    spec.type = MQ_Q_UINT4;
    spec.scheme = MQ_ASYMMETRIC;
    spec.granularity = MQ_PER_GROUP;
    spec.group_size = 16;
    mq_linear_desc d;
    mq_linear_desc_from_qspec(&d, &spec, 9, 50, l.w, l.scale, l.zp);
    CHECK(d.type == l.d.type && d.scheme == l.d.scheme && d.granularity == l.d.granularity &&
          d.group_size == 16 && d.weight == l.w && d.scale == l.scale && d.zero_point == l.zp &&
          d.act == MQ_ACT_F32 && d.bias == NULL);
    l.d = d;
    memset(l.bias, 0, 9 * 4);
    check_layer(&l, 3, "from qspec");
    layer_free(&l);
}

TEST(int4_all_modes) {
    static const int gss[] = {8, 16, 32, 64, 128};
    for (int act = 0; act < 3; act++)
        for (int g = 0; g < 5; g++) {
            sweep(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, gss[g], (mq_act_mode)act, 4);
            sweep(MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_GROUP, gss[g], (mq_act_mode)act, 4);
            sweep(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, gss[g], (mq_act_mode)act, 4);
        }
    for (int act = 0; act < 3; act++) {
        sweep(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, (mq_act_mode)act, 6);
        sweep(MQ_Q_UINT4, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, (mq_act_mode)act, 6);
    }
}

/* Larger layers cross every tile size and chunk boundary, with threads. */
TEST(larger_shapes) {
    layer l;
    make_layer(&l, MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 128, 1100, 520, MQ_ACT_DYNAMIC);
    check_layer(&l, 7, "int4 dynamic 1100x520 M 7");
    layer_free(&l);
    make_layer(&l, MQ_Q_INT8, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0, 1030, 300, MQ_ACT_F32);
    check_layer(&l, 6, "int8 weight-only 1030x300 M 6");
    layer_free(&l);
    make_layer(&l, MQ_Q_BF16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, 1030, 77, MQ_ACT_F32);
    check_layer(&l, 1, "bf16 1030x77 M 1");
    layer_free(&l);
    /* several passes over k blocks with partial sums kept in y, partial last block */
    make_layer(&l, MQ_Q_NONE, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, 41, 700, MQ_ACT_F32);
    check_layer(&l, 9, "f32 41x700 M 9");
    layer_free(&l);
    make_layer(&l, MQ_Q_FP16, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, 70, 513, MQ_ACT_F32);
    check_layer(&l, 6, "f16 70x513 M 6");
    layer_free(&l);
}

/* One row over many channel blocks: the chunks of four or eight blocks run the single-row
 * kernels that hold that many blocks at once (weight-only) next to the narrower ones on the
 * last, partial chunk and block; every type, granularity and mode, K not a multiple of 8 or
 * 32, partial last groups. Narrow layers (13 and 33 blocks) are cut into chunks of a size
 * that depends on the thread count. */
TEST(gemv_wide_layers) {
    static const struct {
        mq_qtype t;
        mq_scheme sch;
        mq_granularity gran;
        int gs;
        int zp;
    } cfg[] = {
        {MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 128, 0},  {MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 32, 0},
        {MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 8, 0},  {MQ_Q_UINT4, MQ_SYMMETRIC, MQ_PER_GROUP, 64, 1},
        {MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, 0},  {MQ_Q_UINT4, MQ_SYMMETRIC, MQ_PER_TENSOR, 0, 0},
        {MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, 0},  {MQ_Q_INT8, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0, 0},
        {MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_GROUP, 32, 0}, {MQ_Q_UINT8, MQ_SYMMETRIC, MQ_PER_TENSOR, 0, 1},
    };
    static const int64_t wide_n[] = {1030, 1100, 1024, 200, 520}, wide_k[] = {300, 77, 520, 136};
    char what[160];
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++)
        for (int act = 0; act < 3; act++) {
            int64_t N = wide_n[(c + (size_t)act) % 5], K = wide_k[(c * 3 + (size_t)act) % 4];
            int64_t M = (c + (size_t)act) % 4 == 3 ? 2 : 1;
            layer l;
            force_zp = cfg[c].zp;
            make_layer(&l, cfg[c].t, cfg[c].sch, cfg[c].gran, cfg[c].gs, N, K, (mq_act_mode)act);
            force_zp = 0;
            if (act == MQ_ACT_STATIC) {
                l.d.input_scale = (float)(rnd() % 100 + 1) / 1000.0f;
                l.d.input_zero_point = (int)(rnd() % 256);
            }
            snprintf(what, sizeof what, "wide: type %d scheme %d gran %d gs %d act %d M %lld "
                     "N %lld K %lld", (int)cfg[c].t, (int)cfg[c].sch, (int)cfg[c].gran, cfg[c].gs,
                     act, (long long)M, (long long)N, (long long)K);
            int ok = check_layer(&l, M, what);
            layer_free(&l);
            if (!ok) return;
        }
}

/* Inputs near the bottom of the float range, where rescaling an activation by a power of two
 * would lose bits (kernels that move a factor between weights and activations must not). */
TEST(tiny_activations) {
    static const mq_qtype types[] = {MQ_Q_INT8, MQ_Q_INT8, MQ_Q_INT4};
    static const mq_granularity grans[] = {MQ_PER_CHANNEL, MQ_PER_GROUP, MQ_PER_GROUP};
    for (int t = 0; t < 3; t++)
        for (int f = 0; f < 2; f++) {
            layer l;
            make_layer(&l, types[t], MQ_SYMMETRIC, grans[t], 32, 1030, 136, MQ_ACT_F32);
            l.d.bias = NULL; /* a bias would round the tiny sums away */
            memset(l.bias, 0, (size_t)l.N * 4);
            x_factor = f ? 1e-33f : 1e-38f;
            char what[96];
            snprintf(what, sizeof what, "tiny activations: type %d gran %d, factor %g",
                     (int)types[t], (int)grans[t], (double)x_factor);
            check_layer(&l, 1, what);
            x_factor = 1.0f;
            layer_free(&l);
        }
}

/* Activations at the edges: all zero rows, huge values, static clamping at both ends. */
TEST(activation_edges) {
    layer l;
    make_layer(&l, MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, 20, 24, MQ_ACT_STATIC);
    l.d.input_scale = 0.01f;
    l.d.input_zero_point = 3;
    mq_ctx *ctx = mq_ctx_create();
    mq_linear *lin = NULL;
    CHECK_EQ_INT(mq_linear_create(ctx, &l.d, &lin), MQ_OK);
    float x[2 * 24], y[2 * 20], y2[2 * 20];
    for (int k = 0; k < 24; k++) x[k] = 0, x[24 + k] = k % 2 ? 1e30f : -1e30f;
    CHECK_EQ_INT(mq_linear_forward(ctx, lin, x, 2, y), MQ_OK);
    double e[40], mag[40];
    expected(&l, x, 2, e, mag);
    for (int i = 0; i < 40; i++) CHECK(fabs(y[i] - e[i]) <= 2e-6 * mag[i] + 1e-30);
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        mq_ctx_set_isa(ctx, (mq_isa)isa);
        CHECK_EQ_INT(mq_linear_forward(ctx, lin, x, 2, y2), MQ_OK);
        CHECK(!memcmp(y, y2, sizeof y));
    }
    mq_linear_free(lin);
    layer_free(&l);
    make_layer(&l, MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 8, 20, 24, MQ_ACT_DYNAMIC);
    CHECK_EQ_INT(mq_linear_create(ctx, &l.d, &lin), MQ_OK);
    mq_ctx_set_isa(ctx, MQ_ISA_SCALAR);
    CHECK_EQ_INT(mq_linear_forward(ctx, lin, x, 2, y), MQ_OK);
    for (int n = 0; n < 20; n++) CHECK(y[n] == l.bias[n]); /* a zero row gives the bias */
    mq_linear_free(lin);
    layer_free(&l);
    mq_ctx_free(ctx);
}

/* Activation quantization read back through an identity INT8 layer (y[n] = (u8 of x[n] -
 * zero point) * activation scale): every level gives the reference's bits on ties, clamps,
 * NaN, infinities, signed zeros, subnormals and K around the vector widths; the reference
 * rounds ties to even. */
TEST(activation_quantization) {
    static const int64_t ks[] = {1, 7, 8, 15, 16, 17, 77, 300};
    const int M = 4;
    for (int act = MQ_ACT_DYNAMIC; act <= MQ_ACT_STATIC; act++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            int64_t K = ks[ki], N = K;
            int8_t *w = (int8_t *)calloc((size_t)(N * K), 1);
            float *sc = (float *)malloc((size_t)N * 4), *x = (float *)malloc((size_t)(M * K) * 4);
            float *y = (float *)malloc((size_t)(M * N) * 4), *y2 = (float *)malloc((size_t)(M * N) * 4);
            for (int64_t n = 0; n < N; n++) w[n * K + n] = 1, sc[n] = 1.0f;
            float in_scale = 0.5f;
            for (int64_t k = 0; k < K; k++) {
                /* row 0: ties (the scale is 1 dynamic, 0.5 static) */
                if (act == MQ_ACT_DYNAMIC)
                    x[k] = k == 0 ? 127.0f : (float)((k * 37) % 253 - 126) + 0.5f;
                else
                    x[k] = ((float)((k * 37) % 1041 - 520) + 0.5f) * in_scale;
                /* row 1: random, with NaN, signed zeros and subnormals */
                float r = frand() * (act == MQ_ACT_DYNAMIC ? 3.0f : 300.0f);
                x[K + k] = k % 5 == 1 ? NAN : k % 5 == 2 ? -0.0f : k % 5 == 3 ? 1e-40f : r;
                /* row 2: infinities (static; dynamic scales them to NaN) and large values */
                x[2 * K + k] = act == MQ_ACT_STATIC && k % 3 == 0 ? (k % 2 ? -INFINITY : INFINITY)
                                                                  : r * 1e30f;
                x[3 * K + k] = 0.0f; /* row 3: zeros */
            }
            mq_linear_desc d;
            mq_linear_desc_init(&d, MQ_Q_INT8, N, K, w);
            d.act = (mq_act_mode)act;
            d.scale = sc;
            d.input_scale = in_scale;
            d.input_zero_point = 3;
            mq_ctx *ctx = mq_ctx_create();
            mq_linear *lin = NULL;
            CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_OK);
            mq_ctx_set_isa(ctx, MQ_ISA_SCALAR);
            CHECK_EQ_INT(mq_linear_forward(ctx, lin, x, M, y), MQ_OK);
            for (int64_t k = 0; k < K; k++) {
                double v = act == MQ_ACT_DYNAMIC ? nearbyint(x[k])
                                                 : fmin(fmax(nearbyint(x[k] / in_scale) + 3, 0), 255) - 3;
                CHECK(y[k] == (float)(v * (act == MQ_ACT_DYNAMIC ? 1.0 : in_scale)));
            }
            for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
                mq_ctx_set_isa(ctx, (mq_isa)isa);
                CHECK_EQ_INT(mq_linear_forward(ctx, lin, x, M, y2), MQ_OK);
                if (memcmp(y, y2, (size_t)(M * N) * 4)) {
                    CHECK_MSG(0, "activation quantization: act %d K %lld isa %d", act,
                              (long long)K, isa);
                    break;
                }
            }
            mq_linear_free(lin);
            mq_ctx_free(ctx);
            free(w), free(sc), free(x), free(y), free(y2);
        }
}

/* Weight, scale, zero-point and bias buffers at odd addresses (straight from a mapped file)
 * give the same layer. */
TEST(unaligned_buffers) {
    static const mq_qtype types[] = {MQ_Q_NONE, MQ_Q_FP16, MQ_Q_INT8, MQ_Q_UINT8, MQ_Q_INT4};
    for (int t = 0; t < 5; t++) {
        layer l;
        make_layer(&l, types[t], t == 3 ? MQ_ASYMMETRIC : MQ_SYMMETRIC,
                   types[t] == MQ_Q_INT4 ? MQ_PER_GROUP : MQ_PER_CHANNEL, 16, 21, 40, MQ_ACT_F32);
        l.d.bias = l.bias;
        size_t wb = types[t] == MQ_Q_NONE ? 21 * 40 * 4 : types[t] == MQ_Q_FP16 ? 21 * 40 * 2
                  : types[t] == MQ_Q_INT4 ? 21 * 5 * 4 : 21 * 40;
        size_t ns = types[t] == MQ_Q_INT4 ? 21 * 3 : 21;
        char *buf = malloc(wb + ns * 5 + 21 * 4 + 16);
        mq_linear_desc u = l.d;
        char *p = buf + 1;
        memcpy(p, l.w, wb);
        u.weight = p;
        p += wb + 1;
        if (l.scale) {
            memcpy(p, l.scale, ns * 4);
            u.scale = (const float *)(void *)p;
            p += ns * 4 + 1;
        }
        if (l.d.zero_point) {
            memcpy(p, l.zp, ns);
            u.zero_point = p;
            p += ns + 1;
        }
        memcpy(p, l.bias, 21 * 4);
        u.bias = (const float *)(void *)p;
        mq_ctx *ctx = mq_ctx_create();
        mq_linear *a = NULL, *b = NULL;
        CHECK_EQ_INT(mq_linear_create(ctx, &l.d, &a), MQ_OK);
        CHECK_EQ_INT(mq_linear_create(ctx, &u, &b), MQ_OK);
        float x[3 * 40], ya[3 * 21], yb[3 * 21];
        for (int i = 0; i < 3 * 40; i++) x[i] = frand();
        CHECK_EQ_INT(mq_linear_forward(ctx, a, x, 3, ya), MQ_OK);
        CHECK_EQ_INT(mq_linear_forward(ctx, b, x, 3, yb), MQ_OK);
        CHECK_MSG(!memcmp(ya, yb, sizeof ya), "type %d", (int)types[t]);
        mq_linear_free(a);
        mq_linear_free(b);
        mq_ctx_free(ctx);
        free(buf);
        layer_free(&l);
    }
}

TEST(description_errors) {
    mq_ctx *ctx = mq_ctx_create();
    mq_linear *lin = (mq_linear *)&ctx; /* must be reset to NULL on failure */
    float w[64] = {0}, s[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    mq_linear_desc d;
    mq_linear_desc_init(&d, MQ_Q_NONE, 0, 8, w);
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_ERR_INVALID);
    CHECK(lin == NULL);
    CHECK_MSG_HAS(ctx, "shape");
    mq_linear_desc_init(&d, MQ_Q_NONE, (int64_t)1 << 40, (int64_t)1 << 40, w);
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_ERR_NOMEM);
    CHECK_MSG_HAS(ctx, "too large");
    mq_linear_desc_init(&d, MQ_Q_NONE, 8, 8, w);
    d.act = MQ_ACT_DYNAMIC;
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_ERR_UNSUPPORTED);
    CHECK_MSG_HAS(ctx, "integer weights");
    mq_linear_desc_init(&d, MQ_Q_INT8, 8, 8, w);
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "scales");
    d.scale = s;
    d.scheme = MQ_ASYMMETRIC;
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "zero points");
    mq_linear_desc_init(&d, MQ_Q_INT4, 8, 64, w);
    d.scale = s;
    d.granularity = MQ_PER_GROUP;
    d.group_size = 12;
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_ERR_UNSUPPORTED);
    CHECK_MSG_HAS(ctx, "multiple of 8");
    d.group_size = 32;
    d.scheme = MQ_ASYMMETRIC;
    uint8_t zp[16];
    memset(zp, 9, sizeof zp); /* INT4 zero points live in [-8, 7] */
    d.zero_point = zp;
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "zero point");
    mq_linear_desc_init(&d, MQ_Q_INT8, 8, 8, w);
    d.scale = s;
    d.act = MQ_ACT_STATIC;
    d.input_scale = 0;
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "input scale");
    d.input_scale = 1;
    d.input_zero_point = 256;
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_ERR_INVALID);
    d.input_zero_point = 0;
    CHECK_EQ_INT(mq_linear_create(ctx, &d, &lin), MQ_OK);
    CHECK_EQ_INT(mq_linear_out_features(lin), 8);
    CHECK_EQ_INT(mq_linear_in_features(lin), 8);
    CHECK(mq_linear_weight_bytes(lin) >= 64);
    CHECK_EQ_INT(mq_linear_forward(ctx, lin, NULL, -1, NULL), MQ_ERR_INVALID);
    CHECK_EQ_INT(mq_linear_forward(ctx, lin, NULL, 0, NULL), MQ_OK);
    mq_linear_free(lin);
    mq_linear_free(NULL);
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(float_weights);
    RUN(int8_all_modes);
    RUN(int4_all_modes);
    RUN(other_granularities);
    RUN(larger_shapes);
    RUN(gemv_wide_layers);
    RUN(tiny_activations);
    RUN(activation_edges);
    RUN(activation_quantization);
    RUN(unaligned_buffers);
    RUN(description_errors);
    return test_summary();
}
