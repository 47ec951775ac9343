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

typedef void (*micro_fn)(int64_t, const float *, int64_t, const float *, float *, int64_t, int);
static const micro_fn micros[7] = {NULL, micro1, micro2, micro3, micro4, micro5, micro6};

/* Bp[s][k][16] = B[k][16 s + j], zero beyond column n. */
static void pack_b(int64_t kc, int64_t n, const float *B, int64_t ldb, float *bp) {
    for (int64_t s = 0; s * 16 < n; s++) {
        int64_t w = n - 16 * s < 16 ? n - 16 * s : 16;
        float *d = bp + s * kc * 16;
        const float *src = B + 16 * s;
        if (w == 16) {
            for (int64_t k = 0; k < kc; k++)
                for (int q = 0; q < 4; q++) vst1q_f32(d + 16 * k + 4 * q, vld1q_f32(src + k * ldb + 4 * q));
        } else {
            for (int64_t k = 0; k < kc; k++)
                for (int64_t j = 0; j < 16; j++) d[16 * k + j] = j < w ? src[k * ldb + j] : 0.0f;
        }
    }
}

static void gemm_neon(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    for (int64_t j0 = 0; j0 < N; j0 += MQ__GEMM_NC) {
        int64_t nc = N - j0 < MQ__GEMM_NC ? N - j0 : MQ__GEMM_NC;
        for (int64_t k0 = 0; k0 < K; k0 += MQ__GEMM_KC) {
            int64_t kc = K - k0 < MQ__GEMM_KC ? K - k0 : MQ__GEMM_KC;
            pack_b(kc, nc, B + k0 * ldb + j0, ldb, ws);
            for (int64_t i = 0; i < M; i += 6) {
                int mr = M - i < 6 ? (int)(M - i) : 6;
                for (int64_t s = 0; s * 16 < nc; s++) {
                    int w = nc - 16 * s < 16 ? (int)(nc - 16 * s) : 16;
                    micros[mr](kc, A + i * lda + k0, lda, ws + s * kc * 16,
                               C + i * ldc + j0 + 16 * s, ldc, w);
                }
            }
        }
    }
}

static void axpy_neon(size_t n, float a, const float *x, float *y) {
    float32x4_t va = vdupq_n_f32(a);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_f32(vld1q_f32(y + i), va, vld1q_f32(x + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

static const mq__gemm_fns fns = {gemm_neon, axpy_neon};

const mq__gemm_fns *mq__gemm_fns_neon(void) { return &fns; }
