/* f32 matrix products for the GPTQ factorization and sweep. Every output element is one
 * fmaf chain in k order, c = C[i][j]; for k = 0..K-1: c = fmaf(A[i][k], B[k][j], c), so the
 * bits depend neither on the tiling nor on the thread count. gemm_ref.c is the specification;
 * the vector paths give the same bits. */
#ifndef MQ_KERNELS_GEMM_H
#define MQ_KERNELS_GEMM_H

#include "common/internal.h"

/* Floats of workspace a gemm call needs (packed panels of B, and one row tile of A for
 * gemm_tn). */
enum {
    MQ__GEMM_KC = 256,
    MQ__GEMM_NC = 256,
    MQ__GEMM_MR = 16, /* rows of the largest tile, rounded up */
    MQ__GEMM_PANEL = 32, /* channels per panel of panels_f64 */
    MQ__GEMM_WS = MQ__GEMM_KC * MQ__GEMM_NC + MQ__GEMM_MR * MQ__GEMM_KC
};

typedef struct mq__gemm_fns {
    /* C[M][N] (row stride ldc) += A[M][K] (lda) B[K][N] (ldb), as above; ws holds
     * MQ__GEMM_WS floats, 32-byte aligned. */
    void (*gemm)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float *C, int64_t ldc, float *ws);
    /* y[i] = fmaf(a, x[i], y[i]) for i < n. */
    void (*axpy)(size_t n, float a, const float *x, float *y);
    /* As gemm with A given transposed, stored K x M (row stride lda): C += A^T B, each
     * c = fmaf(A[k][i], B[k][j], c) in k order (X^T X without a transposed copy). */
    void (*gemm_tn)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                    const float *B, int64_t ldb, float *C, int64_t ldc, float *ws);
    /* acc[i] += (double)x[i] for i < n (exact conversion, one rounding: the same bits on
     * every path). */
    void (*add_f64)(size_t n, const float *x, double *acc);
    /* Optional (NULL: a zeroed C, gemm_tn and add_f64 instead): one f32 chunk of X^T X added
     * into f64, with X (K x channels) stored in panels of P = MQ__GEMM_PANEL channels, element
     * (k, j) of a panel at p[k P + j]. For the panels q < na of a (panel q at a + q ps), the
     * one panel b, and i, j < P: acc[q P + i][j] (row stride ldacc) += (double)c, c the chain
     * of gemm_tn from zero, c = fmaf(a[q ps + k P + i], b[k P + j], c) for k = 0..K-1: the
     * same bits as the composition. */
    void (*panels_f64)(int64_t K, const float *a, int64_t na, int64_t ps, const float *b,
                       double *acc, int64_t ldacc);
} mq__gemm_fns;

MQ_HIDDEN const mq__gemm_fns *mq__gemm_pick(const mq_ctx *ctx);
MQ_HIDDEN extern const mq__gemm_fns mq__gemm_ref;
/* NULL when the CPU lacks what the path needs. */
MQ_HIDDEN const mq__gemm_fns *mq__gemm_fns_avx2(void);
MQ_HIDDEN const mq__gemm_fns *mq__gemm_fns_avx512(void);
MQ_HIDDEN const mq__gemm_fns *mq__gemm_fns_neon(void);

/* The vector paths' shared blocking: B packed into panels of nr (16 or 32) columns and
 * MQ__GEMM_KC rows (zero beyond column N), C computed in tiles of up to mr rows x nr columns
 * by micros[rows]. A micro kernel adds A[rows][kc] times the panel bp[kc][nr] to C, columns
 * below w only; pack copies one full panel: d[nr k + j] = src[k ldb + j]. */
typedef void (*mq__gemm_micro)(int64_t kc, const float *A, int64_t lda, const float *bp,
                               float *C, int64_t ldc, int w);
typedef void (*mq__gemm_pack)(int64_t kc, const float *src, int64_t ldb, float *d);
typedef struct mq__gemm_tiling {
    int mr, nr;
    const mq__gemm_micro *micros; /* mr + 1 entries, [0] unused */
    mq__gemm_pack pack;
    /* Optional (NULL: A's row tile is copied row-major first): as micros, with A given
     * transposed, element (r, k) at A[k lda + r]. */
    const mq__gemm_micro *micros_t;
} mq__gemm_tiling;
/* trans_a: A stored K x M (gemm_tn); each row tile of A is copied row-major first. */
MQ_HIDDEN void mq__gemm_blocked(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                                const float *B, int64_t ldb, float *C, int64_t ldc, float *ws,
                                const mq__gemm_tiling *t, bool trans_a);

/* Products run as one parallel job, one task per chunk (callers outside a parallel job). */
typedef struct mq__gemm_task {
    int64_t M, N, K, lda, ldb, ldc;
    const float *A, *B;
    float *C;
} mq__gemm_task;
MQ_HIDDEN mq_status mq__gemm_tasks(mq_ctx *ctx, const mq__gemm_task *tasks, int64_t n);

/* One product with the rows of C split over the context's threads. */
MQ_HIDDEN mq_status mq__gemm_parallel(mq_ctx *ctx, int64_t M, int64_t N, int64_t K,
                                      const float *A, int64_t lda, const float *B, int64_t ldb,
                                      float *C, int64_t ldc);

#endif
