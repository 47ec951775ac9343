/* mq_quantize_rows / mq_dequantize_rows: rows split across the thread pool in chunks whose
 * boundaries depend only on the tensor's width, then quantized group by group with the
 * kernels of quant_internal.h. F32, F16 and BF16 rows are read in place and widened in
 * registers (4-bit codes packed as they are made); the search, GPTQ and F64 sources work on
 * the row converted to f32 in per-thread scratch. */
#include "quant/quant_internal.h"
#include "kernels/gemm.h"
#include "quant/gptq_cols.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* Rows per parallel chunk: about 32 K elements, whatever the thread count. */
static int64_t chunk_rows(int64_t cols) {
    int64_t g = 32768 / cols;
    return g < 1 ? 1 : g;
}

typedef struct scratch {
    float *row;      /* cols f32 */
    uint8_t *stage;  /* cols * 8 bytes: an unaligned source row, or cast output */
    uint8_t *codes;  /* cols * 2 bytes: codes, or cast output */
    float *deq;      /* cols f32: the dequantized row (error figures in the quantize pass) */
    mq_qround *qr;   /* groups_per_row: rounding parameters of a row's groups */
    int32_t *add;    /* groups_per_row: code offsets */
    /* GPTQ: a chunk of rows being updated (gptq_rows x cols), the negated scaled errors of
     * the current column block (gptq_rows x GPTQ_BLOCK), the chunk's codes, a gemm workspace */
    float *gw, *ge, *gws;
    uint8_t *gcodes;
    mq_qround *gqr;  /* act-order: rounding parameters and code offsets of the chunk's groups */
    int32_t *gadd;
} scratch;

enum { GPTQ_BLOCK = 128 };

typedef struct qjob {
    mq_ctx *ctx;
    const mq_qspec *spec;
    const mq_qlayout *lay;
    const mq_qkernels *k;
    mq_qformat f;
    bool is_cast;
    bool in_place;        /* the kernels read the source rows as they are (F32, F16, BF16) */
    mq_dtype src_dtype;   /* quantize: the source; dequantize: the data (casts) */
    size_t esz;
    const uint8_t *src;
    int64_t row_begin, grain;
    uint8_t *data;        /* quantize output */
    const uint8_t *qdata; /* dequantize input */
    float *scale;
    const float *cscale;
    uint8_t *zp;          /* I8 or U8 entries */
    const uint8_t *czp;
    float *out;
    const float *w;
    const float *gptq_u;  /* GPTQ: the factor of mq__gptq_factor */
    float *gptq_u_owned;
    int32_t *gptq_perm;   /* act-order: the column order of mq__gptq_order, or NULL */
    int64_t gptq_rows;    /* rows per GPTQ task */
    const mq__gemm_fns *gemm;
    mq__gptq_cols_fn gptq_cols; /* column order: the loop across rows, or NULL */
    mq__err_acc *err_parts; /* error figures per part of rows (NULL: not asked for) */
    int64_t err_rows;       /* rows per part (mq__err_rows_per_part) */
    int64_t err_segs;       /* parts per row, when a row is longer than a part */
    int err_overflow;       /* a part's float sums overflowed (atomic) */
    int64_t nrows;          /* rows of this call */
    scratch *sc;
    int nscratch;
    void *block;
    /* per tensor */
    mq_qparam tensor_param;
    float *chunk_min, *chunk_max;
    double *chunk_err;
    int ncand;
    mq_qcand cand[MQ_MAX_CANDIDATES];
} qjob;

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }

static mq_status alloc_scratch(qjob *j) {
    size_t cols = (size_t)j->lay->cols, gpr = (size_t)j->lay->groups_per_row;
    if (cols > SIZE_MAX / 64 || gpr > cols)
        return mq__fail(j->ctx, MQ_ERR_NOMEM, "quantize: rows of %zu elements are too wide",
                        cols);
    size_t gr = (size_t)j->gptq_rows;
    size_t per = round64(cols * 4) + round64(cols * 8) + round64(cols * 2) +
                 round64(gpr * sizeof(mq_qround)) + round64(gpr * 4) +
                 (j->err_parts ? round64(cols * 4) : 0);
    if (j->gptq_u) {
        if (gr > SIZE_MAX / 64 / cols)
            return mq__fail(j->ctx, MQ_ERR_NOMEM, "quantize: rows of %zu elements are too wide",
                            cols);
        per += round64(gr * cols * 4) + round64(gr * GPTQ_BLOCK * 4) +
               round64(MQ__GEMM_WS * 4) + round64(gr * cols);
        if (j->gptq_perm) per += round64(gr * gpr * sizeof(mq_qround)) + round64(gr * gpr * 4);
    }
    j->nscratch = mq__thread_count(j->ctx);
    if (per > SIZE_MAX / 2 / (size_t)j->nscratch)
        return mq__fail(j->ctx, MQ_ERR_NOMEM, "quantize: rows of %zu elements are too wide",
                        cols);
    j->sc = (scratch *)mq__calloc(j->ctx, (size_t)j->nscratch, sizeof *j->sc);
    j->block = mq__malloc(j->ctx, per * (size_t)j->nscratch + 64);
    if (!j->sc || !j->block) return MQ_ERR_NOMEM;
    uint8_t *p = (uint8_t *)(((uintptr_t)j->block + 63) & ~(uintptr_t)63);
    for (int t = 0; t < j->nscratch; t++) {
        j->sc[t].row = (float *)p;
        p += round64(cols * 4);
        j->sc[t].stage = p;
        p += round64(cols * 8);
        j->sc[t].codes = p;
        p += round64(cols * 2);
        j->sc[t].qr = (mq_qround *)p;
        p += round64(gpr * sizeof(mq_qround));
        j->sc[t].add = (int32_t *)p;
        p += round64(gpr * 4);
        if (j->err_parts) {
            j->sc[t].deq = (float *)p;
            p += round64(cols * 4);
        }
        if (j->gptq_u) {
            j->sc[t].gw = (float *)p;
            p += round64(gr * cols * 4);
            j->sc[t].ge = (float *)p;
            p += round64(gr * GPTQ_BLOCK * 4);
            j->sc[t].gws = (float *)p;
            p += round64(MQ__GEMM_WS * 4);
            j->sc[t].gcodes = p;
            p += round64(gr * cols);
            if (j->gptq_perm) {
                j->sc[t].gqr = (mq_qround *)p;
                p += round64(gr * gpr * sizeof(mq_qround));
                j->sc[t].gadd = (int32_t *)p;
                p += round64(gr * gpr * 4);
            }
        }
    }
    return MQ_OK;
}

static void free_job(qjob *j) {
    mq__free(j->ctx, j->block);
    mq__free(j->ctx, j->sc);
    mq__free(j->ctx, j->chunk_min);
    mq__free(j->ctx, j->chunk_max);
    mq__free(j->ctx, j->chunk_err);
    mq__free(j->ctx, j->gptq_u_owned);
    mq__free(j->ctx, j->err_parts);
    mq__free(j->ctx, j->gptq_perm);
}

/* Source bytes of row r at an address aligned for their dtype (staged when not). */
/* The pool never runs more threads than mq__thread_count said when the scratch was sized
 * (a change of thread count recreates it); checked anyway, as indexing depends on it. */
static mq_status check_tid(const qjob *j, int tid) {
    if (tid >= 0 && tid < j->nscratch) return MQ_OK;
    return mq__fail(j->ctx, MQ_ERR_INTERNAL, "quantize: worker %d without scratch (%d)", tid,
                    j->nscratch);
}

static const void *aligned_src_row(qjob *j, int tid, int64_t r) {
    size_t n = (size_t)j->lay->cols * j->esz;
    const uint8_t *p = j->src + (size_t)r * n;
    if (((uintptr_t)p & (j->esz - 1)) == 0) return p;
    memcpy(j->sc[tid].stage, p, n);
    return j->sc[tid].stage;
}

/* Source row r in place. */
static const void *src_row(const qjob *j, int64_t r) {
    return j->src + (size_t)r * (size_t)j->lay->cols * j->esz;
}

/* Element c of a row of dtype dt (F32, F16 or BF16). */
static const void *at(const void *x, mq_dtype dt, int64_t c) {
    return (const char *)x + (size_t)c * (dt == MQ_F32 ? 4 : 2);
}

static bool minmax_of(const qjob *j, const void *x, mq_dtype dt, size_t n, float *mn,
                      float *mx) {
    if (dt == MQ_F32 && !j->in_place) return j->k->minmax((const float *)x, n, mn, mx);
    return j->k->minmax_src(x, dt, n, mn, mx);
}

/* Row r as f32. */
static const float *load_row(qjob *j, int tid, int64_t r) {
    const void *p = aligned_src_row(j, tid, r);
    if (j->src_dtype == MQ_F32) return (const float *)p;
    mq_convert(j->ctx, MQ_F32, j->sc[tid].row, j->src_dtype, p, (size_t)j->lay->cols);
    return j->sc[tid].row;
}

static mq_status not_finite(qjob *j, int64_t r, const float *x, int64_t c0, int64_t n) {
    int64_t c = c0;
    while (c < c0 + n && isfinite(x[c])) c++;
    return mq__fail(j->ctx, MQ_ERR_QUANT, "quantize: row %lld, column %lld holds %s",
                    (long long)r, (long long)c,
                    c < c0 + n ? (isnan(x[c]) ? "a NaN" : "an Inf") : "a NaN or an Inf");
}

/* Parameters whose grid overflows float32 (ranges near FLT_MAX) would store an infinite
 * scale or dequantize to Inf. */
static mq_status check_param(const qjob *j, int64_t r, int64_t c0, mq_qparam p, float mn,
                             float mx) {
    if (mq__qparam_finite(p.scale, p.zp, j->f.qmin, j->f.qmax)) return MQ_OK;
    return mq__fail(j->ctx, MQ_ERR_QUANT, "quantize: row %lld, columns %lld..: the range "
                    "[%g, %g] is too wide for %s: its scale %g overflows float32",
                    (long long)r, (long long)c0, (double)mn, (double)mx,
                    mq_qtype_name(j->spec->type), (double)p.scale);
}

static int32_t load_zp(const qjob *j, const uint8_t *zp, int64_t i) {
    if (!zp) return j->f.qmin < 0 ? 0 : (j->f.qmin + j->f.qmax + 1) / 2;
    return j->lay->zero_point_dtype == MQ_U8 ? (int32_t)zp[i] : (int32_t)(int8_t)zp[i];
}

static void store_zp(const qjob *j, int64_t i, int32_t v) {
    if (j->zp) j->zp[i] = (uint8_t)v; /* two's complement for I8 */
}

/* Rounds a chosen scale to the layout's scale dtype, so the codes are computed with the value
 * that is stored. */
static mq_status round_scale(const qjob *j, int64_t r, mq_qparam *p) {
    mq_dtype d = j->lay->scale_dtype;
    float s = p->scale;
    if (d == MQ_F16) p->scale = mq_f16_to_f32(mq_f32_to_f16(s));
    else if (d == MQ_BF16) p->scale = mq_bf16_to_f32(mq_f32_to_bf16(s));
    else return MQ_OK;
    if (isfinite(p->scale) && p->scale > 0) return MQ_OK;
    return mq__fail(j->ctx, MQ_ERR_QUANT, "quantize: row %lld: scale %g is beyond the %s range "
                    "(store the scales as F32 or BF16)", (long long)r, (double)s,
                    mq_dtype_name(d));
}

/* A group's parameters as stored: the scale rounded to its dtype, checked, then kept at
 * scale/zero-point index (row r, group g); c0 is the group's first column. */
static mq_status keep_group_param(const qjob *j, int64_t r, int64_t g, int64_t c0,
                                  mq_qparam *p, float mn, float mx) {
    MQ_TRY(round_scale(j, r, p));
    MQ_TRY(check_param(j, r, c0, *p, mn, mx));
    int64_t si = r * j->lay->groups_per_row + g;
    j->scale[si] = p->scale;
    store_zp(j, si, p->zp);
    return MQ_OK;
}

/* Index of the candidate with the least (weighted) squared error on x[0, n); the first wins
 * ties, so min/max is kept unless clipping helps. */
static int best_candidate(const qjob *j, const mq_qcand *cand, int nc, const float *x,
                          const float *w, size_t n, float mn, float mx, float *err) {
    if (j->k->search && nc > 0) {
        mq_qround qr[MQ_MAX_CANDIDATES];
        for (int c = 0; c < nc; c++) mq__qround_init(&j->f, cand[c].p, &qr[c]);
        return j->k->search(x, w, n, mn, mx, qr, nc, err);
    }
    int best = -1;
    for (int c = 0; c < nc; c++) {
        mq_qround qr;
        mq__qround_init(&j->f, cand[c].p, &qr);
        float e = j->k->sqerr(x, w, n, &qr);
        if (best < 0 || e < *err) {
            best = c;
            *err = e;
        }
    }
    return best;
}

/* Parameters of one group (or row): min/max, or the two-stage search. */
static mq_qparam choose(const qjob *j, const float *x, const float *w, size_t n, float mn,
                        float mx) {
    if (j->spec->search != MQ_SEARCH_MSE) return mq__qparam_minmax(&j->f, j->spec->scheme, mn, mx);
    /* 4-bit without weights: errors in fixed point (never a zero range) */
    if (!w && mq__search_fix_applies(&j->f, mn, mx))
        return mq__search_fix(&j->f, j->spec->scheme, x, n, mn, mx,
                              j->k->sqerr_fix ? j->k->sqerr_fix : mq__sqerr_fix_ref);
    mq_qcand cand[MQ_MAX_CANDIDATES];
    int nc = mq__qcandidates(&j->f, j->spec->scheme, mn, mx, 0, 1.0f, cand);
    if (nc == 1) return cand[0].p;
    float e0, e1;
    mq_qcand win = cand[best_candidate(j, cand, nc, x, w, n, mn, mx, &e0)];
    nc = mq__qcandidates(&j->f, j->spec->scheme, mn, mx, 1, win.ratio, cand);
    int b = best_candidate(j, cand, nc, x, w, n, mn, mx, &e1);
    return b >= 0 && e1 < e0 ? cand[b].p : win.p;
}

static void pack4(const qjob *j, const uint8_t *codes, int64_t cols, uint8_t *dst,
                  uint64_t row_bytes) {
    int64_t pairs = cols / 2;
    j->k->pack4(codes, (size_t)pairs * 2, dst);
    int64_t b = pairs;
    if (cols & 1) dst[b++] = codes[cols - 1];
    memset(dst + b, 0, (size_t)row_bytes - (size_t)b);
}

static void unpack4(const uint8_t *src, int64_t cols, uint8_t *codes) {
    for (int64_t i = 0; i < cols / 2; i++) {
        codes[2 * i] = src[i] & 15;
        codes[2 * i + 1] = src[i] >> 4;
    }
    if (cols & 1) codes[cols - 1] = src[cols / 2] & 15;
}

static mq_status cast_row(qjob *j, int tid, int64_t r, uint8_t *dst) {
    int64_t cols = j->lay->cols;
    const void *x = j->in_place ? src_row(j, r) : (const void *)load_row(j, tid, r);
    mq_dtype dt = j->in_place ? j->src_dtype : MQ_F32, to = j->lay->data_dtype;
    float mn, mx;
    if (!minmax_of(j, x, dt, (size_t)cols, &mn, &mx))
        return not_finite(j, r, load_row(j, tid, r), 0, cols);
    if (to == MQ_F16 &&
        ((mq_f32_to_f16(mx) & 0x7fff) == 0x7c00 || (mq_f32_to_f16(mn) & 0x7fff) == 0x7c00))
        return mq__fail(j->ctx, MQ_ERR_QUANT,
                        "quantize: row %lld holds a value beyond the F16 range (%g .. %g)",
                        (long long)r, (double)mn, (double)mx);
    if (to == MQ_BF16 &&
        ((mq_f32_to_bf16(mx) & 0x7fff) == 0x7f80 || (mq_f32_to_bf16(mn) & 0x7fff) == 0x7f80))
        return mq__fail(j->ctx, MQ_ERR_QUANT,
                        "quantize: row %lld holds a value beyond the BF16 range (%g .. %g)",
                        (long long)r, (double)mn, (double)mx);
    /* finite values of the target type convert to themselves */
    if (dt == to) {
        memcpy(dst, x, (size_t)j->lay->row_bytes);
        return MQ_OK;
    }
    bool aligned = ((uintptr_t)dst & 1) == 0;
    uint8_t *to_p = aligned ? dst : j->sc[tid].codes;
    if (dt != MQ_F32) {
        /* F16 <-> BF16: through f32 in blocks that stay in L1 (exact widening, one rounding) */
        float buf[256];
        for (int64_t c = 0; c < cols; c += 256) {
            size_t m = (size_t)(cols - c < 256 ? cols - c : 256);
            mq_convert(j->ctx, MQ_F32, buf, dt, at(x, dt, c), m);
            mq_convert(j->ctx, to, to_p + 2 * c, MQ_F32, buf, m);
        }
    } else {
        /* F64 converts straight to the target (one rounding); the other sources are exact
         * in f32 */
        mq_dtype from = j->src_dtype == MQ_F64 ? MQ_F64 : MQ_F32;
        const void *p = from == MQ_F64 ? aligned_src_row(j, tid, r) : x;
        mq_convert(j->ctx, to, to_p, from, p, (size_t)cols);
    }
    if (!aligned) memcpy(dst, to_p, (size_t)j->lay->row_bytes);
    return MQ_OK;
}

/* End of the GPTQ column block starting at b0: at most GPTQ_BLOCK columns, and never inside a
 * group that starts after b0, so a group's parameters always see its updated weights. */
static int64_t gptq_block_end(const mq_qlayout *L, int64_t b0) {
    int64_t gs = L->group_size;
    int64_t b1 = b0 + GPTQ_BLOCK < L->cols ? b0 + GPTQ_BLOCK : L->cols;
    int64_t g = (b1 - 1) / gs * gs; /* the last group start before b1 */
    if (g > b0 && g + gs > b1 && b1 < L->cols) return g;
    return b1;
}

/* Act-order ("static groups"): row r's group parameters from its weights before any update,
 * stored, and their rounding parameters in qr / add (one per group). */
static mq_status static_groups(qjob *j, int64_t r, const float *x, mq_qround *qr, int32_t *add) {
    const mq_qlayout *L = j->lay;
    for (int64_t g = 0; g < L->groups_per_row; g++) {
        mq_qparam p = j->tensor_param;
        if (j->spec->granularity != MQ_PER_TENSOR) {
            int64_t c0 = g * L->group_size;
            int64_t n = g + 1 < L->groups_per_row ? L->group_size : L->last_group_size;
            float mn, mx;
            if (!j->k->minmax(x + c0, (size_t)n, &mn, &mx)) return not_finite(j, r, x, c0, n);
            p = mq__qparam_minmax(&j->f, j->spec->scheme, mn, mx);
            MQ_TRY(keep_group_param(j, r, g, c0, &p, mn, mx));
        }
        mq__qround_init(&j->f, p, &qr[g]);
        add[g] = p.zp + j->f.code_offset;
    }
    return MQ_OK;
}

/* Act-order, columns [b0, b1) of one row in processing order: position c holds the tensor's
 * column perm[c], whose code goes to codes[perm[c]] with its group's parameters. */
static mq_status sweep_ordered(qjob *j, int64_t r, float *w, float *e, uint8_t *codes,
                               const mq_qround *qr, const int32_t *add, int64_t b0, int64_t b1) {
    const mq_qlayout *L = j->lay;
    int64_t cols = L->cols, gs = L->group_size;
    const float *U = j->gptq_u;
    bool signed8 = !j->f.packed4 && j->f.qmin < 0;
    for (int64_t c = b0; c < b1; c++) {
        int64_t oc = j->gptq_perm[c], g = L->groups_per_row > 1 ? oc / gs : 0;
        if (!isfinite(w[c]))
            return mq__fail(j->ctx, MQ_ERR_QUANT, "quantize: row %lld: the GPTQ update made "
                            "column %lld non-finite (Hessian too ill-conditioned)",
                            (long long)r, (long long)oc);
        mq__quantize_ref(&w[c], 1, &qr[g], add[g], &codes[oc]);
        int32_t q = signed8 ? (int32_t)(int8_t)codes[oc] - (add[g] - j->f.code_offset)
                            : (int32_t)codes[oc] - add[g];
        const float *u = U + (size_t)c * (size_t)cols;
        float err = (w[c] - (float)q * qr[g].scale) / u[c];
        j->gemm->axpy((size_t)(b1 - c - 1), -err, u + c + 1, w + c + 1);
        e[c - b0] = -err;
    }
    return MQ_OK;
}

/* Row r's quantization parameters at column c of the block [b0, b1) (c starts a group or
 * the block), as gptq_rows finds them: from the updated weights when c starts a group (the
 * group's columns are in the row, w, when the group starts the block or wb is NULL, else in
 * the block's column copy wb, lane `lane`), else stored or per tensor. */
static mq_status lane_params(qjob *j, int64_t r, int64_t c, int64_t b0, const float *w,
                             const float *wb, int lane, mq_qround *qr, int32_t *add) {
    const mq_qlayout *L = j->lay;
    int64_t gs = L->group_size, g = c / gs, g0 = g * gs;
    int64_t n = g + 1 < L->groups_per_row ? gs : L->last_group_size;
    mq_qparam p = j->tensor_param;
    if (j->spec->granularity != MQ_PER_TENSOR && c == g0) {
        float mn = 0, mx = 0;
        bool ok;
        if (g0 == b0 || !wb) {
            ok = j->k->minmax(w + g0, (size_t)n, &mn, &mx);
        } else {
            const float *x = wb + (g0 - b0) * MQ__GPTQ_LANES + lane;
            mn = mx = x[0];
            ok = isfinite(mn);
            for (int64_t k = 1; k < n && ok; k++) {
                float v = x[k * MQ__GPTQ_LANES];
                ok = isfinite(v);
                mn = v < mn ? v : mn;
                mx = v > mx ? v : mx;
            }
        }
        if (!ok)
            return mq__fail(j->ctx, MQ_ERR_QUANT, "quantize: row %lld: the GPTQ update made "
                            "columns %lld.. non-finite (Hessian too ill-conditioned)",
                            (long long)r, (long long)g0);
        p = mq__qparam_minmax(&j->f, j->spec->scheme, mn, mx);
        MQ_TRY(keep_group_param(j, r, g, g0, &p, mn, mx));
    } else if (j->spec->granularity != MQ_PER_TENSOR) {
        int64_t si = r * L->groups_per_row + g;
        p.scale = j->scale[si];
        p.zp = load_zp(j, j->zp, si);
    }
    mq__qround_init(&j->f, p, qr);
    *add = p.zp + j->f.code_offset;
    return MQ_OK;
}

/* Columns [b0, b1) of gptq_rows' rows in groups of 16, each held column by column and swept
 * by j->gptq_cols: the row loop's operations in the same order per element. The scaled
 * errors go to E column by column (E[c - b0][i], row stride nr). */
static mq_status gptq_block_lanes(qjob *j, int64_t r0, int64_t nr, int64_t b0, int64_t b1,
                                  float *W, float *E, uint8_t *dst0, uint8_t *gcodes) {
    const mq_qlayout *L = j->lay;
    int64_t cols = L->cols, gs = L->group_size, nb = b1 - b0;
    _Alignas(64) float wb[GPTQ_BLOCK * MQ__GPTQ_LANES];
    _Alignas(64) uint8_t cb[GPTQ_BLOCK * MQ__GPTQ_LANES];
    mq_qround qr[MQ__GPTQ_LANES];
    int32_t add[MQ__GPTQ_LANES];
    const float *U = j->gptq_u + (size_t)b0 * (size_t)cols + b0;
    for (int64_t i0 = 0; i0 < nr; i0 += MQ__GPTQ_LANES) {
        int nrow = nr - i0 < MQ__GPTQ_LANES ? (int)(nr - i0) : MQ__GPTQ_LANES;
        for (int64_t c = 0; c < nb; c++)
            for (int r = 0; r < MQ__GPTQ_LANES; r++)
                wb[c * MQ__GPTQ_LANES + r] = r < nrow ? W[(i0 + r) * cols + b0 + c] : 0.0f;
        for (int r = nrow; r < MQ__GPTQ_LANES; r++) { /* idle lanes: any finite rounding */
            qr[r] = (mq_qround){1.0f, 1.0f, 0.0f, 0.0f};
            add[r] = 0;
        }
        for (int64_t c = b0; c < b1;) {
            int64_t c1 = (c / gs + 1) * gs < b1 ? (c / gs + 1) * gs : b1;
            for (int r = 0; r < nrow; r++)
                MQ_TRY(lane_params(j, r0 + i0 + r, c, b0, W + (i0 + r) * cols, wb, r, &qr[r],
                                   &add[r]));
            int64_t bad = j->gptq_cols(c - b0, c1 - b0, nb, wb, U, cols, qr, add, cb,
                                       E + i0, nr, nrow);
            if (bad >= 0)
                return mq__fail(j->ctx, MQ_ERR_QUANT, "quantize: rows %lld..: the GPTQ update "
                                "made column %lld non-finite (Hessian too ill-conditioned)",
                                (long long)(r0 + i0), (long long)(b0 + bad));
            c = c1;
        }
        for (int r = 0; r < nrow; r++) {
            int64_t i = i0 + r;
            uint8_t *codes = j->f.packed4 ? gcodes + i * cols : dst0 + (size_t)i * L->row_bytes;
            for (int64_t c = 0; c < nb; c++) codes[b0 + c] = cb[c * MQ__GPTQ_LANES + r];
        }
    }
    return MQ_OK;
}

/* GPTQ on rows [r0, r0 + nr) (docs/QUANTIZATION.md): columns left to right in blocks; inside
 * a block each column's rounding error e, divided by U[c][c], is subtracted from the block's
 * later columns in proportion to U[c][c+1..]; at the end of the block the errors update all
 * later columns at once, one matrix product. A group's parameters come from its updated
 * weights when it starts. */
static mq_status gptq_rows(qjob *j, int tid, int64_t r0, int64_t nr, uint8_t *dst0) {
    const mq_qlayout *L = j->lay;
    int64_t cols = L->cols, gs = L->group_size;
    scratch *sc = &j->sc[tid];
    float *W = sc->gw, *E = sc->ge;
    const float *U = j->gptq_u;
    const int32_t *perm = j->gptq_perm;
    size_t gpr = (size_t)L->groups_per_row;
    for (int64_t i = 0; i < nr; i++) {
        const float *x = load_row(j, tid, r0 + i);
        float mn, mx;
        if (!j->k->minmax(x, (size_t)cols, &mn, &mx)) return not_finite(j, r0 + i, x, 0, cols);
        float *w = W + i * cols;
        if (perm) {
            MQ_TRY(static_groups(j, r0 + i, x, sc->gqr + (size_t)i * gpr,
                                 sc->gadd + (size_t)i * gpr));
            for (int64_t c = 0; c < cols; c++) w[c] = x[perm[c]];
        } else {
            memcpy(w, x, (size_t)cols * sizeof(float));
        }
    }
    bool signed8 = !j->f.packed4 && j->f.qmin < 0;
    for (int64_t b0 = 0; b0 < cols; ) {
        int64_t b1 = perm ? (b0 + GPTQ_BLOCK < cols ? b0 + GPTQ_BLOCK : cols)
                          : gptq_block_end(L, b0);
        if (j->gptq_cols) { /* the same sweep across rows, E stored transposed */
            MQ_TRY(gptq_block_lanes(j, r0, nr, b0, b1, W, E, dst0, sc->gcodes));
            if (b1 < cols)
                j->gemm->gemm_tn(nr, cols - b1, b1 - b0, E, nr,
                                 U + (size_t)b0 * (size_t)cols + b1, cols, W + b1, cols, sc->gws);
            b0 = b1;
            continue;
        }
        for (int64_t i = 0; i < nr; i++) {
            int64_t r = r0 + i;
            float *w = W + i * cols, *e = E + i * GPTQ_BLOCK;
            uint8_t *codes = j->f.packed4 ? sc->gcodes + i * cols
                                          : dst0 + (size_t)i * L->row_bytes;
            if (perm) {
                MQ_TRY(sweep_ordered(j, r, w, e, codes, sc->gqr + (size_t)i * gpr,
                                     sc->gadd + (size_t)i * gpr, b0, b1));
                continue;
            }
            mq_qround qr;
            int32_t add = 0;
            for (int64_t c = b0; c < b1; c++) {
                if (c % gs == 0 || c == b0)
                    MQ_TRY(lane_params(j, r, c, b0, w, NULL, 0, &qr, &add));
                mq__quantize_ref(&w[c], 1, &qr, add, &codes[c]);
                int32_t q = signed8 ? (int32_t)(int8_t)codes[c] - (add - j->f.code_offset)
                                    : (int32_t)codes[c] - add;
                const float *u = U + (size_t)c * (size_t)cols;
                float err = (w[c] - (float)q * qr.scale) / u[c];
                j->gemm->axpy((size_t)(b1 - c - 1), -err, u + c + 1, w + c + 1);
                e[c - b0] = -err;
            }
        }
        if (b1 < cols)
            j->gemm->gemm(nr, cols - b1, b1 - b0, E, GPTQ_BLOCK, U + (size_t)b0 * (size_t)cols + b1,
                          cols, W + b1, cols, sc->gws);
        b0 = b1;
    }
    if (j->f.packed4)
        for (int64_t i = 0; i < nr; i++)
            pack4(j, sc->gcodes + i * cols, cols, dst0 + (size_t)i * L->row_bytes, L->row_bytes);
    return MQ_OK;
}

/* The row's codes dequantized into the thread's deq scratch, as mq_dequantize_rows does
 * (the same values), while they are in cache. */
static void row_dequantize(const qjob *j, int tid, const uint8_t *codes) {
    const mq_qlayout *L = j->lay;
    const mq_qround *qr = j->sc[tid].qr;
    const int32_t *add = j->sc[tid].add;
    uint8_t flip = L->data_dtype == MQ_I8 ? 0x80 : 0;
    int32_t bias = L->data_dtype == MQ_I8 ? 128 : 0;
    for (int64_t g = 0; g < L->groups_per_row; g++) {
        int64_t c0 = g * L->group_size;
        int64_t n = g + 1 < L->groups_per_row ? L->group_size : L->last_group_size;
        /* add = zero point + code offset; mq_dequantize_rows subtracts the same integer */
        j->k->dequantize(codes + c0, (size_t)n, flip, (float)(bias + add[g]), qr[g].scale,
                         j->sc[tid].deq + c0);
    }
}

static void part_done(qjob *j, const mq__err_lanes *l, mq__err_acc *part) {
    if (!mq__err_lanes_sum(l, part)) __atomic_store_n(&j->err_overflow, 1, __ATOMIC_RELAXED);
}

/* A row as the kernels read it: f32, or the source's own dtype (in place). */
typedef struct row_ref {
    const void *p;
    mq_dtype dtype;
} row_ref;

/* Groups handed to the many-group kernels at a time: their min/max pass and their quantize
 * pass read the same few KB while they are in L1. */
enum { GROUP_BLOCK = 16 };

/* The codes of the block of groups from g0 (quantize_row_groups). */
static void block_codes(const qjob *j, const void *x, mq_dtype dt, int64_t g0, bool packed4,
                        uint8_t *dst, const mq_qround *qr, const int32_t *add) {
    const mq_qlayout *L = j->lay;
    const mq_qkernels *k = j->k;
    int64_t gpr = L->groups_per_row, gs = L->group_size;
    int64_t nb = gpr - g0 < GROUP_BLOCK ? gpr - g0 : GROUP_BLOCK;
    int64_t full = g0 + nb == gpr && L->last_group_size != gs ? nb - 1 : nb;
    const void *xb = at(x, dt, g0 * gs);
    uint8_t *out = dst + (packed4 ? g0 * gs / 2 : g0 * gs);
    if (full)
        k->quantize_groups(xb, dt, (size_t)gs, (size_t)full, qr + g0, add + g0, packed4, out);
    if (full < nb) {
        const void *xl = at(xb, dt, full * gs);
        size_t n = (size_t)L->last_group_size;
        if (packed4) k->quantize4_src(xl, dt, n, &qr[g0 + full], add[g0 + full], out + full * gs / 2);
        else k->quantize_src(xl, dt, n, &qr[g0 + full], add[g0 + full], out + full * gs);
    }
}

/* The min/max rule on a row read in place, through the kernels that take many groups at
 * once (the codes go straight to dst, packed when packed4); the parameters are stored and
 * left in qr / add as the general loop leaves them. false when a group holds a NaN or an Inf
 * or gets a scale that overflows: the general loop then finds and reports it. BF16: the
 * codes of a block are made after the next block's min/max and parameters, so they do not
 * wait for the parameters just stored (AVX-512, groups of 128: about 7 % faster), and the
 * source of both blocks stays in L1. F32 and F16 keep the plain order: from DRAM the lag
 * made f32 -> INT4 g128 about 20 % slower with AVX-512 (its codes kernel prefetches the next
 * block, then already read) and 10-20 % slower with AVX2. */
static bool quantize_row_groups(const qjob *j, const void *x, mq_dtype dt, int64_t r,
                                bool packed4, uint8_t *dst, mq_qround *qr, int32_t *add) {
    const mq_qlayout *L = j->lay;
    const mq_qkernels *k = j->k;
    int64_t gpr = L->groups_per_row, gs = L->group_size;
    float *scale = j->scale + r * gpr;
    uint8_t *zp8 = j->zp ? j->zp + r * gpr : NULL;
    bool lag = dt == MQ_BF16;
    /* the symmetric rule sees only max |x|, which BF16 groups of up to 256 values find in
     * half the time (AVX-512, in cache: bf16 -> INT4 g128 about 7 % faster); F32 and F16
     * gain nothing, and per channel (one long group) was slower from DRAM (INT8 per channel
     * 24.6 -> 22.2 GB/s, 1 thread) */
    bool (*range)(const void *, mq_dtype, size_t, size_t, float *, float *) =
        j->spec->scheme == MQ_SYMMETRIC && dt == MQ_BF16 && gs <= 256 && k->absmax_groups
            ? k->absmax_groups
            : k->minmax_groups;
    for (int64_t g0 = 0; g0 < gpr; g0 += GROUP_BLOCK) {
        int64_t nb = gpr - g0 < GROUP_BLOCK ? gpr - g0 : GROUP_BLOCK;
        /* the last group may be shorter */
        int64_t full = g0 + nb == gpr && L->last_group_size != gs ? nb - 1 : nb;
        const void *xb = at(x, dt, g0 * gs);
        float mn[GROUP_BLOCK], mx[GROUP_BLOCK];
        if (full && !range(xb, dt, (size_t)gs, (size_t)full, mn, mx)) return false;
        if (full < nb && !k->minmax_src(at(xb, dt, full * gs), dt, (size_t)L->last_group_size,
                                        &mn[full], &mx[full]))
            return false;
        if (!k->params_minmax(&j->f, j->spec->scheme, (size_t)nb, mn, mx, scale + g0,
                              zp8 ? zp8 + g0 : NULL, qr + g0, add + g0))
            return false;
        if (!lag) block_codes(j, x, dt, g0, packed4, dst, qr, add);
        else if (g0) block_codes(j, x, dt, g0 - GROUP_BLOCK, packed4, dst, qr, add);
    }
    if (lag) block_codes(j, x, dt, (gpr - 1) / GROUP_BLOCK * GROUP_BLOCK, packed4, dst, qr, add);
    return true;
}

/* The 4-bit search without weights on a row read in place (4-bit codes packed as they are
 * made): min/max of a block of groups at once, the block's fixed-point search (search_fix; a
 * group outside its ranges gets the general search on the row converted to f32), the
 * parameters kept, then the block's codes. *done is false when a group holds a NaN or an
 * Inf: the general loop then finds and reports it. */
static mq_status quantize_row_search(qjob *j, int tid, const void *x, mq_dtype dt, int64_t r,
                                     uint8_t *dst, mq_qround *qr, int32_t *add, bool *done) {
    const mq_qlayout *L = j->lay;
    const mq_qkernels *k = j->k;
    int64_t gpr = L->groups_per_row, gs = L->group_size;
    const float *row = NULL; /* the row as f32, converted when a group needs it */
    *done = false;
    for (int64_t g0 = 0; g0 < gpr; g0 += GROUP_BLOCK) {
        int64_t nb = gpr - g0 < GROUP_BLOCK ? gpr - g0 : GROUP_BLOCK;
        int64_t full = g0 + nb == gpr && L->last_group_size != gs ? nb - 1 : nb;
        const void *xb = at(x, dt, g0 * gs);
        float mn[GROUP_BLOCK], mx[GROUP_BLOCK];
        mq_qparam p[GROUP_BLOCK];
        if (full && !k->minmax_groups(xb, dt, (size_t)gs, (size_t)full, mn, mx)) return MQ_OK;
        if (full < nb && !k->minmax_src(at(xb, dt, full * gs), dt, (size_t)L->last_group_size,
                                        &mn[full], &mx[full]))
            return MQ_OK;
        for (int64_t g = 0; g < nb;) {
            int64_t n = g < full ? gs : L->last_group_size, e = g + 1;
            if (!mq__search_fix_applies(&j->f, mn[g], mx[g])) {
                if (!row) row = load_row(j, tid, r);
                p[g] = choose(j, row + (g0 + g) * gs, NULL, (size_t)n, mn[g], mx[g]);
                g++;
                continue;
            }
            while (e < full && mq__search_fix_applies(&j->f, mn[e], mx[e])) e++;
            k->search_fix(&j->f, j->spec->scheme, at(xb, dt, g * gs), dt, (size_t)n,
                          (size_t)(e - g), mn + g, mx + g, p + g);
            g = e;
        }
        for (int64_t g = 0; g < nb; g++) {
            MQ_TRY(keep_group_param(j, r, g0 + g, (g0 + g) * gs, &p[g], mn[g], mx[g]));
            mq__qround_init(&j->f, p[g], &qr[g0 + g]);
            add[g0 + g] = p[g].zp + j->f.code_offset;
        }
        uint8_t *out = dst + g0 * gs / 2;
        if (full) k->quantize_groups(xb, dt, (size_t)gs, (size_t)full, qr + g0, add + g0, true, out);
        if (full < nb)
            k->quantize4_src(at(xb, dt, full * gs), dt, (size_t)L->last_group_size,
                             &qr[g0 + full], add[g0 + full], out + full * gs / 2);
    }
    *done = true;
    return MQ_OK;
}

/* *xf (error figures asked for): the row as read, its dequantized values in sc[tid].deq. */
static mq_status quantize_row(qjob *j, int tid, int64_t r, uint8_t *dst, row_ref *xf) {
    if (j->is_cast) return cast_row(j, tid, r, dst);
    const mq_qlayout *L = j->lay;
    /* 4-bit codes packed as they are made when every group starts on a byte */
    bool direct4 = j->f.packed4 && j->k->quantize4_src &&
                   (L->group_size % 2 == 0 || L->groups_per_row == 1);
    /* the search reads each group a dozen times: it gets the row converted to f32 once,
     * unless the table's fixed-point search reads the source itself */
    bool search = j->spec->search == MQ_SEARCH_MSE && j->spec->granularity != MQ_PER_TENSOR;
    bool fix = search && direct4 && j->in_place && !j->w && j->f.bits == 4 &&
               j->k->search_fix && j->k->minmax_groups && j->k->quantize_groups;
    bool in_place = j->in_place && (!search || fix);
    const void *x = in_place ? src_row(j, r) : (const void *)load_row(j, tid, r);
    mq_dtype dt = in_place ? j->src_dtype : MQ_F32;
    uint8_t *codes = j->f.packed4 ? j->sc[tid].codes : dst;
    mq_qround *qr = j->sc[tid].qr;
    int32_t *add = j->sc[tid].add;
    /* many groups per kernel call: min/max of a block of groups, their parameters at once,
     * then their codes */
    bool groups = in_place && j->spec->search == MQ_SEARCH_MINMAX &&
                  j->spec->granularity != MQ_PER_TENSOR && j->k->minmax_groups &&
                  j->k->params_minmax && j->k->quantize_groups &&
                  L->scale_dtype != MQ_F16 && L->scale_dtype != MQ_BF16 &&
                  (!j->f.packed4 || direct4);
    if (groups && quantize_row_groups(j, x, dt, r, j->f.packed4, dst, qr, add))
        goto codes_done;
    if (fix) {
        bool done;
        MQ_TRY(quantize_row_search(j, tid, x, dt, r, dst, qr, add, &done));
        if (done) goto codes_done;
        x = load_row(j, tid, r); /* the loop below reports the NaN or the Inf */
        dt = MQ_F32;
    }
    /* parameters of every group first, then the quantization: the divisions of one group
     * overlap the work of the others */
    for (int64_t g = 0; g < L->groups_per_row; g++) {
        int64_t c0 = g * L->group_size;
        int64_t n = g + 1 < L->groups_per_row ? L->group_size : L->last_group_size;
        float mn, mx;
        if (!minmax_of(j, at(x, dt, c0), dt, (size_t)n, &mn, &mx))
            return not_finite(j, r, load_row(j, tid, r), c0, n);
        mq_qparam p;
        if (j->spec->granularity == MQ_PER_TENSOR) {
            p = j->tensor_param;
        } else {
            p = search ? choose(j, (const float *)x + c0, j->w ? j->w + c0 : NULL, (size_t)n, mn, mx)
                       : mq__qparam_minmax(&j->f, j->spec->scheme, mn, mx);
            MQ_TRY(keep_group_param(j, r, g, c0, &p, mn, mx));
        }
        mq__qround_init(&j->f, p, &qr[g]);
        add[g] = p.zp + j->f.code_offset;
    }
    for (int64_t g = 0; g < L->groups_per_row; g++) {
        int64_t c0 = g * L->group_size;
        int64_t n = g + 1 < L->groups_per_row ? L->group_size : L->last_group_size;
        if (direct4)
            j->k->quantize4_src(at(x, dt, c0), dt, (size_t)n, &qr[g], add[g], dst + c0 / 2);
        else if (dt != MQ_F32 || j->in_place)
            j->k->quantize_src(at(x, dt, c0), dt, (size_t)n, &qr[g], add[g], codes + c0);
        else
            j->k->quantize((const float *)x + c0, (size_t)n, &qr[g], add[g], codes + c0);
    }
codes_done:
    if (direct4) {
        size_t b = (size_t)(L->cols + 1) / 2;
        memset(dst + b, 0, (size_t)L->row_bytes - b);
    } else if (j->f.packed4) {
        pack4(j, codes, L->cols, dst, L->row_bytes);
    }
    if (xf) {
        /* direct4 left no unpacked codes: unpack them from the row just written */
        const uint8_t *c = codes;
        if (direct4) {
            unpack4(dst, L->cols, j->sc[tid].codes);
            c = j->sc[tid].codes;
        }
        row_dequantize(j, tid, c);
        /* the sums read the row element by element: an unaligned source row is staged */
        xf->p = (uintptr_t)x % mq_dtype_size(dt) ? aligned_src_row(j, tid, r) : x;
        xf->dtype = dt;
    }
    return MQ_OK;
}

static mq_status quantize_range(void *arg, int64_t b, int64_t e, int tid) {
    qjob *j = (qjob *)arg;
    MQ_TRY(check_tid(j, tid));
    if (j->gptq_u && !j->is_cast)
        return gptq_rows(j, tid, j->row_begin + b, e - b, j->data + (size_t)b * j->lay->row_bytes);
    if (!j->err_parts) {
        for (int64_t i = b; i < e; i++)
            MQ_TRY(quantize_row(j, tid, j->row_begin + i, j->data + (size_t)i * j->lay->row_bytes,
                                NULL));
        return MQ_OK;
    }
    /* error figures: b is a multiple of err_rows (the grain is), so the task holds whole parts */
    int64_t cols = j->lay->cols, total = j->nrows;
    mq__err_lanes l;
    for (int64_t i = b; i < e; i++) {
        row_ref x;
        MQ_TRY(quantize_row(j, tid, j->row_begin + i, j->data + (size_t)i * j->lay->row_bytes,
                            &x));
        const float *d = j->sc[tid].deq;
        if (j->err_segs > 1) {
            for (int64_t c0 = 0, sg = 0; c0 < cols; c0 += MQ__ERR_PART, sg++) {
                int64_t n = cols - c0 < MQ__ERR_PART ? cols - c0 : MQ__ERR_PART;
                memset(&l, 0, sizeof l);
                mq__err_lanes_add(j->ctx, &l, x.dtype, at(x.p, x.dtype, c0), d + c0, (size_t)n);
                part_done(j, &l, &j->err_parts[i * j->err_segs + sg]);
            }
            continue;
        }
        if (i % j->err_rows == 0) memset(&l, 0, sizeof l);
        mq__err_lanes_add(j->ctx, &l, x.dtype, x.p, d, (size_t)cols);
        if ((i + 1) % j->err_rows == 0 || i + 1 == total)
            part_done(j, &l, &j->err_parts[i / j->err_rows]);
    }
    return MQ_OK;
}

/* Per tensor, pass 1: min and max of each chunk of rows. */
static mq_status tensor_minmax_range(void *arg, int64_t b, int64_t e, int tid) {
    qjob *j = (qjob *)arg;
    MQ_TRY(check_tid(j, tid));
    int64_t cols = j->lay->cols, c = b / j->grain;
    for (int64_t r = b; r < e; r++) {
        const void *x = j->in_place ? src_row(j, r) : (const void *)load_row(j, tid, r);
        float mn, mx;
        if (!minmax_of(j, x, j->in_place ? j->src_dtype : MQ_F32, (size_t)cols, &mn, &mx))
            return not_finite(j, r, load_row(j, tid, r), 0, cols);
        if (r == b || mn < j->chunk_min[c]) j->chunk_min[c] = mn;
        if (r == b || mx > j->chunk_max[c]) j->chunk_max[c] = mx;
    }
    return MQ_OK;
}

/* Per tensor, search passes: each candidate's error over each chunk of rows. */
static mq_status tensor_error_range(void *arg, int64_t b, int64_t e, int tid) {
    qjob *j = (qjob *)arg;
    MQ_TRY(check_tid(j, tid));
    double *err = j->chunk_err + (size_t)(b / j->grain) * MQ_MAX_CANDIDATES;
    for (int64_t r = b; r < e; r++) {
        const float *x = load_row(j, tid, r);
        for (int c = 0; c < j->ncand; c++) {
            mq_qround qr;
            mq__qround_init(&j->f, j->cand[c].p, &qr);
            err[c] += (double)j->k->sqerr(x, j->w, (size_t)j->lay->cols, &qr);
        }
    }
    return MQ_OK;
}

/* Errors of j->cand over the whole tensor (summed in chunk order); the best index. */
static mq_status tensor_best(qjob *j, int64_t nchunks, int *best, double *best_err) {
    memset(j->chunk_err, 0, (size_t)nchunks * MQ_MAX_CANDIDATES * sizeof(double));
    MQ_TRY(mq__parallel_for(j->ctx, j->lay->rows, j->grain, tensor_error_range, j));
    *best = -1;
    for (int c = 0; c < j->ncand; c++) {
        double e = 0;
        for (int64_t k = 0; k < nchunks; k++) e += j->chunk_err[(size_t)k * MQ_MAX_CANDIDATES + (size_t)c];
        if (*best < 0 || e < *best_err) {
            *best = c;
            *best_err = e;
        }
    }
    return MQ_OK;
}

static mq_status tensor_params(qjob *j) {
    int64_t rows = j->lay->rows, nchunks = (rows + j->grain - 1) / j->grain;
    j->chunk_min = (float *)mq__malloc(j->ctx, (size_t)nchunks * sizeof(float));
    j->chunk_max = (float *)mq__malloc(j->ctx, (size_t)nchunks * sizeof(float));
    if (!j->chunk_min || !j->chunk_max) return MQ_ERR_NOMEM;
    MQ_TRY(mq__parallel_for(j->ctx, rows, j->grain, tensor_minmax_range, j));
    float mn = j->chunk_min[0], mx = j->chunk_max[0];
    for (int64_t c = 1; c < nchunks; c++) {
        mn = j->chunk_min[c] < mn ? j->chunk_min[c] : mn;
        mx = j->chunk_max[c] > mx ? j->chunk_max[c] : mx;
    }
    j->ncand = mq__qcandidates(&j->f, j->spec->scheme, mn, mx, 0, 1.0f, j->cand);
    mq_qcand win = j->cand[0];
    if (j->spec->search == MQ_SEARCH_MSE && j->ncand > 1) {
        j->chunk_err = (double *)mq__malloc(j->ctx, (size_t)nchunks * MQ_MAX_CANDIDATES *
                                                        sizeof(double));
        if (!j->chunk_err) return MQ_ERR_NOMEM;
        int b0, b1;
        double e0, e1;
        MQ_TRY(tensor_best(j, nchunks, &b0, &e0));
        win = j->cand[b0];
        j->ncand = mq__qcandidates(&j->f, j->spec->scheme, mn, mx, 1, win.ratio, j->cand);
        MQ_TRY(tensor_best(j, nchunks, &b1, &e1));
        if (b1 >= 0 && e1 < e0) win = j->cand[b1];
    }
    MQ_TRY(round_scale(j, 0, &win.p));
    MQ_TRY(check_param(j, 0, 0, win.p, mn, mx));
    j->tensor_param = win.p;
    j->scale[0] = win.p.scale;
    store_zp(j, 0, win.p.zp);
    return MQ_OK;
}

static mq_status check_args(mq_ctx *ctx, const char *what, const mq_qspec *spec,
                            const mq_qlayout *lay, int64_t row_begin, int64_t row_end,
                            const void *in, const void *out, const void *scale,
                            const void *zero_point) {
    if (!spec || !lay || !in || !out)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: NULL argument", what);
    mq_qformat f;
    bool quant = mq__qformat(spec->type, &f);
    if (lay->rows < 1 || lay->cols < 1 || lay->row_bytes < 1 ||
        (quant && (lay->groups_per_row < 1 || lay->group_size < 1 || lay->qmin != f.qmin ||
                   lay->nscales < 1)))
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: the layout does not match the spec "
                        "(use mq_qlayout_init)", what);
    if (row_begin < 0 || row_end < row_begin || row_end > lay->rows)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: rows [%lld, %lld) outside [0, %lld)", what,
                        (long long)row_begin, (long long)row_end, (long long)lay->rows);
    if (quant && !scale)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: scale array is NULL", what);
    if (quant && lay->has_zero_point && !zero_point)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: zero-point array is NULL", what);
    return MQ_OK;
}

static mq_status job_init(mq_ctx *ctx, qjob *j, const mq_qspec *spec, const mq_qlayout *lay,
                          int64_t row_begin) {
    memset(j, 0, sizeof *j);
    j->ctx = ctx;
    j->spec = spec;
    j->lay = lay;
    j->k = mq__qkernels(ctx);
    j->is_cast = !mq__qformat(spec->type, &j->f);
    j->row_begin = row_begin;
    j->grain = chunk_rows(lay->cols);
    mq_dtype want = j->is_cast ? (spec->type == MQ_Q_FP16 ? MQ_F16 : MQ_BF16)
                  : spec->type == MQ_Q_INT8 ? MQ_I8 : spec->type == MQ_Q_UINT8 ? MQ_U8 : MQ_I32;
    bool ok = spec->type != MQ_Q_NONE && lay->data_dtype == want;
    if (ok && !j->is_cast) {
        int64_t ns = spec->granularity == MQ_PER_TENSOR ? 1
                   : spec->granularity == MQ_PER_CHANNEL ? lay->rows
                   : lay->rows * lay->groups_per_row;
        bool zp = spec->scheme == MQ_ASYMMETRIC || j->f.qmin == 0;
        ok = lay->nscales == ns && (lay->has_zero_point != 0) == zp &&
             (spec->granularity == MQ_PER_GROUP || lay->groups_per_row == 1) &&
             lay->group_size * (lay->groups_per_row - 1) + lay->last_group_size == lay->cols;
    }
    if (!ok)
        return mq__fail(ctx, MQ_ERR_INVALID, "quantize: the layout does not match the spec "
                        "(use mq_qlayout_init)");
    return MQ_OK;
}

bool mq__quantize_fuses_error(const mq_qspec *spec, mq_dtype src_dtype) {
    return mq__qtype_is_integer(spec->type) && spec->search != MQ_SEARCH_GPTQ &&
           (src_dtype == MQ_F32 || src_dtype == MQ_F16 || src_dtype == MQ_BF16);
}

static mq_status quantize_rows(mq_ctx *ctx, const mq_qspec *spec, const mq_qlayout *layout,
                               const mq_calib_data *caller_calib, mq_dtype src_dtype,
                               const void *src, int64_t row_begin, int64_t row_end, void *data,
                               float *scale, void *zero_point, const float *factor,
                               mq__err_acc *err, bool *err_done) {
    MQ_TRY(check_args(ctx, "quantize", spec, layout, row_begin, row_end, src, data, scale,
                      zero_point));
    mq_calib_data calib;
    mq_calib_data_init(&calib);
    if (caller_calib)
        MQ_TRY(mq__struct_read(ctx, "mq_calib_data", caller_calib, &calib, sizeof calib,
                               MQ__LAYOUT_END(mq_calib_data, hessian)));
    if (!mq_dtype_is_float(src_dtype))
        return mq__fail(ctx, MQ_ERR_INVALID, "quantize: source dtype %s is not a float type",
                        mq_dtype_name(src_dtype));
    qjob j;
    MQ_TRY(job_init(ctx, &j, spec, layout, row_begin));
    j.src_dtype = src_dtype;
    j.esz = mq_dtype_size(src_dtype);
    j.in_place = j.k->minmax_src && j.k->quantize_src &&
                 (src_dtype == MQ_F32 || src_dtype == MQ_F16 || src_dtype == MQ_BF16);
    j.src = (const uint8_t *)src;
    j.data = (uint8_t *)data;
    j.scale = scale;
    j.zp = layout->has_zero_point ? (uint8_t *)zero_point : NULL;
    if (!j.is_cast && calib.importance) {
        for (int64_t c = 0; c < layout->cols; c++)
            if (!(calib.importance[c] >= 0.0f && calib.importance[c] <= FLT_MAX))
                return mq__fail(ctx, MQ_ERR_INVALID,
                                "quantize: importance[%lld] = %g (must be finite and >= 0)",
                                (long long)c, (double)calib.importance[c]);
        j.w = calib.importance;
    }
    if (!j.is_cast && spec->search == MQ_SEARCH_GPTQ) {
        if (!calib.hessian)
            return mq__fail(ctx, MQ_ERR_INVALID, "quantize: MQ_SEARCH_GPTQ needs a Hessian "
                            "(mq_calib_data.hessian)");
        if (calib.act_order) MQ_TRY(mq__gptq_order(ctx, calib.hessian, layout->cols,
                                                   &j.gptq_perm));
        if (factor) {
            j.gptq_u = factor;
        } else {
            mq_status st = mq__gptq_factor(ctx, calib.hessian, layout->cols, j.gptq_perm,
                                           &j.gptq_u_owned);
            if (st != MQ_OK) {
                free_job(&j);
                return st;
            }
            j.gptq_u = j.gptq_u_owned;
        }
    } else if (!j.is_cast && spec->search != MQ_SEARCH_MINMAX && spec->search != MQ_SEARCH_MSE) {
        return mq__fail(ctx, MQ_ERR_INVALID, "quantize: unknown scale search %d",
                        (int)spec->search);
    }
    int64_t grain = j.grain;
    if (j.gptq_u) {
        /* rows per task: up to 120 (the factor is read once per task), and a task per thread
         * where the rows allow; rows are independent, so this changes no bytes */
        int64_t nt = mq__thread_count(ctx), rows = row_end - row_begin;
        int64_t gr = (rows + nt - 1) / nt;
        gr = gr > 120 ? 120 : gr < 6 ? 6 : (gr + 5) / 6 * 6;
        j.gptq_rows = gr;
        j.gemm = mq__gemm_pick(ctx);
        j.gptq_cols = j.gptq_perm ? NULL : mq__gptq_cols_pick(ctx);
        grain = gr;
    }
    /* error figures: parts as mq__err_acc_add makes them, merged in the same order */
    size_t nparts = 0;
    if (err && (!mq__quantize_fuses_error(spec, src_dtype) ||
                row_begin % mq__err_rows_per_part(layout->cols)))
        return mq__fail(ctx, MQ_ERR_INTERNAL, "quantize: no error figures in this pass");
    if (err) {
        int64_t rows = row_end - row_begin;
        j.nrows = rows;
        j.err_rows = mq__err_rows_per_part(layout->cols);
        j.err_segs = (layout->cols + MQ__ERR_PART - 1) / MQ__ERR_PART;
        nparts = j.err_segs > 1 ? (size_t)(rows * j.err_segs)
                                : (size_t)((rows + j.err_rows - 1) / j.err_rows);
        grain = grain < j.err_rows ? j.err_rows : grain / j.err_rows * j.err_rows;
        j.err_parts = (mq__err_acc *)mq__calloc(ctx, nparts ? nparts : 1, sizeof *j.err_parts);
        if (!j.err_parts) return MQ_ERR_NOMEM;
    }
    mq_status st = alloc_scratch(&j);
    if (st == MQ_OK && !j.is_cast && spec->granularity == MQ_PER_TENSOR) {
        if (row_begin == 0) {
            st = tensor_params(&j);
        } else {
            j.tensor_param.scale = scale[0];
            j.tensor_param.zp = load_zp(&j, j.zp, 0);
            if (!(scale[0] >= FLT_EPSILON && scale[0] <= FLT_MAX) ||
                j.tensor_param.zp < j.f.qmin || j.tensor_param.zp > j.f.qmax)
                st = mq__fail(ctx, MQ_ERR_INVALID, "quantize: per-tensor scale[0] = %g is not "
                              "set (quantize rows from 0 first)", (double)scale[0]);
        }
    }
    if (st == MQ_OK)
        st = mq__parallel_for(ctx, row_end - row_begin, grain, quantize_range, &j);
    /* in part order: the same sums for any thread count */
    bool done = err && !j.err_overflow;
    for (size_t k = 0; st == MQ_OK && done && k < nparts; k++) mq__err_acc_merge(err, &j.err_parts[k]);
    if (err_done) *err_done = done;
    free_job(&j);
    return st;
}

mq_status mq_quantize_rows(mq_ctx *ctx, const mq_qspec *spec, const mq_qlayout *layout,
                           const mq_calib_data *calib, mq_dtype src_dtype, const void *src,
                           int64_t row_begin, int64_t row_end, void *data, float *scale,
                           void *zero_point) {
    return quantize_rows(ctx, spec, layout, calib, src_dtype, src, row_begin, row_end, data,
                         scale, zero_point, NULL, NULL, NULL);
}

mq_status mq__quantize_rows_factored(mq_ctx *ctx, const mq_qspec *spec,
                                     const mq_qlayout *layout, const mq_calib_data *calib,
                                     mq_dtype src_dtype, const void *src, int64_t row_begin,
                                     int64_t row_end, void *data, float *scale,
                                     void *zero_point, const float *factor, mq__err_acc *err,
                                     bool *err_done) {
    return quantize_rows(ctx, spec, layout, calib, src_dtype, src, row_begin, row_end, data,
                         scale, zero_point, factor, err, err_done);
}

static mq_status dequantize_range(void *arg, int64_t b, int64_t e, int tid) {
    qjob *j = (qjob *)arg;
    MQ_TRY(check_tid(j, tid));
    const mq_qlayout *L = j->lay;
    for (int64_t i = b; i < e; i++) {
        int64_t r = j->row_begin + i;
        const uint8_t *row = j->qdata + (size_t)r * L->row_bytes;
        float *out = j->out + (size_t)i * (size_t)L->cols;
        if (j->is_cast) {
            const void *p = row;
            if ((uintptr_t)row & 1) p = memcpy(j->sc[tid].stage, row, (size_t)L->row_bytes);
            mq_convert(j->ctx, MQ_F32, out, L->data_dtype, p, (size_t)L->cols);
            continue;
        }
        const uint8_t *codes = row;
        if (j->f.packed4) {
            unpack4(row, L->cols, j->sc[tid].codes);
            codes = j->sc[tid].codes;
        }
        uint8_t flip = L->data_dtype == MQ_I8 ? 0x80 : 0;
        float bias = L->data_dtype == MQ_I8 ? 128.0f : (float)j->f.code_offset;
        for (int64_t g = 0; g < L->groups_per_row; g++) {
            int64_t c0 = g * L->group_size;
            int64_t n = g + 1 < L->groups_per_row ? L->group_size : L->last_group_size;
            int64_t si = j->spec->granularity == MQ_PER_TENSOR ? 0 : r * L->groups_per_row + g;
            float sub = bias + (float)load_zp(j, j->czp, si);
            j->k->dequantize(codes + c0, (size_t)n, flip, sub, j->cscale[si], out + c0);
        }
    }
    return MQ_OK;
}

mq_status mq_dequantize_rows(mq_ctx *ctx, const mq_qspec *spec, const mq_qlayout *layout,
                             const void *data, const float *scale, const void *zero_point,
                             int64_t row_begin, int64_t row_end, float *out) {
    MQ_TRY(check_args(ctx, "dequantize", spec, layout, row_begin, row_end, data, out, scale,
                      zero_point));
    qjob j;
    MQ_TRY(job_init(ctx, &j, spec, layout, row_begin));
    j.qdata = (const uint8_t *)data;
    j.cscale = scale;
    j.czp = layout->has_zero_point ? (const uint8_t *)zero_point : NULL;
    j.out = out;
    mq_status st = alloc_scratch(&j);
    if (st == MQ_OK)
        st = mq__parallel_for(ctx, row_end - row_begin, j.grain, dequantize_range, &j);
    free_job(&j);
    return st;
}
