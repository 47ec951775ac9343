/* Error figures of an approximation: mq_error_stats_compute in double, and the accumulator
 * the pipeline and the quantize pass use (float lanes per part, parts summed in order). */
#include "quant/error_lanes.h"

#include <math.h>
#include <string.h>

void mq_error_stats_compute(const float *a, const float *b, size_t n, mq_error_stats *out) {
    if (!out) return;
    double saa = 0, sbb = 0, sab = 0, see = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double x = a[i], y = b[i], d = x - y;
        saa += x * x;
        sbb += y * y;
        sab += x * y;
        see += d * d;
        double ad = fabs(d);
        if (ad > mx || ad != ad) mx = ad; /* a NaN difference shows as NaN */
    }
    out->max_abs = mx;
    out->mse = n ? see / (double)n : 0.0;
    out->sqnr_db = see == 0 ? INFINITY : saa == 0 ? -INFINITY : 10.0 * log10(saa / see);
    out->rel_fro = see == 0 ? 0.0 : saa == 0 ? INFINITY : sqrt(see / saa);
    if (saa == 0 && sbb == 0) out->cosine = 1.0;
    else if (saa == 0 || sbb == 0) out->cosine = 0.0;
    else out->cosine = sab / (sqrt(saa) * sqrt(sbb));
}

#define ERR_GRAIN MQ__ERR_PART
#define LANES MQ__ERR_LANES

/* Parts: a part is ERR_GRAIN / cols whole rows when a row is at most ERR_GRAIN elements,
 * else a segment of at most ERR_GRAIN elements of one row. */
int64_t mq__err_rows_per_part(int64_t cols) {
    return cols > 0 && cols <= ERR_GRAIN ? ERR_GRAIN / cols : 1;
}

static size_t segs_per_row(size_t cols) {
    return cols > ERR_GRAIN ? (cols + ERR_GRAIN - 1) / ERR_GRAIN : 1;
}

static inline void lanes_add(mq__err_lanes *l, int k, float a, float b) {
    float d = a - b, ad = d < 0 ? -d : d;
    l->a2[k] += a * a;
    l->b2[k] += b * b;
    l->ab[k] += a * b;
    l->d2[k] += d * d;
    l->mx[k] = ad > l->mx[k] ? ad : l->mx[k];
}

static inline float bf16_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float load_a(mq_dtype dt, const void *a, size_t i) {
    switch (dt) {
    case MQ_F32: return ((const float *)a)[i];
    case MQ_BF16: return bf16_f32(((const uint16_t *)a)[i]);
    case MQ_F16: return mq_f16_to_f32(((const uint16_t *)a)[i]);
    default: return (float)((const double *)a)[i];
    }
}

/* The scalar blocks: pair k of each block of LANES pairs into lane k. */
static void blocks_ref(mq__err_lanes *lp, mq_dtype dt, const void *a, const float *b,
                       size_t nblk) {
    mq__err_lanes lanes = *lp, *l = &lanes; /* a local copy: no aliasing with b, so it vectorizes */
    size_t n = nblk * LANES;
    if (dt == MQ_F32) {
        const float *fa = (const float *)a;
        for (size_t i = 0; i < n; i += LANES)
            for (int k = 0; k < LANES; k++) lanes_add(l, k, fa[i + k], b[i + k]);
    } else {
        const uint16_t *ha = (const uint16_t *)a;
        for (size_t i = 0; i < n; i += LANES)
            for (int k = 0; k < LANES; k++) lanes_add(l, k, bf16_f32(ha[i + k]), b[i + k]);
    }
    *lp = lanes;
}

static const mq__err_lanes_kernel *pick(const mq_ctx *ctx) {
    static const mq__err_lanes_kernel ref = {blocks_ref};
    const void *by_level[] = {&ref, MQ__X86_ONLY(mq__err_lanes_kernel_avx2()),
                              MQ__X86_ONLY(mq__err_lanes_kernel_avx512()), NULL, NULL};
    return (const mq__err_lanes_kernel *)mq__isa_pick(ctx, by_level, 5);
}

/* Element i of a part goes into lane i % LANES, in order (l->n elements came before): whole
 * blocks of the common reference dtypes through the context's kernel, the rest here. */
static void lanes_run(const mq_ctx *ctx, mq__err_lanes *l, mq_dtype dt, const void *a,
                      const float *b, size_t n) {
    size_t i = 0;
    for (; i < n && (l->n + i) % LANES; i++) lanes_add(l, (int)((l->n + i) % LANES), load_a(dt, a, i), b[i]);
    if (dt == MQ_F32 || dt == MQ_BF16) {
        size_t nblk = (n - i) / LANES;
        if (nblk)
            pick(ctx)->blocks(l, dt, (const uint8_t *)a + i * mq_dtype_size(dt), b + i, nblk);
        i += nblk * LANES;
    }
    for (; i < n; i++) lanes_add(l, (int)((l->n + i) % LANES), load_a(dt, a, i), b[i]);
    l->n += n;
}

void mq__err_lanes_add(const mq_ctx *ctx, mq__err_lanes *l, mq_dtype a_dtype, const void *a,
                       const float *b, size_t n) {
    lanes_run(ctx, l, a_dtype, a, b, n);
}

bool mq__err_lanes_sum(const mq__err_lanes *l, mq__err_acc *part) {
    mq__err_acc acc = {0};
    for (int k = 0; k < LANES; k++) {
        acc.sum_a2 += l->a2[k];
        acc.sum_b2 += l->b2[k];
        acc.sum_ab += l->ab[k];
        acc.sum_d2 += l->d2[k];
        if (l->mx[k] > acc.max_abs || isnan(l->mx[k])) acc.max_abs = l->mx[k];
    }
    acc.n = l->n;
    *part = acc;
    /* float sums overflow for values beyond ~1e19 (an infinite sum of a^2 would report any
     * error as an exact +inf dB): such a part is summed again in double */
    return isfinite(acc.sum_a2) && isfinite(acc.sum_b2) && isfinite(acc.sum_ab) &&
           isfinite(acc.sum_d2);
}

typedef struct err_job {
    const mq_ctx *ctx;
    mq_dtype a_dtype;
    const void *a;
    const float *b;
    size_t cols, rows_pp, segs; /* row length; rows per part; parts per row */
    mq__err_acc *parts;
} err_job;

/* Part p as element ranges: k whole rows, or one segment of a row. */
static void part_range(const err_job *j, size_t p, size_t *begin, size_t *end) {
    if (j->segs == 1) {
        *begin = p * j->rows_pp * j->cols;
        *end = *begin + j->rows_pp * j->cols;
        return;
    }
    size_t row = p / j->segs, seg = p % j->segs;
    size_t row_end = (row + 1) * j->cols;
    *begin = row * j->cols + seg * ERR_GRAIN;
    *end = *begin + ERR_GRAIN < row_end ? *begin + ERR_GRAIN : row_end;
}

static mq__err_acc part_sums(const err_job *j, size_t begin, size_t end) {
    mq__err_lanes l;
    memset(&l, 0, sizeof l);
    size_t es = mq_dtype_size(j->a_dtype);
    lanes_run(j->ctx, &l, j->a_dtype, (const uint8_t *)j->a + begin * es, j->b + begin,
              end - begin);
    mq__err_acc acc;
    if (mq__err_lanes_sum(&l, &acc)) return acc;
    memset(&acc, 0, sizeof acc);
    for (size_t i = begin; i < end; i++) {
        double a = j->a_dtype == MQ_F64 ? ((const double *)j->a)[i]
                                        : (double)load_a(j->a_dtype, j->a, i);
        double bb = j->b[i], d = a - bb, ad = fabs(d);
        acc.sum_a2 += a * a;
        acc.sum_b2 += bb * bb;
        acc.sum_ab += a * bb;
        acc.sum_d2 += d * d;
        if (ad > acc.max_abs || isnan(ad)) acc.max_abs = ad;
    }
    acc.n = end - begin;
    return acc;
}

static mq_status parts_range(void *arg, int64_t pb, int64_t pe, int tid) {
    (void)tid;
    err_job *j = (err_job *)arg;
    for (int64_t p = pb; p < pe; p++) {
        size_t b, e;
        part_range(j, (size_t)p, &b, &e);
        j->parts[p] = part_sums(j, b, e);
    }
    return MQ_OK;
}

void mq__err_acc_merge(mq__err_acc *acc, const mq__err_acc *part) {
    acc->sum_a2 += part->sum_a2;
    acc->sum_b2 += part->sum_b2;
    acc->sum_ab += part->sum_ab;
    acc->sum_d2 += part->sum_d2;
    if (part->max_abs > acc->max_abs || isnan(part->max_abs)) acc->max_abs = part->max_abs;
    acc->n += part->n;
}

mq_status mq__err_acc_add(mq_ctx *ctx, mq__err_acc *acc, mq_dtype a_dtype, const void *a,
                          const float *b, size_t n, size_t cols) {
    if (!n) return MQ_OK;
    if (!cols || n % cols) cols = n;
    size_t rows = n / cols, rows_pp = (size_t)mq__err_rows_per_part((int64_t)cols);
    size_t segs = segs_per_row(cols);
    if (rows_pp > rows) rows_pp = rows;
    /* whole parts only, except a shorter last one (the end of the tensor) */
    size_t nparts = segs > 1 ? rows * segs : (rows + rows_pp - 1) / rows_pp;
    mq__err_acc stack_parts[64];
    mq__err_acc *parts = nparts <= 64 ? stack_parts
                                      : (mq__err_acc *)mq__malloc(ctx, nparts * sizeof *parts);
    if (!parts) return MQ_ERR_NOMEM;
    err_job j = {ctx, a_dtype, a, b, cols, rows_pp, segs, parts};
    mq_status st = MQ_OK;
    size_t whole = segs > 1 ? nparts : rows / rows_pp;
    if (whole == 1) parts_range(&j, 0, 1, 0);
    else if (whole) st = mq__parallel_for(ctx, (int64_t)whole, 1, parts_range, &j);
    if (st == MQ_OK && whole < nparts) /* the shorter last part */
        parts[whole] = part_sums(&j, whole * rows_pp * cols, n);
    /* summed in part order: identical for any thread count */
    for (size_t k = 0; st == MQ_OK && k < nparts; k++) mq__err_acc_merge(acc, &parts[k]);
    if (parts != stack_parts) mq__free(ctx, parts);
    return st;
}

void mq__err_acc_finish(const mq__err_acc *a, mq_error_stats *out) {
    memset(out, 0, sizeof *out);
    out->max_abs = a->max_abs;
    out->mse = a->n ? a->sum_d2 / (double)a->n : 0;
    if (a->sum_d2 == 0) out->sqnr_db = INFINITY;
    else if (a->sum_a2 == 0) out->sqnr_db = -INFINITY;
    else out->sqnr_db = 10 * log10(a->sum_a2 / a->sum_d2);
    out->rel_fro = a->sum_a2 > 0 ? sqrt(a->sum_d2 / a->sum_a2) : (a->sum_d2 > 0 ? INFINITY : 0);
    double den = sqrt(a->sum_a2) * sqrt(a->sum_b2);
    out->cosine = den > 0 ? a->sum_ab / den : (a->sum_a2 == a->sum_b2 ? 1 : 0);
}
