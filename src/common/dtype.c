/* Data types: names, sizes, and conversions between the float types. The scalar functions
 * here are the specification; vector paths (dtype_convert_*.c) must give identical bits. */
#include "common/internal.h"
#include "common/convert.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_info[MQ_DTYPE_COUNT] = {
    [MQ_DTYPE_INVALID] = {"invalid", 0},
    [MQ_BOOL] = {"BOOL", 1}, [MQ_U8] = {"U8", 1}, [MQ_I8] = {"I8", 1},
    [MQ_I16] = {"I16", 2}, [MQ_U16] = {"U16", 2}, [MQ_I32] = {"I32", 4},
    [MQ_U32] = {"U32", 4}, [MQ_I64] = {"I64", 8}, [MQ_U64] = {"U64", 8},
    [MQ_F16] = {"F16", 2}, [MQ_BF16] = {"BF16", 2}, [MQ_F32] = {"F32", 4},
    [MQ_F64] = {"F64", 8}, [MQ_F8_E4M3] = {"F8_E4M3", 1}, [MQ_F8_E5M2] = {"F8_E5M2", 1},
    [MQ_F8_E8M0] = {"F8_E8M0", 1}, [MQ_C64] = {"C64", 8},
};

const char *mq_dtype_name(mq_dtype dt) {
    if ((int)dt <= 0 || dt >= MQ_DTYPE_COUNT) return "invalid";
    return dtype_info[dt].name;
}

int mq_dtype_from_name(const char *name, mq_dtype *out) {
    for (int i = 1; name && i < MQ_DTYPE_COUNT; i++)
        if (!strcmp(name, dtype_info[i].name)) {
            if (out) *out = (mq_dtype)i;
            return 1;
        }
    return 0;
}

size_t mq_dtype_size(mq_dtype dt) {
    if ((int)dt <= 0 || dt >= MQ_DTYPE_COUNT) return 0;
    return dtype_info[dt].size;
}

int mq_dtype_is_float(mq_dtype dt) {
    return dt == MQ_F16 || dt == MQ_BF16 || dt == MQ_F32 || dt == MQ_F64;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float mq_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) {
        float f = (float)mant * 0x1p-24f; /* zero or subnormal: exact */
        return bits_f32(f32_bits(f) | sign);
    }
    if (exp == 31) /* Inf, or NaN quieted with its payload kept */
        return bits_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t mq_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000;
    u &= 0x7fffffffu;
    uint16_t o;
    if (u >= 0x47800000u) { /* >= 65536, Inf or NaN */
        if (u > 0x7f800000u) o = (uint16_t)(0x7e00 | ((u >> 13) & 0x3ff));
        else o = 0x7c00;
    } else if (u < 0x38800000u) { /* below the smallest normal half: let the FPU round */
        float v = bits_f32(u) + 0.5f;
        o = (uint16_t)(f32_bits(v) - 0x3f000000u);
    } else {
        uint32_t odd = (u >> 13) & 1;
        u += 0xc8000fffu + odd; /* rebias exponent (15 - 127) << 23 and round half to even */
        o = (uint16_t)(u >> 13);
    }
    return (uint16_t)(o | sign);
}

float mq_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t mq_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* F64 -> F32 rounding to odd: a later rounding to F16/BF16 is then correctly rounded. */
static float f64_to_f32_odd(double d) {
    float f = (float)d;
    if (isnan(d) || isinf(f) || (double)f == d) return f;
    if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f);
    return bits_f32(f32_bits(f) | 1u);
}

void mq__f16_to_f32_ref(const void *src, void *dst, size_t n) {
    for (size_t i = 0; i < n; i++) mq__st_f32(dst, i, mq_f16_to_f32(mq__ld_u16(src, i)));
}
void mq__f32_to_f16_ref(const void *src, void *dst, size_t n) {
    for (size_t i = 0; i < n; i++) mq__st_u16(dst, i, mq_f32_to_f16(mq__ld_f32(src, i)));
}
void mq__bf16_to_f32_ref(const void *src, void *dst, size_t n) {
    for (size_t i = 0; i < n; i++) mq__st_f32(dst, i, mq_bf16_to_f32(mq__ld_u16(src, i)));
}
void mq__f32_to_bf16_ref(const void *src, void *dst, size_t n) {
    for (size_t i = 0; i < n; i++) mq__st_u16(dst, i, mq_f32_to_bf16(mq__ld_f32(src, i)));
}

const mq_convert_fns *mq__convert_fns(const mq_ctx *ctx) {
    static const mq_convert_fns ref = {mq__f16_to_f32_ref, mq__f32_to_f16_ref,
                                       mq__bf16_to_f32_ref, mq__f32_to_bf16_ref};
    const void *by_level[] = {&ref, MQ__X86_ONLY(mq__convert_fns_avx2()),
                              MQ__X86_ONLY(mq__convert_fns_avx512()),
                              MQ__ARM64_ONLY(mq__convert_fns_neon()), NULL};
    return (const mq_convert_fns *)mq__isa_pick(ctx, by_level, 5);
}

/* Converts one element of any float type to F32 (F64 rounded to odd when `odd`). */
static float load_f32(mq_dtype dt, const void *src, size_t i, bool odd) {
    switch (dt) {
    case MQ_F32: return mq__ld_f32(src, i);
    case MQ_F16: return mq_f16_to_f32(mq__ld_u16(src, i));
    case MQ_BF16: return mq_bf16_to_f32(mq__ld_u16(src, i));
    default: {
        double d = mq__ld_f64(src, i);
        return odd ? f64_to_f32_odd(d) : (float)d;
    }
    }
}

mq_status mq_convert(mq_ctx *ctx, mq_dtype dst_dtype, void *dst, mq_dtype src_dtype,
                     const void *src, size_t n) {
    if (!mq_dtype_is_float(dst_dtype) || !mq_dtype_is_float(src_dtype))
        return mq__fail(ctx, MQ_ERR_INVALID, "conversion from %s to %s is not supported",
                        mq_dtype_name(src_dtype), mq_dtype_name(dst_dtype));
    if (n == 0) return MQ_OK;
    if (n > SIZE_MAX / 8)
        return mq__fail(ctx, MQ_ERR_INVALID, "conversion of %zu elements: size overflows", n);
    if (dst_dtype == src_dtype) {
        memcpy(dst, src, n * mq_dtype_size(src_dtype));
        return MQ_OK;
    }
    const mq_convert_fns *fn = mq__convert_fns(ctx);
    if (src_dtype == MQ_F16 && dst_dtype == MQ_F32) fn->f16_to_f32(src, dst, n);
    else if (src_dtype == MQ_BF16 && dst_dtype == MQ_F32) fn->bf16_to_f32(src, dst, n);
    else if (src_dtype == MQ_F32 && dst_dtype == MQ_F16) fn->f32_to_f16(src, dst, n);
    else if (src_dtype == MQ_F32 && dst_dtype == MQ_BF16) fn->f32_to_bf16(src, dst, n);
    else if (dst_dtype == MQ_F64) {
        for (size_t i = 0; i < n; i++) mq__st_f64(dst, i, (double)load_f32(src_dtype, src, i, false));
    } else if (dst_dtype == MQ_F32) {
        for (size_t i = 0; i < n; i++) mq__st_f32(dst, i, load_f32(src_dtype, src, i, false));
    } else {
        /* to F16/BF16 from F64, F16 or BF16: through F32 (exact for F16/BF16 sources, rounded
         * to odd for F64, so the result is rounded once) */
        bool to_half = dst_dtype == MQ_F16;
        for (size_t i = 0; i < n; i++) {
            float f = load_f32(src_dtype, src, i, true);
            mq__st_u16(dst, i, to_half ? mq_f32_to_f16(f) : mq_f32_to_bf16(f));
        }
    }
    return MQ_OK;
}
