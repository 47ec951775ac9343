/* The many-group kernels of the min/max path (minmax_groups, params_minmax, quantize_groups)
 * of each vector table against the scalar reference, bit for bit, and the quantizer that uses
 * them: the same bytes and the same error messages at every level, and the same bytes as the
 * reference's single-group pieces. */
#include "harness.h"
#include "quant/quant_internal.h"

#include <float.h>
#include <math.h>

static uint64_t rng = 0x9b1c3f2a77d51e03ull;
static uint32_t rnd(void) { return (uint32_t)(test_xorshift64(&rng) >> 32); }
static float unif(void) { return (float)(rnd() >> 8) * 0x1p-24f; }

static const mq_dtype dts[3] = {MQ_F32, MQ_F16, MQ_BF16};

static size_t esize(mq_dtype dt) { return dt == MQ_F32 ? 4 : 2; }

/* Element i of a source of dtype dt set to the f32 value v (rounded for F16/BF16). */
static void put(uint8_t *x, mq_dtype dt, size_t i, float v) {
    if (dt == MQ_F32) {
        memcpy(x + 4 * i, &v, 4);
    } else {
        uint16_t h = dt == MQ_F16 ? mq_f32_to_f16(v) : mq_f32_to_bf16(v);
        memcpy(x + 2 * i, &h, 2);
    }
}

/* Raw 16-bit pattern at element i (F16/BF16), e.g. a NaN payload. */
static void put16(uint8_t *x, size_t i, uint16_t h) { memcpy(x + 2 * i, &h, 2); }

/* Group g's values: each group its own scale and sign mix, some all zero, some one-sided;
 * BF16 elements get random low mantissa bits (the vector path reads odd elements with their
 * neighbour's bits below). */
static void fill(uint8_t *x, mq_dtype dt, size_t gs, size_t ng) {
    for (size_t g = 0; g < ng; g++) {
        int kind = (int)(rnd() % 8);
        float scale = kind == 7 ? 1e-38f : (float)(1 + rnd() % 1000) * 0.01f;
        for (size_t i = 0; i < gs; i++) {
            float v = (unif() - 0.5f) * scale;
            if (kind == 0) v = 0.0f;
            if (kind == 1) v = fabsf(v);
            if (kind == 2) v = -fabsf(v);
            if (kind == 3 && i % 3 == 0) v = -0.0f;
            if (dt == MQ_BF16 && kind != 0) {
                uint32_t u = test_f32_bits(v);
                v = test_bits_f32(u ^ (rnd() & 0xffff));
            }
            put(x, dt, g * gs + i, v);
        }
    }
}

static const size_t sizes[] = {1, 2, 7, 16, 31, 32, 33, 48, 64, 96, 100, 128, 160, 256};

/* minmax_groups at every vector level gives the reference's min and max; absmax_groups, at
 * every level that has it (the reference's own included), the range [-a, a] with
 * a = max(-mn, mx) of the reference's min and max. */
TEST(range_groups_match_reference) {
    const mq_qkernels *r = mq__qkernels_ref();
    mq_ctx *ctx = mq_ctx_create();
    static uint8_t buf[4 * 256 * 40 + 8];
    int cases = 0, abs_cases = 0;
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
        const mq_qkernels *v = mq__qkernels(ctx);
        for (int d = 0; d < 3; d++) {
            for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
                size_t gs = sizes[s];
                for (size_t ng = 1; ng <= 40; ng += ng < 18 ? 1 : 11) {
                    uint8_t *x = buf + 1 + (ng & 2); /* odd and even byte offsets */
                    fill(x, dts[d], gs, ng);
                    const char *isa_name = mq_isa_name((mq_isa)isa), *dt = mq_dtype_name(dts[d]);
                    float a0[40], a1[40], b0[40], b1[40];
                    CHECK(r->minmax_groups(x, dts[d], gs, ng, a0, a1));
                    if (isa != 0 && v->minmax_groups) {
                        CHECK_MSG(v->minmax_groups(x, dts[d], gs, ng, b0, b1),
                                  "%s %s gs %zu ng %zu: finite data", isa_name, dt, gs, ng);
                        for (size_t g = 0; g < ng; g++)
                            CHECK_MSG(a0[g] == b0[g] && a1[g] == b1[g],
                                      "%s %s gs %zu ng %zu group %zu: [%g, %g] vs [%g, %g]",
                                      isa_name, dt, gs, ng, g, (double)a0[g], (double)a1[g],
                                      (double)b0[g], (double)b1[g]);
                        cases++;
                    }
                    if (v->absmax_groups) {
                        CHECK_MSG(v->absmax_groups(x, dts[d], gs, ng, b0, b1),
                                  "%s %s gs %zu ng %zu: absmax: finite data", isa_name, dt, gs, ng);
                        for (size_t g = 0; g < ng; g++) {
                            float a = -a0[g] > a1[g] ? -a0[g] : a1[g];
                            CHECK_MSG(b1[g] == a && b0[g] == -a,
                                      "%s %s gs %zu ng %zu group %zu: absmax [%g, %g] vs [%g, %g]",
                                      isa_name, dt, gs, ng, g, (double)-a, (double)a,
                                      (double)b0[g], (double)b1[g]);
                        }
                        abs_cases++;
                    }
                }
            }
        }
    }
    CHECK(abs_cases > 0 && (cases > 0 || test_next_isa(0) < 0));
    mq_ctx_free(ctx);
}

/* A NaN (several payloads, either sign) or an Inf at any position of 16 or 17 groups, even or
 * odd element: every level reports it (minmax_groups and absmax_groups); the largest finite
 * values do not count. */
TEST(minmax_groups_find_non_finite) {
    mq_ctx *ctx = mq_ctx_create();
    static uint8_t buf[4 * 128 * 17 + 8];
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
        const mq_qkernels *v = mq__qkernels(ctx);
        if (!v->minmax_groups) continue;
        for (int d = 0; d < 3; d++) {
            mq_dtype dt = dts[d];
            for (size_t gs = 32; gs <= 128; gs += 96) {
                size_t ng = gs == 32 ? 17 : 16, n = gs * ng;
                uint8_t *x = buf + 2;
                for (size_t pos = 0; pos < n; pos += 1 + pos % 29) {
                    for (int kind = 0; kind < 6; kind++) {
                        fill(x, dt, gs, ng);
                        if (dt == MQ_F32) {
                            float bad[6] = {NAN, -NAN, INFINITY, -INFINITY,
                                            test_bits_f32(0x7f800001u), test_bits_f32(0xffc00001u)};
                            put(x, dt, pos, bad[kind]);
                        } else {
                            uint16_t bad16[2][6] = {{0x7e00, 0xfe00, 0x7c00, 0xfc00, 0x7c01, 0xfdff},
                                                    {0x7fc0, 0xffc0, 0x7f80, 0xff80, 0x7f81, 0xffff}};
                            put16(x, pos, bad16[dt == MQ_BF16][kind]);
                        }
                        float mn[17], mx[17];
                        CHECK_MSG(!v->minmax_groups(x, dt, gs, ng, mn, mx),
                                  "%s %s gs %zu: kind %d at %zu not found",
                                  mq_isa_name((mq_isa)isa), mq_dtype_name(dt), gs, kind, pos);
                        CHECK_MSG(!v->absmax_groups || !v->absmax_groups(x, dt, gs, ng, mn, mx),
                                  "%s %s gs %zu: absmax: kind %d at %zu not found",
                                  mq_isa_name((mq_isa)isa), mq_dtype_name(dt), gs, kind, pos);
                    }
                }
                /* the largest finite values are finite */
                fill(x, dt, gs, ng);
                float big = dt == MQ_F16 ? 65504.0f : dt == MQ_BF16 ? test_bits_f32(0x7f7f0000u) : FLT_MAX;
                put(x, dt, 5, big);
                put(x, dt, gs + 6, -big);
                float mn[17], mx[17];
                CHECK(v->minmax_groups(x, dt, gs, ng, mn, mx) && mx[0] == big && mn[1] == -big);
                if (v->absmax_groups)
                    CHECK(v->absmax_groups(x, dt, gs, ng, mn, mx) && mx[0] == big && mx[1] == big &&
                          mn[1] == -big);
            }
        }
    }
    mq_ctx_free(ctx);
}

/* Ranges as groups give them and the edge cases of the rule: zero and signed-zero ranges,
 * one-sided, tiny (the FLT_EPSILON clamp), exact ties of the zero point's rounding, and
 * ranges so wide that the scale or its grid overflows (the call then fails). */
static void ranges(float *mn, float *mx, size_t n, int wide) {
    for (size_t i = 0; i < n; i++) {
        float a = (unif() - 0.6f) * 10.0f, b = (unif() - 0.4f) * 10.0f;
        switch (rnd() % 10) {
        case 0: a = b = 0.0f; break;
        case 1: a = -0.0f; b = -0.0f; break;
        case 2: a = fabsf(a); b = a + fabsf(b); break;
        case 3: b = -fabsf(b); a = b - fabsf(a); break;
        case 4: a *= 1e-40f; b *= 1e-38f; break;
        case 5: a = -7.5f; b = 0.0f; break;         /* asymmetric 4-bit: lo / s = -15 */
        case 6: a = -1.0f; b = 14.0f; break;        /* lo / s = -1 exactly */
        case 7: a = -2.5f * (float)(1 + rnd() % 5); b = 12.5f; break; /* ties */
        default: break;
        }
        if (a > b) {
            float t = a;
            a = b;
            b = t;
        }
        if (wide && i == n / 2) {
            a = -FLT_MAX;
            b = rnd() % 2 ? FLT_MAX : 1.0f;
        }
        mn[i] = a;
        mx[i] = b;
    }
}

TEST(params_minmax_match_reference) {
    const mq_qkernels *r = mq__qkernels_ref();
    mq_ctx *ctx = mq_ctx_create();
    mq_qtype types[4] = {MQ_Q_INT8, MQ_Q_UINT8, MQ_Q_INT4, MQ_Q_UINT4};
    int failed_calls = 0, cases = 0;
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
        const mq_qkernels *v = mq__qkernels(ctx);
        if (!v->params_minmax) continue;
        for (int t = 0; t < 4; t++) {
            mq_qformat f;
            mq__qformat(types[t], &f);
            for (int sch = 0; sch < 2; sch++) {
                mq_scheme scheme = sch ? MQ_ASYMMETRIC : MQ_SYMMETRIC;
                for (size_t ng = 1; ng <= 40; ng++) {
                    for (int wide = 0; wide < 2; wide++) {
                        float mn[40], mx[40], sa[40], sb[40];
                        uint8_t za[40], zb[40];
                        mq_qround qa[40], qb[40];
                        int32_t aa[40], ab[40];
                        ranges(mn, mx, ng, wide);
                        bool oa = r->params_minmax(&f, scheme, ng, mn, mx, sa, za, qa, aa);
                        bool ob = v->params_minmax(&f, scheme, ng, mn, mx, sb, zb, qb, ab);
                        CHECK_MSG(oa == ob, "%s %s scheme %d ng %zu: %d vs %d",
                                  mq_isa_name((mq_isa)isa), f.name, sch, ng, oa, ob);
                        failed_calls += !oa;
                        cases++;
                        if (!oa || !ob) continue;
                        CHECK_MSG(!memcmp(sa, sb, ng * 4) && !memcmp(za, zb, ng) &&
                                      !memcmp(qa, qb, ng * sizeof *qa) && !memcmp(aa, ab, ng * 4),
                                  "%s %s scheme %d ng %zu: parameters differ",
                                  mq_isa_name((mq_isa)isa), f.name, sch, ng);
                        /* zp8 may be left out */
                        CHECK(v->params_minmax(&f, scheme, ng, mn, mx, sb, NULL, qb, ab) &&
                              !memcmp(qa, qb, ng * sizeof *qa));
                    }
                }
            }
        }
    }
    CHECK(cases == 0 || failed_calls > 0); /* the wide ranges did fail */
    mq_ctx_free(ctx);
}

/* The reference itself against the single-group rule it stands for. */
TEST(reference_params_are_the_rule) {
    const mq_qkernels *r = mq__qkernels_ref();
    mq_qformat f;
    mq__qformat(MQ_Q_UINT4, &f);
    float mn[30], mx[30], s[30];
    uint8_t z[30];
    mq_qround q[30];
    int32_t a[30];
    ranges(mn, mx, 30, 0);
    CHECK(r->params_minmax(&f, MQ_ASYMMETRIC, 30, mn, mx, s, z, q, a));
    for (int g = 0; g < 30; g++) {
        mq_qparam p = mq__qparam_minmax(&f, MQ_ASYMMETRIC, mn[g], mx[g]);
        mq_qround want;
        mq__qround_init(&f, p, &want);
        CHECK(test_f32_bits(s[g]) == test_f32_bits(p.scale) && z[g] == (uint8_t)p.zp &&
              !memcmp(&q[g], &want, sizeof want) && a[g] == p.zp + f.code_offset);
    }
}

TEST(quantize_groups_match_reference) {
    const mq_qkernels *r = mq__qkernels_ref();
    mq_ctx *ctx = mq_ctx_create();
    static uint8_t buf[4 * 256 * 20 + 8], ca[256 * 20 + 8];
    static _Alignas(64) uint8_t cbuf[256 * 20 + 192];
    /* destinations on a line, on 4 bytes, and odd */
    const size_t offs[7] = {64, 65, 68, 80, 100, 124, 66};
    int tried = 0;
    mq_qtype types[4] = {MQ_Q_INT8, MQ_Q_UINT8, MQ_Q_INT4, MQ_Q_UINT4};
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
        const mq_qkernels *v = mq__qkernels(ctx);
        if (!v->quantize_groups) continue;
        for (int d = 0; d < 3; d++) {
            for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
                size_t gs = sizes[s];
                for (size_t ng = 1; ng <= 20; ng += ng < 5 ? 1 : 7) {
                    for (int t = 0; t < 4; t++) {
                        mq_qformat f;
                        mq__qformat(types[t], &f);
                        if (f.packed4 && gs % 2 && ng > 1) continue;
                        uint8_t *x = buf + 1 + (ng & 2);
                        fill(x, dts[d], gs, ng);
                        float mn[20], mx[20], sc[20];
                        mq_qround qr[20];
                        int32_t add[20];
                        mq_scheme scheme = rnd() % 2 ? MQ_ASYMMETRIC : MQ_SYMMETRIC;
                        CHECK(r->minmax_groups(x, dts[d], gs, ng, mn, mx));
                        for (size_t g = 0; g < ng; g++) { /* clipped ranges too */
                            if (g % 3 == 1) mn[g] *= 0.5f;
                            if (g % 4 == 1) mx[g] *= 0.3f;
                        }
                        CHECK(r->params_minmax(&f, scheme, ng, mn, mx, sc, NULL, qr, add));
                        size_t bytes = f.packed4 ? (ng * gs + 1) / 2 : ng * gs;
                        uint8_t *cb = cbuf + offs[tried++ % 7];
                        memset(ca, 0xa5, bytes + 8);
                        memset(cbuf, 0xa5, sizeof cbuf);
                        r->quantize_groups(x, dts[d], gs, ng, qr, add, f.packed4, ca);
                        v->quantize_groups(x, dts[d], gs, ng, qr, add, f.packed4, cb);
                        CHECK_MSG(!memcmp(ca, cb, bytes + 8) && cb[-1] == 0xa5 && cb[-4] == 0xa5,
                                  "%s %s %s gs %zu ng %zu at %zu", mq_isa_name((mq_isa)isa),
                                  mq_dtype_name(dts[d]), f.name, gs, ng,
                                  (size_t)(cb - cbuf) % 64);
                        /* the reference is its single-group kernels, group after group */
                        for (size_t g = 0; g < ng; g++) {
                            const uint8_t *xg = x + g * gs * esize(dts[d]);
                            uint8_t one[256];
                            if (f.packed4) {
                                mq__quantize4_src_ref(xg, dts[d], gs, &qr[g], add[g], one);
                                CHECK(!memcmp(one, ca + g * gs / 2, (gs + 1) / 2));
                            } else {
                                mq__quantize_src_ref(xg, dts[d], gs, &qr[g], add[g], one);
                                CHECK(!memcmp(one, ca + g * gs, gs));
                            }
                        }
                    }
                }
            }
        }
    }
    mq_ctx_free(ctx);
}

/* Parameters no min/max rule makes: products at or beyond 2^31 and infinite ones (the vector
 * conversion gives INT_MIN there), a fractional bound, offsets a saturating pack cannot
 * take, an empty range; the codes still equal the reference's. */
TEST(quantize_groups_extreme_params) {
    const mq_qkernels *r = mq__qkernels_ref();
    mq_ctx *ctx = mq_ctx_create();
    enum { NG = 18 }; /* 16 groups at once, then single ones */
    static uint8_t buf[4 * 256 * NG + 8], ca[256 * NG + 8], cb[256 * NG + 8];
    mq_qtype types[4] = {MQ_Q_INT8, MQ_Q_UINT8, MQ_Q_INT4, MQ_Q_UINT4};
    const float scales[5] = {1e-30f, 1e-10f, 3e-10f, 0.01f, FLT_EPSILON};
    int tried = 0;
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
        const mq_qkernels *v = mq__qkernels(ctx);
        if (!v->quantize_groups) continue;
        for (int d = 0; d < 3; d++) {
            for (int t = 0; t < 4; t++) {
                mq_qformat f;
                mq__qformat(types[t], &f);
                for (size_t gs = 64; gs <= 256; gs *= 2) {
                    uint8_t *x = buf + 2;
                    fill(x, dts[d], gs, NG);
                    mq_qround qr[NG];
                    int32_t add[NG];
                    for (int g = 0; g < NG; g++) {
                        mq_qparam p = {scales[(g + t) % 5],
                                       f.qmin + (int32_t)(rnd() % (uint32_t)(f.qmax - f.qmin + 1))};
                        mq__qround_init(&f, p, &qr[g]);
                        add[g] = p.zp + f.code_offset;
                    }
                    /* hand-made bounds (codes kept in a byte, < 16 for 4-bit types): a
                     * large offset, a fractional bound, an empty range, and a least code
                     * that is not the type's */
                    int32_t top = f.packed4 ? 15 : 255;
                    qr[1].lo = (float)(-20 - top);
                    qr[1].hi = -20.0f;
                    add[1] = 20 + top;
                    qr[2].lo += 0.5f;
                    qr[3].hi = qr[3].lo;
                    qr[4].hi -= 1.0f;
                    add[4] += 1;
                    /* bounds beyond 16-bit words, otherwise a pack path's */
                    int32_t least = f.qmin < 0 && !f.packed4 ? -128 : 0;
                    qr[6].lo = -40000.0f;
                    qr[6].hi = -39997.0f;
                    add[6] = 40000 + least;
                    /* 8-bit: a top half a code above the pack's, rounded past it */
                    qr[11].hi -= 0.5f;
                    if (!f.packed4) {
                        qr[11].lo = (float)(least - 8);
                        qr[11].hi = (float)((least == -128 ? 127 : top) - 8) + 0.5f;
                        add[11] = 8;
                    }
                    qr[13].lo = qr[13].hi = 0.0f;
                    add[13] = least;
                    size_t bytes = f.packed4 ? NG * gs / 2 : NG * gs;
                    memset(ca, 0xa5, sizeof ca);
                    memset(cb, 0xa5, sizeof cb);
                    r->quantize_groups(x, dts[d], gs, NG, qr, add, f.packed4, ca);
                    v->quantize_groups(x, dts[d], gs, NG, qr, add, f.packed4, cb);
                    CHECK_MSG(!memcmp(ca, cb, bytes + 8), "%s %s %s gs %zu",
                              mq_isa_name((mq_isa)isa), mq_dtype_name(dts[d]), f.name, gs);
                    tried++;
                }
            }
        }
    }
    CHECK(tried >= 36);
    mq_ctx_free(ctx);
}

/* Long BF16 groups (the vector pack path clamps the 16-bit words above, at a bound found from
 * hi and the scale): values on every word around that bound and around hi's, ties of the
 * rounding, +-Inf, tiny and huge scales, 8-bit tops at and below the pack's saturation; the
 * codes equal the reference's. */
TEST(quantize_groups_long_bf16_top) {
    const mq_qkernels *r = mq__qkernels_ref();
    mq_ctx *ctx = mq_ctx_create();
    enum { GS = 600, NG = 3 };
    static uint8_t x[2 * GS * NG + 8], ca[GS * NG + 8], cb[GS * NG + 8];
    mq_qtype types[4] = {MQ_Q_INT8, MQ_Q_UINT8, MQ_Q_INT4, MQ_Q_UINT4};
    const float scales[7] = {0.01f, 3.7e-3f, 1e-30f, 2e36f, FLT_EPSILON, 0.4f, 2.67e36f};
    int tried = 0;
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
        const mq_qkernels *v = mq__qkernels(ctx);
        if (!v->quantize_groups) continue;
        for (int t = 0; t < 4; t++) {
            mq_qformat f;
            mq__qformat(types[t], &f);
            for (int sc = 0; sc < 7; sc++) {
                for (int zk = 0; zk < 4; zk++) {
                    mq_qround qr[NG];
                    int32_t add[NG];
                    for (int g = 0; g < NG; g++) {
                        /* symmetric, lowest, highest and a random zero point */
                        int32_t span = f.qmax - f.qmin;
                        int32_t zp = zk == 0 ? (f.qmin < 0 ? 0 : (f.qmin + f.qmax + 1) / 2)
                                   : zk == 1 ? f.qmin : zk == 2 ? f.qmax - 1
                                             : f.qmin + (int32_t)(rnd() % (uint32_t)(span + 1));
                        mq_qparam p = {scales[(sc + g) % 7], zp};
                        mq__qround_init(&f, p, &qr[g]);
                        add[g] = p.zp + f.code_offset;
                    }
                    if (zk == 3 && !f.packed4) qr[1].hi -= 3.0f; /* a top below the saturation */
                    for (int g = 0; g < NG; g++) {
                        /* words around the values whose products are hi and hi + 1/2 */
                        float at[2] = {qr[g].hi * qr[g].scale, (qr[g].hi + 0.5f) * qr[g].scale};
                        for (size_t i = 0; i < GS; i++) {
                            uint16_t h;
                            if (i < 160) {
                                uint32_t u = test_f32_bits(at[i / 80]);
                                h = (uint16_t)((u >> 16) + (uint32_t)(i % 80) - 40u);
                                if ((h & 0x7f80) == 0x7f80) h = 0x3f80;
                            } else if (i < 170) {
                                h = i % 2 ? 0x7f80 : 0xff80; /* +-Inf */
                            } else {
                                h = mq_f32_to_bf16((unif() - 0.45f) * 2.2f * at[1]);
                            }
                            put16(x + 2, (size_t)g * GS + i, h);
                        }
                    }
                    size_t bytes = f.packed4 ? NG * GS / 2 : NG * GS;
                    memset(ca, 0xa5, sizeof ca);
                    memset(cb, 0xa5, sizeof cb);
                    r->quantize_groups(x + 2, MQ_BF16, GS, NG, qr, add, f.packed4, ca);
                    v->quantize_groups(x + 2, MQ_BF16, GS, NG, qr, add, f.packed4, cb);
                    CHECK_MSG(!memcmp(ca, cb, bytes + 8), "%s %s scale %g zp kind %d",
                              mq_isa_name((mq_isa)isa), f.name, (double)scales[sc], zk);
                    tried++;
                }
            }
        }
    }
    CHECK(tried >= 96 || test_next_isa(0) < 0);
    mq_ctx_free(ctx);
}

/* Whole tensors through mq_quantize_rows at every level: identical data, scales and zero
 * points, for per-channel and per-group min/max (group sizes that divide the rows and that do
 * not), F32/F16/BF16 sources at aligned and odd addresses. */
TEST(quantize_rows_same_at_every_level) {
    mq_ctx *ref = mq_ctx_create(), *vc = mq_ctx_create();
    CHECK_EQ_INT(mq_ctx_set_isa(ref, MQ_ISA_SCALAR), MQ_OK);
    enum { R = 5, C = 700 };
    static uint8_t src[R * C * 4 + 8];
    static uint8_t da[R * C], db[R * C], za[R * C], zb[R * C];
    static float sa[R * C], sb[R * C];
    mq_qtype types[4] = {MQ_Q_INT8, MQ_Q_UINT8, MQ_Q_INT4, MQ_Q_UINT4};
    int gsizes[5] = {0, 128, 32, 100, 33}; /* 0: per channel */
    int64_t colss[4] = {C, 512, 97, 1};
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(vc, (mq_isa)isa), MQ_OK);
        mq_ctx_set_threads(vc, 3);
        for (int d = 0; d < 3; d++) {
            for (int c = 0; c < 4; c++) {
                int64_t cols = colss[c], shape[2] = {R, cols};
                uint8_t *x = src + (c % 2 ? 0 : esize(dts[d]) == 4 ? 4 : 2) + (c == 2);
                fill(x, dts[d], (size_t)cols, R);
                for (int t = 0; t < 4; t++) {
                    for (int gi = 0; gi < 5; gi++) {
                        mq_qspec spec;
                        mq_qspec_default(&spec);
                        spec.type = types[t];
                        spec.scheme = t % 2 ? MQ_ASYMMETRIC : (rnd() % 3 ? MQ_SYMMETRIC : MQ_ASYMMETRIC);
                        spec.granularity = gsizes[gi] ? MQ_PER_GROUP : MQ_PER_CHANNEL;
                        spec.group_size = gsizes[gi] ? gsizes[gi] : 128;
                        mq_qlayout lay;
                        CHECK_EQ_INT(mq_qlayout_init(ref, &spec, 2, shape, &lay), MQ_OK);
                        memset(da, 0, sizeof da);
                        memset(db, 0, sizeof db);
                        memset(za, 0, sizeof za);
                        memset(zb, 0, sizeof zb);
                        CHECK_EQ_INT(mq_quantize_rows(ref, &spec, &lay, NULL, dts[d], x, 0, R, da, sa, za), MQ_OK);
                        CHECK_EQ_INT(mq_quantize_rows(vc, &spec, &lay, NULL, dts[d], x, 0, R, db, sb, zb), MQ_OK);
                        CHECK_MSG(!memcmp(da, db, (size_t)lay.data_bytes) &&
                                      !memcmp(sa, sb, (size_t)lay.nscales * 4) &&
                                      !memcmp(za, zb, (size_t)lay.nscales),
                                  "%s %s %s g %d cols %lld", mq_isa_name((mq_isa)isa),
                                  mq_dtype_name(dts[d]), mq_qtype_name(types[t]), gsizes[gi],
                                  (long long)cols);
                    }
                }
            }
        }
    }
    mq_ctx_free(ref);
    mq_ctx_free(vc);
}

/* A NaN, an Inf or a range too wide for its type: the same failure and message at every
 * level, naming the first bad group (a later group's NaN does not hide an earlier overflow). */
TEST(quantize_rows_same_errors_at_every_level) {
    enum { R = 3, C = 512 };
    static uint8_t src[R * C * 4];
    static uint8_t data[R * C], zp[R * C];
    static float scale[R * C];
    for (int d = 0; d < 3; d++) {
        mq_dtype dt = dts[d];
        for (int kind = 0; kind < 4; kind++) {
            char first[512] = "";
            for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
                mq_ctx *ctx = mq_ctx_create();
                CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
                uint64_t keep = rng;
                fill(src, dt, C, R);
                rng = keep;
                size_t at = (size_t)C + 300; /* row 1, group 2 of 128 */
                if (kind == 0) put(src, dt, at, NAN);
                if (kind == 1) put(src, dt, at, -INFINITY);
                float big = dt == MQ_F16 ? 65504.0f
                          : dt == MQ_BF16 ? test_bits_f32(0x7f7f0000u) : FLT_MAX;
                if (kind >= 2) { /* UINT8 asymmetric: the range [-big, big] overflows F32 only */
                    put(src, dt, C + 10, -big);
                    put(src, dt, C + 11, big);
                }
                if (kind == 3) put(src, dt, at, NAN); /* after the overflowing group */
                mq_qspec spec;
                mq_qspec_default(&spec);
                spec.type = kind >= 2 ? MQ_Q_UINT8 : MQ_Q_INT4;
                spec.scheme = kind >= 2 ? MQ_ASYMMETRIC : MQ_SYMMETRIC;
                spec.granularity = MQ_PER_GROUP;
                int64_t shape[2] = {R, C};
                mq_qlayout lay;
                CHECK_EQ_INT(mq_qlayout_init(ctx, &spec, 2, shape, &lay), MQ_OK);
                mq_status st = mq_quantize_rows(ctx, &spec, &lay, NULL, dt, src, 0, R, data,
                                                scale, zp);
                bool fails = kind != 2 || dt != MQ_F16;
                CHECK_MSG(fails ? st == MQ_ERR_QUANT : st == MQ_OK, "%s %s kind %d: status %d",
                          mq_isa_name((mq_isa)isa), mq_dtype_name(dt), kind, (int)st);
                if (st != MQ_OK) {
                    CHECK_MSG(strstr(mq_ctx_message(ctx), "row 1"), "%s", mq_ctx_message(ctx));
                    if (kind >= 2 && dt != MQ_F16) CHECK_MSG_HAS(ctx, "too wide");
                    if (isa == 0) snprintf(first, sizeof first, "%s", mq_ctx_message(ctx));
                    else CHECK_EQ_STR(mq_ctx_message(ctx), first);
                }
                mq_ctx_free(ctx);
            }
        }
    }
}

int main(void) {
    RUN(range_groups_match_reference);
    RUN(minmax_groups_find_non_finite);
    RUN(params_minmax_match_reference);
    RUN(reference_params_are_the_rule);
    RUN(quantize_groups_match_reference);
    RUN(quantize_groups_extreme_params);
    RUN(quantize_groups_long_bf16_top);
    RUN(quantize_rows_same_at_every_level);
    RUN(quantize_rows_same_errors_at_every_level);
    return test_summary();
}
