/* The specification of gemm.h: plain loops, one fmaf chain per element in k order. */
#include "kernels/gemm.h"

#include <math.h>

static void gemm_ref(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    (void)ws;
    for (int64_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        const float *a = A + i * lda;
        /* k outer, j inner: each c[j] still sees its terms in k order */
        for (int64_t k = 0; k < K; k++) {
            const float *b = B + k * ldb;
            float ak = a[k];
            for (int64_t j = 0; j < N; j++) c[j] = fmaf(ak, b[j], c[j]);
        }
    }
}

static void gemm_tn_ref(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    (void)ws;
    for (int64_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        for (int64_t k = 0; k < K; k++) {
            const float *b = B + k * ldb;
            float ak = A[k * lda + i];
            for (int64_t j = 0; j < N; j++) c[j] = fmaf(ak, b[j], c[j]);
        }
    }
}

static void axpy_ref(size_t n, float a, const float *x, float *y) {
    for (size_t i = 0; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

static void add_f64_ref(size_t n, const float *x, double *acc) {
    for (size_t i = 0; i < n; i++) acc[i] += (double)x[i];
}

static void panels_f64_ref(int64_t K, const float *a, int64_t na, int64_t ps, const float *b,
                           double *acc, int64_t ldacc) {
    enum { P = MQ__GEMM_PANEL };
    for (int64_t q = 0; q < na; q++)
        for (int i = 0; i < P; i++)
            for (int j = 0; j < P; j++) {
                float c = 0;
                for (int64_t k = 0; k < K; k++) c = fmaf(a[q * ps + k * P + i], b[k * P + j], c);
                acc[(q * P + i) * ldacc + j] += (double)c;
            }
}

const mq__gemm_fns mq__gemm_ref = {gemm_ref, axpy_ref, gemm_tn_ref, add_f64_ref, panels_f64_ref};

const mq__gemm_fns *mq__gemm_pick(const mq_ctx *ctx) {
    const void *by_level[] = {&mq__gemm_ref, MQ__X86_ONLY(mq__gemm_fns_avx2()),
                              MQ__X86_ONLY(mq__gemm_fns_avx512()),
                              MQ__ARM64_ONLY(mq__gemm_fns_neon()), NULL};
    return (const mq__gemm_fns *)mq__isa_pick(ctx, by_level, 5);
}

typedef struct par_job {
    mq_ctx *ctx;
    const mq__gemm_fns *f;
    const mq__gemm_task *tasks;
    float *ws; /* one MQ__GEMM_WS block per thread */
    int nws;
} par_job;

static mq_status par_range(void *arg, int64_t b, int64_t e, int tid) {
    par_job *j = (par_job *)arg;
    if (tid < 0 || tid >= j->nws)
        return mq__fail(j->ctx, MQ_ERR_INTERNAL, "gemm: worker %d without workspace", tid);
    for (int64_t i = b; i < e; i++) {
        const mq__gemm_task *t = &j->tasks[i];
        if (t->M > 0 && t->N > 0 && t->K > 0)
            j->f->gemm(t->M, t->N, t->K, t->A, t->lda, t->B, t->ldb, t->C, t->ldc,
                       j->ws + (size_t)tid * MQ__GEMM_WS);
    }
    return MQ_OK;
}

mq_status mq__gemm_tasks(mq_ctx *ctx, const mq__gemm_task *tasks, int64_t n) {
    par_job j = {ctx, mq__gemm_pick(ctx), tasks, NULL, mq__thread_count(ctx)};
    void *raw = mq__malloc(ctx, (size_t)j.nws * MQ__GEMM_WS * sizeof(float) + 64);
    if (!raw) return MQ_ERR_NOMEM;
    j.ws = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    mq_status st = mq__parallel_for(ctx, n, 1, par_range, &j);
    mq__free(ctx, raw);
    return st;
}

enum { MAX_SPLIT = 64 };

mq_status mq__gemm_parallel(mq_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *A,
                            int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc) {
    if (M < 1 || N < 1 || K < 1) return MQ_OK;
    /* rows in multiples of the vector kernels' row tiles (6 and 12), a few chunks per thread */
    int64_t grain = M / (4 * (int64_t)mq__thread_count(ctx));
    grain = grain < 48 ? 48 : (grain + 11) / 12 * 12;
    if ((M + grain - 1) / grain > MAX_SPLIT)
        grain = ((M + MAX_SPLIT - 1) / MAX_SPLIT + 11) / 12 * 12;
    mq__gemm_task t[MAX_SPLIT];
    int64_t n = 0;
    for (int64_t r = 0; r < M; r += grain, n++)
        t[n] = (mq__gemm_task){M - r < grain ? M - r : grain, N, K, lda, ldb, ldc, A + r * lda,
                               B, C + r * ldc};
    return mq__gemm_tasks(ctx, t, n);
}
