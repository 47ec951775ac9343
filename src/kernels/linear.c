/* Quantized Linear: description checks, repacking into the kernel layout (kernels.h),
 * activation preparation, and the threaded forward pass. */
#include "kernels/kernels.h"
#include "common/convert.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <string.h>

struct mq_linear {
    mq_ctx *ctx;          /* allocator for the object and its scratch */
    mq__lin L;
    void *raw[7];         /* allocations behind the aligned pointers in L */
    uint64_t weight_bytes;
    /* scratch kept between calls */
    void *scratch_raw;
    size_t scratch_cap;
};

/* 64-byte aligned, zeroed allocation; *raw receives what to free. */
static void *alloc_aligned(mq_ctx *ctx, uint64_t bytes, void **raw) {
    uint64_t n;
    if (!mq__add_u64(bytes, 64, &n) || n > SIZE_MAX) {
        mq__fail(ctx, MQ_ERR_NOMEM, "linear: %llu bytes do not fit in memory",
                 (unsigned long long)bytes);
        return NULL;
    }
    char *p = (char *)mq__calloc(ctx, 1, (size_t)n);
    *raw = p;
    if (!p) return NULL;
    return p + ((64 - ((uintptr_t)p & 63)) & 63);
}

void mq_linear_desc_init_sized(mq_linear_desc *desc, size_t struct_size, mq_qtype type,
                               int64_t out_features, int64_t in_features, const void *weight) {
    mq_linear_desc d;
    memset(&d, 0, sizeof d);
    d.type = type;
    d.granularity = MQ_PER_CHANNEL;
    d.group_size = 128;
    d.out_features = out_features;
    d.in_features = in_features;
    d.weight_dtype = MQ_F32;
    d.weight = weight;
    mq__struct_default(desc, struct_size, &d, sizeof d);
}

void mq_linear_desc_from_qspec_sized(mq_linear_desc *desc, size_t struct_size,
                                     const mq_qspec *spec, int64_t out_features,
                                     int64_t in_features, const void *data, const float *scale,
                                     const void *zero_point) {
    mq_linear_desc d;
    mq_linear_desc_init(&d, spec->type, out_features, in_features, data);
    d.scheme = spec->scheme;
    d.granularity = spec->granularity;
    d.group_size = spec->group_size;
    d.scale = scale;
    d.zero_point = zero_point;
    mq__struct_default(desc, struct_size, &d, sizeof d);
}

void mq_linear_free(mq_linear *lin) {
    if (!lin) return;
    mq_ctx *ctx = lin->ctx;
    for (int i = 0; i < 7; i++) mq__free(ctx, lin->raw[i]);
    mq__free(ctx, lin->scratch_raw);
    mq__free(ctx, lin);
}

int64_t mq_linear_out_features(const mq_linear *lin) { return lin->L.N; }
int64_t mq_linear_in_features(const mq_linear *lin) { return lin->L.K; }
uint64_t mq_linear_weight_bytes(const mq_linear *lin) { return lin->weight_bytes; }


/* Checks the description; fills kind, sizes and group structure of L. */
static mq_status check_desc(mq_ctx *ctx, const mq_linear_desc *d, mq__lin *L, int64_t *src_groups) {
    const char *w = "linear";
    if (d->out_features < 1 || d->in_features < 1 || d->out_features > ((int64_t)1 << 40) ||
        d->in_features > ((int64_t)1 << 40))
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: shape [%lld, %lld] is not a weight shape", w,
                        (long long)d->out_features, (long long)d->in_features);
    if (!d->weight) return mq__fail(ctx, MQ_ERR_INVALID, "%s: no weight data", w);
    memset(L, 0, sizeof *L);
    L->N = d->out_features;
    L->K = d->in_features;
    L->nblk = (L->N + MQ__LANES - 1) / MQ__LANES;
    L->act = d->act;
    /* bounds every size derived below (weights, tables: at most 4 bytes per padded cell) */
    uint64_t cells;
    if (!mq__mul_u64((uint64_t)L->nblk * MQ__LANES, (uint64_t)L->K + MQ__KALIGN, &cells) ||
        cells > ((uint64_t)1 << 60))
        return mq__fail(ctx, MQ_ERR_NOMEM, "%s: a [%lld, %lld] weight is too large", w,
                        (long long)L->N, (long long)L->K);
    if (d->act != MQ_ACT_F32 && d->act != MQ_ACT_DYNAMIC && d->act != MQ_ACT_STATIC)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: unknown activation mode %d", w, (int)d->act);
    switch (d->type) {
    case MQ_Q_NONE:
        if (d->weight_dtype == MQ_DTYPE_INVALID || d->weight_dtype == MQ_F32) L->kind = MQ__W_F32;
        else if (d->weight_dtype == MQ_F16) L->kind = MQ__W_F16;
        else if (d->weight_dtype == MQ_BF16) L->kind = MQ__W_BF16;
        else
            return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: unquantized weights of dtype %s", w,
                            mq_dtype_name(d->weight_dtype));
        break;
    case MQ_Q_FP16: L->kind = MQ__W_F16; break;
    case MQ_Q_BF16: L->kind = MQ__W_BF16; break;
    case MQ_Q_INT8: case MQ_Q_UINT8: L->kind = MQ__W_I8; break;
    case MQ_Q_INT4: case MQ_Q_UINT4: L->kind = MQ__W_I4; break;
    default: return mq__fail(ctx, MQ_ERR_INVALID, "%s: unknown weight type %d", w, (int)d->type);
    }
    bool integer = L->kind == MQ__W_I8 || L->kind == MQ__W_I4;
    if (!integer) {
        if (d->act != MQ_ACT_F32)
            return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: dynamic and static activation "
                            "quantization need integer weights", w);
        L->Kp = L->K;
        L->gs = L->K;
        L->G = 1;
        return MQ_OK;
    }
    if (!d->scale) return mq__fail(ctx, MQ_ERR_INVALID, "%s: no weight scales", w);
    if (d->scheme != MQ_SYMMETRIC && d->scheme != MQ_ASYMMETRIC)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: unknown scheme %d", w, (int)d->scheme);
    if (d->scheme == MQ_ASYMMETRIC && !d->zero_point)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: asymmetric weights without zero points", w);
    L->Kp = (L->K + MQ__KALIGN - 1) / MQ__KALIGN * MQ__KALIGN;
    int64_t split = d->act == MQ_ACT_F32 ? L->Kp : MQ__MAX_GROUP; /* int32-exact group length */
    if (d->granularity == MQ_PER_TENSOR || d->granularity == MQ_PER_CHANNEL ||
        (d->granularity == MQ_PER_GROUP && d->group_size >= L->K)) {
        *src_groups = d->granularity == MQ_PER_TENSOR ? 0 : 1; /* one scale for the row */
        L->gs = L->Kp <= split ? L->Kp : split;
    } else if (d->granularity == MQ_PER_GROUP) {
        if (d->group_size < 1)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: group size %d", w, d->group_size);
        if (d->group_size % MQ__KALIGN)
            return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: group size %d is not a multiple of %d",
                            w, d->group_size, MQ__KALIGN);
        if (d->group_size > split)
            return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "%s: group size %d is above %d for "
                            "integer activations", w, d->group_size, (int)split);
        *src_groups = (L->K + d->group_size - 1) / d->group_size;
        L->gs = d->group_size;
    } else {
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: unknown granularity %d", w, (int)d->granularity);
    }
    L->G = (L->Kp + L->gs - 1) / L->gs;
    if (d->act == MQ_ACT_STATIC) {
        if (!(d->input_scale > 0) || !isfinite(d->input_scale))
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: input scale %g", w, (double)d->input_scale);
        if (d->input_zero_point < 0 || d->input_zero_point > 255)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: input zero point %d outside [0, 255]", w,
                            d->input_zero_point);
        L->za = d->input_zero_point;
        L->in_scale = d->input_scale;
    } else {
        L->za = 128;
    }
    /* a given zero point is used whatever the scheme (unsigned symmetric layouts store their
     * constant mid-range zero point) */
    L->has_zpw = (mq__qtype_is_integer(d->type) && mq__qtype_bits(d->type) == 8) && d->zero_point;
    L->has_zq4 = mq__qtype_bits(d->type) == 4 && d->zero_point;
    L->zq_const = d->type == MQ_Q_INT4 ? 8 : 0;
    return MQ_OK;
}

static float load_scale(const mq_linear_desc *d, int64_t n, int64_t g, int64_t src_groups) {
    int64_t i = src_groups == 0 ? 0 : n * src_groups + (src_groups == 1 ? 0 : g);
    return mq__ld_f32(d->scale, (size_t)i);
}

static int zero_point_at(const mq_linear_desc *d, int64_t n, int64_t g, int64_t src_groups) {
    int64_t i = src_groups == 0 ? 0 : n * src_groups + (src_groups == 1 ? 0 : g);
    const uint8_t *z = (const uint8_t *)d->zero_point;
    return d->type == MQ_Q_UINT8 || d->type == MQ_Q_UINT4 ? z[i] : (int)(int8_t)z[i];
}

/* Signed kernel weight of row n, column k < K (before any zero point). */
static int src_weight(const mq_linear_desc *d, int64_t n, int64_t k) {
    const uint8_t *b = (const uint8_t *)d->weight;
    if ((mq__qtype_is_integer(d->type) && mq__qtype_bits(d->type) == 8)) {
        uint8_t q = b[n * d->in_features + k];
        return d->type == MQ_Q_INT8 ? (int)(int8_t)q : (int)q - 128;
    }
    int64_t words = (d->in_features + 7) / 8;
    uint32_t word = mq__load_le32(b + 4 * (n * words + k / 8));
    return (int)((word >> (4 * (k % 8))) & 15); /* the nibble */
}

static mq_status repack_float(mq_ctx *ctx, mq_linear *lin, const mq_linear_desc *d) {
    mq__lin *L = &lin->L;
    size_t es = L->kind == MQ__W_F32 ? 4 : 2;
    uint64_t bytes = (uint64_t)L->nblk * MQ__LANES * (uint64_t)L->K * es;
    char *w = (char *)alloc_aligned(ctx, bytes, &lin->raw[0]);
    if (!w) return MQ_ERR_NOMEM;
    for (int64_t n = 0; n < L->N; n++) {
        const char *src = (const char *)d->weight + (size_t)(n * L->K) * es;
        int64_t b = n / MQ__LANES, lane = n % MQ__LANES;
        for (int64_t k = 0; k < L->K; k++)
            memcpy(w + ((size_t)((b * L->K + k) * MQ__LANES + lane)) * es, src + k * es, es);
    }
    L->w = w;
    lin->weight_bytes = bytes;
    return MQ_OK;
}

static mq_status repack_int(mq_ctx *ctx, mq_linear *lin, const mq_linear_desc *d,
                            int64_t src_groups) {
    mq__lin *L = &lin->L;
    bool four = L->kind == MQ__W_I4;
    uint64_t wbytes = (uint64_t)L->nblk * MQ__LANES * (uint64_t)L->Kp / (four ? 2 : 1);
    uint64_t tab = (uint64_t)L->nblk * (uint64_t)L->G * MQ__LANES * 4;
    L->w = alloc_aligned(ctx, wbytes, &lin->raw[0]);
    L->scale = (float *)alloc_aligned(ctx, tab, &lin->raw[1]);
    L->k1 = (int32_t *)alloc_aligned(ctx, tab, &lin->raw[2]);
    if (!L->w || !L->scale || !L->k1) return MQ_ERR_NOMEM;
    if (L->has_zpw && !(L->zpw = (int32_t *)alloc_aligned(ctx, tab, &lin->raw[3])))
        return MQ_ERR_NOMEM;
    if (L->has_zq4 && !(L->zq4 = (uint32_t *)alloc_aligned(ctx, tab, &lin->raw[4])))
        return MQ_ERR_NOMEM;
    lin->weight_bytes = wbytes + tab * (1 + (L->has_zpw || L->has_zq4));
    int8_t *w8 = (int8_t *)L->w;
    uint32_t *w4 = (uint32_t *)L->w;
    int64_t src_gs = src_groups > 1 ? d->group_size : L->K;
    for (int64_t n = 0; n < L->N; n++) {
        int64_t b = n / MQ__LANES, lane = n % MQ__LANES;
        for (int64_t g = 0; g < L->G; g++) {
            int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
            int64_t sg = src_groups > 1 ? k0 / src_gs : 0;
            int64_t ti = mq__gidx(L, b, g) + lane;
            float s = load_scale(d, n, sg, src_groups);
            if (!isfinite(s))
                return mq__fail(ctx, MQ_ERR_FORMAT, "linear: weight scale of row %lld is not "
                                "finite", (long long)n);
            L->scale[ti] = s;
            int zpw = 0, zq = L->zq_const;
            if (L->has_zpw) {
                zpw = zero_point_at(d, n, sg, src_groups) - (d->type == MQ_Q_UINT8 ? 128 : 0);
                L->zpw[ti] = zpw;
            }
            if (L->has_zq4) {
                zq = zero_point_at(d, n, sg, src_groups) + (d->type == MQ_Q_INT4 ? 8 : 0);
                if (zq < 0 || zq > 15)
                    return mq__fail(ctx, MQ_ERR_FORMAT, "linear: 4-bit zero point of row %lld "
                                    "group %lld is out of range", (long long)n, (long long)sg);
                L->zq4[ti] = (uint32_t)zq * 0x01010101u;
            }
            int64_t wsum = 0;
            for (int64_t k = k0; k < k1; k++) {
                if (four) {
                    int nib = k < L->K ? src_weight(d, n, k) : zq;
                    wsum += nib - zq;
                    int64_t word = (b * (L->Kp / 8) + k / 8) * MQ__LANES + lane;
                    int shift = 8 * (int)(k % 4) + 4 * (int)((k % 8) / 4);
                    w4[word] |= (uint32_t)nib << shift;
                } else {
                    int q = k < L->K ? src_weight(d, n, k) : 0;
                    wsum += q;
                    w8[((b * (L->Kp / 4) + k / 4) * MQ__LANES + lane) * 4 + k % 4] = (int8_t)q;
                }
            }
            int64_t v = -(int64_t)L->za * wsum + (k1 - k0) * (int64_t)L->za * zpw;
            L->k1[ti] = (int32_t)(uint32_t)((uint64_t)v & 0xffffffffu); /* exact modulo 2^32 */
        }
    }
    /* padded channels: nibbles equal to zq (w = 0) */
    if (four && !L->has_zq4 && L->zq_const)
        for (int64_t n = L->N; n < L->nblk * MQ__LANES; n++)
            for (int64_t kw = 0; kw < L->Kp / 8; kw++)
                w4[((n / MQ__LANES) * (L->Kp / 8) + kw) * MQ__LANES + n % MQ__LANES] = 0x88888888u;
    return MQ_OK;
}

mq_status mq__linear_desc_read(mq_ctx *ctx, const mq_linear_desc *desc, mq_linear_desc *out) {
    if (!desc) return mq__fail(ctx, MQ_ERR_INVALID, "linear: no description");
    mq_linear_desc_init(out, MQ_Q_NONE, 0, 0, NULL);
    return mq__struct_read(ctx, "mq_linear_desc", desc, out, sizeof *out,
                           MQ__LAYOUT_END(mq_linear_desc, input_zero_point));
}

mq_status mq_linear_create(mq_ctx *ctx, const mq_linear_desc *caller_desc, mq_linear **out) {
    *out = NULL;
    mq_linear_desc full;
    MQ_TRY(mq__linear_desc_read(ctx, caller_desc, &full));
    const mq_linear_desc *desc = &full;
    mq_linear *lin = (mq_linear *)mq__calloc(ctx, 1, sizeof *lin);
    if (!lin) return MQ_ERR_NOMEM;
    lin->ctx = ctx;
    int64_t src_groups = 1;
    mq_status st = check_desc(ctx, desc, &lin->L, &src_groups);
    if (st == MQ_OK) {
        if (lin->L.kind == MQ__W_I8 || lin->L.kind == MQ__W_I4)
            st = repack_int(ctx, lin, desc, src_groups);
        else
            st = repack_float(ctx, lin, desc);
    }
    if (st == MQ_OK) {
        lin->L.bias = (float *)alloc_aligned(ctx, (uint64_t)lin->L.nblk * MQ__LANES * 4,
                                             &lin->raw[5]);
        if (!lin->L.bias) st = MQ_ERR_NOMEM;
        else if (desc->bias)
            for (int64_t n = 0; n < lin->L.N; n++) lin->L.bias[n] = mq__ld_f32(desc->bias, (size_t)n);
    }
    if (st != MQ_OK) {
        mq_linear_free(lin);
        return st;
    }
    *out = lin;
    return MQ_OK;
}

/* ---- activations ---------------------------------------------------------------------- */

typedef struct fwd_job {
    const mq__lin *L;
    const mq__act *A;
    mq__tile_fn fn;
    mq__quant_row_fn quant_row;
    float *y;
    const float *x;
    uint8_t *xu;
    float *xf, *sx;
    int32_t *xusum;
} fwd_job;

static mq_status prep_rows(void *arg, int64_t m0, int64_t m1, int tid) {
    (void)tid;
    fwd_job *j = (fwd_job *)arg;
    const mq__lin *L = j->L;
    for (int64_t m = m0; m < m1; m++) {
        const float *x = j->x + m * L->K;
        if (L->act == MQ_ACT_F32) {
            memcpy(j->xf + m * L->Kp, x, (size_t)L->K * 4);
            memset(j->xf + m * L->Kp + L->K, 0, (size_t)(L->Kp - L->K) * 4);
            continue;
        }
        uint8_t *xu = j->xu + m * L->Kp;
        j->quant_row(L, x, xu, &j->sx[m]);
        memset(xu + L->K, L->za, (size_t)(L->Kp - L->K));
        if (j->xusum)
            for (int64_t g = 0; g < L->G; g++) {
                int64_t k0 = g * L->gs, k1 = k0 + L->gs < L->Kp ? k0 + L->gs : L->Kp;
                int32_t s = 0;
                for (int64_t k = k0; k < k1; k++) s += xu[k];
                j->xusum[m * L->G + g] = s;
            }
    }
    return MQ_OK;
}

static mq_status run_blocks(void *arg, int64_t b0, int64_t b1, int tid) {
    (void)tid;
    fwd_job *j = (fwd_job *)arg;
    j->fn(j->L, j->A, 0, j->A->M, b0, b1, j->y, j->L->N);
    return MQ_OK;
}

static const mq__linear_fns *pick_fns(const mq_ctx *ctx) {
    const void *by_level[] = {&mq__linear_ref, MQ__X86_ONLY(mq__linear_fns_avx2()),
                              MQ__X86_ONLY(mq__linear_fns_avx512()),
                              MQ__ARM64_ONLY(mq__linear_fns_neon()),
                              MQ__ARM64_ONLY(mq__linear_fns_dotprod())};
    return (const mq__linear_fns *)mq__isa_pick(ctx, by_level, 5);
}

/* Scratch of at least `bytes`, reused across calls (fresh pages are slow to touch). */
static void *scratch(mq_ctx *ctx, mq_linear *lin, size_t bytes) {
    if (bytes <= lin->scratch_cap) return (char *)lin->scratch_raw;
    mq__free(lin->ctx, lin->scratch_raw);
    lin->scratch_cap = 0;
    lin->scratch_raw = lin->ctx->alloc.alloc(lin->ctx->alloc.ud, bytes);
    if (!lin->scratch_raw) {
        mq__fail(ctx, MQ_ERR_NOMEM, "linear: out of memory (%zu bytes of scratch)", bytes);
        return NULL;
    }
    lin->scratch_cap = bytes;
    return lin->scratch_raw;
}

static mq_status forward_with(mq_ctx *ctx, mq_linear *lin, const float *x, int64_t M, float *y,
                                 const mq__linear_fns *fns) {
    mq__lin *L = &lin->L;
    if (M < 0 || (M > 0 && (!x || !y)))
        return mq__fail(ctx, MQ_ERR_INVALID, "linear: %lld rows of input", (long long)M);
    if (M == 0) return MQ_OK;
    uint64_t row_bytes = (uint64_t)L->Kp * (L->act == MQ_ACT_F32 ? 4 : 1) + 64 +
                         (uint64_t)L->G * 4 + 4, total;
    if (!mq__mul_u64(row_bytes, (uint64_t)M, &total) || total > SIZE_MAX - 256)
        return mq__fail(ctx, MQ_ERR_NOMEM, "linear: %lld rows of input need too much scratch",
                        (long long)M);
    char *s = (char *)scratch(ctx, lin, (size_t)total + 256);
    if (!s) return MQ_ERR_NOMEM;
    s += (64 - ((uintptr_t)s & 63)) & 63;
    fwd_job j = {.L = L, .x = x, .y = y,
                 .quant_row = fns->quant_row ? fns->quant_row : mq__linear_ref.quant_row};
    mq__act A = {.M = M, .k0 = 0, .k1 = L->K};
    if (L->act == MQ_ACT_F32 && (L->kind == MQ__W_I8 || L->kind == MQ__W_I4)) {
        j.xf = (float *)s;
        A.xf = j.xf;
        j.fn = fns->wonly;
    } else if (L->act == MQ_ACT_F32) {
        A.xf = x; /* float weights read x as given */
        j.fn = fns->float_w;
    } else {
        j.xu = (uint8_t *)s;
        j.sx = (float *)(s + (size_t)(M * L->Kp + 64) / 64 * 64);
        j.xusum = L->has_zpw ? (int32_t *)(j.sx + M) : NULL;
        A.xu = j.xu;
        A.sx = j.sx;
        A.xusum = j.xusum;
        j.fn = fns->integer;
    }
    j.A = &A;
    if (j.xf || j.xu) MQ_TRY(mq__parallel_for(ctx, M, 16, prep_rows, &j));
    /* Chunks of output channel blocks; every output is computed the same way in any chunk,
     * so the chunking may follow the thread count. Eight blocks feed the widest single-row
     * tiles, four the next; narrow layers take four rather than one block a chunk (a chunk of
     * one runs the general tiles at a third of the speed). */
    int64_t threads = mq__thread_count(ctx);
    int64_t grain = L->nblk >= 64 || L->nblk >= 8 * threads ? 8 : L->nblk >= 4 ? 4 : 1;
    return mq__parallel_for(ctx, L->nblk, grain, run_blocks, &j);
}

mq_status mq_linear_forward(mq_ctx *ctx, mq_linear *lin, const float *x, int64_t M, float *y) {
    if (!lin) return mq__fail(ctx, MQ_ERR_INVALID, "linear: no layer");
    return forward_with(ctx, lin, x, M, y, pick_fns(ctx));
}
