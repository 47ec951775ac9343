/* Each vector kernel table against the scalar reference, bit for bit, on every length up to
 * a few vectors and on unaligned spans: min/max, quantize, squared error (its float bits),
 * packing and dequantization. */
#include "harness.h"
#include "quant/quant_internal.h"

#include <float.h>
#include <math.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float unif(void) {
    return (float)((double)(test_xorshift64(&rng) >> 11) * 0x1p-53);
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void compare_tables(const mq_qkernels *v, const char *name) {
    const mq_qkernels *r = mq__qkernels_ref();
    enum { N = 160 };
    float xb[N + 1], wb[N + 1];
    for (int i = 0; i <= N; i++) {
        xb[i] = (unif() - 0.5f) * 20.0f;
        wb[i] = unif();
    }
    xb[5] = 3.5f; /* exact ties at scale 1 */
    xb[6] = -2.5f;
    mq_qformat fmts[4];
    mq__qformat(MQ_Q_INT8, &fmts[0]);
    mq__qformat(MQ_Q_UINT8, &fmts[1]);
    mq__qformat(MQ_Q_INT4, &fmts[2]);
    mq__qformat(MQ_Q_UINT4, &fmts[3]);
    for (int off = 0; off <= 1; off++) {
        const float *x = xb + off, *w = wb + off;
        for (size_t n = 1; n <= N - 1; n++) {
            float a0, a1, b0, b1;
            bool fa = r->minmax(x, n, &a0, &a1), fb = v->minmax(x, n, &b0, &b1);
            CHECK_MSG(fa == fb && a0 == b0 && a1 == b1, "%s minmax n %zu", name, n);
            for (int f = 0; f < 4; f++) {
                float scales[3] = {1.0f, 0.0371f, 3.3f};
                for (int k = 0; k < 3; k++) {
                    mq_qparam p = {scales[k], fmts[f].qmin < 0 ? (k == 2 ? -3 : 0) : 7};
                    mq_qround qr;
                    mq__qround_init(&fmts[f], p, &qr);
                    uint8_t ca[N], cb[N];
                    r->quantize(x, n, &qr, p.zp + fmts[f].code_offset, ca);
                    v->quantize(x, n, &qr, p.zp + fmts[f].code_offset, cb);
                    CHECK_MSG(!memcmp(ca, cb, n), "%s quantize n %zu fmt %d", name, n, f);
                    float ea = r->sqerr(x, NULL, n, &qr), eb = v->sqerr(x, NULL, n, &qr);
                    CHECK_MSG(bits(ea) == bits(eb), "%s sqerr n %zu: %.9g vs %.9g", name, n,
                              (double)ea, (double)eb);
                    ea = r->sqerr(x, w, n, &qr);
                    eb = v->sqerr(x, w, n, &qr);
                    CHECK_MSG(bits(ea) == bits(eb), "%s weighted sqerr n %zu", name, n);
                    float da[N], db[N];
                    uint8_t flip = f == 0 ? 0x80 : 0;
                    float sub = (float)(f == 0 ? 128 + p.zp : p.zp + fmts[f].code_offset);
                    r->dequantize(ca, n, flip, sub, p.scale, da);
                    v->dequantize(ca, n, flip, sub, p.scale, db);
                    CHECK_MSG(!memcmp(da, db, n * 4), "%s dequantize n %zu", name, n);
                    if (fmts[f].packed4) {
                        uint8_t pa[N / 2], pb[N / 2];
                        r->pack4(ca, n & ~(size_t)1, pa);
                        v->pack4(ca, n & ~(size_t)1, pb);
                        CHECK_MSG(!memcmp(pa, pb, n / 2), "%s pack4 n %zu", name, n);
                    }
                }
            }
        }
    }
    float bad[40];
    for (int i = 0; i < 40; i++) bad[i] = (float)i;
    for (int pos = 0; pos < 40; pos += 13) {
        float mn, mx;
        bad[pos] = NAN;
        CHECK_MSG(!v->minmax(bad, 40, &mn, &mx), "%s NaN at %d", name, pos);
        bad[pos] = -INFINITY;
        CHECK_MSG(!v->minmax(bad, 40, &mn, &mx), "%s Inf at %d", name, pos);
        bad[pos] = FLT_MAX;
        CHECK_MSG(v->minmax(bad, 40, &mn, &mx) && mx == FLT_MAX, "%s FLT_MAX at %d", name, pos);
        bad[pos] = (float)pos;
    }
}

TEST(vector_kernels_match_reference) {
    mq_ctx *ctx = mq_ctx_create();
    int tables = 0;
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
        const mq_qkernels *k = mq__qkernels(ctx);
        CHECK_MSG(k != mq__qkernels_ref(), "no vector table at %s", mq_isa_name((mq_isa)isa));
        compare_tables(k, mq_isa_name((mq_isa)isa));
        tables++;
    }
    /* a machine with AVX2 must run at least that table */
    CHECK(mq_isa_supported() == MQ_ISA_SCALAR || tables > 0);
    mq_ctx_free(ctx);
}

TEST(reference_rounding_is_half_to_even) {
    const mq_qkernels *r = mq__qkernels_ref();
    mq_qformat f;
    mq__qformat(MQ_Q_INT8, &f);
    mq_qround qr;
    mq__qround_init(&f, (mq_qparam){1.0f, 0}, &qr);
    float x[8] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 126.5f, 127.5f, -128.5f};
    uint8_t c[8];
    r->quantize(x, 8, &qr, 0, c);
    int8_t want[8] = {0, 2, 2, 0, -2, 126, 127, -128};
    CHECK(!memcmp(c, want, 8));
}

int main(void) {
    RUN(vector_kernels_match_reference);
    RUN(reference_rounding_is_half_to_even);
    return test_summary();
}
