/* Quantization throughput as a ratio to memcpy bandwidth measured in the same run (warmed
 * buffers), and the SQNR of each scale rule on Gaussian weights (fixed seed).
 *   build/bench/bench_quant [rows cols]      (default 4096 4096) */
#include "bench_util.h"
#include "monoquant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform01(void) {
    return ((double)(bench_xorshift64(&rng_state) >> 11) + 0.5) * 0x1p-53;
}
static void gaussian(float *x, size_t n) {
    for (size_t i = 0; i + 1 < n; i += 2) {
        double r = sqrt(-2.0 * log(uniform01())), t = 6.283185307179586 * uniform01();
        x[i] = (float)(r * cos(t));
        x[i + 1] = (float)(r * sin(t));
    }
    if (n & 1) x[n - 1] = (float)sqrt(-2.0 * log(uniform01()));
}

typedef struct buffers {
    int64_t rows, cols;
    float *f32;
    uint16_t *bf16;
    uint8_t *data;
    float *scale;
    uint8_t *zp;
    float *deq;
} buffers;

static int quantize_once(mq_ctx *ctx, const mq_qspec *spec, const buffers *b, mq_dtype dt,
                         mq_qlayout *lay) {
    int64_t shape[2] = {b->rows, b->cols};
    if (mq_qlayout_init(ctx, spec, 2, shape, lay) != MQ_OK) return -1;
    const void *src = dt == MQ_F32 ? (const void *)b->f32 : (const void *)b->bf16;
    if (mq_quantize_rows(ctx, spec, lay, NULL, dt, src, 0, b->rows, b->data, b->scale,
                         lay->has_zero_point ? b->zp : NULL) != MQ_OK) {
        fprintf(stderr, "quantize: %s\n", mq_ctx_message(ctx));
        return -1;
    }
    return 0;
}

/* Seconds of the best of `reps` runs. */
static double time_quantize(mq_ctx *ctx, const mq_qspec *spec, const buffers *b, mq_dtype dt,
                            int reps) {
    mq_qlayout lay;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = bench_now();
        if (quantize_once(ctx, spec, b, dt, &lay)) exit(1);
        t = bench_now() - t;
        if (t < best) best = t;
    }
    return best;
}

static double sqnr(mq_ctx *ctx, const mq_qspec *spec, const buffers *b) {
    mq_qlayout lay;
    if (quantize_once(ctx, spec, b, MQ_F32, &lay)) exit(1);
    if (mq_dequantize_rows(ctx, spec, &lay, b->data, b->scale, b->zp, 0, b->rows, b->deq)) {
        fprintf(stderr, "dequantize: %s\n", mq_ctx_message(ctx));
        exit(1);
    }
    mq_error_stats st;
    mq_error_stats_compute(b->f32, b->deq, (size_t)(b->rows * b->cols), &st);
    return st.sqnr_db;
}

/* The plain rule most INT4 tools use: scale = max|w| / 7 per group, clamp to [-8, 7]. */
static double sqnr_absmax7(const buffers *b, int64_t g) {
    size_t n = (size_t)(b->rows * b->cols);
    for (size_t i0 = 0; i0 < n; i0 += (size_t)g) {
        float m = 0;
        for (size_t i = i0; i < i0 + (size_t)g && i < n; i++) m = fabsf(b->f32[i]) > m ? fabsf(b->f32[i]) : m;
        float s = m > 0 ? m / 7.0f : 1.0f;
        for (size_t i = i0; i < i0 + (size_t)g && i < n; i++) {
            float q = nearbyintf(b->f32[i] / s);
            q = q < -8 ? -8 : q > 7 ? 7 : q;
            b->deq[i] = q * s;
        }
    }
    mq_error_stats st;
    mq_error_stats_compute(b->f32, b->deq, n, &st);
    return st.sqnr_db;
}

/* Best possible SQNR of a 4-bit grid with one f32 scale and an integer zero point per group,
 * by exhaustive search (range ratios 0.300 .. 1.300 in steps of 0.005, every zero point) on
 * the first `rows` rows: the ceiling any scale rule can reach in this format. */
static double sqnr_ceiling(const buffers *b, int64_t rows, int64_t g, int asym) {
    double sig = 0, err = 0;
    int64_t n = rows * b->cols;
    for (int64_t i0 = 0; i0 < n; i0 += g) {
        int64_t m = i0 + g < n ? g : n - i0;
        const float *x = b->f32 + i0;
        float lo = 0, hi = 0;
        for (int64_t i = 0; i < m; i++) {
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
            sig += (double)x[i] * x[i];
        }
        double best = 1e300;
        int qmin = asym ? 0 : -8, qmax = asym ? 15 : 7;
        for (int k = 0; k <= 200; k++) {
            float r = 0.3f + 0.005f * (float)k;
            float s = asym ? (hi - lo) * r / 15.0f : (-lo > hi ? -lo : hi) * r / 7.5f;
            if (!(s > 0)) s = 1;
            for (int zp = 0; zp <= (asym ? 15 : 0); zp++) {
                double e = 0;
                for (int64_t i = 0; i < m && e < best; i++) {
                    float q = nearbyintf(x[i] / s) + (float)zp;
                    q = q < (float)qmin ? (float)qmin : q > (float)qmax ? (float)qmax : q;
                    double d = (double)x[i] - (double)((q - (float)zp) * s);
                    e += d * d;
                }
                if (e < best) best = e;
            }
        }
        err += best;
    }
    return 10.0 * log10(sig / err);
}

/* SQNR over every 2-D ".weight" of the trained LM fixture (all tensors' errors pooled). */
static void fixture_sqnr(mq_ctx *ctx) {
    const char *dir = getenv("FIXTURES");
    char path[4096];
    snprintf(path, sizeof path, "%s/lm/lm_fortunes.safetensors", dir && *dir ? dir : "../shared/fixtures");
    mq_model *m;
    if (mq_model_open(ctx, path, NULL, &m) != MQ_OK) {
        printf("\n(LM fixture not found: %s)\n", mq_ctx_message(ctx));
        return;
    }
    printf("\nSQNR (dB) pooled over the 2-D weights of %s\n", path);
    printf("%-10s %12s %12s %12s %12s %12s\n", "target", "max|w|/7", "sym min/max", "sym MSE",
           "asym min/max", "asym MSE");
    for (int gi = 0; gi < 2; gi++) {
        int g = gi ? 32 : 128;
        double sig[6] = {0}, err[6] = {0};
        for (size_t t = 0; t < mq_model_tensor_count(m); t++) {
            const mq_tensor *tt = mq_model_tensor(m, t);
            size_t len = strlen(tt->name);
            if (tt->ndim != 2 || tt->dtype != MQ_F32 || len < 7 || strcmp(tt->name + len - 7, ".weight"))
                continue;
            size_t n = (size_t)tt->numel;
            buffers b = {tt->shape[0], tt->shape[1], malloc(n * 4), NULL, malloc(n + 64),
                         malloc(n * 4 + 64), malloc(n + 64), malloc(n * 4)};
            memcpy(b.f32, tt->data, n * 4);
            for (int k = 0; k < 5; k++) {
                double db;
                if (k == 0) {
                    db = sqnr_absmax7(&b, g);
                } else {
                    mq_qspec spec;
                    mq_qspec_default(&spec);
                    spec.type = k < 3 ? MQ_Q_INT4 : MQ_Q_UINT4;
                    spec.scheme = k < 3 ? MQ_SYMMETRIC : MQ_ASYMMETRIC;
                    spec.granularity = MQ_PER_GROUP;
                    spec.group_size = g;
                    spec.search = k % 2 ? MQ_SEARCH_MINMAX : MQ_SEARCH_MSE;
                    db = sqnr(ctx, &spec, &b);
                }
                double s2 = 0;
                for (size_t i = 0; i < n; i++) s2 += (double)b.f32[i] * b.f32[i];
                sig[k] += s2;
                err[k] += s2 / pow(10.0, db / 10.0);
            }
            free(b.f32);
            free(b.data);
            free(b.scale);
            free(b.zp);
            free(b.deq);
        }
        printf("INT4 g%-4d", g);
        for (int k = 0; k < 5; k++) printf(" %12.2f", 10.0 * log10(sig[k] / err[k]));
        printf("\n");
    }
    mq_model_free(m);
}

int main(int argc, char **argv) {
    buffers b = {4096, 4096, 0, 0, 0, 0, 0, 0};
    if (argc == 3) {
        b.rows = atoll(argv[1]);
        b.cols = atoll(argv[2]);
    }
    size_t n = (size_t)(b.rows * b.cols);
    b.f32 = bench_xmalloc(n * 4);
    b.bf16 = bench_xmalloc(n * 2);
    b.data = bench_xmalloc(n);
    b.scale = bench_xmalloc(n / 8 * 4 + 64);
    b.zp = bench_xmalloc(n / 8 + 64);
    b.deq = bench_xmalloc(n * 4);
    gaussian(b.f32, n);
    for (size_t i = 0; i < n; i++) b.bf16[i] = mq_f32_to_bf16(b.f32[i]);

    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return 1;
    printf("tensor %lld x %lld, isa %s\n", (long long)b.rows, (long long)b.cols,
           mq_isa_name(mq_ctx_isa(ctx)));
    printf("throughput = input bytes / s (best of 3); ratio = throughput / memcpy bandwidth\n"
           "(bytes copied / s, 1 thread, warm %lld MB buffers, best of 3, measured just "
           "before each case)\n", (long long)(n * 4 >> 20));
    printf("in cache = the first 64 rows (1 MB of f32) quantized again and again: the kernels'\n"
           "own speed, without memory traffic\n");
    printf("%-34s %7s %10s %12s %7s %10s\n", "case", "threads", "GB/s in", "memcpy GB/s",
           "ratio", "in cache");

    struct {
        const char *name;
        mq_qtype type;
        mq_granularity gran;
        mq_scale_search search;
        mq_dtype src;
        int reps;
    } cases[] = {
        {"f32  -> INT8 per channel min/max", MQ_Q_INT8, MQ_PER_CHANNEL, MQ_SEARCH_MINMAX, MQ_F32, 3},
        {"bf16 -> INT8 per channel min/max", MQ_Q_INT8, MQ_PER_CHANNEL, MQ_SEARCH_MINMAX, MQ_BF16, 3},
        {"f32  -> INT4 g128 min/max", MQ_Q_INT4, MQ_PER_GROUP, MQ_SEARCH_MINMAX, MQ_F32, 3},
        {"bf16 -> INT4 g128 min/max", MQ_Q_INT4, MQ_PER_GROUP, MQ_SEARCH_MINMAX, MQ_BF16, 3},
        {"f32  -> INT4 g128 MSE search", MQ_Q_INT4, MQ_PER_GROUP, MQ_SEARCH_MSE, MQ_F32, 3},
        {"bf16 -> INT4 g128 MSE search", MQ_Q_INT4, MQ_PER_GROUP, MQ_SEARCH_MSE, MQ_BF16, 3},
        {"f32  -> UINT4 g128 asym MSE", MQ_Q_UINT4, MQ_PER_GROUP, MQ_SEARCH_MSE, MQ_F32, 3},
        {"f32  -> INT8 per channel MSE", MQ_Q_INT8, MQ_PER_CHANNEL, MQ_SEARCH_MSE, MQ_F32, 3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int th = 1; th <= 2; th++) {
            mq_ctx_set_threads(ctx, th);
            mq_qspec spec;
            mq_qspec_default(&spec);
            spec.type = cases[c].type;
            spec.granularity = cases[c].gran;
            spec.search = cases[c].search;
            if (cases[c].type == MQ_Q_UINT4) spec.scheme = MQ_ASYMMETRIC;
            double bw = bench_memcpy_bw(b.deq, b.f32, n * 4, 3);
            double t = time_quantize(ctx, &spec, &b, cases[c].src, cases[c].reps);
            double in = (double)n * (double)mq_dtype_size(cases[c].src) / t;
            buffers small = b;
            small.rows = b.rows < 64 ? b.rows : 64;
            double ts = time_quantize(ctx, &spec, &small, cases[c].src, 10);
            double ins = (double)(small.rows * b.cols) * (double)mq_dtype_size(cases[c].src) / ts;
            printf("%-34s %7d %10.2f %12.2f %7.2f %10.2f\n", cases[c].name, th, in / 1e9,
                   bw / 1e9, in / bw, ins / 1e9);
        }
    }

    mq_ctx_set_threads(ctx, 0);
    printf("\nSQNR (dB) on Gaussian weights, %lld x %lld, seed fixed\n", (long long)b.rows,
           (long long)b.cols);
    printf("%-10s %12s %12s %12s %12s %12s %14s\n", "target", "max|w|/7", "sym min/max",
           "sym MSE", "asym min/max", "asym MSE", "ceiling s / a");
    int groups[2] = {128, 32};
    for (int gi = 0; gi < 2; gi++) {
        double v[4];
        for (int k = 0; k < 4; k++) {
            mq_qspec spec;
            mq_qspec_default(&spec);
            spec.type = k < 2 ? MQ_Q_INT4 : MQ_Q_UINT4;
            spec.scheme = k < 2 ? MQ_SYMMETRIC : MQ_ASYMMETRIC;
            spec.granularity = MQ_PER_GROUP;
            spec.group_size = groups[gi];
            spec.search = k % 2 ? MQ_SEARCH_MSE : MQ_SEARCH_MINMAX;
            v[k] = sqnr(ctx, &spec, &b);
        }
        int64_t crows = b.rows < 32 ? b.rows : 32;
        printf("INT4 g%-4d %12.2f %12.2f %12.2f %12.2f %12.2f %6.2f/%6.2f\n", groups[gi],
               sqnr_absmax7(&b, groups[gi]), v[0], v[1], v[2], v[3],
               sqnr_ceiling(&b, crows, groups[gi], 0), sqnr_ceiling(&b, crows, groups[gi], 1));
    }
    {
        double v[4];
        for (int k = 0; k < 4; k++) {
            mq_qspec spec;
            mq_qspec_default(&spec);
            spec.type = k < 2 ? MQ_Q_INT8 : MQ_Q_UINT8;
            spec.scheme = k < 2 ? MQ_SYMMETRIC : MQ_ASYMMETRIC;
            spec.search = k % 2 ? MQ_SEARCH_MSE : MQ_SEARCH_MINMAX;
            v[k] = sqnr(ctx, &spec, &b);
        }
        printf("INT8 chan  %12s %12.2f %12.2f %12.2f %12.2f\n", "-", v[0], v[1], v[2], v[3]);
        printf("ceiling: exhaustive search over ratio x zero point on the first %lld rows\n",
               (long long)(b.rows < 32 ? b.rows : 32));
    }
    fixture_sqnr(ctx);
    mq_ctx_free(ctx);
    free(b.f32);
    free(b.bf16);
    free(b.data);
    free(b.scale);
    free(b.zp);
    free(b.deq);
    return 0;
}
