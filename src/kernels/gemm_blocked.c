/* The blocking shared by the vector paths of gemm.h; the tile kernels are theirs. */
#include "kernels/gemm.h"

/* Bp[s][k][16] = B[k][16 s + j], zero beyond column n. */
static void pack_b(int64_t kc, int64_t n, const float *B, int64_t ldb, float *bp,
                   mq__gemm_pack16 pack16) {
    for (int64_t s = 0; s * 16 < n; s++) {
        int64_t w = n - 16 * s < 16 ? n - 16 * s : 16;
        float *d = bp + s * kc * 16;
        const float *src = B + 16 * s;
        if (w == 16) {
            pack16(kc, src, ldb, d);
        } else {
            for (int64_t k = 0; k < kc; k++)
                for (int64_t j = 0; j < 16; j++) d[16 * k + j] = j < w ? src[k * ldb + j] : 0.0f;
        }
    }
}

void mq__gemm_blocked(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc, float *ws,
                      const mq__gemm_micro micros[7], mq__gemm_pack16 pack16) {
    for (int64_t j0 = 0; j0 < N; j0 += MQ__GEMM_NC) {
        int64_t nc = N - j0 < MQ__GEMM_NC ? N - j0 : MQ__GEMM_NC;
        for (int64_t k0 = 0; k0 < K; k0 += MQ__GEMM_KC) {
            int64_t kc = K - k0 < MQ__GEMM_KC ? K - k0 : MQ__GEMM_KC;
            pack_b(kc, nc, B + k0 * ldb + j0, ldb, ws, pack16);
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
