/* The inverse-Hessian factor of GPTQ (docs/QUANTIZATION.md): U upper triangular with
 * U^T U = (H + damp I)^-1, all in double. Row i of U holds what column i's rounding error
 * contributes to the later columns (U[i][j] / U[i][i]). Sequential, so the bytes never depend
 * on the thread count. */
#include "quant/quant_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* In place: lower Cholesky factor of the symmetric matrix whose lower triangle is in a.
 * Returns the first column whose pivot is not positive (or not finite), or -1. */
static int64_t cholesky_lower(double *a, int64_t n, double *pivot) {
    for (int64_t j = 0; j < n; j++) {
        double *rj = a + (size_t)j * (size_t)n;
        double d = rj[j];
        for (int64_t k = 0; k < j; k++) d -= rj[k] * rj[k];
        if (!(d > 0.0) || !isfinite(d)) {
            *pivot = d;
            return j;
        }
        double l = sqrt(d), inv = 1.0 / l;
        rj[j] = l;
        for (int64_t i = j + 1; i < n; i++) {
            double *ri = a + (size_t)i * (size_t)n;
            double s = ri[j];
            for (int64_t k = 0; k < j; k++) s -= ri[k] * rj[k];
            ri[j] = s * inv;
        }
    }
    return -1;
}

mq_status mq__gptq_factor(mq_ctx *ctx, const float *h, int64_t cols, double **out) {
    *out = NULL;
    size_t n = (size_t)cols;
    if (cols < 1 || n > SIZE_MAX / sizeof(double) / n / 2)
        return mq__fail(ctx, MQ_ERR_NOMEM, "quantize: a Hessian of %lld columns is too large",
                        (long long)cols);
    double *a = (double *)mq__malloc(ctx, n * n * sizeof(double));
    double *b = (double *)mq__malloc(ctx, n * n * sizeof(double));
    if (!a || !b) {
        mq__free(ctx, a);
        mq__free(ctx, b);
        return MQ_ERR_NOMEM;
    }
    mq_status st = MQ_OK;
    double mean = 0;
    for (size_t i = 0; i < n && st == MQ_OK; i++) {
        for (size_t j = 0; j <= i; j++) {
            float v = h[i * n + j];
            if (!isfinite(v)) {
                st = mq__fail(ctx, MQ_ERR_QUANT, "quantize: hessian[%zu][%zu] holds %s", i, j,
                              isnan(v) ? "a NaN" : "an Inf");
                break;
            }
            a[i * n + j] = (double)v;
        }
        if (st == MQ_OK && a[i * n + i] == 0.0) a[i * n + i] = 1.0; /* a channel never active */
        if (st == MQ_OK) mean += a[i * n + i];
    }
    if (st == MQ_OK) {
        double damp = 0.01 * mean / (double)n;
        for (size_t i = 0; i < n; i++) a[i * n + i] += damp;
        double pivot = 0;
        int64_t bad = cholesky_lower(a, cols, &pivot);
        if (bad >= 0)
            st = mq__fail(ctx, MQ_ERR_QUANT, "quantize: the Hessian is not positive definite "
                          "after dampening by %g (pivot %g at column %lld)", damp, pivot,
                          (long long)bad);
    }
    if (st == MQ_OK) {
        /* b = L^-1 (lower), row by row: row i = -(sum_k<i L[i][k] row k) / L[i][i]; the
         * loops run along rows (contiguous) */
        memset(b, 0, n * n * sizeof(double));
        for (size_t i = 0; i < n; i++) {
            double *bi = b + i * n;
            const double *li = a + i * n;
            for (size_t k = 0; k < i; k++) {
                double f = li[k];
                const double *bk = b + k * n;
                for (size_t j = 0; j <= k; j++) bi[j] += f * bk[j];
            }
            double inv = 1.0 / li[i];
            for (size_t j = 0; j < i; j++) bi[j] = -bi[j] * inv;
            bi[i] = inv;
        }
        /* a (lower) = H^-1 = L^-T L^-1 = sum over rows k of b: b[k]^T b[k] */
        for (size_t i = 0; i < n; i++) memset(a + i * n, 0, (i + 1) * sizeof(double));
        for (size_t k = 0; k < n; k++) {
            const double *bk = b + k * n;
            for (size_t i = 0; i <= k; i++) {
                double f = bk[i];
                double *ai = a + i * n;
                for (size_t j = 0; j <= i; j++) ai[j] += f * bk[j];
            }
        }
        double pivot = 0;
        int64_t bad = cholesky_lower(a, cols, &pivot);
        if (bad >= 0)
            st = mq__fail(ctx, MQ_ERR_QUANT, "quantize: the inverse Hessian lost definiteness "
                          "in double precision (pivot %g at column %lld): the Hessian is too "
                          "ill-conditioned", pivot, (long long)bad);
    }
    if (st == MQ_OK) {
        /* U = M^T for the lower factor M of H^-1, stored by rows for the per-row sweep */
        for (size_t i = 0; i < n; i++)
            for (size_t j = i; j < n; j++) b[i * n + j] = a[j * n + i];
        *out = b;
        b = NULL;
    }
    mq__free(ctx, a);
    mq__free(ctx, b);
    return st;
}
