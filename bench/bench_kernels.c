/* Quantized Linear throughput: GEMV 4096x4096, 11008x4096 and 512x4096, GEMM 4096x4096 at M = 32, per
 * weight type and mode, weights hot (one copy, cache-resident where it fits) and cold (cycled
 * through copies larger than the caches), on 1 and 2 threads, with the best instruction set
 * of the CPU (MQ_ISA=avx2|scalar caps it). Prints GFLOP/s, weight GB/s, and ratios to f32
 * weights, to a read-bandwidth loop and (M > 1) to our f32 GEMM, all measured in the same run.
 * One-thread times are CPU time of the calling thread, two-thread times wall-clock time.
 * BENCH_SHAPE=0|1|2|3 runs one shape only, BENCH_KIND=substring the f32 row and the matching
 * types, BENCH_THREADS=1 the 1-thread rows. */
#include "bench_util.h"
#include "monoquant.h"
#include "kernels/gemm.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) { return (uint32_t)(bench_xorshift64(&rng) >> 11); }

/* ---- read bandwidth baseline: four interleaved streams of 64-byte loads (as the kernels
 * read four channel blocks), over `chunk` bytes at rotating offsets in a `total`-byte buffer:
 * total == chunk is the hot case, a large total the cold case. The loop uses the widest
 * loads of the instruction set the kernels run with (AVX-512, AVX2, else plain 64-bit). ---- */
typedef struct rd_arg {
    const char *p;
    size_t n;
    uint64_t sum;
} rd_arg;

__attribute__((target("avx512f"))) static void *read_loop512(void *v) {
    rd_arg *a = (rd_arg *)v;
    size_t q = a->n / 4 / 64 * 64;
    __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < q; i += 64) {
        s0 = _mm512_add_epi64(s0, _mm512_load_si512(a->p + i));
        s1 = _mm512_add_epi64(s1, _mm512_load_si512(a->p + q + i));
        s2 = _mm512_add_epi64(s2, _mm512_load_si512(a->p + 2 * q + i));
        s3 = _mm512_add_epi64(s3, _mm512_load_si512(a->p + 3 * q + i));
    }
    a->sum = (uint64_t)_mm512_reduce_add_epi64(
        _mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)));
    return NULL;
}

__attribute__((target("avx2"))) static void *read_loop256(void *v) {
    rd_arg *a = (rd_arg *)v;
    size_t q = a->n / 4 / 64 * 64;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < q; i += 64) {
        const char *p = a->p + i;
        s0 = _mm256_add_epi64(s0, _mm256_add_epi64(_mm256_load_si256((const __m256i *)p),
                                                   _mm256_load_si256((const __m256i *)(p + 32))));
        p += q;
        s1 = _mm256_add_epi64(s1, _mm256_add_epi64(_mm256_load_si256((const __m256i *)p),
                                                   _mm256_load_si256((const __m256i *)(p + 32))));
        p += q;
        s2 = _mm256_add_epi64(s2, _mm256_add_epi64(_mm256_load_si256((const __m256i *)p),
                                                   _mm256_load_si256((const __m256i *)(p + 32))));
        p += q;
        s3 = _mm256_add_epi64(s3, _mm256_add_epi64(_mm256_load_si256((const __m256i *)p),
                                                   _mm256_load_si256((const __m256i *)(p + 32))));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3));
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t, s);
    a->sum = t[0] + t[1] + t[2] + t[3];
    return NULL;
}

static void *read_loop64(void *v) {
    rd_arg *a = (rd_arg *)v;
    size_t q = a->n / 4 / 64 * 64;
    uint64_t s = 0;
    for (size_t i = 0; i < q; i += 8) {
        uint64_t w[4];
        for (int j = 0; j < 4; j++) memcpy(&w[j], a->p + j * q + i, 8);
        s += w[0] + w[1] + w[2] + w[3];
    }
    a->sum = s;
    return NULL;
}

static void *(*read_loop)(void *) = read_loop64;
static const char *read_loop_name = "64-bit";

static char *rbuf;
#define RBUF_BYTES (512ull << 20)

/* One-thread figures are the calling thread's CPU time (the kernels and the read loop run on
 * it; time the shared machine gives to other processes is not counted); two-thread figures
 * are wall-clock time. */
static double clock_for(int threads) {
    if (threads > 1) return bench_now();
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds of one pass of the read loop over `chunk` bytes (rep r picks the offset). */
static double read_once(size_t total, size_t chunk, int threads, int r) {
    chunk = chunk / 512 * 512;
    size_t off = total == chunk ? 0 : (size_t)r * chunk % (total - chunk) / 64 * 64;
    rd_arg a[2] = {{rbuf + off, chunk / threads, 0}, {rbuf + off + chunk / threads, chunk / threads, 0}};
    pthread_t t;
    double t0 = clock_for(threads);
    if (threads == 2) pthread_create(&t, NULL, read_loop, &a[1]);
    read_loop(&a[0]);
    if (threads == 2) pthread_join(t, NULL);
    return clock_for(threads) - t0;
}

static double read_bw(size_t total, size_t chunk, int threads, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double dt = read_once(total, chunk, threads, r);
        if (dt < best) best = dt;
    }
    return (double)(chunk / 512 * 512) / best / 1e9;
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

#define COLD_BYTES (256ull << 20)
#define MAXCOPIES 40

/* Best time of our f32 GEMM (src/kernels/gemm_*.c, the product the GPTQ code runs) for
 * y[M][N] = x[M][K] W^T, with W^T [K][N] stored; the baseline of the M > 1 rows. */
static double f32_gemm_ms(mq_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *x,
                          const float *wf, int reps) {
    float *wt = malloc((size_t)(K * N) * 4), *c = malloc((size_t)(M * N) * 4);
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) wt[k * N + n] = wf[n * K + k];
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        memset(c, 0, (size_t)(M * N) * 4);
        int th = mq_ctx_threads(ctx);
        double t0 = clock_for(th);
        mq__gemm_parallel(ctx, M, N, K, x, K, wt, N, c, N);
        double dt = clock_for(th) - t0;
        if (dt < best) best = dt;
    }
    free(wt);
    free(c);
    return best * 1e3;
}

int main(void) {
    const char *only = getenv("BENCH_SHAPE"), *kind_only = getenv("BENCH_KIND");
    int max_threads = getenv("BENCH_THREADS") && atoi(getenv("BENCH_THREADS")) == 1 ? 1 : 2;
    mq_ctx *ctx = mq_ctx_create();
    /* the baseline loads as wide as the kernels do (the instruction set of the context,
     * which MQ_ISA may cap) */
    if (mq_ctx_isa(ctx) >= MQ_ISA_AVX512 && __builtin_cpu_supports("avx512f"))
        read_loop = read_loop512, read_loop_name = "AVX-512";
    else if (mq_ctx_isa(ctx) >= MQ_ISA_AVX2 && __builtin_cpu_supports("avx2"))
        read_loop = read_loop256, read_loop_name = "AVX2";
    rbuf = aligned_alloc(64, RBUF_BYTES);
    memset(rbuf, 1, RBUF_BYTES);
    printf("isa %s; read bandwidth (%s loads), 16 MiB chunks cycled through %llu MiB: "
           "1 thread %.1f GB/s, 2 threads %.1f GB/s\n", mq_isa_name(mq_ctx_isa(ctx)),
           read_loop_name, RBUF_BYTES >> 20, read_bw(RBUF_BYTES, 16u << 20, 1, 40),
           read_bw(RBUF_BYTES, 16u << 20, 2, 40));
    /* 512x4096: a narrow layer (as grouped-query k/v projections), whose few channel blocks
     * are split over the threads in chunks too */
    static const struct { int64_t M, N, K; } shapes[] = {{1, 4096, 4096}, {1, 11008, 4096},
                                                         {32, 4096, 4096}, {1, 512, 4096}};
    /* source weights, shared by all copies: random codes and floats */
    size_t maxe = 11008u * 4096u;
    float *wf = malloc(maxe * 4), *sc = malloc(11008u * 64 * 4);
    for (size_t i = 0; i < maxe; i++) wf[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-4f;
    for (size_t i = 0; i < 11008u * 64; i++) sc[i] = 1e-3f * (float)(rnd() % 100 + 1);
    uint32_t *wb = (uint32_t *)malloc(maxe * 4); /* codes for every format */
    for (size_t i = 0; i < maxe; i++) wb[i] = rnd();
    uint16_t *wbf = (uint16_t *)malloc(maxe * 2);
    mq_convert(ctx, MQ_BF16, wbf, MQ_F32, wf, maxe);
    printf("x f32: time of the f32-weight Linear row / this row; x readBW: weight GB/s over the "
           "read loop's GB/s on the same bytes (rdGB/s); x gemm (M > 1): time of our f32 GEMM "
           "(gemm ms) / this row; x 1th: 1-thread time / this row\n");
    printf("%-5s %-12s %-8s %-4s %2s %9s %8s %8s %7s %8s %6s %7s %8s %6s\n", "M", "N x K", "type",
           "w", "th", "ms", "GFLOP/s", "wGB/s", "x f32", "x readBW", "rdGB/s", "x gemm",
           "gemm ms", "x 1th");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        if (only && (size_t)atoi(only) != s) continue;
        int64_t M = shapes[s].M, N = shapes[s].N, K = shapes[s].K;
        float *x = malloc((size_t)(M * K) * 4), *y = malloc((size_t)(M * N) * 4);
        for (int64_t i = 0; i < M * K; i++) x[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
        double f32_ms[2][3] = {{0}}, one_ms = 0, gemm_ms[3] = {0};
        if (M > 1)
            for (int th = 1; th <= max_threads; th++) {
                mq_ctx_set_threads(ctx, th);
                gemm_ms[th] = f32_gemm_ms(ctx, M, N, K, x, wf, 8);
            }
        for (size_t ki = 0; ki < NKINDS; ki++) {
            const kind *k = &kinds[ki];
            if (kind_only && ki > 0 && !strstr(k->name, kind_only)) continue;
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
                for (int th = 1; th <= max_threads; th++) {
                    mq_ctx_set_threads(ctx, th);
                    mq_linear_forward(ctx, lin[0], x, M, y); /* warm scratch and pool */
                    /* the read loop runs between the calls, so that both see the same
                     * machine (it is shared): best of each */
                    int reps = cold ? copies * (M > 1 ? 1 : 3) : (M > 1 ? 8 : 30);
                    if (reps < 12) reps = 12;
                    double best = 1e30, rbest = 1e30;
                    /* cold: from copy 1 and read-loop offset 1 on; copy 0 and offset 0 are
                     * what the hot rows and the warm-up call above just left in the caches */
                    for (int r = 0; r < reps; r++) {
                        mq_linear *l = lin[cold ? (r + 1) % copies : 0];
                        double t0 = clock_for(th);
                        mq_linear_forward(ctx, l, x, M, y);
                        double dt = clock_for(th) - t0;
                        if (dt < best) best = dt;
                        dt = read_once(cold ? RBUF_BYTES : wbytes, wbytes, th, r + 1);
                        if (dt < rbest) rbest = dt;
                    }
                    double ms = best * 1e3, gflops = 2.0 * M * N * K / best / 1e9;
                    double gbs = (double)wbytes / best / 1e9;
                    double rd = (double)(wbytes / 512 * 512) / rbest / 1e9;
                    if (ki == 0) f32_ms[cold][th] = ms;
                    if (th == 1) one_ms = ms;
                    char shape[32];
                    snprintf(shape, sizeof shape, "%lldx%lld", (long long)N, (long long)K);
                    printf("%-5lld %-12s %-8s %-4s %2d %9.3f %8.1f %8.1f %7.2f %8.2f %6.1f ",
                           (long long)M, shape, k->name, cold ? "cold" : "hot", th, ms, gflops,
                           gbs, f32_ms[cold][th] / ms, gbs / rd, rd);
                    if (M > 1) printf("%7.2f %8.3f ", gemm_ms[th] / ms, gemm_ms[th]);
                    else printf("%7s %8s ", "-", "-");
                    printf("%6.2f\n", one_ms / ms);
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
    free(rbuf);
    mq_ctx_free(ctx);
    return 0;
}
