/* Output error of a quantized layer against the f32 layer it approximates, on given or
 * random inputs: what `monoquant validate --run` reports per layer. */
#include "kernels/kernels.h"

#include <math.h>

static double next_unit(uint64_t *s) { /* (0, 1) */
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
}

static void fill_normal(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
    if (!s) s = 1;
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(next_unit(&s))), t = 6.283185307179586 * next_unit(&s);
        x[i] = (float)(r * cos(t));
        if (i + 1 < n) x[i + 1] = (float)(r * sin(t));
    }
}

static void error_stats(const float *a, const float *b, size_t n, mq_error_stats *out) {
    double sa = 0, se = 0, sb = 0, dot = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - (double)b[i];
        sa += (double)a[i] * a[i];
        sb += (double)b[i] * b[i];
        se += e * e;
        dot += (double)a[i] * b[i];
        if (fabs(e) > mx || isnan(e)) mx = fabs(e);
    }
    out->sqnr_db = se > 0 ? 10.0 * log10(sa / se) : INFINITY;
    out->rel_fro = sa > 0 ? sqrt(se / sa) : (se > 0 ? INFINITY : 0.0);
    out->max_abs = mx;
    out->mse = n ? se / (double)n : 0.0;
    out->cosine = sa > 0 && sb > 0 ? dot / sqrt(sa * sb) : (sa == sb ? 1.0 : 0.0);
}

mq_status mq_linear_check(mq_ctx *ctx, mq_linear *lin, const float *ref_weight, const float *bias,
                          const float *x, int64_t M, uint64_t seed, mq_error_stats *out) {
    if (!lin || !ref_weight || !out || M < 1 || M > ((int64_t)1 << 24))
        return mq__fail(ctx, MQ_ERR_INVALID, "linear check: needs a layer, reference weights, "
                        "an output and 1 to 2^24 rows (got %lld)", (long long)M);
    int64_t N = mq_linear_out_features(lin), K = mq_linear_in_features(lin);
    mq_linear_desc d;
    mq_linear_desc_init(&d, MQ_Q_NONE, N, K, ref_weight);
    d.bias = bias;
    mq_linear *ref = NULL;
    MQ_TRY(mq_linear_create(ctx, &d, &ref));
    uint64_t nx, ny;
    mq_status st = MQ_OK;
    float *xr = NULL, *ya = NULL, *yb = NULL;
    if (!mq__mul_u64((uint64_t)M, (uint64_t)K, &nx) || !mq__mul_u64((uint64_t)M, (uint64_t)N, &ny) ||
        nx > SIZE_MAX / 4 || ny > SIZE_MAX / 8) {
        st = mq__fail(ctx, MQ_ERR_NOMEM, "linear check: %lld rows are too many", (long long)M);
        goto done;
    }
    ya = (float *)mq__malloc(ctx, (size_t)ny * 4);
    yb = (float *)mq__malloc(ctx, (size_t)ny * 4);
    if (!x) {
        xr = (float *)mq__malloc(ctx, (size_t)nx * 4);
        if (xr) fill_normal(xr, (size_t)nx, seed);
        x = xr;
    }
    if (!ya || !yb || !x) {
        st = MQ_ERR_NOMEM;
        goto done;
    }
    st = mq_linear_forward(ctx, ref, x, M, ya);
    if (st == MQ_OK) st = mq_linear_forward(ctx, lin, x, M, yb);
    if (st == MQ_OK) error_stats(ya, yb, (size_t)ny, out);
done:
    mq__free(ctx, xr);
    mq__free(ctx, ya);
    mq__free(ctx, yb);
    mq_linear_free(ref);
    return st;
}
