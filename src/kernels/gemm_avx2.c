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

static const mq__gemm_micro micros[7] = {NULL, micro1, micro2, micro3, micro4, micro5, micro6};

static void pack16(int64_t kc, const float *src, int64_t ldb, float *d) {
    for (int64_t k = 0; k < kc; k++) {
        _mm256_store_ps(d + 16 * k, _mm256_loadu_ps(src + k * ldb));
        _mm256_store_ps(d + 16 * k + 8, _mm256_loadu_ps(src + k * ldb + 8));
    }
}

static const mq__gemm_tiling tiling = {6, 16, micros, pack16, NULL};

static void gemm_avx2(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    mq__gemm_blocked(M, N, K, A, lda, B, ldb, C, ldc, ws, &tiling, false);
}

static void gemm_tn_avx2(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                         const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    mq__gemm_blocked(M, N, K, A, lda, B, ldb, C, ldc, ws, &tiling, true);
}

static void axpy_avx2(size_t n, float a, const float *x, float *y) {
    __m256 va = _mm256_set1_ps(a);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

static void add_f64_avx2(size_t n, const float *x, double *acc) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_pd(acc + i, _mm256_add_pd(_mm256_loadu_pd(acc + i),
                                                _mm256_cvtps_pd(_mm_loadu_ps(x + i))));
    for (; i < n; i++) acc[i] += (double)x[i];
}

static const mq__gemm_fns fns = {gemm_avx2, axpy_avx2, gemm_tn_avx2, add_f64_avx2,
                                 NULL /* panels_f64 */};

const mq__gemm_fns *mq__gemm_fns_avx2(void) { return &fns; }
