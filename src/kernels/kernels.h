/* Quantized Linear kernels: the repacked weight layout, the prepared activations, and the
 * per-instruction-set tile functions. The scalar reference (linear_ref.c) is the
 * specification; every vector path must give the same bits (same operations, same order).
 *
 * Weight layout: output channels in blocks of 16 (lanes), the last block padded with zeros.
 *  - float (F32/F16/BF16): [nblk][K][16] elements of the stored type.
 *  - 8-bit: signed w = q (INT8) or q - 128 (UINT8), [nblk][Kp/4][16][4] int8: each 32-bit
 *    lane holds four consecutive k of one channel (the vpdpbusd operand layout).
 *  - 4-bit: [nblk][Kp/8][16] uint32: lane word holds k0..k3 in the low nibbles of its bytes
 *    and k4..k7 in the high nibbles; w = nibble - zq (zq = zero point + 8 for INT4).
 * Kp is K rounded up to 8; padded weights are 0 (nibble = zq) and padded activations equal
 * the activation zero point, so padding adds exactly nothing to any sum.
 * Per (channel, group) tables, [nblk][G][16]: scale (f32); zpw (int32, 8-bit zero point,
 * shifted like w); zq4 (4-bit zero point replicated in four bytes); k1 (int32,
 * -za * sum(w) + n * za * zpw: the weight side of the zero-point expansion).
 *
 * Integer modes: with xu the u8 activations and za their zero point, per group
 *   dot = sum(xu * w) + k1 - zpw * sum(xu)   ( == sum((xu - za) * (w - zpw)), exact in int32 )
 *   acc = fmaf(scale, (float)dot, acc)  over groups in order;  y = fmaf(acc, sx, bias).
 * Weight-only: per group g = fmaf chain over k in order of x * (float)(w - zpw);
 *   acc = fmaf(scale, g, acc);  y = acc + bias. Float weights: y = (fmaf chain) + bias. */
#ifndef MQ_KERNELS_H
#define MQ_KERNELS_H

#include "common/internal.h"

enum { MQ__LANES = 16, MQ__KALIGN = 8, MQ__MAX_GROUP = 32768 };

typedef enum mq__wkind { MQ__W_F32, MQ__W_F16, MQ__W_BF16, MQ__W_I8, MQ__W_I4 } mq__wkind;

typedef struct mq__lin {
    mq__wkind kind;
    mq_act_mode act;
    int64_t N, K, Kp;   /* Kp: K for float kinds, K rounded up to 8 for integer kinds */
    int64_t nblk;       /* ceil(N / 16) */
    int64_t gs, G;      /* group length in k (padded space) and groups per row */
    bool has_zpw;       /* 8-bit with zero points */
    bool has_zq4;       /* 4-bit with zero points (else zq = 8 for INT4, 0 for UINT4) */
    int za;             /* activation zero point: 128 dynamic, input zero point static */
    float in_scale;     /* static */
    void *w;            /* layout above */
    float *scale;       /* [nblk][G][16] (integer kinds) */
    int32_t *zpw;       /* [nblk][G][16] or NULL */
    uint32_t *zq4;      /* [nblk][G][16] or NULL */
    int32_t *k1;        /* [nblk][G][16] (integer modes) */
    float *bias;        /* [nblk * 16], zeros when none */
    int zq_const;       /* 4-bit symmetric: the constant zq (8) */
} mq__lin;

/* Activations prepared for one forward call. */
typedef struct mq__act {
    int64_t M;
    const float *xf;    /* weight-only: [M][Kp] f32, zero-padded */
    const uint8_t *xu;  /* integer modes: [M][Kp] u8, padded with za */
    const int32_t *xusum; /* [M][G], 8-bit with zero points only */
    const float *sx;    /* [M] activation scales */
    int64_t k0, k1;     /* float weights, vector paths: the k range of a partial pass, whose
                           partial sums wait in y between passes (stored exactly) */
} mq__act;

/* Computes y[m][n] for m in [m0, m1) and channels in blocks [b0, b1) (n < N); y is [M][ldy]. */
typedef void (*mq__tile_fn)(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1,
                            int64_t b0, int64_t b1, float *y, int64_t ldy);

/* Dynamic and static modes: the row's K activations as u8 (xu[0..K)) and its scale. */
typedef void (*mq__quant_row_fn)(const mq__lin *L, const float *x, uint8_t *xu, float *sx);

typedef struct mq__linear_fns {
    mq__tile_fn float_w;  /* F32/F16/BF16 weights */
    mq__tile_fn wonly;    /* integer weights, f32 activations */
    mq__tile_fn integer;  /* integer weights, u8 activations */
    mq__quant_row_fn quant_row; /* NULL: the reference's */
} mq__linear_fns;

MQ_HIDDEN extern const mq__linear_fns mq__linear_ref;
/* The caller's description read as a full struct (ABI policy). */
MQ_HIDDEN mq_status mq__linear_desc_read(mq_ctx *ctx, const mq_linear_desc *desc,
                                         mq_linear_desc *out);
/* NULL when the CPU lacks what the path needs. */
MQ_HIDDEN const mq__linear_fns *mq__linear_fns_avx2(void);
MQ_HIDDEN const mq__linear_fns *mq__linear_fns_avx512(void);
MQ_HIDDEN const mq__linear_fns *mq__linear_fns_neon(void);
MQ_HIDDEN const mq__linear_fns *mq__linear_fns_dotprod(void);
/* ARM64: the NEON level's float and weight-only tiles, which the dotprod level reuses. */
MQ_HIDDEN void mq__neon_tile_float(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1,
                                   int64_t b0, int64_t b1, float *y, int64_t ldy);
MQ_HIDDEN void mq__neon_tile_wonly(const mq__lin *L, const mq__act *A, int64_t m0, int64_t m1,
                                   int64_t b0, int64_t b1, float *y, int64_t ldy);

/* Activation quantization, one element (the reference's arithmetic, which the vector rows
 * repeat lane by lane): v = x / s clamped (NaN to the upper bound), rounded half to even by
 * adding and subtracting 1.5 * 2^23 (exact for |v| <= 2^22 in the default rounding mode).
 * Dynamic: s = max|x| / 127 (1 for an all-zero row), u8 = round(v) + 128 with v in
 * [-127, 127]. Static: v in [-512, 512], u8 = round(v) + zero point clamped to [0, 255]. */
static inline float mq__round_even(float v) {
    const float magic = 0x1.8p23f;
    float t = v + magic;
    return t - magic;
}
static inline uint8_t mq__quant_dyn1(float x, float s) {
    float v = x / s;
    v = v < 127.0f ? v : 127.0f;
    v = v > -127.0f ? v : -127.0f;
    return (uint8_t)((int)mq__round_even(v) + 128);
}
static inline uint8_t mq__quant_static1(float x, float s, float zp) {
    float v = x / s;
    v = v < 512.0f ? v : 512.0f; /* beyond this the clamp to [0, 255] decides */
    v = v > -512.0f ? v : -512.0f;
    float q = mq__round_even(v) + zp;
    q = q < 255.0f ? q : 255.0f;
    q = q > 0.0f ? q : 0.0f;
    return (uint8_t)(int)q;
}

/* Index of (channel block b, group g, lane) in the per-group tables. */
static inline int64_t mq__gidx(const mq__lin *L, int64_t b, int64_t g) {
    return (b * L->G + g) * MQ__LANES;
}

#endif
