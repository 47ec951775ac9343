/* Vector conversion paths. Each file dtype_convert_<isa>.c returns its table, or NULL when
 * the CPU lacks a feature it needs; every entry must match the scalar reference bit for bit.
 * Pointers may be unaligned (tensor data comes straight from mapped files): src holds n
 * elements of the source type, dst receives n elements of the destination type. */
#ifndef MQ_CONVERT_H
#define MQ_CONVERT_H

#include "common/internal.h"

typedef void (*mq_convert_fn)(const void *src, void *dst, size_t n);

typedef struct mq_convert_fns {
    mq_convert_fn f16_to_f32;
    mq_convert_fn f32_to_f16;
    mq_convert_fn bf16_to_f32;
    mq_convert_fn f32_to_bf16;
} mq_convert_fns;

MQ_HIDDEN const mq_convert_fns *mq__convert_fns(const mq_ctx *ctx);
MQ_HIDDEN const mq_convert_fns *mq__convert_fns_avx2(void);
MQ_HIDDEN const mq_convert_fns *mq__convert_fns_avx512(void);
MQ_HIDDEN const mq_convert_fns *mq__convert_fns_neon(void);

MQ_HIDDEN void mq__f16_to_f32_ref(const void *src, void *dst, size_t n);
MQ_HIDDEN void mq__f32_to_f16_ref(const void *src, void *dst, size_t n);
MQ_HIDDEN void mq__bf16_to_f32_ref(const void *src, void *dst, size_t n);
MQ_HIDDEN void mq__f32_to_bf16_ref(const void *src, void *dst, size_t n);

/* Unaligned loads and stores of host-order values (memcpy compiles to one move). */
static inline uint16_t mq__ld_u16(const void *p, size_t i) {
    uint16_t v;
    __builtin_memcpy(&v, (const char *)p + 2 * i, 2);
    return v;
}
static inline float mq__ld_f32(const void *p, size_t i) {
    float v;
    __builtin_memcpy(&v, (const char *)p + 4 * i, 4);
    return v;
}
static inline double mq__ld_f64(const void *p, size_t i) {
    double v;
    __builtin_memcpy(&v, (const char *)p + 8 * i, 8);
    return v;
}
static inline void mq__st_u16(void *p, size_t i, uint16_t v) {
    __builtin_memcpy((char *)p + 2 * i, &v, 2);
}
static inline void mq__st_f32(void *p, size_t i, float v) {
    __builtin_memcpy((char *)p + 4 * i, &v, 4);
}
static inline void mq__st_f64(void *p, size_t i, double v) {
    __builtin_memcpy((char *)p + 8 * i, &v, 8);
}

#endif
