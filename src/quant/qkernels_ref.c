/* Scalar quantization kernels: the specification every vector path must reproduce bit for bit.
 * Expressions are split so that no multiply-add can be contracted into an FMA. */
#include "quant/quant_internal.h"
#include "common/convert.h"

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

/* Element i of a F32, F16 or BF16 source (exact widening). */
static inline float load_src(const void *x, mq_dtype dt, size_t i) {
    if (dt == MQ_F16) return mq_f16_to_f32(mq__ld_u16(x, i));
    if (dt == MQ_BF16) return mq_bf16_to_f32(mq__ld_u16(x, i));
    return mq__ld_f32(x, i);
}

bool mq__minmax_src_ref(const void *x, mq_dtype dt, size_t n, float *mn, float *mx) {
    float lo = load_src(x, dt, 0), hi = lo;
    bool finite = true;
    for (size_t i = 0; i < n; i++) {
        float v = load_src(x, dt, i);
        float a = v < 0 ? -v : v;
        if (!(a <= FLT_MAX)) finite = false;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    *mn = lo;
    *mx = hi;
    return finite;
}

void mq__quantize_src_ref(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                          int32_t add, uint8_t *codes) {
    for (size_t i = 0; i < n; i++)
        codes[i] = (uint8_t)((int32_t)clamp_round(load_src(x, dt, i), p) + add);
}

void mq__quantize4_src_ref(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                           int32_t add, uint8_t *dst) {
    for (size_t i = 0; i < n; i += 2) {
        int32_t lo = (int32_t)clamp_round(load_src(x, dt, i), p) + add;
        int32_t hi = i + 1 < n ? (int32_t)clamp_round(load_src(x, dt, i + 1), p) + add : 0;
        dst[i / 2] = (uint8_t)(lo | hi << 4);
    }
}

static inline const void *src_at(const void *x, mq_dtype dt, size_t i) {
    return (const char *)x + i * (dt == MQ_F32 ? 4 : 2);
}

bool mq__minmax_groups_ref(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                           float *mx) {
    for (size_t g = 0; g < ng; g++)
        if (!mq__minmax_src_ref(src_at(x, dt, g * gs), dt, gs, &mn[g], &mx[g])) return false;
    return true;
}

bool mq__absmax_groups_ref(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                           float *mx) {
    for (size_t g = 0; g < ng; g++) {
        float l, h;
        if (!mq__minmax_src_ref(src_at(x, dt, g * gs), dt, gs, &l, &h)) return false;
        mx[g] = -l > h ? -l : h;
        mn[g] = -mx[g];
    }
    return true;
}

/* The min/max path of the quantizer, group by group: the rule, the finiteness check, then
 * the values the quantize kernels take. */
bool mq__params_minmax_ref(const mq_qformat *f, mq_scheme scheme, size_t ng, const float *mn,
                           const float *mx, float *scale, uint8_t *zp8, mq_qround *qr,
                           int32_t *add) {
    for (size_t g = 0; g < ng; g++) {
        mq_qparam p = mq__qparam_minmax(f, scheme, mn[g], mx[g]);
        if (!mq__qparam_finite(p.scale, p.zp, f->qmin, f->qmax)) return false;
        scale[g] = p.scale;
        if (zp8) zp8[g] = (uint8_t)p.zp;
        mq__qround_init(f, p, &qr[g]);
        add[g] = p.zp + f->code_offset;
    }
    return true;
}

void mq__quantize_groups_ref(const void *x, mq_dtype dt, size_t gs, size_t ng,
                             const mq_qround *qr, const int32_t *add, bool packed4,
                             uint8_t *dst) {
    for (size_t g = 0; g < ng; g++) {
        if (packed4) mq__quantize4_src_ref(src_at(x, dt, g * gs), dt, gs, &qr[g], add[g],
                                           dst + g * gs / 2);
        else mq__quantize_src_ref(src_at(x, dt, g * gs), dt, gs, &qr[g], add[g], dst + g * gs);
    }
}

float mq__sqerr1(float x, float w, const mq_qround *p) {
    float r = clamp_round(x, p);
    float y = r * p->scale;
    float d = x - y;
    float e = d * d;
    return e * w;
}

/* Every error term is >= 0 and float addition is monotonic in each operand, so the lane
 * sums and their tree can only grow from the sum of any two of the terms. */
float mq__sqerr_bound(float a, float b, const mq_qround *p) {
    float ea = mq__sqerr1(a, 1.0f, p);
    return a == b ? ea : ea + mq__sqerr1(b, 1.0f, p);
}

/* The specification of the search: every candidate's full error, in order. */
static int search_ref(const float *x, const float *w, size_t n, float mn, float mx,
                      const mq_qround *qr, int nc, float *err) {
    (void)mn;
    (void)mx;
    int best = -1;
    for (int c = 0; c < nc; c++) {
        float e = sqerr_ref(x, w, n, &qr[c]);
        if (best < 0 || e < *err) {
            best = c;
            *err = e;
        }
    }
    return best;
}

/* floor(v / 2^s) without relying on the shift of negative values. */
static inline int32_t floor_shift(int32_t v, int s) {
    int32_t d = (int32_t)1 << s, q = v / d;
    return v % d < 0 ? q - 1 : q;
}

void mq__sqerr_fix_ref(const float *x, size_t n, float k, const mq_qfix *q, int nc,
                       int64_t *d) {
    for (int c = 0; c < nc; c++) d[c] = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t X = (int32_t)round_int(x[i] * k);
        for (int c = 0; c < nc; c++) {
            int32_t t = floor_shift(X * q[c].m + 16384, 15);
            int32_t v = t < q[c].lo ? q[c].lo : t > q[c].hi ? q[c].hi : t;
            int32_t e = t - floor_shift(v + 128, 8) * 256;
            d[c] += (int64_t)(e * e);
        }
    }
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
    static const mq_qkernels k = {mq__minmax_ref,        mq__quantize_ref,
                                  sqerr_ref,             mq__pack4_ref,
                                  mq__dequantize_ref,    mq__minmax_src_ref,
                                  mq__quantize_src_ref,  mq__quantize4_src_ref,
                                  search_ref,            mq__minmax_groups_ref,
                                  mq__params_minmax_ref, mq__quantize_groups_ref,
                                  mq__sqerr_fix_ref,     NULL,
                                  mq__absmax_groups_ref};
    return &k;
}

const mq_qkernels *mq__qkernels(const mq_ctx *ctx) {
    const void *by_level[] = {mq__qkernels_ref(), MQ__X86_ONLY(mq__qkernels_avx2()),
                              MQ__X86_ONLY(mq__qkernels_avx512()),
                              MQ__ARM64_ONLY(mq__qkernels_neon()), NULL};
    const mq_qkernels *k = (const mq_qkernels *)mq__isa_pick(ctx, by_level, 5);
#if defined(__x86_64__) || defined(__i386__)
    if (k == mq__qkernels_avx512() && ctx->cpu.avx512vbmi2) return mq__qkernels_avx512_vbmi2();
#endif
    return k;
}

int mq__search_pick(const float *e, int nc, float *err) {
    int best = 0;
    float be = e[0];
    for (int c = 1; c < nc; c++) {
        bool lt = e[c] < be; /* false for NaN: a NaN never wins, a NaN first stays */
        best = lt ? c : best;
        be = lt ? e[c] : be;
    }
    *err = be;
    return best;
}

int mq__search_batched(const float *x, const float *w, size_t n, const mq_qround *qr, int nc,
                       const float *lb, float *err, mq__sqerr_batch_fn batch) {
    int best = -1;
    for (int c = 0; c < nc;) {
        const mq_qround *q[4];
        int idx[4], nb = 0;
        for (; c < nc && nb < 4; c++) {
            if (best >= 0 && lb && !(lb[c] < *err)) continue;
            q[nb] = &qr[c];
            idx[nb++] = c;
        }
        float e[4];
        if (nb) batch(x, w, n, q, nb, e);
        for (int k = 0; k < nb; k++)
            if (best < 0 || e[k] < *err) {
                best = idx[k];
                *err = e[k];
            }
    }
    return best;
}
