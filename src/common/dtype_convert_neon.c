/* NEON conversion paths (ARM64 baseline). F16 uses the hardware conversions FCVTL/FCVTN (exact
 * widening; narrowing rounds to nearest even; with the default FPCR a signaling NaN is quieted
 * with its payload kept, as the reference does); BF16 uses integer rounding so NaN and
 * subnormal inputs behave exactly as the reference. Tails go through the scalar reference. */
#include "common/convert.h"

#include <arm_neon.h>

static void f16_to_f32_neon(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t h = vreinterpretq_f16_u8(vld1q_u8((const uint8_t *)(s + 2 * i)));
        vst1q_u8((uint8_t *)(d + 4 * i), vreinterpretq_u8_f32(vcvt_f32_f16(vget_low_f16(h))));
        vst1q_u8((uint8_t *)(d + 4 * i + 16), vreinterpretq_u8_f32(vcvt_high_f32_f16(h)));
    }
    mq__f16_to_f32_ref(s + 2 * i, d + 4 * i, n - i);
}

static void f32_to_f16_neon(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float32x4_t a = vreinterpretq_f32_u8(vld1q_u8((const uint8_t *)(s + 4 * i)));
        float32x4_t b = vreinterpretq_f32_u8(vld1q_u8((const uint8_t *)(s + 4 * i + 16)));
        float16x8_t h = vcvt_high_f16_f32(vcvt_f16_f32(a), b);
        vst1q_u8((uint8_t *)(d + 2 * i), vreinterpretq_u8_f16(h));
    }
    mq__f32_to_f16_ref(s + 4 * i, d + 2 * i, n - i);
}

static void bf16_to_f32_neon(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint16x8_t h = vreinterpretq_u16_u8(vld1q_u8((const uint8_t *)(s + 2 * i)));
        vst1q_u8((uint8_t *)(d + 4 * i), vreinterpretq_u8_u32(vshll_n_u16(vget_low_u16(h), 16)));
        vst1q_u8((uint8_t *)(d + 4 * i + 16), vreinterpretq_u8_u32(vshll_high_n_u16(h, 16)));
    }
    mq__bf16_to_f32_ref(s + 2 * i, d + 4 * i, n - i);
}

/* Four f32 (as bits) to bf16, round to nearest even; NaN quieted with its payload's top kept. */
static inline uint16x4_t round_bf16_4(uint32x4_t u) {
    uint32x4_t odd = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
    uint32x4_t r = vshrq_n_u32(vaddq_u32(u, vaddq_u32(odd, vdupq_n_u32(0x7fff))), 16);
    uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));
    uint32x4_t q = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
    return vmovn_u32(vbslq_u32(nan, q, r));
}

static void f32_to_bf16_neon(const void *src, void *dst, size_t n) {
    const char *s = (const char *)src;
    char *d = (char *)dst;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint32x4_t a = vreinterpretq_u32_u8(vld1q_u8((const uint8_t *)(s + 4 * i)));
        uint32x4_t b = vreinterpretq_u32_u8(vld1q_u8((const uint8_t *)(s + 4 * i + 16)));
        uint16x8_t h = vcombine_u16(round_bf16_4(a), round_bf16_4(b));
        vst1q_u8((uint8_t *)(d + 2 * i), vreinterpretq_u8_u16(h));
    }
    mq__f32_to_bf16_ref(s + 4 * i, d + 2 * i, n - i);
}

static const mq_convert_fns fns_neon = {f16_to_f32_neon, f32_to_f16_neon, bf16_to_f32_neon,
                                        f32_to_bf16_neon};

const mq_convert_fns *mq__convert_fns_neon(void) { return &fns_neon; }
