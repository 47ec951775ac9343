/* Scalar reference of the Linear kernels: the specification every vector path matches bit
 * for bit (kernels.h states the arithmetic). Straightforward loops over the kernel layout. */
#include "kernels/kernels.h"
#include "common/convert.h"

#include <math.h>

/* Kernel weight (before the zero point) of channel n, column k. */
static int weight_int(const mq__lin *L, int64_t n, int64_t k, int64_t g) {
    int64_t b = n / MQ__LANES, lane = n % MQ__LANES, ti = mq__gidx(L, b, g) + lane;
    if (L->kind == MQ__W_I8)
        return ((const int8_t *)L->w)[((b * (L->Kp / 4) + k / 4) * MQ__LANES + lane) * 4 + k % 4];
    uint32_t word = ((const uint32_t *)L->w)[(b * (L->Kp / 8) + k / 8) * MQ__LANES + lane];
    int nib = (int)(word >> (8 * (k % 4) + 4 * ((k % 8) / 4))) & 15;
    int zq = L->has_zq4 ? (int)(L->zq4[ti] & 15) : L->zq_const;
    return nib - zq;
}

static float weight_float(const mq__lin *L, int64_t n, int64_t k) {
    int64_t i = ((n / MQ__LANES) * L->K + k) * MQ__LANES + n % MQ__LANES;
    if (L->kind == MQ__W_F32) return ((const float *)L->w)[i];
    uint16_t h = ((const uint16_t *)L->w)[i];
    return L->kind == MQ__W_F16 ? mq_f16_to_f32(h) : mq_bf16_to_f32(h);
}

static void tile_float(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                       int64_t b1, float *y, int64_t ldy) {
    int64_t n1 = b1 * MQ__LANES < L->N ? b1 * MQ__LANES : L->N;
    for (int64_t m = m0; m < m1; m++)
        for (int64_t n = b0 * MQ__LANES; n < n1; n++) {
            const float *x = A->xf + m * L->Kp;
            float acc = 0;
            for (int64_t k = 0; k < L->K; k++) acc = fmaf(x[k], weight_float(L, n, k), acc);
            y[m * ldy + n] = acc + L->bias[n];
        }
}

static void tile_wonly(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                       int64_t b1, float *y, int64_t ldy) {
    int64_t n1 = b1 * MQ__LANES < L->N ? b1 * MQ__LANES : L->N;
    for (int64_t m = m0; m < m1; m++)
        for (int64_t n = b0 * MQ__LANES; n < n1; n++) {
            const float *x = A->xf + m * L->Kp;
            int64_t b = n / MQ__LANES, lane = n % MQ__LANES;
            float acc = 0;
            for (int64_t g = 0; g < L->G; g++) {
                int64_t ti = mq__gidx(L, b, g) + lane;
                int zpw = L->has_zpw ? L->zpw[ti] : 0;
                int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
                float part = 0;
                for (int64_t k = k0; k < k1; k++)
                    part = fmaf(x[k], (float)(weight_int(L, n, k, g) - zpw), part);
                acc = fmaf(L->scale[ti], part, acc);
            }
            y[m * ldy + n] = acc + L->bias[n];
        }
}

static void tile_integer(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1, int64_t b0,
                         int64_t b1, float *y, int64_t ldy) {
    int64_t n1 = b1 * MQ__LANES < L->N ? b1 * MQ__LANES : L->N;
    for (int64_t m = m0; m < m1; m++)
        for (int64_t n = b0 * MQ__LANES; n < n1; n++) {
            const uint8_t *xu = A->xu + m * L->Kp;
            int64_t b = n / MQ__LANES, lane = n % MQ__LANES;
            float acc = 0;
            for (int64_t g = 0; g < L->G; g++) {
                int64_t ti = mq__gidx(L, b, g) + lane;
                int zpw = L->has_zpw ? L->zpw[ti] : 0;
                int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
                int64_t dot = 0;
                for (int64_t k = k0; k < k1; k++)
                    dot += (int64_t)(xu[k] - L->za) * (weight_int(L, n, k, g) - zpw);
                acc = fmaf(L->scale[ti], (float)dot, acc);
            }
            y[m * ldy + n] = fmaf(acc, A->sx[m], L->bias[n]);
        }
}

static void quant_row(const mq__lin *L, const float *x, uint8_t *xu, float *sx) {
    if (L->act == MQ_ACT_DYNAMIC) {
        float amax = 0;
        for (int64_t k = 0; k < L->K; k++) amax = fmaxf(amax, fabsf(x[k]));
        float s = amax > 0 ? amax / 127.0f : 1.0f;
        for (int64_t k = 0; k < L->K; k++) xu[k] = mq__quant_dyn1(x[k], s);
        *sx = s;
    } else {
        for (int64_t k = 0; k < L->K; k++) xu[k] = mq__quant_static1(x[k], L->in_scale, (float)L->za);
        *sx = L->in_scale;
    }
}

const mq__linear_fns mq__linear_ref = {tile_float, tile_wonly, tile_integer, quant_row};
