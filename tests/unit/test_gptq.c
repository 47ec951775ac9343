/* GPTQ (MQ_SEARCH_GPTQ): lower output error than round-to-nearest on correlated inputs, the
 * exact relation to min/max for a diagonal Hessian, independence from threads and row
 * chunking, Hessian errors, and the unchanged storage layout. */
#include "harness.h"
#include "quant_helpers.h"
#include "gptq_helpers.h"
#include "monoquant.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdint.h>

/* Quantizes with the Hessian h (NULL: none). */
static qres run_q(mq_ctx *ctx, const mq_qspec *spec, const float *h, int64_t rows, int64_t cols,
                  const float *w, int nchunks) {
    int64_t shape[2] = {rows, cols};
    mq_calib_data calib;
    mq_calib_data_init(&calib);
    calib.hessian = h;
    return quantize_chunks_with(ctx, spec, &calib, 2, shape, MQ_F32, w, nchunks);
}

/* sum over rows of d^T H d, d = w - dequantized w: the output error ||X W^T - X Wq^T||^2 / n */
static double output_error(mq_ctx *ctx, const mq_qspec *spec, const qres *r, const float *w,
                           const float *h) {
    int64_t rows = r->L.rows, cols = r->L.cols;
    float *dq = malloc((size_t)(rows * cols) * sizeof(float));
    mq_status st = mq_dequantize_rows(ctx, spec, &r->L, r->data, r->scale,
                                      r->L.has_zero_point ? r->zp : NULL, 0, rows, dq);
    double total = st == MQ_OK ? out_err(w, dq, h, rows, cols) : INFINITY;
    free(dq);
    return total;
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

enum { ROWS = 48, COLS = 256 };

TEST(gptq_lowers_output_error) {
    mq_ctx *ctx = mq_ctx_create();
    float *w = malloc(ROWS * COLS * sizeof(float)), *h = malloc(COLS * COLS * sizeof(float));
    make_problem(ROWS, COLS, 1024, w, h);
    struct { mq_qtype t; mq_scheme s; mq_granularity g; double max_ratio; } cases[] = {
        {MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 0.7},
        {MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 0.7},
        {MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0.7},
        {MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0.7},
        {MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_TENSOR, 0.7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mq_qspec rtn = spec_of(cases[i].t, cases[i].s, cases[i].g, 128, MQ_SEARCH_MINMAX);
        mq_qspec mse = spec_of(cases[i].t, cases[i].s, cases[i].g, 128, MQ_SEARCH_MSE);
        mq_qspec gq = spec_of(cases[i].t, cases[i].s, cases[i].g, 128, MQ_SEARCH_GPTQ);
        qres a = run_q(ctx, &rtn, h, ROWS, COLS, w, 1), b = run_q(ctx, &gq, h, ROWS, COLS, w, 1);
        qres m = run_q(ctx, &mse, h, ROWS, COLS, w, 1);
        CHECK(a.st == MQ_OK && b.st == MQ_OK && m.st == MQ_OK);
        double ea = output_error(ctx, &rtn, &a, w, h), eb = output_error(ctx, &gq, &b, w, h);
        double em = output_error(ctx, &mse, &m, w, h);
        CHECK_MSG(eb < cases[i].max_ratio * ea && eb < em,
                  "case %zu: GPTQ %g, round to nearest %g, MSE search %g", i, eb, ea, em);
        qres_free(&a);
        qres_free(&b);
        qres_free(&m);
    }
    free(w);
    free(h);
    mq_ctx_free(ctx);
}

/* A diagonal Hessian spreads no error: the bytes are MQ_SEARCH_MINMAX's, whatever the
 * diagonal (a zero entry included). */
TEST(diagonal_hessian_is_round_to_nearest) {
    mq_ctx *ctx = mq_ctx_create();
    enum { C = 100 };
    float *w = malloc(ROWS * C * sizeof(float)), *h = calloc(C * C, sizeof(float));
    for (int i = 0; i < ROWS * C; i++) w[i] = (float)gauss();
    for (int c = 0; c < C; c++) h[c * C + c] = c == 5 ? 0.0f : (float)(0.1 + urand());
    mq_qtype types[] = {MQ_Q_INT4, MQ_Q_UINT4, MQ_Q_INT8, MQ_Q_UINT8};
    for (int t = 0; t < 4; t++)
        for (int s = 0; s < 2; s++) {
            mq_qspec a = spec_of(types[t], (mq_scheme)s, MQ_PER_GROUP, 32, MQ_SEARCH_MINMAX);
            mq_qspec b = a;
            b.search = MQ_SEARCH_GPTQ;
            qres ra = run_q(ctx, &a, h, ROWS, C, w, 1), rb = run_q(ctx, &b, h, ROWS, C, w, 1);
            CHECK_MSG(same_result(&ra, &rb), "type %d scheme %d", t, s);
            qres_free(&ra);
            qres_free(&rb);
        }
    free(w);
    free(h);
    mq_ctx_free(ctx);
}

TEST(threads_and_chunking_do_not_change_bytes) {
    mq_ctx *ctx = mq_ctx_create();
    float *w = malloc(ROWS * COLS * sizeof(float)), *h = malloc(COLS * COLS * sizeof(float));
    make_problem(ROWS, COLS, 300, w, h);
    mq_qspec q = spec_of(MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 64, MQ_SEARCH_GPTQ);
    CHECK(mq_ctx_set_threads(ctx, 1) == MQ_OK);
    qres ref = run_q(ctx, &q, h, ROWS, COLS, w, 1);
    CHECK(ref.st == MQ_OK);
    int threads[] = {2, 3, 1}, chunks[] = {1, 5, 48};
    for (int i = 0; i < 3; i++) {
        CHECK(mq_ctx_set_threads(ctx, threads[i]) == MQ_OK);
        qres r = run_q(ctx, &q, h, ROWS, COLS, w, chunks[i]);
        CHECK_MSG(same_result(&ref, &r), "threads %d, chunks %d", threads[i], chunks[i]);
        qres_free(&r);
    }
    qres_free(&ref);
    free(w);
    free(h);
    mq_ctx_free(ctx);
}

/* The pipeline's path: one factorization shared by every chunk of rows. */
TEST(shared_factor_gives_the_same_bytes) {
    mq_ctx *ctx = mq_ctx_create();
    float *w = malloc(ROWS * COLS * sizeof(float)), *h = malloc(COLS * COLS * sizeof(float));
    make_problem(ROWS, COLS, 300, w, h);
    mq_qspec q = spec_of(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 128, MQ_SEARCH_GPTQ);
    qres ref = run_q(ctx, &q, h, ROWS, COLS, w, 1);
    float *u = NULL;
    CHECK(ref.st == MQ_OK && mq__gptq_factor(ctx, h, COLS, NULL, &u) == MQ_OK && u);
    mq_calib_data calib;
    mq_calib_data_init(&calib);
    calib.hessian = h;
    uint8_t *data = calloc(1, ref.L.data_bytes);
    float *scale = calloc((size_t)ref.L.nscales, sizeof(float));
    uint8_t *zp = calloc((size_t)ref.L.nscales, 1);
    for (int64_t b = 0; b < ROWS && u; b += 7) {
        int64_t e = b + 7 < ROWS ? b + 7 : ROWS;
        CHECK(mq__quantize_rows_factored(ctx, &q, &ref.L, &calib, MQ_F32, w, b, e,
                                         data + (size_t)b * ref.L.row_bytes, scale, zp,
                                         u, NULL, NULL) == MQ_OK);
    }
    CHECK(!memcmp(data, ref.data, ref.L.data_bytes));
    CHECK(!memcmp(scale, ref.scale, (size_t)ref.L.nscales * sizeof(float)));
    CHECK(!memcmp(zp, ref.zp, (size_t)ref.L.nscales));
    mq__free(ctx, u);
    free(data);
    free(scale);
    free(zp);
    qres_free(&ref);
    free(w);
    free(h);
    mq_ctx_free(ctx);
}

TEST(bad_hessians_fail) {
    mq_ctx *ctx = mq_ctx_create();
    enum { C = 16 };
    float w[4 * C], h[C * C];
    for (int i = 0; i < 4 * C; i++) w[i] = (float)gauss();
    mq_qspec q = spec_of(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 8, MQ_SEARCH_GPTQ);
    qres r = run_q(ctx, &q, NULL, 4, C, w, 1);
    CHECK_EQ_INT(r.st, MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "hessian");
    qres_free(&r);
    memset(h, 0, sizeof h);
    for (int c = 0; c < C; c++) h[c * C + c] = 1.0f;
    h[3 * C + 2] = h[2 * C + 3] = 2.0f; /* [[1 2] [2 1]] block: indefinite */
    r = run_q(ctx, &q, h, 4, C, w, 1);
    CHECK_EQ_INT(r.st, MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "not positive definite");
    CHECK_MSG_HAS(ctx, "column 2"); /* the factorization runs from the last column */
    qres_free(&r);

    h[3 * C + 2] = h[2 * C + 3] = 0.0f;
    h[7 * C + 1] = NAN;
    r = run_q(ctx, &q, h, 4, C, w, 1);
    CHECK_EQ_INT(r.st, MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "hessian[7][1]");
    qres_free(&r);

    h[7 * C + 1] = 0.0f;
    for (int c = 0; c < C; c++) h[c * C + c] = -1.0f;
    r = run_q(ctx, &q, h, 4, C, w, 1);
    CHECK_EQ_INT(r.st, MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "column 15");
    qres_free(&r);

    /* a cast ignores the search; an unknown search value is refused */
    q.search = (mq_scale_search)7;
    r = run_q(ctx, &q, h, 4, C, w, 1);
    CHECK_EQ_INT(r.st, MQ_ERR_INVALID);
    qres_free(&r);
    mq_ctx_free(ctx);
}

/* Same layout as round to nearest: the existing dequantization reads it, values stay on the
 * group's grid, unused nibbles are zero; a partial last group works. */
TEST(layout_unchanged) {
    mq_ctx *ctx = mq_ctx_create();
    enum { C = 101 };
    float *w = malloc(ROWS * C * sizeof(float)), *h = malloc(C * C * sizeof(float));
    make_problem(ROWS, C, 400, w, h);
    mq_qspec q = spec_of(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 32, MQ_SEARCH_GPTQ);
    mq_qspec m = q;
    m.search = MQ_SEARCH_MINMAX;
    qres r = run_q(ctx, &q, h, ROWS, C, w, 2), rm = run_q(ctx, &m, h, ROWS, C, w, 1);
    CHECK(r.st == MQ_OK && rm.st == MQ_OK);
    CHECK(!memcmp(&r.L, &rm.L, sizeof r.L));
    CHECK_EQ_INT((int)r.L.groups_per_row, 4);
    float *dq = malloc(ROWS * C * sizeof(float));
    CHECK(mq_dequantize_rows(ctx, &q, &r.L, r.data, r.scale, NULL, 0, ROWS, dq) == MQ_OK);
    int off_grid = 0, nibbles = 0;
    for (int i = 0; i < ROWS; i++) {
        for (int c = 0; c < C; c++) {
            float s = r.scale[i * 4 + c / 32], v = dq[i * C + c] / s;
            if (!(s > 0) || fabsf(v - nearbyintf(v)) > 1e-4f || v < -8.001f || v > 7.001f) off_grid++;
        }
        const uint8_t *row = r.data + (size_t)i * r.L.row_bytes;
        for (uint64_t b = C / 2 + 1; b < r.L.row_bytes; b++) nibbles += row[b] != 0;
        nibbles += (row[C / 2] >> 4) != 0;
    }
    CHECK_EQ_INT(off_grid, 0);
    CHECK_EQ_INT(nibbles, 0);
    free(dq);
    qres_free(&r);
    qres_free(&rm);
    free(w);
    free(h);
    mq_ctx_free(ctx);
}

/* Dequantized GPTQ weights of the reference for INT4 symmetric groups of gs (gs divides n). */
static void ref_gptq_int4(const float *w0, int64_t rows, int64_t n, int64_t gs, const double *u,
                          float *out) {
    mq_qformat f;
    mq__qformat(MQ_Q_INT4, &f);
    double *w = malloc((size_t)n * sizeof(double));
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < n; c++) w[c] = w0[r * n + c];
        mq_qround qr = {0};
        for (int64_t c = 0; c < n; c++) {
            if (c % gs == 0) {
                float mn = INFINITY, mx = -INFINITY;
                for (int64_t k = c; k < c + gs; k++) {
                    mn = fminf(mn, (float)w[k]);
                    mx = fmaxf(mx, (float)w[k]);
                }
                mq__qround_init(&f, mq__qparam_minmax(&f, MQ_SYMMETRIC, mn, mx), &qr);
            }
            float x = (float)w[c];
            uint8_t code;
            mq__quantize_ref(&x, 1, &qr, f.code_offset, &code);
            float dq = (float)((int)code - f.code_offset) * qr.scale;
            out[r * n + c] = dq;
            double e = (w[c] - dq) / u[c * n + c];
            for (int64_t k = c + 1; k < n; k++) w[k] -= e * u[c * n + k];
        }
    }
    free(w);
}

/* The blocked f32 factorization and sweep against the f64 column-by-column reference on a
 * 64 x 512 layer (four column blocks): U within 1e-3 of its largest entry per row, at most
 * 1 % of the weights on a different grid point, and the output error within 1 % (measured:
 * see docs/QUANTIZATION.md). Also: the same bytes on every instruction set. */
TEST(blocked_matches_column_by_column_reference) {
    mq_ctx *ctx = mq_ctx_create();
    enum { R = 64, N = 512 };
    float *w = malloc(R * N * sizeof(float)), *h = malloc(N * N * sizeof(float));
    make_problem(R, N, 2048, w, h);
    double *uref = ref_factor(h, N);
    float *u = NULL;
    CHECK(uref && mq__gptq_factor(ctx, h, N, NULL, &u) == MQ_OK && u);
    double worst = 0;
    for (int64_t i = 0; i < N && u; i++) {
        double big = 0;
        for (int64_t j = i; j < N; j++) big = fmax(big, fabs(uref[i * N + j]));
        for (int64_t j = 0; j < N; j++)
            worst = fmax(worst, fabs((double)u[i * N + j] - (j >= i ? uref[i * N + j] : 0)) / big);
    }
    CHECK_MSG(worst < 1e-3, "factor: largest relative difference %g", worst);
    mq_qspec q = spec_of(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 128, MQ_SEARCH_GPTQ);
    qres r = run_q(ctx, &q, h, R, N, w, 1);
    CHECK(r.st == MQ_OK);
    float *dq = malloc(R * N * sizeof(float)), *dref = malloc(R * N * sizeof(float));
    CHECK(mq_dequantize_rows(ctx, &q, &r.L, r.data, r.scale, NULL, 0, R, dq) == MQ_OK);
    ref_gptq_int4(w, R, N, 128, uref, dref);
    int differ = 0;
    /* scales may differ in the last bits (min/max of updated weights): count grid points */
    for (int i = 0; i < R * N; i++) differ += fabsf(dq[i] - dref[i]) > 1e-3f * fabsf(dref[i]);
    double e = out_err(w, dq, h, R, N), eref = out_err(w, dref, h, R, N);
    CHECK_MSG(differ <= R * N / 100 && fabs(e - eref) <= 0.01 * eref,
              "%d of %d weights differ; output error %g, reference %g", differ, R * N, e, eref);
    if (getenv("MQ_TEST_VERBOSE"))
        printf("# factor %.3g; %d of %d differ; output error %.6g vs reference %.6g\n", worst,
               differ, R * N, e, eref);
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        CHECK(mq_ctx_set_isa(ctx, (mq_isa)isa) == MQ_OK);
        qres ri = run_q(ctx, &q, h, R, N, w, 3);
        CHECK_MSG(same_result(&r, &ri), "isa %d", isa);
        qres_free(&ri);
    }
    qres_free(&r);
    mq__free(ctx, u);
    free(uref);
    free(dq);
    free(dref);
    free(w);
    free(h);
    mq_ctx_free(ctx);
}

/* The output-error sums of the pipeline's report (output_error.c) against plain f64 sums,
 * for a width across several column blocks, and the same values for 1 and 3 threads. */
TEST(output_error_sums) {
    mq_ctx *ctx = mq_ctx_create();
    enum { R = 7, N = 300 };
    float *w = malloc(R * N * sizeof(float)), *h = malloc(N * N * sizeof(float));
    float *dq = malloc(R * N * sizeof(float));
    make_problem(R, N, 400, w, h);
    for (int i = 0; i < R * N; i++) dq[i] = w[i] + (float)(0.01 * gauss());
    double ra = 0, rd = 0;
    for (int r = 0; r < R; r++)
        for (int a = 0; a < N; a++)
            for (int b = 0; b < N; b++) {
                double hab = h[a * N + b];
                ra += (double)w[r * N + a] * hab * w[r * N + b];
                rd += ((double)w[r * N + a] - dq[r * N + a]) * hab * ((double)w[r * N + b] - dq[r * N + b]);
            }
    double qa[2], qd[2];
    for (int t = 0; t < 2; t++) {
        CHECK(mq_ctx_set_threads(ctx, t ? 3 : 1) == MQ_OK);
        CHECK(mq__output_error(ctx, h, N, MQ_F32, w, dq, R, &qa[t], &qd[t]) == MQ_OK);
    }
    CHECK_MSG(fabs(qa[0] - ra) < 1e-5 * ra && fabs(qd[0] - rd) < 1e-4 * rd, "%g %g vs %g %g",
              qa[0], qd[0], ra, rd);
    CHECK(qa[0] == qa[1] && qd[0] == qd[1]);
    free(w);
    free(h);
    free(dq);
    mq_ctx_free(ctx);
}

/* The column loop across rows (AVX-512) and the row loop give the same bytes: every level
 * against the scalar one, for 37 rows (a partial group of 16 rows) x 300 columns (a partial
 * last block), groups inside a block (32), across blocks (per channel), per tensor, signed
 * and unsigned, 4 and 8 bits, on 1 and 3 threads. */
TEST(every_level_same_bytes_each_scheme) {
    enum { R = 37, C = 300 };
    mq_ctx *ctx = mq_ctx_create();
    float *w = malloc(R * C * sizeof(float)), *h = malloc(C * C * sizeof(float));
    make_problem(R, C, 400, w, h);
    mq_qspec specs[] = {
        spec_of(MQ_Q_INT4, MQ_SYMMETRIC, MQ_PER_GROUP, 128, MQ_SEARCH_GPTQ),
        spec_of(MQ_Q_INT4, MQ_ASYMMETRIC, MQ_PER_GROUP, 32, MQ_SEARCH_GPTQ),
        spec_of(MQ_Q_UINT4, MQ_ASYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_GPTQ),
        spec_of(MQ_Q_INT8, MQ_SYMMETRIC, MQ_PER_CHANNEL, 0, MQ_SEARCH_GPTQ),
        spec_of(MQ_Q_UINT8, MQ_ASYMMETRIC, MQ_PER_TENSOR, 0, MQ_SEARCH_GPTQ),
        spec_of(MQ_Q_INT8, MQ_ASYMMETRIC, MQ_PER_GROUP, 96, MQ_SEARCH_GPTQ),
    };
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        CHECK(mq_ctx_set_isa(ctx, MQ_ISA_SCALAR) == MQ_OK && mq_ctx_set_threads(ctx, 1) == MQ_OK);
        qres ref = run_q(ctx, &specs[k], h, R, C, w, 1);
        CHECK_MSG(ref.st == MQ_OK, "spec %zu", k);
        for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa))
            for (int t = 1; t <= 3; t += 2) {
                CHECK(mq_ctx_set_isa(ctx, (mq_isa)isa) == MQ_OK &&
                      mq_ctx_set_threads(ctx, t) == MQ_OK);
                qres r = run_q(ctx, &specs[k], h, R, C, w, 2);
                CHECK_MSG(same_result(&ref, &r), "spec %zu isa %d threads %d", k, isa, t);
                qres_free(&r);
            }
        qres_free(&ref);
    }
    free(w);
    free(h);
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(every_level_same_bytes_each_scheme);
    RUN(gptq_lowers_output_error);
    RUN(diagonal_hessian_is_round_to_nearest);
    RUN(threads_and_chunking_do_not_change_bytes);
    RUN(shared_factor_gives_the_same_bytes);
    RUN(bad_hessians_fail);
    RUN(layout_unchanged);
    RUN(blocked_matches_column_by_column_reference);
    RUN(output_error_sums);
    return test_summary();
}
