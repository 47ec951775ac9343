/* AVX-512 path of gemm.h: B packed in 32-column panels, register tiles of up to MR rows x 32
 * columns of C (two zmm per row: 2 MR accumulators, enough independent FMA chains for two
 * full-width FMA pipes), each element's fmaf chain kept in k order (the same bits as
 * gemm_ref.c). */
#include "kernels/gemm.h"
#include "kernels/tile.h"

#include <immintrin.h>
#include <math.h>

enum { MR = 12 };

/* tile.h's UNROLL stops at 8; the row loops here must unroll fully up to MR */
#if defined(__clang__)
#define UNROLL_MR _Pragma("clang loop unroll(full)")
#else
#define UNROLL_MR _Pragma("GCC unroll 16")
#endif

/* Lanes [0, n) of 16, for the last panel of C. */
static inline __mmask16 lanes(int n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* C[rows][32] (only the first nc columns are real) += A[rows][kc] Bp[kc][32]; with ta, A is
 * given transposed (element (r, k) at a[k lda + r]). */
INLINE void micro(int rows, bool ta, int64_t kc, const float *a, int64_t lda, const float *bp,
                  float *c, int64_t ldc, int nc) {
    __m512 acc[MR][2];
    __mmask16 m0 = lanes(nc), m1 = lanes(nc - 16);
    UNROLL_MR
    for (int r = 0; r < rows; r++) {
        if (nc == 32) {
            acc[r][0] = _mm512_loadu_ps(c + r * ldc);
            acc[r][1] = _mm512_loadu_ps(c + r * ldc + 16);
        } else {
            acc[r][0] = _mm512_maskz_loadu_ps(m0, c + r * ldc);
            acc[r][1] = _mm512_maskz_loadu_ps(m1, c + r * ldc + 16);
        }
    }
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(bp + 32 * k), b1 = _mm512_loadu_ps(bp + 32 * k + 16);
        UNROLL_MR
        for (int r = 0; r < rows; r++) {
            __m512 av = _mm512_set1_ps(ta ? a[k * lda + r] : a[r * lda + k]);
            acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
        }
    }
    UNROLL_MR
    for (int r = 0; r < rows; r++) {
        if (nc == 32) {
            _mm512_storeu_ps(c + r * ldc, acc[r][0]);
            _mm512_storeu_ps(c + r * ldc + 16, acc[r][1]);
        } else {
            _mm512_mask_storeu_ps(c + r * ldc, m0, acc[r][0]);
            _mm512_mask_storeu_ps(c + r * ldc + 16, m1, acc[r][1]);
        }
    }
}

#define MICRO(R)                                                                           \
    static void micro##R(int64_t kc, const float *a, int64_t lda, const float *bp, float *c, \
                         int64_t ldc, int nc) {                                            \
        micro(R, false, kc, a, lda, bp, c, ldc, nc);                                       \
    }                                                                                      \
    static void micro##R##t(int64_t kc, const float *a, int64_t lda, const float *bp,        \
                            float *c, int64_t ldc, int nc) {                               \
        micro(R, true, kc, a, lda, bp, c, ldc, nc);                                        \
    }
MICRO(1)
MICRO(2)
MICRO(3)
MICRO(4)
MICRO(5)
MICRO(6)
MICRO(7)
MICRO(8)
MICRO(9)
MICRO(10)
MICRO(11)
MICRO(12)

static const mq__gemm_micro micros[MR + 1] = {NULL,    micro1,  micro2, micro3, micro4,
                                              micro5,  micro6,  micro7, micro8, micro9,
                                              micro10, micro11, micro12};
static const mq__gemm_micro micros_t[MR + 1] = {NULL,     micro1t,  micro2t, micro3t, micro4t,
                                                micro5t,  micro6t,  micro7t, micro8t, micro9t,
                                                micro10t, micro11t, micro12t};

static void pack32(int64_t kc, const float *src, int64_t ldb, float *d) {
    for (int64_t k = 0; k < kc; k++) {
        _mm512_storeu_ps(d + 32 * k, _mm512_loadu_ps(src + k * ldb));
        _mm512_storeu_ps(d + 32 * k + 16, _mm512_loadu_ps(src + k * ldb + 16));
    }
}

static const mq__gemm_tiling tiling = {MR, 32, micros, pack32, micros_t};

static void gemm_avx512(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    mq__gemm_blocked(M, N, K, A, lda, B, ldb, C, ldc, ws, &tiling, false);
}

static void gemm_tn_avx512(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                           const float *B, int64_t ldb, float *C, int64_t ldc, float *ws) {
    mq__gemm_blocked(M, N, K, A, lda, B, ldb, C, ldc, ws, &tiling, true);
}

static void axpy_avx512(size_t n, float a, const float *x, float *y) {
    __m512 va = _mm512_set1_ps(a);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = lanes((int)(n - i));
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i),
                                                        _mm512_maskz_loadu_ps(m, y + i)));
    }
}

static void add_f64_avx512(size_t n, const float *x, double *acc) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm512_storeu_pd(acc + i, _mm512_add_pd(_mm512_loadu_pd(acc + i),
                                                _mm512_cvtps_pd(_mm256_loadu_ps(x + i))));
    for (; i < n; i++) acc[i] += (double)x[i];
}

/* acc[rows][32] += (double)(A^T Bp over kc, f32 from zero); A^T element (r, k) at a[32 k + r]
 * (a panel of gemm.h's panels_f64). */
INLINE void micro_f64(int rows, int64_t kc, const float *a, const float *bp, double *acc,
                      int64_t ldacc) {
    __m512 c[MR][2];
    UNROLL_MR
    for (int r = 0; r < rows; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(bp + 32 * k), b1 = _mm512_loadu_ps(bp + 32 * k + 16);
        UNROLL_MR
        for (int r = 0; r < rows; r++) {
            __m512 av = _mm512_set1_ps(a[32 * k + r]);
            c[r][0] = _mm512_fmadd_ps(av, b0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(av, b1, c[r][1]);
        }
    }
    UNROLL_MR
    for (int r = 0; r < rows; r++) {
        double *d = acc + r * ldacc;
        for (int h = 0; h < 2; h++) {
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(c[r][h]));
            __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(c[r][h], 1));
            _mm512_storeu_pd(d + 16 * h, _mm512_add_pd(_mm512_loadu_pd(d + 16 * h), lo));
            _mm512_storeu_pd(d + 16 * h + 8, _mm512_add_pd(_mm512_loadu_pd(d + 16 * h + 8), hi));
        }
    }
}

_Static_assert(MQ__GEMM_PANEL == 32 && MR == 12, "a panel's rows as tiles of 12, 12 and 8");

static void panels_f64_avx512(int64_t K, const float *a, int64_t na, int64_t ps, const float *b,
                              double *acc, int64_t ldacc) {
    for (int64_t q = 0; q < na; q++) {
        const float *aq = a + q * ps;
        double *d = acc + q * 32 * ldacc;
        micro_f64(12, K, aq, b, d, ldacc);
        micro_f64(12, K, aq + 12, b, d + 12 * ldacc, ldacc);
        micro_f64(8, K, aq + 24, b, d + 24 * ldacc, ldacc);
    }
}

static const mq__gemm_fns fns = {gemm_avx512, axpy_avx512, gemm_tn_avx512, add_f64_avx512,
                                 panels_f64_avx512};

const mq__gemm_fns *mq__gemm_fns_avx512(void) { return &fns; }
