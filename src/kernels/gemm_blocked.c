/* The blocking shared by the vector paths of gemm.h; the tile kernels are theirs. */
#include "kernels/gemm.h"

/* Bp[s][k][nr] = B[k][nr s + j], zero beyond column n. */
static void pack_b(int64_t kc, int64_t n, const float *B, int64_t ldb, float *bp,
                   const mq__gemm_tiling *t) {
    int nr = t->nr;
    for (int64_t s = 0; s * nr < n; s++) {
        int64_t w = n - nr * s < nr ? n - nr * s : nr;
        float *d = bp + s * kc * nr;
        const float *src = B + nr * s;
        if (w == nr) {
            t->pack(kc, src, ldb, d);
        } else {
            for (int64_t k = 0; k < kc; k++)
                for (int64_t j = 0; j < nr; j++) d[nr * k + j] = j < w ? src[k * ldb + j] : 0.0f;
        }
    }
}

void mq__gemm_blocked(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc, float *ws,
                      const mq__gemm_tiling *t, bool trans_a) {
    int mr = t->mr, nr = t->nr;
    float *pa = ws + MQ__GEMM_KC * MQ__GEMM_NC; /* a row tile of A^T, row-major */
    for (int64_t j0 = 0; j0 < N; j0 += MQ__GEMM_NC) {
        int64_t nc = N - j0 < MQ__GEMM_NC ? N - j0 : MQ__GEMM_NC;
        for (int64_t k0 = 0; k0 < K; k0 += MQ__GEMM_KC) {
            int64_t kc = K - k0 < MQ__GEMM_KC ? K - k0 : MQ__GEMM_KC;
            pack_b(kc, nc, B + k0 * ldb + j0, ldb, ws, t);
            for (int64_t i = 0; i < M; i += mr) {
                int rows = M - i < mr ? (int)(M - i) : mr;
                const float *a = A + i * lda + k0;
                int64_t la = lda;
                const mq__gemm_micro *micros = t->micros;
                if (trans_a && t->micros_t) {
                    a = A + k0 * lda + i;
                    micros = t->micros_t;
                } else if (trans_a) {
                    for (int64_t k = 0; k < kc; k++) {
                        const float *src = A + (k0 + k) * lda + i;
                        for (int r = 0; r < rows; r++) pa[r * kc + k] = src[r];
                    }
                    a = pa;
                    la = kc;
                }
                for (int64_t s = 0; s * nr < nc; s++) {
                    int w = nc - nr * s < nr ? (int)(nc - nr * s) : nr;
                    micros[rows](kc, a, la, ws + s * kc * nr, C + i * ldc + j0 + nr * s, ldc, w);
                }
            }
        }
    }
}
