/* NEON quantization kernels (ARM64 baseline); identical results to qkernels_ref.c. Rounding
 * uses FCVTNS (to nearest, ties to even, whatever the rounding mode), which equals the
 * reference's add-and-subtract of 1.5 * 2^23 under the default mode. */
#include "quant/quant_internal.h"
#include "common/convert.h"

#include <arm_neon.h>
#include <float.h>

static bool minmax_neon(const float *x, size_t n, float *mn, float *mx) {
    size_t i = 0;
    float32x4_t lo = vdupq_n_f32(x[0]), hi = lo;
    const float32x4_t fmax = vdupq_n_f32(FLT_MAX);
    uint32x4_t ok = vdupq_n_u32(~0u); /* |v| <= FLT_MAX is false for Inf and NaN */
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        lo = vminq_f32(lo, v);
        hi = vmaxq_f32(hi, v);
        ok = vandq_u32(ok, vcleq_f32(vabsq_f32(v), fmax));
    }
    bool finite = vminvq_u32(ok) == ~0u;
    float tl = vgetq_lane_f32(lo, 0), th = vgetq_lane_f32(hi, 0);
    if (i < n) finite = mq__minmax_ref(x + i, n - i, &tl, &th) && finite;
    if (finite) { /* with a NaN the values are not used */
        float l = vminvq_f32(lo), h = vmaxvq_f32(hi);
        tl = l < tl ? l : tl;
        th = h > th ? h : th;
    }
    *mn = tl;
    *mx = th;
    return finite;
}

static inline int32x4_t round4(const float *x, float32x4_t inv, float32x4_t lo, float32x4_t hi,
                               int32x4_t add) {
    float32x4_t v = vmulq_f32(vld1q_f32(x), inv);
    v = vminq_f32(vmaxq_f32(v, lo), hi);
    return vaddq_s32(vcvtnq_s32_f32(v), add);
}

static void quantize_neon(const float *x, size_t n, const mq_qround *p, int32_t add,
                          uint8_t *codes) {
    const float32x4_t inv = vdupq_n_f32(p->inv), lo = vdupq_n_f32(p->lo),
                      hi = vdupq_n_f32(p->hi);
    const int32x4_t vadd = vdupq_n_s32(add);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        /* values lie in [-128, 263]: narrowing to 16 bits is exact, then keep the low byte */
        int16x8_t ab = vcombine_s16(vmovn_s32(round4(x + i, inv, lo, hi, vadd)),
                                    vmovn_s32(round4(x + i + 4, inv, lo, hi, vadd)));
        int16x8_t cd = vcombine_s16(vmovn_s32(round4(x + i + 8, inv, lo, hi, vadd)),
                                    vmovn_s32(round4(x + i + 12, inv, lo, hi, vadd)));
        uint8x16_t bytes = vcombine_u8(vmovn_u16(vreinterpretq_u16_s16(ab)),
                                       vmovn_u16(vreinterpretq_u16_s16(cd)));
        vst1q_u8(codes + i, bytes);
    }
    if (i < n) mq__quantize_ref(x + i, n - i, p, add, codes + i);
}

static inline float32x4_t err4(float32x4_t x, float32x4_t scale, float32x4_t inv,
                               float32x4_t lo, float32x4_t hi) {
    float32x4_t v = vmulq_f32(x, inv);
    v = vrndnq_f32(vminq_f32(vmaxq_f32(v, lo), hi));
    float32x4_t d = vsubq_f32(x, vmulq_f32(v, scale));
    return vmulq_f32(d, d);
}

/* Sixteen elements into the four accumulators (lanes 0-3, 4-7, 8-11, 12-15). */
static inline void err16(float32x4_t acc[4], const float *x, const float *w, float32x4_t scale,
                         float32x4_t inv, float32x4_t lo, float32x4_t hi) {
    for (int q = 0; q < 4; q++) {
        float32x4_t e = err4(vld1q_f32(x + 4 * q), scale, inv, lo, hi);
        if (w) e = vmulq_f32(e, vld1q_f32(w + 4 * q));
        acc[q] = vaddq_f32(acc[q], e);
    }
}

static float sqerr_neon(const float *x, const float *w, size_t n, const mq_qround *p) {
    const float32x4_t scale = vdupq_n_f32(p->scale), inv = vdupq_n_f32(p->inv),
                      lo = vdupq_n_f32(p->lo), hi = vdupq_n_f32(p->hi);
    float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    size_t i = 0;
    for (; i + 16 <= n; i += 16) err16(acc, x + i, w ? w + i : NULL, scale, inv, lo, hi);
    if (i < n) { /* zero-padded tail: absent elements are 0 and add exactly 0 */
        float xt[16] = {0}, wt[16] = {0};
        memcpy(xt, x + i, (n - i) * 4);
        if (w) memcpy(wt, w + i, (n - i) * 4);
        err16(acc, xt, w ? wt : NULL, scale, inv, lo, hi);
    }
    /* mq__sum_lanes16's tree: lanes i + 8, then i + 4, i + 2, i + 1 */
    float32x4_t s0 = vaddq_f32(acc[0], acc[2]), s1 = vaddq_f32(acc[1], acc[3]);
    float32x4_t s = vaddq_f32(s0, s1);
    float32x2_t t = vadd_f32(vget_low_f32(s), vget_high_f32(s));
    return vget_lane_f32(t, 0) + vget_lane_f32(t, 1);
}

static void pack4_neon(const uint8_t *codes, size_t n, uint8_t *dst) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint8x16x2_t v = vld2q_u8(codes + i); /* even and odd codes */
        vst1q_u8(dst + i / 2, vorrq_u8(v.val[0], vshlq_n_u8(v.val[1], 4)));
    }
    if (i < n) mq__pack4_ref(codes + i, n - i, dst + i / 2);
}

static void dequantize_neon(const uint8_t *codes, size_t n, uint8_t flip, float sub,
                            float scale, float *out) {
    const float32x4_t vsub = vdupq_n_f32(sub), vscale = vdupq_n_f32(scale);
    const uint8x8_t vflip = vdup_n_u8(flip);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vmovl_u8(veor_u8(vld1_u8(codes + i), vflip));
        float32x4_t a = vcvtq_f32_u32(vmovl_u16(vget_low_u16(h)));
        float32x4_t b = vcvtq_f32_u32(vmovl_u16(vget_high_u16(h)));
        vst1q_f32(out + i, vmulq_f32(vsubq_f32(a, vsub), vscale));
        vst1q_f32(out + i + 4, vmulq_f32(vsubq_f32(b, vsub), vscale));
    }
    if (i < n) mq__dequantize_ref(codes + i, n - i, flip, sub, scale, out + i);
}

/* Four elements of a F32, F16 or BF16 source from element i, any alignment, widened exactly. */
static inline float32x4_t load4(const void *x, mq_dtype dt, size_t i) {
    const uint8_t *p = (const uint8_t *)x;
    if (dt == MQ_F16) return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p + 2 * i)));
    if (dt == MQ_BF16) return vreinterpretq_f32_u32(vshll_n_u16(vreinterpret_u16_u8(vld1_u8(p + 2 * i)), 16));
    return vreinterpretq_f32_u8(vld1q_u8(p + 4 * i));
}

static inline const void *src_at(const void *x, mq_dtype dt, size_t i) {
    return (const char *)x + i * (dt == MQ_F32 ? 4 : 2);
}

static bool minmax_src_neon(const void *x, mq_dtype dt, size_t n, float *mn, float *mx) {
    if (n < 4) return mq__minmax_src_ref(x, dt, n, mn, mx);
    size_t i = 0;
    float32x4_t lo = vdupq_laneq_f32(load4(x, dt, 0), 0), hi = lo;
    const float32x4_t fmax = vdupq_n_f32(FLT_MAX);
    uint32x4_t ok = vdupq_n_u32(~0u);
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = load4(x, dt, i);
        lo = vminq_f32(lo, v);
        hi = vmaxq_f32(hi, v);
        ok = vandq_u32(ok, vcleq_f32(vabsq_f32(v), fmax));
    }
    bool finite = vminvq_u32(ok) == ~0u;
    float tl = vgetq_lane_f32(lo, 0), th = vgetq_lane_f32(hi, 0);
    if (i < n) finite = mq__minmax_src_ref(src_at(x, dt, i), dt, n - i, &tl, &th) && finite;
    if (finite) {
        float l = vminvq_f32(lo), h = vmaxvq_f32(hi);
        tl = l < tl ? l : tl;
        th = h > th ? h : th;
    }
    *mn = tl;
    *mx = th;
    return finite;
}

/* Sixteen codes from element i of the source (values in [-128, 263]: the low byte kept). */
static inline uint8x16_t codes16(const void *x, mq_dtype dt, size_t i, float32x4_t inv,
                                 float32x4_t lo, float32x4_t hi, int32x4_t add) {
    int32x4_t c[4];
    for (int q = 0; q < 4; q++) {
        float32x4_t v = vminq_f32(vmaxq_f32(vmulq_f32(load4(x, dt, i + 4 * q), inv), lo), hi);
        c[q] = vaddq_s32(vcvtnq_s32_f32(v), add);
    }
    int16x8_t ab = vcombine_s16(vmovn_s32(c[0]), vmovn_s32(c[1]));
    int16x8_t cd = vcombine_s16(vmovn_s32(c[2]), vmovn_s32(c[3]));
    return vcombine_u8(vmovn_u16(vreinterpretq_u16_s16(ab)), vmovn_u16(vreinterpretq_u16_s16(cd)));
}

static void quantize_src_neon(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                              int32_t add, uint8_t *codes) {
    const float32x4_t inv = vdupq_n_f32(p->inv), lo = vdupq_n_f32(p->lo),
                      hi = vdupq_n_f32(p->hi);
    const int32x4_t vadd = vdupq_n_s32(add);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) vst1q_u8(codes + i, codes16(x, dt, i, inv, lo, hi, vadd));
    if (i < n) mq__quantize_src_ref(src_at(x, dt, i), dt, n - i, p, add, codes + i);
}

static void quantize4_src_neon(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                               int32_t add, uint8_t *dst) {
    const float32x4_t inv = vdupq_n_f32(p->inv), lo = vdupq_n_f32(p->lo),
                      hi = vdupq_n_f32(p->hi);
    const int32x4_t vadd = vdupq_n_s32(add);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint8x16_t a = codes16(x, dt, i, inv, lo, hi, vadd);
        uint8x16_t b = codes16(x, dt, i + 16, inv, lo, hi, vadd);
        uint8x16_t even = vuzp1q_u8(a, b), odd = vuzp2q_u8(a, b);
        vst1q_u8(dst + i / 2, vorrq_u8(even, vshlq_n_u8(odd, 4)));
    }
    if (i < n) mq__quantize4_src_ref(src_at(x, dt, i), dt, n - i, p, add, dst + i / 2);
}

/* The reference's search, each candidate's error by sqerr_neon (the same bits); without
 * weights, a candidate whose lower bound (its extremes' terms) is not below the best error so
 * far is left out: it could not replace it (the best error only decreases). */
static int search_neon(const float *x, const float *w, size_t n, float mn, float mx,
                       const mq_qround *qr, int nc, float *err) {
    int best = -1;
    for (int c = 0; c < nc; c++) {
        if (best >= 0 && !w && !(mq__sqerr_bound(mn, mx, &qr[c]) < *err)) continue;
        float e = sqerr_neon(x, w, n, &qr[c]);
        if (best < 0 || e < *err) {
            best = c;
            *err = e;
        }
    }
    return best;
}

/* Fixed-point errors (mq_qfix), 8 values per vector: FCVTNS rounds X as the reference does,
 * SQRDMULH is the rounding (X * m + 2^14) >> 15 (no saturation: |X| <= 2^14, m < 2^14);
 * squares (<= 2^26) go to two 32-bit accumulators, widened every 128 values. */
static void sqerr_fix_neon(const float *x, size_t n, float k, const mq_qfix *q, int nc,
                           int64_t *d) {
    const int16x8_t half = vdupq_n_s16(128), mask = vdupq_n_s16(-256);
    const float32x4_t vk = vdupq_n_f32(k);
    size_t full = n / 8 * 8;
    for (int c = 0; c < nc; c++) d[c] = 0;
    for (size_t b = 0; b < full; b += 128) {
        size_t end = full - b < 128 ? full : b + 128;
        int32x4_t acc0[MQ_MAX_CANDIDATES], acc1[MQ_MAX_CANDIDATES];
        for (int c = 0; c < nc; c++) acc0[c] = acc1[c] = vdupq_n_s32(0);
        for (size_t i = b; i < end; i += 8) {
            int32x4_t a = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i), vk));
            int32x4_t e = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i + 4), vk));
            int16x8_t X = vcombine_s16(vmovn_s32(a), vmovn_s32(e));
            for (int c = 0; c < nc; c++) {
                int16x8_t t = vqrdmulhq_s16(X, vdupq_n_s16((int16_t)q[c].m));
                int16x8_t v = vminq_s16(vmaxq_s16(t, vdupq_n_s16((int16_t)q[c].lo)),
                                        vdupq_n_s16((int16_t)q[c].hi));
                v = vandq_s16(vaddq_s16(v, half), mask);
                int16x8_t e16 = vsubq_s16(t, v);
                acc0[c] = vmlal_s16(acc0[c], vget_low_s16(e16), vget_low_s16(e16));
                acc1[c] = vmlal_high_s16(acc1[c], e16, e16);
            }
        }
        for (int c = 0; c < nc; c++)
            d[c] += vaddvq_s64(vaddq_s64(vpaddlq_s32(acc0[c]), vpaddlq_s32(acc1[c])));
    }
    if (full < n) {
        int64_t t[MQ_MAX_CANDIDATES];
        mq__sqerr_fix_ref(x + full, n - full, k, q, nc, t);
        for (int c = 0; c < nc; c++) d[c] += t[c];
    }
}

static bool minmax_groups_neon(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                               float *mx) {
    for (size_t g = 0; g < ng; g++)
        if (!minmax_src_neon(src_at(x, dt, g * gs), dt, gs, &mn[g], &mx[g])) return false;
    return true;
}

static void quantize_groups_neon(const void *x, mq_dtype dt, size_t gs, size_t ng,
                                 const mq_qround *qr, const int32_t *add, bool packed4,
                                 uint8_t *dst) {
    for (size_t g = 0; g < ng; g++) {
        if (packed4) quantize4_src_neon(src_at(x, dt, g * gs), dt, gs, &qr[g], add[g], dst + g * gs / 2);
        else quantize_src_neon(src_at(x, dt, g * gs), dt, gs, &qr[g], add[g], dst + g * gs);
    }
}

const mq_qkernels *mq__qkernels_neon(void) {
    static const mq_qkernels k = {minmax_neon,       quantize_neon,      sqerr_neon,
                                  pack4_neon,        dequantize_neon,    minmax_src_neon,
                                  quantize_src_neon, quantize4_src_neon, search_neon,
                                  minmax_groups_neon, mq__params_minmax_ref, quantize_groups_neon,
                                  sqerr_fix_neon,      NULL,
                                  NULL};
    return &k;
}
