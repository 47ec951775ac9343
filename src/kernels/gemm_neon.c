/* NEON path of gemm.h (ARM64 baseline): B packed in 16-column strips, 6x16 register tiles of
 * C (four registers per row), each element's fmaf chain kept in k order (the same bits as
 * gemm_ref.c). */
#include "kernels/gemm.h"
#include "kernels/tile.h"

#include <arm_neon.h>
#include <math.h>

/* C[MR][16] (only the first nc columns are real) += A[MR][kc] Bp[kc][16]. */
INLINE void micro(int MR, int64_t kc, const float *a, int64_t lda, const float *bp, float *c,
                  int64_t ldc, int nc) {
    float32x4_t acc[6][4];
    float edge[6][16]; /* a partial strip's rows, padded (no masked loads on NEON) */
    UNROLL
    for (int r = 0; r < MR; r++) {
        const float *row = c + r * ldc;
        if (nc < 16) {
            for (int j = 0; j < 16; j++) edge[r][j] = j < nc ? row[j] : 0.0f;
            row = edge[r];
        }
        UNROLL
        for (int q = 0; q < 4; q++) acc[r][q] = vld1q_f32(row + 4 * q);
    }
    for (int64_t k = 0; k < kc; k++) {
        float32x4_t b[4];
        UNROLL
        for (int q = 0; q < 4; q++) b[q] = vld1q_f32(bp + 16 * k + 4 * q);
        UNROLL
        for (int r = 0; r < MR; r++) {
            float32x4_t av = vdupq_n_f32(a[r * lda + k]);
            UNROLL
            for (int q = 0; q < 4; q++) acc[r][q] = vfmaq_f32(acc[r][q], av, b[q]);
        }
    }
    UNROLL
    for (int r = 0; r < MR; r++) {
        float *row = nc < 16 ? edge[r] : c + r * ldc;
        UNROLL
        for (int q = 0; q < 4; q++) vst1q_f32(row + 4 * q, acc[r][q]);
        if (nc < 16)
            for (int j = 0; j < nc; j++) c[r * ldc + j] = edge[r][j];
    }
}

#define MICRO(MR)                                                                          \
    static void micro##MR(int64_t kc, const float *a, int64_t lda, const float *bp, float *c, \
                          int64_t ldc, int nc) {                                           \
        micro(MR, kc, a, lda, bp, c, ldc, nc);                                             \
    }
MICRO(1)
MICRO(2)
MICRO(3)
MICRO(4)
MICRO(5)
MICRO(6)

static const mq__gemm_micro micros[7] = {NULL, micro1, micro2, micro3, micro4, micro5, micro6};

static void pack16(int64_t kc, const float *src, int64_t ldb, float *d) {
    for (int64_t k = 0; k < kc; k++)
        for (int q = 0; q < 4; q++) vst1q_f32(d + 16 * k + 4 * q, vld1q_f32(src + k * ldb + 4 * q));
}

static const mq__gemm_tiling tiling = {6, 16, micros, pack16, NULL};

static void gemm_neon(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    mq__gemm_blocked(M, N, K, A, lda, B, ldb, C, ldc, ws, &tiling, false);
}

static void gemm_tn_neon(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    mq__gemm_blocked(M, N, K, A, lda, B, ldb, C, ldc, ws, &tiling, true);
}

static void axpy_neon(size_t n, float a, const float *x, float *y) {
    float32x4_t va = vdupq_n_f32(a);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

static void add_f64_neon(size_t n, const float *x, double *acc) {
    size_t i = 0;
    for (; i + 2 <= n; i += 2)
        vst1q_f64(acc + i, vaddq_f64(vld1q_f64(acc + i), vcvt_f64_f32(vld1_f32(x + i))));
    for (; i < n; i++) acc[i] += (double)x[i];
}

static const mq__gemm_fns fns = {gemm_neon, axpy_neon, gemm_tn_neon, add_f64_neon,
                                 NULL /* panels_f64 */};

const mq__gemm_fns *mq__gemm_fns_neon(void) { return &fns; }
