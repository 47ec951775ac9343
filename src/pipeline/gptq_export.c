/* The GPTQ checkpoint layout written from monoquant's quantized tensors (gptq_export.h). */
#include "pipeline/gptq_export.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

mq_status mq__gptq_shape_of(mq_ctx *ctx, const char *name, const mq_qspec *spec, int ndim,
                            const int64_t *shape, mq__gptq_shape *out) {
    memset(out, 0, sizeof *out);
    if (ndim != 2)
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': GPTQ stores 2-D Linear weights only "
                        "(this one has %d dims)", name, ndim);
    switch (spec->type) {
    case MQ_Q_INT4: case MQ_Q_UINT4: out->bits = 4; break;
    case MQ_Q_INT8: case MQ_Q_UINT8: out->bits = 8; break;
    default:
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': GPTQ stores 4- or 8-bit integers, "
                        "not %s", name, mq_qtype_name(spec->type));
    }
    out->n = shape[0];
    out->k = shape[1];
    int64_t pf = 32 / out->bits;
    /* symmetric = zero point fixed at mid-range: the signed types' symmetric scheme (and the
     * unsigned types' symmetric one, whose stored zero point is that mid-range) */
    out->sym = spec->scheme == MQ_SYMMETRIC;
    if (spec->granularity == MQ_PER_TENSOR)
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': GPTQ has no per-tensor scales (use "
                        "--granularity channel or group)", name);
    if (spec->granularity == MQ_PER_CHANNEL) {
        out->groups = 1;
        out->group_size = out->k;
    } else {
        if (spec->group_size < 1 || out->k % spec->group_size != 0)
            return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': GPTQ loaders need the group size "
                            "(%d) to divide in_features (%lld)", name, spec->group_size,
                            (long long)out->k);
        out->group_size = spec->group_size;
        out->groups = out->k / spec->group_size;
    }
    if (out->k % pf != 0 || out->n % pf != 0)
        return mq__fail(ctx, MQ_ERR_INVALID, "tensor '%s': GPTQ packs %lld values per int32 "
                        "along both dims; [%lld, %lld] is not a multiple of %lld", name,
                        (long long)pf, (long long)out->n, (long long)out->k, (long long)pf);
    return MQ_OK;
}

void mq__gptq_sizes(const mq__gptq_shape *g, uint64_t bytes[4]) {
    int64_t pf = 32 / g->bits;
    bytes[0] = (uint64_t)(g->k / pf) * (uint64_t)g->n * 4;
    bytes[1] = (uint64_t)g->groups * (uint64_t)(g->n / pf) * 4;
    bytes[2] = (uint64_t)g->groups * (uint64_t)g->n * 2;
    bytes[3] = (uint64_t)g->k * 4;
}

/* Unsigned code of column c in a row of monoquant's layout (GPTQ stores codes unsigned:
 * signed types are shifted by 2^(b-1), which monoquant's 4-bit words already hold). */
static inline uint32_t code_at(const mq_qspec *spec, const uint8_t *row, int64_t c) {
    switch (spec->type) {
    case MQ_Q_INT4:
    case MQ_Q_UINT4: return (uint32_t)(row[c / 2] >> (4 * (c % 2))) & 15u;
    case MQ_Q_INT8: return (uint32_t)((int32_t)(int8_t)row[c] + 128);
    default: return row[c];
    }
}

/* Zero point in the unsigned code domain. */
static inline int32_t zero_at(const mq_qspec *spec, const mq_qlayout *L, const void *zp,
                              int64_t i) {
    int32_t mid = 1 << (mq__qtype_bits(spec->type) - 1); /* 128 or 8 */
    if (!zp || !L->has_zero_point) return mid;
    int32_t z = L->zero_point_dtype == MQ_U8 ? ((const uint8_t *)zp)[i]
                                              : ((const int8_t *)zp)[i];
    return mq__qformat_of(spec->type)->is_signed ? z + mid : z;
}

static void or_field(uint8_t *words, int64_t w, int bits, int64_t pos, uint32_t v) {
    uint8_t *p = words + 4 * w;
    uint32_t x = mq__load_le32(p) | (v << (bits * pos));
    p[0] = (uint8_t)x, p[1] = (uint8_t)(x >> 8), p[2] = (uint8_t)(x >> 16), p[3] = (uint8_t)(x >> 24);
}

mq_status mq__gptq_pack_rows(mq_ctx *ctx, const char *name, const mq_qspec *spec,
                             const mq_qlayout *L, const mq__gptq_shape *g, const void *data,
                             const float *scale, const void *zero_point, int64_t rb,
                             int64_t re, uint8_t *qweight, uint8_t *qzeros, uint8_t *scales,
                             uint8_t *g_idx) {
    int bits = g->bits;
    int64_t pf = 32 / bits, n = g->n, k = g->k, G = g->groups;
    for (int64_t r = rb; r < re; r++) {
        const uint8_t *row = (const uint8_t *)data + (size_t)(r - rb) * L->row_bytes;
        /* every field of the row's words is written below: clear them first */
        for (int64_t kw = 0; kw < k / pf; kw++) memset(qweight + 4 * (kw * n + r), 0, 4);
        for (int64_t c = 0; c < k; c++)
            or_field(qweight, (c / pf) * n + r, bits, c % pf, code_at(spec, row, c));
        for (int64_t gi = 0; gi < G; gi++) {
            int64_t si = r * G + gi;
            float s = scale[si];
            uint16_t h = mq_f32_to_f16(s);
            float back = mq_f16_to_f32(h);
            if (!isfinite(back) || !(back > 0))
                return mq__fail(ctx, MQ_ERR_QUANT, "tensor '%s': scale %g of row %lld does not "
                                "fit F16, which GPTQ stores", name, (double)s, (long long)r);
            scales[2 * (gi * n + r)] = (uint8_t)h;
            scales[2 * (gi * n + r) + 1] = (uint8_t)(h >> 8);
            int32_t z = zero_at(spec, L, zero_point, si) - (g->sym ? 1 : 0);
            if (r % pf == 0) memset(qzeros + 4 * (gi * (n / pf) + r / pf), 0, 4);
            or_field(qzeros, gi * (n / pf) + r / pf, bits, r % pf,
                     (uint32_t)z & ((1u << bits) - 1u));
        }
    }
    if (rb == 0)
        for (int64_t c = 0; c < k; c++) mq__store_le32(g_idx + 4 * c, (uint32_t)(c / g->group_size));
    return MQ_OK;
}

char *mq__gptq_config_json(mq_ctx *ctx, const mq__gptq_shape *g, int static_groups) {
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"bits\": %d, \"group_size\": %lld, \"damp_percent\": 0.01, \"desc_act\": false, "
             "\"static_groups\": %s, \"sym\": %s, \"true_sequential\": true, "
             "\"lm_head\": false, \"quant_method\": \"gptq\", \"checkpoint_format\": \"%s\"}",
             g->bits, (long long)(g->groups == 1 ? -1 : g->group_size),
             static_groups ? "true" : "false", g->sym ? "true" : "false",
             g->sym ? "gptq" : "gptq_v2");
    return mq__strdup(ctx, buf);
}
