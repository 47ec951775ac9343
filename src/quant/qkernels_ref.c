/* Scalar quantization kernels: the specification every vector path must reproduce bit for bit.
 * Expressions are split so that no multiply-add can be contracted into an FMA. */
#include "quant/quant_internal.h"

#include <float.h>

/* Adding and subtracting 1.5 * 2^23 rounds |v| < 2^22 to an integer in the current rounding
 * mode (nearest, ties to even, by default), as nearbyintf and the vector round do. */
static inline float round_int(float v) {
    float t = v + 0x1.8p23f; /* not folded: compilers keep IEEE semantics without -ffast-math */
    return t - 0x1.8p23f;
}

static inline float clamp_round(float x, const mq_qround *p) {
    float v = x * p->inv;
    v = v < p->lo ? p->lo : v;
    v = v > p->hi ? p->hi : v;
    return round_int(v);
}

bool mq__minmax_ref(const float *x, size_t n, float *mn, float *mx) {
    float lo = x[0], hi = x[0];
    bool finite = true;
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float a = v < 0 ? -v : v;
        if (!(a <= FLT_MAX)) finite = false;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *mn = lo;
    *mx = hi;
    return finite;
}

void mq__quantize_ref(const float *x, size_t n, const mq_qround *p, int32_t add,
                      uint8_t *codes) {
    for (size_t i = 0; i < n; i++) codes[i] = (uint8_t)((int32_t)clamp_round(x[i], p) + add);
}

void mq__pack4_ref(const uint8_t *codes, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n / 2; i++) dst[i] = (uint8_t)(codes[2 * i] | codes[2 * i + 1] << 4);
}

float mq__sum_lanes16(const float lanes[16]) {
    float s[8];
    for (int i = 0; i < 8; i++) s[i] = lanes[i] + lanes[i + 8];
    for (int w = 4; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) s[i] = s[i] + s[i + w];
    return s[0];
}

static float sqerr_ref(const float *x, const float *w, size_t n, const mq_qround *p) {
    float lanes[16] = {0};
    for (size_t i = 0; i < n; i++) {
        float r = clamp_round(x[i], p);
        float y = r * p->scale;
        float d = x[i] - y;
        float e = d * d;
        if (w) e = e * w[i];
        lanes[i % 16] = lanes[i % 16] + e;
    }
    return mq__sum_lanes16(lanes);
}

void mq__dequantize_ref(const uint8_t *codes, size_t n, uint8_t flip, float sub, float scale,
                        float *out) {
    for (size_t i = 0; i < n; i++) {
        float v = (float)(uint8_t)(codes[i] ^ flip);
        v = v - sub;
        out[i] = v * scale;
    }
}

const mq_qkernels *mq__qkernels_ref(void) {
    static const mq_qkernels k = {mq__minmax_ref, mq__quantize_ref, sqerr_ref,
                                  mq__pack4_ref, mq__dequantize_ref};
    return &k;
}

const mq_qkernels *mq__qkernels(const mq_ctx *ctx) {
    const void *by_level[] = {mq__qkernels_ref(), MQ__X86_ONLY(mq__qkernels_avx2()),
                              MQ__X86_ONLY(mq__qkernels_avx512()),
                              MQ__ARM64_ONLY(mq__qkernels_neon()), NULL};
    return (const mq_qkernels *)mq__isa_pick(ctx, by_level, 5);
}
