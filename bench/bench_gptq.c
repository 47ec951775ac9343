/* The Hessian X^T X of calibrate --hessian (mq_calibrator_update, 2048 rows x 4096, f32)
 * and GPTQ speed (INT4 groups of 128, a Hessian of 2048 calibration rows) for 4096 x 4096,
 * 11008 x 4096 and 4096 x 11008 (rows x cols: 4096 inputs and 11008 outputs, and the
 * transpose) in column order on 1 and 2 threads, and 4096 x 4096 in act-order on 2; with
 * BENCH_GPTQ_LONG=1 every shape in both orders on 1 and 2 threads, best of BENCH_REPS.
 *
 * Every line carries the ratio to our f32 product (kernels/gemm.h, 1024^3, same thread
 * count) measured just before it. One-thread figures are the calling thread's CPU time
 * (fairer on a shared machine), two-thread figures wall time. Flop counts: the Hessian
 * rows cols^2 (the lower triangle it computes: half of the full 2 rows cols^2 product),
 * timed on a batch after a first one (buffers warm); GPTQ 2/3 cols^3 for the factor
 * (Cholesky and triangular inverse, cols^3/3 each) + rows cols^2 for the sweep. The factor
 * is timed alone first; "total" is the whole mq_quantize_rows call, factor included. Best
 * of BENCH_REPS (2) runs on 4096 x 4096, one run on the larger shapes unless
 * BENCH_GPTQ_LONG=1. */
#include "bench_util.h"
#include "monoquant.h"
#include "kernels/gemm.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <time.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) {
    return (float)((double)(bench_xorshift64(&rng) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void die(mq_ctx *ctx, const char *what) {
    fprintf(stderr, "%s: %s\n", what, mq_ctx_message(ctx));
    exit(1);
}

/* thread CPU time on 1 thread, wall time otherwise */
static double clock_for(int threads) {
    if (threads > 1) return bench_now();
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* our f32 product, GFLOP/s, best of reps */
static double gemm_rate(mq_ctx *ctx, int threads, int reps) {
    int64_t n = 1024;
    float *a = bench_xmalloc((size_t)(n * n) * 4), *b = bench_xmalloc((size_t)(n * n) * 4);
    float *c = bench_xmalloc((size_t)(n * n) * 4);
    for (int64_t i = 0; i < n * n; i++) a[i] = b[i] = c[i] = 1e-3f * frand();
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = clock_for(threads);
        if (mq__gemm_parallel(ctx, n, n, n, a, n, b, n, c, n) != MQ_OK) die(ctx, "gemm");
        t = clock_for(threads) - t;
        best = t < best ? t : best;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * (double)(n * n * n) / best / 1e9;
}

/* H = X^T X / m for m rows of inputs correlated along the channels */
static float *make_hessian(mq_ctx *ctx, int64_t cols, int64_t m) {
    float *x = bench_xmalloc((size_t)(m * cols) * 4), *xt = bench_xmalloc((size_t)(m * cols) * 4);
    for (int64_t r = 0; r < m; r++) {
        float prev = frand();
        for (int64_t c = 0; c < cols; c++) {
            prev = 0.8f * prev + 0.6f * frand();
            x[r * cols + c] = prev * (c % 7 == 0 ? 4.0f : 1.0f) / sqrtf((float)m);
        }
    }
    for (int64_t r = 0; r < m; r++)
        for (int64_t c = 0; c < cols; c++) xt[c * m + r] = x[r * cols + c];
    float *h = calloc((size_t)(cols * cols), 4);
    if (!h || mq__gemm_parallel(ctx, cols, cols, m, xt, m, x, cols, h, cols) != MQ_OK)
        die(ctx, "hessian");
    free(x);
    free(xt);
    return h;
}

static double process_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One calibrator per thread count; a first batch warms its buffers (a calibration feeds
 * many), then the best of reps batches. For 2 threads "cpu" is the process CPU time over the
 * 1-thread time: the extra work of the split (2 / cpu is the scaling on two free cores). */
static void hessian_line(mq_ctx *ctx, int reps) {
    int64_t rows = 2048, cols = 4096;
    float *x = bench_xmalloc((size_t)(rows * cols) * 4);
    for (int64_t i = 0; i < rows * cols; i++) x[i] = frand();
    int64_t shape[2] = {rows, cols};
    double one = 0;
    for (int th = 1; th <= 2; th++) {
        mq_ctx_set_threads(ctx, th);
        double g = gemm_rate(ctx, th, 3), best = 1e30, cpu = 1e30;
        mq_calibrator *cal = NULL;
        if (mq_calibrator_create(ctx, NULL, &cal) || mq_calibrator_set_hessian(cal, 1) ||
            mq_calibrator_add_layer(cal, "fc", cols) ||
            mq_calibrator_update(cal, "fc", MQ_F32, x, 2, shape, -1))
            die(ctx, "calibrator");
        for (int r = 0; r < reps; r++) {
            double t = clock_for(th), c = process_cpu();
            if (mq_calibrator_update(cal, "fc", MQ_F32, x, 2, shape, -1)) die(ctx, "update");
            t = clock_for(th) - t;
            c = process_cpu() - c;
            best = t < best ? t : best;
            cpu = c < cpu ? c : cpu;
        }
        mq_calibrator_free(cal);
        double rate = (double)rows * cols * cols / best / 1e9;
        if (th == 1) one = best;
        printf("hessian 2048x4096 %d th: %.3f s, %.1f GFLOP/s, gemm %.1f GFLOP/s, x gemm %.2f, "
               "x 1 thread %.2f", th, best, rate, g, rate / g, one / best);
        if (th > 1) printf(", cpu %.2f", cpu / one);
        printf("\n");
        fflush(stdout);
    }
    free(x);
}

int main(void) {
    int reps = getenv("BENCH_REPS") ? atoi(getenv("BENCH_REPS")) : 2;
    bool longer = getenv("BENCH_GPTQ_LONG") && atoi(getenv("BENCH_GPTQ_LONG"));
    mq_ctx *ctx = mq_ctx_create();
    static const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    printf("isa %s; 1 thread: thread CPU time, 2 threads: wall time\n",
           mq_isa_name(mq_ctx_isa(ctx)));
    hessian_line(ctx, reps);
    printf("%-13s %-5s %2s %8s %8s %8s %9s %7s\n", "rows x cols", "order", "th", "factor s",
           "total s", "GFLOP/s", "gemm GF/s", "x gemm");
    for (int s = 0; s < 3; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        int sreps = s == 0 || longer ? reps : 1;
        mq_ctx_set_threads(ctx, 0);
        float *h = make_hessian(ctx, cols, 2048);
        float *w = bench_xmalloc((size_t)(rows * cols) * 4);
        for (int64_t i = 0; i < rows * cols; i++) w[i] = 0.02f * frand();
        mq_qspec q;
        mq_qspec_default(&q);
        q.type = MQ_Q_INT4;
        q.granularity = MQ_PER_GROUP;
        q.group_size = 128;
        q.search = MQ_SEARCH_GPTQ;
        mq_calib_data calib;
        mq_calib_data_init(&calib);
        calib.hessian = h;
        int64_t shape[2] = {rows, cols};
        mq_qlayout lay;
        if (mq_qlayout_init(ctx, &q, 2, shape, &lay) != MQ_OK) die(ctx, "layout");
        uint8_t *data = bench_xmalloc((size_t)lay.data_bytes);
        float *scale = bench_xmalloc((size_t)lay.nscales * 4);
        double flop = 2.0 / 3.0 * (double)cols * cols * cols + (double)rows * cols * cols;
        int32_t *perm = NULL;
        if (mq__gptq_order(ctx, h, cols, &perm) != MQ_OK) die(ctx, "order");
        for (int run = 0; run < 4; run++) {
            int ao = run / 2, th = run % 2 + 1;
            if (ao && !longer && (th == 1 || s > 0)) continue; /* keeps `make bench` short */
            mq_ctx_set_threads(ctx, th);
            calib.act_order = ao;
            double g = gemm_rate(ctx, th, 3), tf = 1e30, tt = 1e30;
            for (int r = 0; r < sreps; r++) {
                float *u = NULL;
                double t = clock_for(th);
                if (mq__gptq_factor(ctx, h, cols, ao ? perm : NULL, &u) != MQ_OK)
                    die(ctx, "factor");
                t = clock_for(th) - t;
                tf = t < tf ? t : tf;
                mq__free(ctx, u);
                t = clock_for(th);
                if (mq_quantize_rows(ctx, &q, &lay, &calib, MQ_F32, w, 0, rows, data, scale,
                                     NULL) != MQ_OK)
                    die(ctx, "quantize");
                t = clock_for(th) - t;
                tt = t < tt ? t : tt;
            }
            char name[32];
            snprintf(name, sizeof name, "%lldx%lld", (long long)rows, (long long)cols);
            printf("%-13s %-5s %2d %8.2f %8.2f %8.1f %9.1f %7.2f\n", name, ao ? "act" : "cols",
                   th, tf, tt, flop / tt / 1e9, g, flop / tt / 1e9 / g);
            fflush(stdout);
        }
        mq__free(ctx, perm);
        free(h);
        free(w);
        free(data);
        free(scale);
    }
    mq_ctx_free(ctx);
    return 0;
}
