/* GPTQ act-order (mq_calib_data.act_order): the column order, the result against a
 * column-by-column f64 reference that quantizes the columns in that order with static
 * groups, independence from threads, row chunking and instruction set, the exact relation
 * to min/max for a diagonal Hessian, and Hessian errors named in the tensor's columns. */
#include "harness.h"
#include "quant_helpers.h"
#include "gptq_helpers.h"
#include "monoquant.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdint.h>

static qres run_a(mq_ctx *ctx, const mq_qspec *spec, const float *h, int64_t rows, int64_t cols,
                  const float *w, int nchunks, int act_order) {
    int64_t shape[2] = {rows, cols};
    mq_calib_data calib;
    mq_calib_data_init(&calib);
    calib.hessian = h;
    calib.act_order = act_order;
    return quantize_chunks_with(ctx, spec, &calib, 2, shape, MQ_F32, w, nchunks);
}

static mq_qspec spec_of(mq_qtype t, mq_scheme sch, mq_granularity g, int gs, mq_scale_search s) {
    mq_qspec q;
    mq_qspec_default(&q);
    q.type = t;
    q.scheme = sch;
    q.granularity = g;
    q.group_size = gs;
    q.search = s;
    return q;
}

static double deq_error(mq_ctx *ctx, const mq_qspec *q, const qres *r, const float *w,
                        const float *h, float *dq) {
    if (mq_dequantize_rows(ctx, q, &r->L, r->data, r->scale, r->L.has_zero_point ? r->zp : NULL,
                           0, r->L.rows, dq) != MQ_OK)
        return INFINITY;
    return out_err(w, dq, h, r->L.rows, r->L.cols);
}

/* Decreasing diagonal (0 counts as 1), ties by column, by insertion sort. */
static void ref_order(const float *h, int64_t n, int32_t *perm) {
    for (int64_t i = 0; i < n; i++) {
        float di = h[i * n + i] == 0.0f ? 1.0f : h[i * n + i];
        int64_t k = i;
        while (k > 0) {
            float dk = h[perm[k - 1] * n + perm[k - 1]];
            if (dk == 0.0f) dk = 1.0f;
            if (dk >= di) break;
            perm[k] = perm[k - 1];
            k--;
        }
        perm[k] = (int32_t)i;
    }
}

/* Dequantized weights of the reference: INT4 groups of gs (gs divides n) with min/max
 * parameters of the original weights; columns in the order perm, each one's error spread
 * at once over every later column (in that order) through the f64 factor u of the
 * permuted Hessian. */
static void ref_gptq_ordered(const float *w0, int64_t rows, int64_t n, int64_t gs,
                             mq_scheme scheme, const int32_t *perm, const double *u,
                             float *out) {
    mq_qformat f;
    mq__qformat(scheme == MQ_SYMMETRIC ? MQ_Q_INT4 : MQ_Q_UINT4, &f);
    double *w = malloc((size_t)n * sizeof(double));
    mq_qround *qr = malloc((size_t)(n / gs) * sizeof *qr);
    int32_t *add = malloc((size_t)(n / gs) * sizeof *add);
    for (int64_t r = 0; r < rows; r++) {
        const float *x = w0 + r * n;
        for (int64_t g = 0; g < n / gs; g++) {
            float mn = INFINITY, mx = -INFINITY;
            for (int64_t k = g * gs; k < (g + 1) * gs; k++) {
                mn = fminf(mn, x[k]);
                mx = fmaxf(mx, x[k]);
            }
            mq_qparam p = mq__qparam_minmax(&f, scheme, mn, mx);
            mq__qround_init(&f, p, &qr[g]);
            add[g] = p.zp + f.code_offset;
        }
        for (int64_t c = 0; c < n; c++) w[c] = x[perm[c]];
        for (int64_t c = 0; c < n; c++) {
            int64_t g = perm[c] / gs;
            float v = (float)w[c];
            uint8_t code;
            mq__quantize_ref(&v, 1, &qr[g], add[g], &code);
            float dq = (float)((int)code - add[g]) * qr[g].scale;
            out[r * n + perm[c]] = dq;
            double e = (w[c] - dq) / u[c * n + c];
            for (int64_t k = c + 1; k < n; k++) w[k] -= e * u[c * n + k];
        }
    }
    free(w);
    free(qr);
    free(add);
}

TEST(order_is_decreasing_diagonal) {
    mq_ctx *ctx = mq_ctx_create();
    enum { C = 300 };
    float *h = calloc(C * C, sizeof(float));
    for (int c = 0; c < C; c++) h[c * C + c] = (float)(c % 11 == 3 ? 0.0 : (c * 37 % 23) * 0.5);
    int32_t *perm = NULL, want[C];
    CHECK(mq__gptq_order(ctx, h, C, &perm) == MQ_OK && perm);
    ref_order(h, C, want);
    CHECK(perm && !memcmp(perm, want, sizeof want));
    mq__free(ctx, perm);
    h[7 * C + 7] = NAN;
    CHECK_EQ_INT(mq__gptq_order(ctx, h, C, &perm), MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "hessian[7][7]");
    free(h);
    mq_ctx_free(ctx);
}

/* The blocked f32 sweep in act-order against the f64 reference on a 64 x 512 layer (four
 * column blocks, groups of 128 interleaved by the order): scales exactly those of min/max
 * (static groups), at most 1 % of the weights on another grid point, the output error
 * within 1 % and below round to nearest's; the same bytes on every instruction set. */
TEST(matches_column_by_column_reference) {
    mq_ctx *ctx = mq_ctx_create();
    enum { R = 64, N = 512 };
    float *w = malloc(R * N * sizeof(float)), *h = malloc(N * N * sizeof(float));
    float *hp = malloc(N * N * sizeof(float));
    make_problem(R, N, 2048, w, h);
    int32_t perm[N];
    ref_order(h, N, perm);
    int moved = 0;
    for (int i = 0; i < N; i++) moved += perm[i] / 128 != i / 128;
    CHECK_MSG(moved > N / 2, "the order moves only %d columns to another block", moved);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < N; k++) hp[i * N + k] = h[perm[i] * N + perm[k]];
    double *uref = ref_factor(hp, N);
    CHECK(uref != NULL);
    mq_scheme schemes[] = {MQ_SYMMETRIC, MQ_ASYMMETRIC};
    for (int s = 0; s < 2 && uref; s++) {
        mq_qtype t = s ? MQ_Q_UINT4 : MQ_Q_INT4;
        mq_qspec q = spec_of(t, schemes[s], MQ_PER_GROUP, 128, MQ_SEARCH_GPTQ);
        mq_qspec m = spec_of(t, schemes[s], MQ_PER_GROUP, 128, MQ_SEARCH_MINMAX);
        qres r = run_a(ctx, &q, h, R, N, w, 1, 1), rm = run_a(ctx, &m, h, R, N, w, 1, 1);
        qres rp = run_a(ctx, &q, h, R, N, w, 1, 0);
        CHECK(r.st == MQ_OK && rm.st == MQ_OK && rp.st == MQ_OK);
        CHECK(!memcmp(r.scale, rm.scale, (size_t)r.L.nscales * sizeof(float)));
        CHECK(!r.L.has_zero_point || !memcmp(r.zp, rm.zp, (size_t)r.L.nscales));
        float *dq = malloc(R * N * sizeof(float)), *dref = malloc(R * N * sizeof(float));
        double e = deq_error(ctx, &q, &r, w, h, dq);
        ref_gptq_ordered(w, R, N, 128, schemes[s], perm, uref, dref);
        int differ = 0;
        for (int i = 0; i < R * N; i++) differ += fabsf(dq[i] - dref[i]) > 1e-3f * fabsf(dref[i]);
        double eref = out_err(w, dref, h, R, N);
        double ertn = deq_error(ctx, &m, &rm, w, h, dq), eplain = deq_error(ctx, &q, &rp, w, h, dq);
        CHECK_MSG(differ <= R * N / 100 && fabs(e - eref) <= 0.01 * eref,
                  "scheme %d: %d of %d weights differ; output error %g, reference %g", s,
                  differ, R * N, e, eref);
        CHECK_MSG(e < 0.7 * ertn, "scheme %d: act-order %g, round to nearest %g", s, e, ertn);
        if (getenv("MQ_TEST_VERBOSE"))
            printf("# scheme %d: %d of %d differ; output error %.6g vs reference %.6g; "
                   "in column order %.6g; round to nearest %.6g\n", s, differ, R * N, e, eref,
                   eplain, ertn);
        for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
            CHECK(mq_ctx_set_isa(ctx, (mq_isa)isa) == MQ_OK);
            qres ri = run_a(ctx, &q, h, R, N, w, 3, 1);
            CHECK_MSG(same_result(&r, &ri), "isa %d", isa);
            qres_free(&ri);
        }
        CHECK(mq_ctx_set_isa(ctx, mq_isa_supported()) == MQ_OK);
        free(dq);
        free(dref);
        qres_free(&r);
        qres_free(&rm);
        qres_free(&rp);
    }
    free(uref);
    free(w);
    free(h);
    free(hp);
    mq_ctx_free(ctx);
}

/* 1 and 3 threads, 1, 5 and 48 row chunks, and the pipeline's shared factor: one result, for
 * groups (a partial last one), channels and the whole tensor. */
TEST(threads_chunks_and_shared_factor_do_not_change_bytes) {
    mq_ctx *ctx = mq_ctx_create();
    enum { R = 48, C = 300 };
    float *w = malloc(R * C * sizeof(float)), *h = malloc(C * C * sizeof(float));
    make_problem(R, C, 300, w, h);
    mq_qspec specs[] = {spec_of(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 64, MQ_SEARCH_GPTQ),
                        spec_of(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_CHANNEL, 128, MQ_SEARCH_GPTQ),
                        spec_of(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_TENSOR, 128, MQ_SEARCH_GPTQ)};
    for (int s = 0; s < 3; s++) {
        mq_qspec *q = &specs[s];
        CHECK(mq_ctx_set_threads(ctx, 1) == MQ_OK);
        qres ref = run_a(ctx, q, h, R, C, w, 1, 1), plain = run_a(ctx, q, h, R, C, w, 1, 0);
        CHECK(ref.st == MQ_OK && plain.st == MQ_OK);
        CHECK_MSG(!same_result(&ref, &plain), "spec %d: act-order changed nothing", s);
        int threads[] = {3, 1, 3}, chunks[] = {1, 5, 48};
        for (int i = 0; i < 3; i++) {
            CHECK(mq_ctx_set_threads(ctx, threads[i]) == MQ_OK);
            qres r = run_a(ctx, q, h, R, C, w, chunks[i], 1);
            CHECK_MSG(same_result(&ref, &r), "spec %d: threads %d, chunks %d", s, threads[i],
                      chunks[i]);
            qres_free(&r);
        }
        int32_t *perm = NULL;
        float *u = NULL;
        CHECK(mq__gptq_order(ctx, h, C, &perm) == MQ_OK &&
              mq__gptq_factor(ctx, h, C, perm, &u) == MQ_OK);
        mq_calib_data calib;
        mq_calib_data_init(&calib);
        calib.hessian = h;
        calib.act_order = 1;
        uint8_t *data = calloc(1, ref.L.data_bytes);
        float *scale = calloc((size_t)ref.L.nscales, sizeof(float));
        uint8_t *zp = calloc((size_t)ref.L.nscales, 1);
        for (int64_t b = 0; b < R && u; b += 7) {
            int64_t e = b + 7 < R ? b + 7 : R;
            CHECK(mq__quantize_rows_factored(ctx, q, &ref.L, &calib, MQ_F32, w, b, e,
                                             data + (size_t)b * ref.L.row_bytes, scale,
                                             ref.L.has_zero_point ? zp : NULL, u, NULL,
                                             NULL) == MQ_OK);
        }
        CHECK_MSG(!memcmp(data, ref.data, ref.L.data_bytes) &&
                  !memcmp(scale, ref.scale, (size_t)ref.L.nscales * sizeof(float)), "spec %d",
                  s);
        mq__free(ctx, perm);
        mq__free(ctx, u);
        free(data);
        free(scale);
        free(zp);
        qres_free(&ref);
        qres_free(&plain);
    }
    free(w);
    free(h);
    mq_ctx_free(ctx);
}

/* A diagonal Hessian spreads no error: the bytes are MQ_SEARCH_MINMAX's in any order. */
TEST(diagonal_hessian_is_round_to_nearest) {
    mq_ctx *ctx = mq_ctx_create();
    enum { R = 20, C = 100 };
    float *w = malloc(R * C * sizeof(float)), *h = calloc(C * C, sizeof(float));
    for (int i = 0; i < R * C; i++) w[i] = (float)gauss();
    for (int c = 0; c < C; c++) h[c * C + c] = c == 5 ? 0.0f : (float)(0.1 + urand());
    mq_qtype types[] = {MQ_Q_INT4, MQ_Q_UINT4, MQ_Q_INT8, MQ_Q_UINT8};
    mq_granularity grans[] = {MQ_PER_GROUP, MQ_PER_CHANNEL, MQ_PER_TENSOR};
    for (int t = 0; t < 4; t++)
        for (int s = 0; s < 2; s++)
            for (int g = 0; g < 3; g++) {
                mq_qspec a = spec_of(types[t], (mq_scheme)s, grans[g], 32, MQ_SEARCH_MINMAX);
                mq_qspec b = a;
                b.search = MQ_SEARCH_GPTQ;
                qres ra = run_a(ctx, &a, h, R, C, w, 1, 0), rb = run_a(ctx, &b, h, R, C, w, 2, 1);
                CHECK_MSG(ra.st == MQ_OK && same_result(&ra, &rb), "type %d scheme %d gran %d",
                          t, s, g);
                qres_free(&ra);
                qres_free(&rb);
            }
    free(w);
    free(h);
    mq_ctx_free(ctx);
}

/* Errors name H's own positions, not the permuted ones. */
TEST(bad_hessians_name_their_columns) {
    mq_ctx *ctx = mq_ctx_create();
    enum { C = 16 };
    float w[4 * C], h[C * C];
    for (int i = 0; i < 4 * C; i++) w[i] = (float)gauss();
    mq_qspec q = spec_of(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 8, MQ_SEARCH_GPTQ);
    memset(h, 0, sizeof h);
    for (int c = 0; c < C; c++) h[c * C + c] = 1.0f + (float)c; /* order: 15, 14, ..., 0 */
    h[9 * C + 9] = -50.0f;                                      /* last in the order */
    qres r = run_a(ctx, &q, h, 4, C, w, 1, 1);
    CHECK_EQ_INT(r.st, MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "not positive definite");
    CHECK_MSG_HAS(ctx, "column 9");
    qres_free(&r);
    h[9 * C + 9] = 10.0f;
    h[12 * C + 3] = INFINITY;
    r = run_a(ctx, &q, h, 4, C, w, 1, 1);
    CHECK_EQ_INT(r.st, MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "hessian[12][3]");
    qres_free(&r);
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(order_is_decreasing_diagonal);
    RUN(matches_column_by_column_reference);
    RUN(threads_chunks_and_shared_factor_do_not_change_bytes);
    RUN(diagonal_hessian_is_round_to_nearest);
    RUN(bad_hessians_name_their_columns);
    return test_summary();
}
