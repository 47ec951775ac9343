/* Vector conversion paths. Each file dtype_convert_<isa>.c returns its table, or NULL when
 * the CPU lacks a feature it needs; every entry must match the scalar reference bit for bit. */
#ifndef MQ_CONVERT_H
#define MQ_CONVERT_H

#include "common/internal.h"

typedef struct mq_convert_fns {
    void (*f16_to_f32)(const uint16_t *src, float *dst, size_t n);
    void (*f32_to_f16)(const float *src, uint16_t *dst, size_t n);
    void (*bf16_to_f32)(const uint16_t *src, float *dst, size_t n);
    void (*f32_to_bf16)(const float *src, uint16_t *dst, size_t n);
} mq_convert_fns;

MQ_HIDDEN const mq_convert_fns *mq__convert_fns(const mq_ctx *ctx);
MQ_HIDDEN const mq_convert_fns *mq__convert_fns_avx2(const mq_cpu *cpu);
MQ_HIDDEN const mq_convert_fns *mq__convert_fns_avx512(const mq_cpu *cpu);

MQ_HIDDEN void mq__f16_to_f32_ref(const uint16_t *src, float *dst, size_t n);
MQ_HIDDEN void mq__f32_to_f16_ref(const float *src, uint16_t *dst, size_t n);
MQ_HIDDEN void mq__bf16_to_f32_ref(const uint16_t *src, float *dst, size_t n);
MQ_HIDDEN void mq__f32_to_bf16_ref(const float *src, uint16_t *dst, size_t n);

#endif
