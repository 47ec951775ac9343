/* The output-error figures of a quantized Linear with a calibration Hessian H (symmetric,
 * cols x cols): sums over rows of w^T H w and d^T H d (d = w - dequantized w), the energy and
 * the error of X W^T on the calibration inputs. With Z the rows of W and D stacked,
 * z^T H z = sum over column blocks I of z_I . (2 sum_{J<I} H_IJ z_J + H_II z_I): half the
 * products of a full z^T H, as f32 matrix products (kernels/gemm.h) summed in f64 row by
 * row in a fixed order. */
#include "quant/quant_internal.h"
#include "kernels/gemm.h"

#include <string.h>

enum { OB = 128 };

mq_status mq__output_error(mq_ctx *ctx, const float *h, int64_t cols, mq_dtype src_dtype,
                           const void *src, const float *deq, int64_t nr, double *wsum,
                           double *dsum) {
    size_t n = (size_t)cols, m = 2 * (size_t)nr;
    float *z = (float *)mq__malloc(ctx, m * n * sizeof(float));
    float *y = (float *)mq__malloc(ctx, m * OB * 2 * sizeof(float));
    mq_status st = z && y ? MQ_OK : MQ_ERR_NOMEM;
    size_t es = mq_dtype_size(src_dtype);
    for (int64_t r = 0; r < nr && st == MQ_OK; r++) {
        float *w = z + (size_t)r * n, *d = z + ((size_t)nr + (size_t)r) * n;
        st = mq_convert(ctx, MQ_F32, w, src_dtype, (const uint8_t *)src + (size_t)r * n * es, n);
        for (size_t k = 0; k < n; k++) d[k] = w[k] - deq[(size_t)r * n + k];
    }
    double sw = 0, sd = 0;
    for (int64_t i0 = 0; i0 < cols && st == MQ_OK; i0 += OB) {
        int64_t bw = cols - i0 < OB ? cols - i0 : OB;
        float *off = y, *diag = y + m * OB;
        memset(y, 0, m * OB * 2 * sizeof(float));
        /* off = Z[:, :i0] H[:i0, I], diag = Z[:, I] H[I, I] */
        if (i0 > 0)
            st = mq__gemm_parallel(ctx, (int64_t)m, bw, i0, z, cols, h + i0, cols, off, OB);
        if (st == MQ_OK)
            st = mq__gemm_parallel(ctx, (int64_t)m, bw, bw, z + i0, cols, h + (size_t)i0 * n + i0,
                                   cols, diag, OB);
        for (size_t r = 0; r < m && st == MQ_OK; r++) {
            const float *zr = z + r * n + i0, *o = off + r * OB, *g = diag + r * OB;
            double s = 0;
            for (int64_t c = 0; c < bw; c++)
                s += (double)zr[c] * (2.0 * (double)o[c] + (double)g[c]);
            if (r < (size_t)nr) sw += s;
            else sd += s;
        }
    }
    mq__free(ctx, z);
    mq__free(ctx, y);
    *wsum = sw;
    *dsum = sd;
    return st;
}
