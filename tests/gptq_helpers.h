/* GPTQ test helpers: correlated synthetic problems, the output error, and the f64
 * reference factor (Cholesky, inverse, Cholesky) of the column-by-column algorithm. */
#ifndef MQ_TEST_GPTQ_HELPERS_H
#define MQ_TEST_GPTQ_HELPERS_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static inline double urand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static inline double gauss(void) {
    double u = urand() + 1e-12, v = urand();
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Weights [rows, cols] and the mean x x^T of `n` inputs correlated along the channels
 * (x[c] = 0.9 x[c-1] + noise) with uneven channel magnitudes. */
static inline void make_problem(int64_t rows, int64_t cols, int n, float *w, float *h) {
    for (int64_t i = 0; i < rows * cols; i++) w[i] = (float)(0.05 * gauss());
    double *x = calloc((size_t)cols, sizeof(double));
    double *acc = calloc((size_t)(cols * cols), sizeof(double));
    for (int s = 0; s < n; s++) {
        double prev = gauss();
        for (int64_t c = 0; c < cols; c++) {
            prev = 0.9 * prev + 0.435889894 * gauss();
            x[c] = prev * (1.0 + 3.0 * (double)(c % 7 == 0));
        }
        for (int64_t i = 0; i < cols; i++)
            for (int64_t k = 0; k < cols; k++) acc[i * cols + k] += x[i] * x[k];
    }
    for (int64_t i = 0; i < cols * cols; i++) h[i] = (float)(acc[i] / n);
    free(x);
    free(acc);
}

/* sum over rows of d^T H d for d = w - q */
static inline double out_err(const float *w, const float *q, const float *h, int64_t rows, int64_t n) {
    double total = 0;
    double *d = malloc((size_t)n * sizeof(double));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < n; c++) d[c] = (double)w[r * n + c] - q[r * n + c];
        for (int64_t a = 0; a < n; a++) {
            double t = 0;
            for (int64_t b = 0; b < n; b++) t += (double)h[a * n + b] * d[b];
            total += d[a] * t;
        }
    }
    free(d);
    return total;
}

/* ---- the column-by-column reference, in f64: U from Cholesky, inverse, Cholesky; then each
 * row swept one column at a time with every later column updated at once ---- */
static inline int chol64(double *a, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        double *rj = a + j * n, d = rj[j];
        for (int64_t k = 0; k < j; k++) d -= rj[k] * rj[k];
        if (!(d > 0)) return -1;
        rj[j] = sqrt(d);
        for (int64_t i = j + 1; i < n; i++) {
            double *ri = a + i * n, t = ri[j];
            for (int64_t k = 0; k < j; k++) t -= ri[k] * rj[k];
            ri[j] = t / rj[j];
        }
    }
    return 0;
}

/* U (row-major upper) of (H + 1 % mean diag I)^-1 */
static inline double *ref_factor(const float *h, int64_t n) {
    double *a = calloc((size_t)(n * n), sizeof(double)), *b = calloc((size_t)(n * n), sizeof(double));
    double mean = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j <= i; j++) a[i * n + j] = h[i * n + j];
        if (a[i * n + i] == 0) a[i * n + i] = 1;
        mean += a[i * n + i];
    }
    for (int64_t i = 0; i < n; i++) a[i * n + i] += 0.01 * mean / (double)n;
    if (chol64(a, n)) return NULL;
    for (int64_t i = 0; i < n; i++) { /* b = L^-1 */
        for (int64_t j = 0; j < i; j++) {
            double t = 0;
            for (int64_t k = j; k < i; k++) t += a[i * n + k] * b[k * n + j];
            b[i * n + j] = -t / a[i * n + i];
        }
        b[i * n + i] = 1 / a[i * n + i];
    }
    for (int64_t i = 0; i < n; i++) /* a = b^T b, lower */
        for (int64_t j = 0; j <= i; j++) {
            double t = 0;
            for (int64_t k = i; k < n; k++) t += b[k * n + i] * b[k * n + j];
            a[i * n + j] = t;
        }
    if (chol64(a, n)) return NULL;
    memset(b, 0, (size_t)(n * n) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) b[i * n + j] = a[j * n + i];
    free(a);
    return b;
}

#endif
