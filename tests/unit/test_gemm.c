/* The f32 product of kernels/gemm.h: every vector path gives the scalar reference's bits on
 * odd shapes and strides (every partial row tile, partial column panels, K and N across the
 * cache blocks), for gemm and for gemm_tn (A transposed, which equals gemm on the transposed
 * copy), and the threaded driver gives the same bits for any thread count; panels_f64 gives
 * the bits of the product it stands for. */
#include "harness.h"
#include "monoquant.h"
#include "kernels/gemm.h"

#include <math.h>
#include <stdint.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static float *rand_buf(size_t n) {
    float *p = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

static float *ws_alloc(void **raw) {
    *raw = malloc(MQ__GEMM_WS * sizeof(float) + 64);
    return (float *)(((uintptr_t)*raw + 63) & ~(uintptr_t)63);
}

TEST(vector_paths_match_the_reference) {
    mq_ctx *ctx = mq_ctx_create();
    /* every row count of a 6- and a 12-row tile (M 1..25), partial 16- and 32-column panels,
     * N and K across the 256 blocks */
    int shapes[33][3] = {{6, 16, 256}, {12, 32, 257}, {13, 33, 257}, {25, 300, 520},
                         {5, 5, 600}, {24, 64, 1}, {11, 47, 300}, {36, 545, 40}};
    for (int m = 1; m <= 25; m++) {
        shapes[7 + m][0] = m;
        shapes[7 + m][1] = 17 + 2 * m;
        shapes[7 + m][2] = m % 3 ? 3 + m : 1;
    }
    void *raw;
    float *ws = ws_alloc(&raw);
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK(mq_ctx_set_isa(ctx, (mq_isa)isa) == MQ_OK);
        const mq__gemm_fns *f = mq__gemm_pick(ctx);
        CHECK_MSG(f != &mq__gemm_ref, "no vector path at %s", mq_isa_name((mq_isa)isa));
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            int64_t lda = K + 3, ldb = N + 5, ldc = N + 2;
            float *A = rand_buf((size_t)(M * lda)), *B = rand_buf((size_t)(K * ldb));
            float *C0 = rand_buf((size_t)(M * ldc)), *C1 = malloc((size_t)(M * ldc) * 4);
            memcpy(C1, C0, (size_t)(M * ldc) * 4);
            mq__gemm_ref.gemm(M, N, K, A, lda, B, ldb, C0, ldc, NULL);
            f->gemm(M, N, K, A, lda, B, ldb, C1, ldc, ws);
            CHECK_MSG(!memcmp(C0, C1, (size_t)(M * ldc) * 4), "isa %d shape %lldx%lldx%lld",
                      isa, (long long)M, (long long)N, (long long)K);
            /* gemm_tn: A stored transposed (K x M, row stride M + 7), the same bits as gemm */
            int64_t ldt = M + 7;
            float *At = malloc((size_t)(K * ldt) * 4), *C2 = rand_buf((size_t)(M * ldc));
            for (int64_t i = 0; i < M; i++)
                for (int64_t k = 0; k < K; k++) At[k * ldt + i] = A[i * lda + k];
            memcpy(C1, C2, (size_t)(M * ldc) * 4);
            mq__gemm_ref.gemm_tn(M, N, K, At, ldt, B, ldb, C1, ldc, NULL);
            f->gemm_tn(M, N, K, At, ldt, B, ldb, C2, ldc, ws);
            CHECK_MSG(!memcmp(C1, C2, (size_t)(M * ldc) * 4), "gemm_tn isa %d shape %lldx%lldx%lld",
                      isa, (long long)M, (long long)N, (long long)K);
            memcpy(C2, C1, (size_t)(M * ldc) * 4);
            mq__gemm_ref.gemm(M, N, K, A, lda, B, ldb, C2, ldc, NULL);
            mq__gemm_ref.gemm_tn(M, N, K, At, ldt, B, ldb, C1, ldc, NULL);
            CHECK(!memcmp(C1, C2, (size_t)(M * ldc) * 4));
            free(At);
            free(C2);
            float y0[37], y1[37], x[37];
            for (int i = 0; i < 37; i++) y0[i] = y1[i] = frand(), x[i] = frand();
            mq__gemm_ref.axpy(37, -0.37f, x, y0);
            f->axpy(37, -0.37f, x, y1);
            CHECK(!memcmp(y0, y1, sizeof y0));
            double d0[37], d1[37];
            for (int i = 0; i < 37; i++) d0[i] = d1[i] = (double)frand() * 1e3;
            mq__gemm_ref.add_f64((size_t)(s % 8 + 30), x, d0);
            f->add_f64((size_t)(s % 8 + 30), x, d1);
            CHECK(!memcmp(d0, d1, sizeof d0));
            free(A);
            free(B);
            free(C0);
            free(C1);
        }
    }
    free(raw);
    mq_ctx_free(ctx);
}

/* panels_f64 (the Hessian's chunk step on channel panels), where a path has it: the bits of
 * a zeroed C, gemm_tn and add_f64 (the reference's), K across the row tiles' loops. */
TEST(panels_f64_is_the_composition) {
    enum { P = MQ__GEMM_PANEL };
    mq_ctx *ctx = mq_ctx_create();
    static const int64_t ks[] = {1, 5, 127, 128, 131, 300};
    int checked = 0;
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        CHECK(mq_ctx_set_isa(ctx, (mq_isa)isa) == MQ_OK);
        const mq__gemm_fns *f = mq__gemm_pick(ctx);
        if (!f->panels_f64) continue;
        for (size_t s = 0; s < sizeof ks / sizeof ks[0]; s++) {
            int64_t K = ks[s], na = s % 2 ? 3 : 1, ps = K * P + 48, ld = P + 9;
            float *a = rand_buf((size_t)(na * ps)), *b = rand_buf((size_t)(K * P));
            float c[P * P];
            double *acc0 = malloc(sizeof(double) * (size_t)(na * P * ld));
            double *acc1 = malloc(sizeof(double) * (size_t)(na * P * ld));
            for (int64_t i = 0; i < na * P * ld; i++) acc0[i] = acc1[i] = (double)frand() * 50;
            for (int64_t q = 0; q < na; q++) {
                memset(c, 0, sizeof c);
                mq__gemm_ref.gemm_tn(P, P, K, a + q * ps, P, b, P, c, P, NULL);
                for (int i = 0; i < P; i++)
                    mq__gemm_ref.add_f64(P, c + i * P, acc0 + (q * P + i) * ld);
            }
            f->panels_f64(K, a, na, ps, b, acc1, ld);
            CHECK_MSG(!memcmp(acc0, acc1, sizeof(double) * (size_t)(na * P * ld)),
                      "isa %d K %lld", isa, (long long)K);
            checked++;
            free(a);
            free(b);
            free(acc0);
            free(acc1);
        }
    }
    CHECK(checked > 0);
    mq_ctx_free(ctx);
}

TEST(threads_do_not_change_bits) {
    mq_ctx *ctx = mq_ctx_create();
    int64_t M = 301, N = 70, K = 300;
    float *A = rand_buf((size_t)(M * K)), *B = rand_buf((size_t)(K * N));
    float *C0 = rand_buf((size_t)(M * N)), *C1 = malloc((size_t)(M * N) * 4);
    memcpy(C1, C0, (size_t)(M * N) * 4);
    mq__gemm_ref.gemm(M, N, K, A, K, B, N, C0, N, NULL);
    for (int t = 1; t <= 3; t++) {
        float *C = malloc((size_t)(M * N) * 4);
        memcpy(C, C1, (size_t)(M * N) * 4);
        CHECK(mq_ctx_set_threads(ctx, t) == MQ_OK);
        CHECK(mq__gemm_parallel(ctx, M, N, K, A, K, B, N, C, N) == MQ_OK);
        CHECK_MSG(!memcmp(C, C0, (size_t)(M * N) * 4), "threads %d", t);
        free(C);
    }
    free(A);
    free(B);
    free(C0);
    free(C1);
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(vector_paths_match_the_reference);
    RUN(panels_f64_is_the_composition);
    RUN(threads_do_not_change_bits);
    return test_summary();
}
