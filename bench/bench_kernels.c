/* Quantized Linear throughput: GEMV 4096x4096 and 11008x4096, GEMM 4096x4096 at M = 32, per
 * weight type and mode, weights hot (one copy, cache-resident where it fits) and cold (cycled
 * through copies larger than the caches), on 1 and 2 threads. Prints GFLOP/s, weight GB/s,
 * and ratios to f32 weights and to a read-bandwidth loop measured in the same run.
 * BENCH_SHAPE=0|1|2 runs one shape only. */
#include "monoquant.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* ---- read bandwidth baseline ---- */
typedef struct rd_arg {
    const char *p;
    size_t n;
    uint64_t sum;
} rd_arg;

__attribute__((target("avx2"))) static void *read_loop(void *v) {
    rd_arg *a = (rd_arg *)v;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 128 <= a->n; i += 128) {
        s0 = _mm256_add_epi64(s0, _mm256_load_si256((const __m256i *)(a->p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_load_si256((const __m256i *)(a->p + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_load_si256((const __m256i *)(a->p + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_load_si256((const __m256i *)(a->p + i + 96)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t, s);
    a->sum = t[0] + t[1] + t[2] + t[3];
    return NULL;
}

static double read_bw(const char *buf, size_t n, int threads) {
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        rd_arg a[2] = {{buf, n / threads, 0}, {buf + n / threads, n / threads, 0}};
        pthread_t t;
        double t0 = now_s();
        if (threads == 2) pthread_create(&t, NULL, read_loop, &a[1]);
        read_loop(&a[0]);
        if (threads == 2) pthread_join(t, NULL);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    return (double)n / best / 1e9;
}

/* ---- layers ---- */
typedef struct kind {
    const char *name;
    mq_qtype type;
    mq_act_mode act;
} kind;

static const kind kinds[] = {
    {"f32", MQ_Q_NONE, MQ_ACT_F32},       {"bf16", MQ_Q_BF16, MQ_ACT_F32},
    {"int8-dyn", MQ_Q_INT8, MQ_ACT_DYNAMIC}, {"int4-dyn", MQ_Q_INT4, MQ_ACT_DYNAMIC},
    {"int8-w", MQ_Q_INT8, MQ_ACT_F32},    {"int4-w", MQ_Q_INT4, MQ_ACT_F32},
};
#define NKINDS (sizeof kinds / sizeof kinds[0])

static mq_linear *make(mq_ctx *ctx, const kind *k, int64_t N, int64_t K, void *wbuf, float *sc) {
    mq_linear_desc d;
    mq_linear_desc_init(&d, k->type, N, K, wbuf);
    d.act = k->act;
    d.scale = sc;
    if (k->type == MQ_Q_INT4) {
        d.granularity = MQ_PER_GROUP;
        d.group_size = 128;
    }
    mq_linear *lin = NULL;
    if (mq_linear_create(ctx, &d, &lin) != MQ_OK) {
        fprintf(stderr, "create %s: %s\n", k->name, mq_ctx_message(ctx));
        exit(1);
    }
    return lin;
}

#define COLD_BYTES (320ull << 20)
#define MAXCOPIES 40

int main(void) {
    const char *only = getenv("BENCH_SHAPE");
    mq_ctx *ctx = mq_ctx_create();
    const size_t rbytes = 512u << 20;
    char *rbuf = aligned_alloc(64, rbytes);
    memset(rbuf, 1, rbytes);
    double bw[3] = {0, read_bw(rbuf, rbytes, 1), read_bw(rbuf, rbytes, 2)};
    free(rbuf);
    printf("isa %s; read bandwidth (512 MiB, best of 5): 1 thread %.1f GB/s, 2 threads %.1f GB/s\n",
           mq_isa_name(mq_ctx_isa(ctx)), bw[1], bw[2]);
    static const struct { int64_t M, N, K; } shapes[] = {{1, 4096, 4096}, {1, 11008, 4096},
                                                         {32, 4096, 4096}};
    /* source weights, shared by all copies: random codes and floats */
    size_t maxe = 11008u * 4096u;
    float *wf = malloc(maxe * 4), *sc = malloc(11008u * 64 * 4);
    for (size_t i = 0; i < maxe; i++) wf[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-4f;
    for (size_t i = 0; i < 11008u * 64; i++) sc[i] = 1e-3f * (float)(rnd() % 100 + 1);
    uint32_t *wb = (uint32_t *)malloc(maxe * 4); /* codes for every format */
    for (size_t i = 0; i < maxe; i++) wb[i] = rnd();
    uint16_t *wbf = (uint16_t *)malloc(maxe * 2);
    mq_convert(ctx, MQ_BF16, wbf, MQ_F32, wf, maxe);
    printf("%-5s %-12s %-8s %-4s %2s %9s %8s %8s %8s %8s\n", "M", "N x K", "type", "w", "th",
           "ms", "GFLOP/s", "wGB/s", "x f32", "x readBW");
    for (size_t s = 0; s < 3; s++) {
        if (only && (size_t)atoi(only) != s) continue;
        int64_t M = shapes[s].M, N = shapes[s].N, K = shapes[s].K;
        float *x = malloc((size_t)(M * K) * 4), *y = malloc((size_t)(M * N) * 4);
        for (int64_t i = 0; i < M * K; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
        double f32_ms[2][3] = {{0}};
        for (size_t ki = 0; ki < NKINDS; ki++) {
            const kind *k = &kinds[ki];
            void *src = k->type == MQ_Q_NONE ? (void *)wf : k->type == MQ_Q_BF16 ? (void *)wbf
                                                                                    : (void *)wb;
            mq_linear *lin[MAXCOPIES];
            lin[0] = make(ctx, k, N, K, src, sc);
            uint64_t wbytes = mq_linear_weight_bytes(lin[0]);
            int copies = (int)((COLD_BYTES + wbytes - 1) / wbytes);
            if (copies < 2) copies = 2;
            if (copies > MAXCOPIES) copies = MAXCOPIES;
            for (int c = 1; c < copies; c++) lin[c] = make(ctx, k, N, K, src, sc);
            for (int cold = 0; cold < 2; cold++)
                for (int th = 1; th <= 2; th++) {
                    mq_ctx_set_threads(ctx, th);
                    mq_linear_forward(ctx, lin[0], x, M, y); /* warm scratch and pool */
                    int reps = cold ? copies * (M > 1 ? 1 : 3) : (M > 1 ? 5 : 30);
                    if (reps < 4) reps = 4;
                    double best = 1e30;
                    for (int r = 0; r < reps; r++) {
                        mq_linear *l = lin[cold ? r % copies : 0];
                        double t0 = now_s();
                        mq_linear_forward(ctx, l, x, M, y);
                        double dt = now_s() - t0;
                        if (dt < best) best = dt;
                    }
                    double ms = best * 1e3, gflops = 2.0 * M * N * K / best / 1e9;
                    double gbs = (double)wbytes / best / 1e9;
                    if (ki == 0) f32_ms[cold][th] = ms;
                    char shape[32];
                    snprintf(shape, sizeof shape, "%lldx%lld", (long long)N, (long long)K);
                    printf("%-5lld %-12s %-8s %-4s %2d %9.3f %8.1f %8.1f %8.2f %8.2f\n",
                           (long long)M, shape, k->name, cold ? "cold" : "hot", th, ms, gflops,
                           gbs, f32_ms[cold][th] / ms, gbs / bw[th]);
                    fflush(stdout);
                }
            for (int c = 0; c < copies; c++) mq_linear_free(lin[c]);
        }
        free(x);
        free(y);
    }
    free(wf);
    free(sc);
    free(wb);
    free(wbf);
    mq_ctx_free(ctx);
    return 0;
}
