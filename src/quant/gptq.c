/* The inverse-Hessian factor of GPTQ (docs/QUANTIZATION.md): U upper triangular with
 * U^T U = (H + damp I)^-1, in f32, of H or of H with rows and columns in act-order. Row i of U holds what column i's rounding error
 * contributes to the later columns (U[i][j] / U[i][i]).
 *
 * With P the order-reversing permutation, P H P = R R^T (R lower) gives H = V V^T for the
 * upper V = P R P, and U = V^-1 = P R^-1 P: one Cholesky factorization and one triangular
 * inverse, both blocked (NB columns) in one cols x cols buffer, the reversal being the
 * reversal of the flat array. The bulk of the work is f32 products (kernels/gemm.h); the
 * NB x NB diagonal blocks are factored and inverted in f64. Every step has a fixed order, so
 * the bytes depend neither on the thread count nor on the instruction set. */
#include "quant/quant_internal.h"
#include "kernels/gemm.h"
#include "quant/gptq_cols.h"

#include <float.h>
#include <math.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

enum { NB = 128 };

/* In place: lower Cholesky factor of the n x n (n <= NB) lower triangle in d (row stride NB).
 * Returns the first column whose pivot is not positive (or not finite), or -1. */
static int chol_block(double *d, int n, double *pivot) {
    for (int j = 0; j < n; j++) {
        double *rj = d + j * NB;
        double s = rj[j];
        for (int k = 0; k < j; k++) s -= rj[k] * rj[k];
        if (!(s > 0.0) || !isfinite(s)) {
            *pivot = s;
            return j;
        }
        double l = sqrt(s), inv = 1.0 / l;
        rj[j] = l;
        for (int i = j + 1; i < n; i++) {
            double *ri = d + i * NB;
            double t = ri[j];
            for (int k = 0; k < j; k++) t -= ri[k] * rj[k];
            ri[j] = t * inv;
        }
    }
    return -1;
}

/* x = l^-1 for the lower n x n block l (row stride NB), row by row; x's upper part is 0. */
static void inv_block(const double *l, int n, double *x) {
    memset(x, 0, sizeof(double) * NB * NB);
    for (int i = 0; i < n; i++) {
        double *xi = x + i * NB;
        const double *li = l + i * NB;
        for (int k = 0; k < i; k++) {
            const double *xk = x + k * NB;
            for (int j = 0; j <= k; j++) xi[j] += li[k] * xk[j];
        }
        double inv = 1.0 / li[i];
        for (int j = 0; j < i; j++) xi[j] = -xi[j] * inv;
        xi[i] = inv;
    }
}

/* Block (j0, j0) of a (jb x jb) into d as doubles. */
static void load_block(const float *a, size_t n, int64_t j0, int jb, double *d) {
    for (int r = 0; r < jb; r++)
        for (int c = 0; c <= r; c++) d[r * NB + c] = (double)a[((size_t)j0 + r) * n + j0 + c];
}

static void store_block(float *a, size_t n, int64_t j0, int jb, const double *d) {
    for (int r = 0; r < jb; r++)
        for (int c = 0; c < jb; c++)
            a[((size_t)j0 + r) * n + j0 + c] = c <= r ? (float)d[r * NB + c] : 0.0f;
}

typedef struct work {
    float *a;       /* n x n */
    float *t;       /* n x NB: a panel */
    float *bt;      /* n x NB: a packed operand */
    float *xb;      /* NB x NB */
    double *d, *x;  /* NB x NB */
    mq__gemm_task *tasks; /* n / NB + 1 */
    float damp;
} work;

static mq_status not_finite(mq_ctx *ctx, size_t r, size_t c, float v) {
    return mq__fail(ctx, MQ_ERR_QUANT, "quantize: hessian[%zu][%zu] holds %s", r, c,
                    isnan(v) ? "a NaN" : "an Inf");
}

/* P H P into a (lower triangle, upper zero), checked, with zero diagonal entries set to 1
 * and the dampening added; with `perm`, of the permuted H[perm[i]][perm[j]]. */
static mq_status load_reversed(mq_ctx *ctx, const float *h, int64_t cols, const int32_t *perm,
                               float *a, float *damp_out) {
    size_t n = (size_t)cols;
    for (size_t i = 0; i < n; i++) memset(a + i * n + i + 1, 0, (n - i - 1) * sizeof(float));
    /* a[i][j] = h[n-1-j][n-1-i] for j <= i (H's lower triangle), in 16 x 16 tiles of h: the
     * writes go down columns of a, a few pages at a time */
    for (size_t r0 = 0; r0 < n; r0 += 16)
        for (size_t c0 = 0; c0 <= r0; c0 += 16)
            for (size_t hr = r0; hr < n && hr < r0 + 16; hr++)
                for (size_t hc = c0; hc <= hr && hc < c0 + 16; hc++) {
                    size_t pr = hr, pc = hc;
                    if (perm) { /* the lower-triangle entry of H[perm[hr]][perm[hc]] */
                        pr = (size_t)perm[hr], pc = (size_t)perm[hc];
                        if (pr < pc) pr = (size_t)perm[hc], pc = (size_t)perm[hr];
                    }
                    float v = h[pr * n + pc];
                    if (!isfinite(v)) return not_finite(ctx, pr, pc, v);
                    a[(n - 1 - hc) * n + (n - 1 - hr)] = v;
                }
    double mean = 0;
    for (size_t i = 0; i < n; i++) {
        if (a[i * n + i] == 0.0f) a[i * n + i] = 1.0f; /* a channel never active */
        mean += (double)a[i * n + i];
    }
    float damp = (float)(0.01 * mean / (double)n);
    for (size_t i = 0; i < n; i++) a[i * n + i] += damp;
    *damp_out = damp;
    return MQ_OK;
}

/* a = R, the lower Cholesky factor, left-looking by block columns. */
static mq_status cholesky(mq_ctx *ctx, work *w, int64_t cols, const int32_t *perm) {
    size_t n = (size_t)cols;
    float *a = w->a;
    for (int64_t j0 = 0; j0 < cols; j0 += NB) {
        int jb = cols - j0 < NB ? (int)(cols - j0) : NB;
        int64_t j1 = j0 + jb;
        if (j0 > 0) { /* columns [j0, j1) -= L[j0:, :j0] L[j0:j1, :j0]^T */
            for (int64_t k0 = 0; k0 < j0; k0 += 16) /* in 16-row strips of bt */
                for (int c = 0; c < jb; c++) {
                    const float *row = a + ((size_t)j0 + c) * n;
                    for (int64_t k = k0; k < j0 && k < k0 + 16; k++) w->bt[k * jb + c] = -row[k];
                }
            MQ_TRY(mq__gemm_parallel(ctx, cols - j0, jb, j0, a + j0 * n, (int64_t)n, w->bt, jb,
                                     a + j0 * n + j0, (int64_t)n));
        }
        load_block(a, n, j0, jb, w->d);
        double pivot = 0;
        int bad = chol_block(w->d, jb, &pivot);
        if (bad >= 0) {
            int64_t col = cols - 1 - (j0 + bad);
            return mq__fail(ctx, MQ_ERR_QUANT, "quantize: the Hessian is not positive definite "
                            "after dampening by %g (pivot %g at column %lld)",
                            (double)w->damp, pivot, (long long)(perm ? perm[col] : col));
        }
        store_block(a, n, j0, jb, w->d);
        if (j1 < cols) { /* rows below: P = P L_JJ^-T */
            inv_block(w->d, jb, w->x);
            for (int k = 0; k < jb; k++)
                for (int c = 0; c < jb; c++) w->xb[k * jb + c] = (float)w->x[c * NB + k];
            int64_t m = cols - j1;
            memset(w->t, 0, (size_t)m * (size_t)jb * sizeof(float));
            MQ_TRY(mq__gemm_parallel(ctx, m, jb, jb, a + j1 * n + j0, (int64_t)n, w->xb, jb,
                                     w->t, jb));
            for (int64_t r = 0; r < m; r++)
                memcpy(a + (j1 + r) * n + j0, w->t + r * jb, (size_t)jb * sizeof(float));
        }
    }
    return MQ_OK;
}

/* a = R^-1 in place, by block columns from the last: X21 = -(X22 R21) X11. The upper
 * triangle stays zero, so the triangular products run over whole blocks. */
static mq_status invert(mq_ctx *ctx, work *w, int64_t cols) {
    size_t n = (size_t)cols;
    float *a = w->a;
    int64_t last = (cols - 1) / NB * NB;
    for (int64_t j0 = last; j0 >= 0; j0 -= NB) {
        int jb = cols - j0 < NB ? (int)(cols - j0) : NB;
        int64_t j1 = j0 + jb, m = cols - j1;
        load_block(a, n, j0, jb, w->d);
        inv_block(w->d, jb, w->x);
        if (m > 0) {
            /* t = X22 P, one task per block row of X22 (rows r0..r1 read P rows j1..r1) */
            memset(w->t, 0, (size_t)m * (size_t)jb * sizeof(float));
            int64_t nt = 0;
            for (int64_t r0 = j1; r0 < cols; r0 += NB, nt++) {
                int64_t r1 = cols - r0 < NB ? cols : r0 + NB;
                w->tasks[nt] = (mq__gemm_task){r1 - r0, jb, r1 - j1, (int64_t)n, (int64_t)n, jb,
                                               a + r0 * n + j1, a + j1 * n + j0,
                                               w->t + (r0 - j1) * jb};
            }
            MQ_TRY(mq__gemm_tasks(ctx, w->tasks, nt));
            /* P = -t X11 */
            for (int k = 0; k < jb; k++)
                for (int c = 0; c < jb; c++) w->xb[k * jb + c] = -(float)w->x[k * NB + c];
            for (int64_t r = 0; r < m; r++)
                memset(a + (j1 + r) * n + j0, 0, (size_t)jb * sizeof(float));
            MQ_TRY(mq__gemm_parallel(ctx, m, jb, jb, w->t, jb, w->xb, jb, a + j1 * n + j0,
                                     (int64_t)n));
        }
        store_block(a, n, j0, jb, w->x);
    }
    return MQ_OK;
}

/* Decreasing diagonal, ties in column order: a total order, so the permutation does not
 * depend on the sort. */
static bool before(const float *d, int32_t i, int32_t j) {
    return d[i] != d[j] ? d[i] > d[j] : i < j;
}

/* Merge sort of idx by `before`. */
static void sort_order(int32_t *idx, int32_t *tmp, size_t n, const float *d) {
    if (n < 2) return;
    size_t m = n / 2;
    sort_order(idx, tmp, m, d);
    sort_order(idx + m, tmp, n - m, d);
    size_t i = 0, j = m, k = 0;
    while (i < m && j < n) tmp[k++] = before(d, idx[j], idx[i]) ? idx[j++] : idx[i++];
    while (i < m) tmp[k++] = idx[i++];
    while (j < n) tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof *idx);
}

mq_status mq__gptq_order(mq_ctx *ctx, const float *h, int64_t cols, int32_t **out) {
    *out = NULL;
    size_t n = (size_t)cols;
    if (cols < 1 || cols > INT32_MAX)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantize: act-order over %lld columns",
                        (long long)cols);
    float *d = (float *)mq__malloc(ctx, n * sizeof(float));
    int32_t *idx = (int32_t *)mq__malloc(ctx, n * sizeof(int32_t));
    int32_t *tmp = (int32_t *)mq__malloc(ctx, n * sizeof(int32_t));
    mq_status st = d && idx && tmp ? MQ_OK : MQ_ERR_NOMEM;
    for (size_t i = 0; st == MQ_OK && i < n; i++) {
        float v = h[i * n + i];
        if (!isfinite(v)) st = not_finite(ctx, i, i, v);
        d[i] = v == 0.0f ? 1.0f : v; /* as the factorization sees it, before the dampening */
        idx[i] = (int32_t)i;
    }
    if (st == MQ_OK) {
        sort_order(idx, tmp, n, d);
        *out = idx;
        idx = NULL;
    }
    mq__free(ctx, d);
    mq__free(ctx, idx);
    mq__free(ctx, tmp);
    return st;
}

/* The factor is written once over, page by page: on Linux, ask for transparent huge pages
 * (where enabled for madvise), one fault per 2 MB instead of per 4 KB. Advice only. */
static void huge_pages(void *p, size_t bytes) {
#ifdef MADV_HUGEPAGE
    uintptr_t b = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
    uintptr_t e = ((uintptr_t)p + bytes) & ~(uintptr_t)4095;
    if (p && e > b + (4u << 20)) (void)madvise((void *)b, e - b, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

mq_status mq__gptq_factor(mq_ctx *ctx, const float *h, int64_t cols, const int32_t *perm,
                          float **out) {
    *out = NULL;
    size_t n = (size_t)cols;
    if (cols < 1 || n > SIZE_MAX / sizeof(float) / n / 2)
        return mq__fail(ctx, MQ_ERR_NOMEM, "quantize: a Hessian of %lld columns is too large",
                        (long long)cols);
    work w = {0};
    w.a = (float *)mq__malloc(ctx, n * n * sizeof(float));
    huge_pages(w.a, n * n * sizeof(float));
    w.t = (float *)mq__malloc(ctx, n * NB * sizeof(float));
    w.bt = (float *)mq__malloc(ctx, n * NB * sizeof(float));
    w.xb = (float *)mq__malloc(ctx, NB * NB * sizeof(float));
    w.d = (double *)mq__malloc(ctx, NB * NB * sizeof(double));
    w.x = (double *)mq__malloc(ctx, NB * NB * sizeof(double));
    w.tasks = (mq__gemm_task *)mq__malloc(ctx, (n / NB + 1) * sizeof(mq__gemm_task));
    mq_status st = MQ_ERR_NOMEM;
    if (w.a && w.t && w.bt && w.xb && w.d && w.x && w.tasks) {
        st = load_reversed(ctx, h, cols, perm, w.a, &w.damp);
        if (st == MQ_OK) st = cholesky(ctx, &w, cols, perm);
        if (st == MQ_OK) st = invert(ctx, &w, cols);
    }
    if (st == MQ_OK) {
        for (size_t i = 0, e = n * n; i < e / 2; i++) { /* U = P R^-1 P */
            float v = w.a[i];
            w.a[i] = w.a[e - 1 - i];
            w.a[e - 1 - i] = v;
        }
        for (size_t i = 0; i < n; i++)
            if (!(w.a[i * n + i] > 0.0f) || !isfinite(w.a[i * n + i])) {
                st = mq__fail(ctx, MQ_ERR_QUANT, "quantize: the inverse Hessian is not "
                              "representable in f32 (column %zu): the Hessian is too "
                              "ill-conditioned", perm ? (size_t)perm[i] : i);
                break;
            }
    }
    if (st == MQ_OK) {
        *out = w.a;
        w.a = NULL;
    }
    mq__free(ctx, w.a);
    mq__free(ctx, w.t);
    mq__free(ctx, w.bt);
    mq__free(ctx, w.xb);
    mq__free(ctx, w.d);
    mq__free(ctx, w.x);
    mq__free(ctx, w.tasks);
    return st;
}

mq__gptq_cols_fn mq__gptq_cols_pick(const mq_ctx *ctx) {
    const void *by_level[] = {NULL, NULL, MQ__X86_ONLY(&mq__gptq_cols_avx512), NULL, NULL};
    const mq__gptq_cols_fns *f = (const mq__gptq_cols_fns *)mq__isa_pick(ctx, by_level, 5);
    return f ? f->cols : NULL;
}
