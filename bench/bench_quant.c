/* Quantization throughput as a ratio to memcpy bandwidth measured in the same run (warmed,
 * reused buffers; memcpy of as many bytes as the quantizer reads), and the SQNR of each scale
 * rule on Gaussian weights (fixed seed).
 *   build/bench/bench_quant [rows cols [ncases]]   (default 4096 4096; ncases: only the
 *   first ncases throughput cases, no SQNR) */
#include "bench_util.h"
#include "monoquant.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { REPS = 5 };

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
    uint16_t *bf16, *f16;
    uint8_t *data;
    float *scale;
    uint8_t *zp;
    float *deq;
} buffers;

static int quantize_once(mq_ctx *ctx, const mq_qspec *spec, const buffers *b, mq_dtype dt,
                         mq_qlayout *lay) {
    int64_t shape[2] = {b->rows, b->cols};
    if (mq_qlayout_init(ctx, spec, 2, shape, lay) != MQ_OK) return -1;
    const void *src = dt == MQ_F32 ? (const void *)b->f32
                    : dt == MQ_F16 ? (const void *)b->f16 : (const void *)b->bf16;
    if (mq_quantize_rows(ctx, spec, lay, NULL, dt, src, 0, b->rows, b->data, b->scale,
                         lay->has_zero_point ? b->zp : NULL) != MQ_OK) {
        fprintf(stderr, "quantize: %s\n", mq_ctx_message(ctx));
        return -1;
    }
    return 0;
}

/* CPU seconds of the process (every thread), for a loaded machine where wall time also
 * counts other programs' turns. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds of one run; *cpu: its CPU seconds. */
static double time_quantize(mq_ctx *ctx, const mq_qspec *spec, const buffers *b, mq_dtype dt,
                            double *cpu) {
    mq_qlayout lay;
    double c = cpu_now(), t = bench_now();
    if (quantize_once(ctx, spec, b, dt, &lay)) exit(1);
    t = bench_now() - t;
    if (cpu) *cpu = cpu_now() - c;
    return t;
}

typedef struct copy_arg {
    void *dst;
    const void *src;
    size_t n;
} copy_arg;

static void *copy_part(void *p) {
    copy_arg *a = (copy_arg *)p;
    memcpy(a->dst, a->src, a->n);
    return NULL;
}

/* Seconds of one memcpy of n bytes, split over `threads` (1 or 2) threads; *cpu: its CPU
 * seconds (1 thread). */
static double time_memcpy(void *dst, const void *src, size_t n, int threads, double *cpu) {
    copy_arg a[2] = {{dst, src, n / 2}, {(char *)dst + n / 2, (const char *)src + n / 2, n - n / 2}};
    double c = cpu_now(), t = bench_now();
    if (threads == 2) {
        pthread_t th;
        if (pthread_create(&th, NULL, copy_part, &a[1])) exit(1);
        copy_part(&a[0]);
        pthread_join(th, NULL);
    } else {
        memcpy(dst, src, n);
    }
    t = bench_now() - t;
    if (cpu) *cpu = cpu_now() - c;
    return t;
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
            buffers b = {tt->shape[0], tt->shape[1], malloc(n * 4), NULL, NULL, malloc(n + 64),
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
    buffers b = {4096, 4096, 0, 0, 0, 0, 0, 0, 0};
    size_t only = 0;
    if (argc >= 3) {
        b.rows = atoll(argv[1]);
        b.cols = atoll(argv[2]);
    }
    if (argc >= 4) only = (size_t)atoll(argv[3]);
    size_t n = (size_t)(b.rows * b.cols);
    b.f32 = bench_xmalloc(n * 4);
    b.bf16 = bench_xmalloc(n * 2);
    b.f16 = bench_xmalloc(n * 2);
    b.data = bench_xmalloc(n * 2); /* casts write 2 bytes an element */
    b.scale = bench_xmalloc(n / 8 * 4 + 64);
    b.zp = bench_xmalloc(n / 8 + 64);
    b.deq = bench_xmalloc(n * 4);
    gaussian(b.f32, n);
    for (size_t i = 0; i < n; i++) {
        b.bf16[i] = mq_f32_to_bf16(b.f32[i]);
        b.f16[i] = mq_f32_to_f16(b.f32[i]);
    }

    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return 1;
    printf("tensor %lld x %lld, isa %s\n", (long long)b.rows, (long long)b.cols,
           mq_isa_name(mq_ctx_isa(ctx)));
    printf("throughput = input bytes / s, best of %d runs; memcpy = the same number of bytes\n"
           "copied (1 and 2 threads), best of the same number of runs interleaved with them;\n"
           "ratio = throughput / 1-thread memcpy (the \"x memcpy\" of the goals), ratio2 =\n"
           "throughput / memcpy on as many threads. Buffers are allocated and touched once.\n"
           "cpu ratio = the same ratio of bytes per CPU second (all threads), the fairer one on\n"
           "a machine shared with other jobs; in cache = the first 64 rows quantized again and\n"
           "again (the kernels' own speed, wall time). The 4-bit MSE rows run the search with\n"
           "errors in 16-bit fixed point, the INT8 one with float errors (docs/QUANTIZATION.md)\n",
           REPS);
    printf("%-34s %3s %8s %8s %8s %6s %6s %9s %9s\n", "case", "thr", "GB/s in", "memcpy1",
           "memcpy2", "ratio", "ratio2", "cpu ratio", "in cache");

    struct {
        const char *name;
        mq_qtype type;
        mq_granularity gran;
        mq_scale_search search;
        mq_dtype src;
    } cases[] = {
        /* the four rows of the speed goals first */
        {"bf16 -> INT8 per channel min/max", MQ_Q_INT8, MQ_PER_CHANNEL, MQ_SEARCH_MINMAX, MQ_BF16},
        {"bf16 -> INT4 g128 min/max", MQ_Q_INT4, MQ_PER_GROUP, MQ_SEARCH_MINMAX, MQ_BF16},
        {"f32  -> INT4 g128 min/max", MQ_Q_INT4, MQ_PER_GROUP, MQ_SEARCH_MINMAX, MQ_F32},
        {"f32  -> INT4 g128 MSE search", MQ_Q_INT4, MQ_PER_GROUP, MQ_SEARCH_MSE, MQ_F32},
        {"bf16 -> INT4 g128 MSE search", MQ_Q_INT4, MQ_PER_GROUP, MQ_SEARCH_MSE, MQ_BF16},
        {"f32  -> INT8 per channel min/max", MQ_Q_INT8, MQ_PER_CHANNEL, MQ_SEARCH_MINMAX, MQ_F32},
        {"f16  -> INT8 per channel min/max", MQ_Q_INT8, MQ_PER_CHANNEL, MQ_SEARCH_MINMAX, MQ_F16},
        {"bf16 -> UINT8 g128 asym min/max", MQ_Q_UINT8, MQ_PER_GROUP, MQ_SEARCH_MINMAX, MQ_BF16},
        {"f32  -> UINT4 g128 asym MSE", MQ_Q_UINT4, MQ_PER_GROUP, MQ_SEARCH_MSE, MQ_F32},
        {"f32  -> INT8 per channel MSE", MQ_Q_INT8, MQ_PER_CHANNEL, MQ_SEARCH_MSE, MQ_F32},
        {"f32  -> BF16 cast", MQ_Q_BF16, MQ_PER_CHANNEL, MQ_SEARCH_MINMAX, MQ_F32},
        {"bf16 -> FP16 cast", MQ_Q_FP16, MQ_PER_CHANNEL, MQ_SEARCH_MINMAX, MQ_BF16},
    };
    size_t ncases = sizeof cases / sizeof cases[0];
    if (only && only < ncases) ncases = only;
    for (size_t c = 0; c < ncases; c++) {
        for (int th = 1; th <= 2; th++) {
            mq_ctx_set_threads(ctx, th);
            mq_qspec spec;
            mq_qspec_default(&spec);
            spec.type = cases[c].type;
            spec.granularity = cases[c].gran;
            spec.search = cases[c].search;
            if (cases[c].type == MQ_Q_UINT4 || cases[c].type == MQ_Q_UINT8)
                spec.scheme = MQ_ASYMMETRIC;
            size_t bytes = n * mq_dtype_size(cases[c].src);
            const void *src = cases[c].src == MQ_F32 ? (const void *)b.f32
                            : cases[c].src == MQ_F16 ? (const void *)b.f16 : (const void *)b.bf16;
            double t = 1e30, m1 = 1e30, m2 = 1e30, tc = 1e30, mc = 1e30;
            for (int r = 0; r < REPS; r++) {
                double ac, qc;
                double a = time_memcpy(b.deq, src, bytes, 1, &ac);
                double a2 = time_memcpy(b.deq, src, bytes, 2, NULL);
                double q = time_quantize(ctx, &spec, &b, cases[c].src, &qc);
                m1 = a < m1 ? a : m1;
                m2 = a2 < m2 ? a2 : m2;
                t = q < t ? q : t;
                mc = ac < mc ? ac : mc;
                tc = qc < tc ? qc : tc;
            }
            buffers small = b;
            small.rows = b.rows < 64 ? b.rows : 64;
            double ts = 1e30;
            for (int r = 0; r < 10; r++) {
                double q = time_quantize(ctx, &spec, &small, cases[c].src, NULL);
                ts = q < ts ? q : ts;
            }
            double in = (double)bytes / t, bw1 = (double)bytes / m1, bw2 = (double)bytes / m2;
            double ins = (double)(small.rows * b.cols) * (double)mq_dtype_size(cases[c].src) / ts;
            printf("%-34s %3d %8.2f %8.2f %8.2f %6.2f %6.2f %9.2f %9.2f\n", cases[c].name, th,
                   in / 1e9, bw1 / 1e9, bw2 / 1e9, in / bw1, in / (th == 1 ? bw1 : bw2),
                   mc / tc, ins / 1e9);
            fflush(stdout);
        }
    }

    if (only) {
        mq_ctx_free(ctx);
        return 0;
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
    free(b.f16);
    free(b.data);
    free(b.scale);
    free(b.zp);
    free(b.deq);
    return 0;
}
