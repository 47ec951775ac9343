/* Quantization kernels on f32 spans. qkernels_ref.c is the specification; the vector files
 * (qkernels_<isa>.c) must give identical bytes and identical error sums (the squared error is
 * summed in 16 float lanes, element i into lane i % 16, then reduced in a fixed tree). */
#ifndef MQ_QUANT_INTERNAL_H
#define MQ_QUANT_INTERNAL_H

#include "common/internal.h"

/* Rounding of x * inv clamped to [lo, hi], where lo = qmin - zp and hi = qmax - zp are
 * integers: clamping before rounding equals PyTorch's clamp(zp + round(x * inv)). */
typedef struct mq_qround {
    float scale, inv;  /* inv = 1.0f / scale */
    float lo, hi;
} mq_qround;

/* A 4-bit candidate in the fixed-point error of the scale search (mq__qfix_init): values enter
 * as X = nearbyint(x * k), |X| <= 2^14; t = (X * m + 2^14) >> 15 is x / scale in units of
 * 1/256 of a step; it is clamped to [lo, hi] (multiples of 256) and rounded half up to a
 * multiple of 256. */
typedef struct mq_qfix {
    int32_t m, lo, hi; /* each fits in 16 bits */
} mq_qfix;
#define MQ_QFIX_ONE 16384.0f /* X of the largest |x|; m <= 16383, so |t| <= 8192 */
struct mq_qformat;
struct mq_qparam;

typedef struct mq_qkernels {
    /* Min and max of x[0, n), n >= 1. Returns false when x holds a NaN or an Inf. */
    bool (*minmax)(const float *x, size_t n, float *mn, float *mx);
    /* codes[i] = (uint8_t)((int)round(clamp(x[i] * inv, lo, hi)) + add). lo, hi and add come
     * from a format's range (mq__qround_init), so each sum lies in [-128, 263]: vector tables
     * narrow through 16-bit saturating packs and keep the low byte, which is exact there. */
    void (*quantize)(const float *x, size_t n, const mq_qround *p, int32_t add, uint8_t *codes);
    /* Sum of w[i] * (x[i] - round(clamp(x[i] * inv, lo, hi)) * scale)^2 (w NULL: 1). */
    float (*sqerr)(const float *x, const float *w, size_t n, const mq_qround *p);
    /* dst[i] = codes[2i] | codes[2i+1] << 4 for i < n / 2 (codes < 16, n even). */
    void (*pack4)(const uint8_t *codes, size_t n, uint8_t *dst);
    /* out[i] = ((float)(codes[i] ^ flip) - sub) * scale. */
    void (*dequantize)(const uint8_t *codes, size_t n, uint8_t flip, float sub, float scale,
                       float *out);
    /* The same on a source read in place: F32, F16 or BF16 (`dt`), any alignment, each value
     * widened exactly to f32 in registers. A table may leave these NULL (callers then convert
     * rows to f32 first). */
    bool (*minmax_src)(const void *x, mq_dtype dt, size_t n, float *mn, float *mx);
    void (*quantize_src)(const void *x, mq_dtype dt, size_t n, const mq_qround *p, int32_t add,
                         uint8_t *codes);
    /* 4-bit codes packed as they are produced: dst[i] = c[2i] | c[2i+1] << 4 for i < n / 2,
     * and dst[n / 2] = c[n - 1] when n is odd (c as quantize_src computes them, < 16). */
    void (*quantize4_src)(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                          int32_t add, uint8_t *dst);
    /* The scale search over candidates qr[0, nc): the index of the least sqerr on x[0, n),
     * candidate 0 first, a later one only when its error is smaller (the first wins ties);
     * *err receives its error. mn, mx: the min and max of x. Vector tables skip candidates
     * that provably lose (a lower bound of their error), which changes no result. */
    int (*search)(const float *x, const float *w, size_t n, float mn, float mx,
                  const mq_qround *qr, int nc, float *err);
    /* The min/max rule on ng whole groups of gs elements of a source read in place (F32, F16
     * or BF16, any alignment; group g = x[g * gs, (g + 1) * gs)), many groups per call so
     * that vector tables work on several groups at once. A table may leave these NULL.
     * minmax_groups: mn[g], mx[g] as minmax_src gives them; false when x holds a NaN or an
     * Inf (mn, mx then unspecified). */
    bool (*minmax_groups)(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                          float *mx);
    /* mq__qparam_minmax of each range [mn[g], mx[g]] (finite), g < ng: scale[g], zp8[g] (the
     * zero point's low byte; zp8 NULL: not stored), qr[g] (mq__qround_init) and add[g] =
     * zero point + f->code_offset. false when a scale fails mq__qparam_finite (outputs then
     * unspecified). */
    bool (*params_minmax)(const struct mq_qformat *f, mq_scheme scheme, size_t ng,
                          const float *mn, const float *mx, float *scale, uint8_t *zp8,
                          mq_qround *qr, int32_t *add);
    /* quantize_src of each group with qr[g], add[g], codes of group g at dst + g * gs; with
     * packed4 (gs even, or ng 1), quantize4_src instead, at dst + g * gs / 2. */
    void (*quantize_groups)(const void *x, mq_dtype dt, size_t gs, size_t ng,
                            const mq_qround *qr, const int32_t *add, bool packed4,
                            uint8_t *dst);
    /* d[c] = sum over x[0, n) of (t - round(clamp(t)))^2 in 1/256 steps (mq_qfix) for the
     * candidates q[0, nc); exact integers, so any summation order gives the same. A table
     * may leave it NULL (the reference's then runs). */
    void (*sqerr_fix)(const float *x, size_t n, float k, const mq_qfix *q, int nc,
                      int64_t *d);
    /* mq__search_fix of ng whole groups of gs elements of a source read in place (F32, F16
     * or BF16, any alignment; group g = x[g * gs, (g + 1) * gs)) whose ranges [mn[g], mx[g]]
     * pass mq__search_fix_applies: p[g]. A table may leave it NULL (callers then run
     * mq__search_fix on rows converted to f32). */
    void (*search_fix)(const struct mq_qformat *f, mq_scheme scheme, const void *x, mq_dtype dt,
                       size_t gs, size_t ng, const float *mn, const float *mx,
                       struct mq_qparam *p);
    /* minmax_groups for the symmetric rule, which sees only the largest magnitude
     * (mq__qparam_minmax gives the same for [-a, a] as for [mn, mx], a = max(-mn, mx)):
     * mn[g] = -a, mx[g] = a of group g (as values: a zero's sign may differ); false when x
     * holds a NaN or an Inf. Vector tables find a with about half the work of the min and
     * the max. A table may leave it NULL. */
    bool (*absmax_groups)(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                          float *mx);
} mq_qkernels;

MQ_HIDDEN const mq_qkernels *mq__qkernels(const mq_ctx *ctx);
MQ_HIDDEN const mq_qkernels *mq__qkernels_ref(void);
MQ_HIDDEN const mq_qkernels *mq__qkernels_avx2(void);
MQ_HIDDEN const mq_qkernels *mq__qkernels_avx512(void);
/* The AVX-512 table with the entries that need VBMI2 (mq__qkernels picks it when the CPU
 * reports VBMI2). */
MQ_HIDDEN const mq_qkernels *mq__qkernels_avx512_vbmi2(void);
MQ_HIDDEN const mq_qkernels *mq__qkernels_neon(void);

/* Scalar pieces the vector files reuse for their tails. */
MQ_HIDDEN bool mq__minmax_ref(const float *x, size_t n, float *mn, float *mx);
MQ_HIDDEN void mq__quantize_ref(const float *x, size_t n, const mq_qround *p, int32_t add,
                                uint8_t *codes);
MQ_HIDDEN void mq__dequantize_ref(const uint8_t *codes, size_t n, uint8_t flip, float sub,
                                  float scale, float *out);
MQ_HIDDEN void mq__pack4_ref(const uint8_t *codes, size_t n, uint8_t *dst);
MQ_HIDDEN bool mq__minmax_src_ref(const void *x, mq_dtype dt, size_t n, float *mn, float *mx);
MQ_HIDDEN void mq__quantize_src_ref(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                                    int32_t add, uint8_t *codes);
MQ_HIDDEN void mq__quantize4_src_ref(const void *x, mq_dtype dt, size_t n, const mq_qround *p,
                                     int32_t add, uint8_t *dst);
MQ_HIDDEN bool mq__minmax_groups_ref(const void *x, mq_dtype dt, size_t gs, size_t ng, float *mn,
                                     float *mx);
MQ_HIDDEN bool mq__absmax_groups_ref(const void *x, mq_dtype dt, size_t gs, size_t ng,
                                     float *mn, float *mx);
MQ_HIDDEN bool mq__params_minmax_ref(const struct mq_qformat *f, mq_scheme scheme, size_t ng,
                                     const float *mn, const float *mx, float *scale,
                                     uint8_t *zp8, mq_qround *qr, int32_t *add);
MQ_HIDDEN void mq__quantize_groups_ref(const void *x, mq_dtype dt, size_t gs, size_t ng,
                                       const mq_qround *qr, const int32_t *add, bool packed4,
                                       uint8_t *dst);
/* Squared error of the one value x (weight w) under p, as every sqerr computes it. */
MQ_HIDDEN float mq__sqerr1(float x, float w, const mq_qround *p);
/* A lower bound of sqerr(x, NULL, n, p) from two distinct elements a and b of x (a == b:
 * one element): the sum of their terms, which every lane order can only increase. */
MQ_HIDDEN float mq__sqerr_bound(float a, float b, const mq_qround *p);
/* The x86 vector searches' candidate loop: candidates in index order, up to four errors per
 * call of batch (e[k] = the error of q[k], k < nb, nb <= 4); candidate c > 0 is left out when
 * lb (per-candidate lower bounds, NULL for none) says it cannot beat the best error so far,
 * which only decreases. Same contract as mq_qkernels.search. */
typedef void (*mq__sqerr_batch_fn)(const float *x, const float *w, size_t n,
                                   const mq_qround *const *q, int nb, float *e);
MQ_HIDDEN int mq__search_batched(const float *x, const float *w, size_t n, const mq_qround *qr,
                                 int nc, const float *lb, float *err, mq__sqerr_batch_fn batch);
MQ_HIDDEN void mq__sqerr_fix_ref(const float *x, size_t n, float k, const mq_qfix *q, int nc,
                                 int64_t *d);
/* The search's choice among the errors e[0, nc) (nc >= 1): the first least one, as the
 * reference's scan makes it; *err receives it. */
MQ_HIDDEN int mq__search_pick(const float *e, int nc, float *err);
/* The fixed reduction of the 16 error lanes. */
MQ_HIDDEN float mq__sum_lanes16(const float lanes[16]);

/* Traits of a stored type (qformat.c holds the one table). */
typedef struct mq_qformat {
    mq_qtype type;
    const char *name;          /* mq_qtype_name */
    int bits;                  /* 8, 4; 16 for the casts; 0 for MQ_Q_NONE */
    bool integer;              /* integers + scales; else a cast (or none) */
    bool is_signed;
    int32_t qmin, qmax;        /* integer range (0, 0 when not integer) */
    int32_t code_offset;       /* stored code = q + code_offset (8 for INT4, else 0) */
    bool packed4;              /* 4-bit codes, eight per int32 word (two per byte) */
    mq_dtype storage;          /* data dtype: I8, U8, I32 (packed), F16, BF16 */
    mq_dtype zero_point_dtype; /* I8/U8 for 8-bit, I8 for 4-bit, stored unpacked */
} mq_qformat;

/* The traits of `type`, or NULL for a value outside mq_qtype. */
MQ_HIDDEN const mq_qformat *mq__qformat_of(mq_qtype type);
/* Shorthands of the table. */
MQ_HIDDEN bool mq__qtype_is_integer(mq_qtype type);
MQ_HIDDEN bool mq__qtype_is_cast(mq_qtype type);
MQ_HIDDEN int mq__qtype_bits(mq_qtype type);
/* Parses an mq_qtype_name; 0 if unknown. */
MQ_HIDDEN int mq__qtype_from_name(const char *name, mq_qtype *out);

/* Parameters of one group: scale and integer zero point. */
typedef struct mq_qparam {
    float scale;
    int32_t zp;
} mq_qparam;

/* A candidate of the scale search and the range ratio it came from. */
typedef struct mq_qcand {
    mq_qparam p;
    float ratio;
} mq_qcand;

#define MQ_MAX_CANDIDATES 16

/* Copies the traits of an integer type; false for casts and none. */
MQ_HIDDEN bool mq__qformat(mq_qtype type, mq_qformat *out);
/* PyTorch's min/max rule for a range [mn, mx]. */
MQ_HIDDEN mq_qparam mq__qparam_minmax(const mq_qformat *f, mq_scheme scheme, float mn, float mx);
/* Candidates for a range [mn, mx] (finite, mn <= mx). Stage 0: candidate 0 is PyTorch's
 * min/max rule, then clipped ranges on a coarse grid of ratios; stage 1: the neighbours of
 * the stage-0 winner's ratio `center`. Returns the count (<= MQ_MAX_CANDIDATES). */
MQ_HIDDEN int mq__qcandidates(const mq_qformat *f, mq_scheme scheme, float mn, float mx,
                              int stage, float center, mq_qcand *out);
MQ_HIDDEN void mq__qround_init(const mq_qformat *f, mq_qparam p, mq_qround *out);
/* The fixed-point form of a 4-bit candidate (scale, zero point zp) for values scaled by
 * k = MQ_QFIX_ONE / amax (amax = max|x|): m = round(512 * amax / scale), clamped to
 * [1, 16383]; lo = (qmin - zp) * 256, hi = (qmax - zp) * 256. */
static inline mq_qfix mq__qfix_init(const mq_qformat *f, mq_qparam p, float amax) {
    /* t = x / scale * 256 = X * 256 / (k * scale) = X * m / 2^15; the rounding adds and
     * subtracts 1.5 * 2^23 as the reference's round does */
    float m = 512.0f * amax;
    m = m / p.scale;
    m = m + 0x1.8p23f;
    m = m - 0x1.8p23f;
    m = m < 1.0f ? 1.0f : m > 16383.0f ? 16383.0f : m;
    return (mq_qfix){(int32_t)m, (f->qmin - p.zp) * 256, (f->qmax - p.zp) * 256};
}

/* The ranges whose 4-bit search runs in fixed point: amax = max(-mn, mx) in
 * [MQ_QFIX_AMIN, MQ_QFIX_AMAX], where every candidate's scale is above the FLT_EPSILON floor
 * and m lands in [3413, 16168]. */
#define MQ_QFIX_AMIN 1e-5f
#define MQ_QFIX_AMAX 1e30f
MQ_HIDDEN bool mq__search_fix_applies(const mq_qformat *f, float mn, float mx);
/* A fixed-point error: d / m^2 in units common to a group's candidates. */
typedef struct mq_fix_err {
    int64_t d;
    int32_t m;
} mq_fix_err;
/* a < b, exactly: a.d * b.m^2 < b.d * a.m^2 */
static inline bool mq__fix_less(mq_fix_err a, mq_fix_err b) {
    __extension__ typedef unsigned __int128 u128;
    return (u128)(uint64_t)a.d * (uint64_t)(b.m * b.m) <
           (u128)(uint64_t)b.d * (uint64_t)(a.m * a.m);
}
typedef void (*mq__sqerr_fix_fn)(const float *x, size_t n, float k, const mq_qfix *q, int nc,
                                 int64_t *d);
/* The 4-bit search without weights of x[0, n) of range [mn, mx] (mq__search_fix_applies):
 * the two stages of mq__qcandidates, each candidate's error from `sqerr` (mq_qfix of
 * mq__qfix_init, values scaled by MQ_QFIX_ONE / amax), the first least error of each stage
 * (mq__fix_less), the stage-1 winner only when its error is below the stage-0 winner's. */
MQ_HIDDEN mq_qparam mq__search_fix(const mq_qformat *f, mq_scheme scheme, const float *x,
                                   size_t n, float mn, float mx, mq__sqerr_fix_fn sqerr);
MQ_HIDDEN void mq__search_fix_avx512(const mq_qformat *f, mq_scheme scheme, const void *x,
                                     mq_dtype dt, size_t gs, size_t ng, const float *mn,
                                     const float *mx, mq_qparam *p);
/* The same with VBMI2 (same results; for CPUs that report it). */
MQ_HIDDEN void mq__search_fix_avx512_vbmi2(const mq_qformat *f, mq_scheme scheme,
                                           const void *x, mq_dtype dt, size_t gs, size_t ng,
                                           const float *mn, const float *mx, mq_qparam *p);

/* GPTQ: *out (cols x cols floats, to mq__free) receives U, upper triangular (zeros below),
 * row-major, with U^T U = (H' + damp I)^-1 where H' is `h` (lower triangle read) with zero
 * diagonal entries set to 1 and damp = 1 % of its mean diagonal. MQ_ERR_QUANT for a
 * non-finite entry or a matrix that is not positive definite. Runs on the context's threads
 * (not from inside a parallel job). */
MQ_HIDDEN mq_status mq__gptq_factor(mq_ctx *ctx, const float *h, int64_t cols,
                                    const int32_t *perm, float **out);
/* GPTQ act-order: *out (cols int32, to mq__free) receives the columns in decreasing order of
 * h's diagonal (a zero entry counting as 1, as in the factor), ties in column order. The
 * factor of that order is mq__gptq_factor with `perm` = *out: U of H[perm[i]][perm[j]]
 * (positions in its messages are H's own). */
MQ_HIDDEN mq_status mq__gptq_order(mq_ctx *ctx, const float *h, int64_t cols, int32_t **out);
typedef struct mq__err_acc mq__err_acc;
/* mq_quantize_rows with the factor of calib->hessian computed once by the caller (NULL: as
 * mq_quantize_rows), for callers that quantize a tensor in many row chunks; with
 * calib->act_order, the factor of mq__gptq_order's permutation. With `err` (only where
 * mq__quantize_fuses_error, row_begin a multiple of mq__err_rows_per_part), the error
 * figures of the rows against their dequantized values are added to it in the same pass,
 * while each row is in cache: the sums mq__err_acc_add gives. *err_done (with err) is false
 * when a part's float sums overflowed: err is then untouched, and the caller sums the rows
 * through mq__err_acc_add. */
MQ_HIDDEN mq_status mq__quantize_rows_factored(mq_ctx *ctx, const mq_qspec *spec,
                                               const mq_qlayout *layout,
                                               const mq_calib_data *calib, mq_dtype src_dtype,
                                               const void *src, int64_t row_begin,
                                               int64_t row_end, void *data, float *scale,
                                               void *zero_point, const float *factor,
                                               mq__err_acc *err, bool *err_done);
/* Integer types from F32/F16/BF16 without GPTQ: the quantize pass can add error figures. */
MQ_HIDDEN bool mq__quantize_fuses_error(const mq_qspec *spec, mq_dtype src_dtype);

/* Sums over rows [0, nr) of w^T H w and d^T H d, d = w - deq (output_error.c), for the rows
 * of `src` (src_dtype) and their dequantized values `deq` (nr x cols f32); H symmetric,
 * cols x cols. Runs on the context's threads (not from inside a parallel job). */
MQ_HIDDEN mq_status mq__output_error(mq_ctx *ctx, const float *h, int64_t cols,
                                     mq_dtype src_dtype, const void *src, const float *deq,
                                     int64_t nr, double *wsum, double *dsum);
/* Error figures accumulated over chunks, in a fixed order (thread-count independent). */
struct mq__err_acc {
    double sum_a2, sum_b2, sum_ab, sum_d2, max_abs;
    uint64_t n;
    double out_a, out_d;   /* sums of w^T H w and d^T H d (calibration Hessian), */
    int has_out;           /* when has_out */
};
/* Adds n pairs: reference `a` of a float dtype, approximation `b`, in rows of `cols` (0, or
 * one that does not divide n: one row of n). The pairs are summed in parts
 * (mq__err_rows_per_part whole rows from the first, or segments of 16384 elements of a
 * longer row), each in float lanes then in double, and the parts are added in order: the
 * same sums for any thread count, and for any split of a tensor into calls at multiples of
 * mq__err_rows_per_part rows (parallel over the context's threads). */
MQ_HIDDEN mq_status mq__err_acc_add(mq_ctx *ctx, mq__err_acc *acc, mq_dtype a_dtype,
                                    const void *a, const float *b, size_t n, size_t cols);
MQ_HIDDEN int64_t mq__err_rows_per_part(int64_t cols);
/* Adds a part's sums (parts merged in a fixed order). */
MQ_HIDDEN void mq__err_acc_merge(mq__err_acc *acc, const mq__err_acc *part);
/* One part summed by its caller, as mq__err_acc_add sums it: zeroed lanes, then the part's
 * pairs in order (any number of calls), then mq__err_lanes_sum, which returns false when a
 * float sum overflowed (sum that part again through mq__err_acc_add, in double). */
#define MQ__ERR_LANES 16
#define MQ__ERR_PART 16384 /* elements of a part at most */
typedef struct mq__err_lanes {
    float a2[MQ__ERR_LANES], b2[MQ__ERR_LANES], ab[MQ__ERR_LANES], d2[MQ__ERR_LANES],
        mx[MQ__ERR_LANES];
    uint64_t n;
} mq__err_lanes;
/* `a`: F32, F16 or BF16 (exact in f32: the sums are those of its f32 values). */
MQ_HIDDEN void mq__err_lanes_add(const mq_ctx *ctx, mq__err_lanes *l, mq_dtype a_dtype,
                                 const void *a, const float *b, size_t n);
MQ_HIDDEN bool mq__err_lanes_sum(const mq__err_lanes *l, mq__err_acc *part);
MQ_HIDDEN void mq__err_acc_finish(const mq__err_acc *acc, mq_error_stats *out);

#endif
