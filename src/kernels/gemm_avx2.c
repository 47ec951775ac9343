/* AVX2 + FMA path of gemm.h: B packed in 16-column strips, 6x16 register tiles of C, each
 * element's fmaf chain kept in k order (the same bits as gemm_ref.c). */
#include "kernels/gemm.h"
#include "kernels/tile.h"

#include <immintrin.h>
#include <math.h>

/* Lanes [0, n) of a 16-float row, for the last strip of C. */
static inline __m256i lane_mask(int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

/* C[MR][16] (only the first nc columns are real) += A[MR][kc] Bp[kc][16]. */
INLINE void micro(int MR, int64_t kc, const float *a, int64_t lda, const float *bp, float *c,
                  int64_t ldc, int nc) {
    __m256 acc[6][2];
    __m256i m0 = lane_mask(nc), m1 = lane_mask(nc - 8);
    UNROLL
    for (int r = 0; r < MR; r++) {
        if (nc == 16) {
            acc[r][0] = _mm256_loadu_ps(c + r * ldc);
            acc[r][1] = _mm256_loadu_ps(c + r * ldc + 8);
        } else {
            acc[r][0] = _mm256_maskload_ps(c + r * ldc, m0);
            acc[r][1] = _mm256_maskload_ps(c + r * ldc + 8, m1);
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(bp + 16 * k), b1 = _mm256_load_ps(bp + 16 * k + 8);
        UNROLL
        for (int r = 0; r < MR; r++) {
            __m256 av = _mm256_broadcast_ss(a + r * lda + k);
            acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    UNROLL
    for (int r = 0; r < MR; r++) {
        if (nc == 16) {
            _mm256_storeu_ps(c + r * ldc, acc[r][0]);
            _mm256_storeu_ps(c + r * ldc + 8, acc[r][1]);
        } else {
            _mm256_maskstore_ps(c + r * ldc, m0, acc[r][0]);
            _mm256_maskstore_ps(c + r * ldc + 8, m1, acc[r][1]);
        }
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
            for (int64_t k = 0; k < kc; k++) {
                _mm256_store_ps(d + 16 * k, _mm256_loadu_ps(src + k * ldb));
                _mm256_store_ps(d + 16 * k + 8, _mm256_loadu_ps(src + k * ldb + 8));
            }
        } else {
            for (int64_t k = 0; k < kc; k++)
                for (int64_t j = 0; j < 16; j++) d[16 * k + j] = j < w ? src[k * ldb + j] : 0.0f;
        }
    }
}

static void gemm_avx2(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
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

static void axpy_avx2(size_t n, float a, const float *x, float *y) {
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

static const mq__gemm_fns fns = {gemm_avx2, axpy_avx2};

const mq__gemm_fns *mq__gemm_fns_avx2(void) { return &fns; }
