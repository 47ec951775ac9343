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

/* The in-place kernels on F32, F16 and BF16 sources at odd byte offsets, every length up to
 * a few vectors: the reference's own pieces first (quantize4_src = quantize_src + pack4, the
 * odd last code alone), then the vector table against it. */
static void compare_src_kernels(const mq_qkernels *v, const char *name) {
    const mq_qkernels *r = mq__qkernels_ref();
    if (!v->minmax_src || !v->quantize_src) return; /* optional: rows are converted first */
    enum { N = 200 };
    float xf[N];
    static uint8_t raw[3][N * 4 + 8];
    for (int i = 0; i < N; i++) xf[i] = (unif() - 0.5f) * 24.0f;
    xf[3] = 0.5f; /* ties */
    xf[8] = -1.5f;
    mq_dtype dts[3] = {MQ_F32, MQ_F16, MQ_BF16};
    for (int i = 0; i < N; i++) {
        uint16_t h = mq_f32_to_f16(xf[i]), b = mq_f32_to_bf16(xf[i]);
        memcpy(raw[0] + 1 + 4 * i, &xf[i], 4);
        memcpy(raw[1] + 3 + 2 * i, &h, 2);
        memcpy(raw[2] + 1 + 2 * i, &b, 2);
    }
    const void *src[3] = {raw[0] + 1, raw[1] + 3, raw[2] + 1};
    mq_qformat fmts[4];
    mq__qformat(MQ_Q_INT8, &fmts[0]);
    mq__qformat(MQ_Q_UINT8, &fmts[1]);
    mq__qformat(MQ_Q_INT4, &fmts[2]);
    mq__qformat(MQ_Q_UINT4, &fmts[3]);
    for (int d = 0; d < 3; d++) {
        for (size_t n = 1; n <= N; n += n < 80 ? 1 : 13) {
            float a0, a1, b0, b1;
            bool fa = r->minmax_src(src[d], dts[d], n, &a0, &a1);
            bool fb = v->minmax_src(src[d], dts[d], n, &b0, &b1);
            CHECK_MSG(fa && fb && a0 == b0 && a1 == b1, "%s minmax_src %s n %zu", name,
                      mq_dtype_name(dts[d]), n);
            for (int f = 0; f < 4; f++) {
                float scales[3] = {1.0f, 0.0371f, 2.9f};
                for (int k = 0; k < 3; k++) {
                    mq_qparam p = {scales[k], fmts[f].qmin < 0 ? (k == 2 ? -3 : 0) : 7};
                    mq_qround qr;
                    mq__qround_init(&fmts[f], p, &qr);
                    int32_t add = p.zp + fmts[f].code_offset;
                    uint8_t ca[N], cb[N], pa[N / 2 + 1], pb[N / 2 + 1], pr[N / 2 + 1];
                    r->quantize_src(src[d], dts[d], n, &qr, add, ca);
                    v->quantize_src(src[d], dts[d], n, &qr, add, cb);
                    CHECK_MSG(!memcmp(ca, cb, n), "%s quantize_src %s n %zu fmt %d", name,
                              mq_dtype_name(dts[d]), n, f);
                    if (!fmts[f].packed4 || !v->quantize4_src) continue;
                    r->pack4(ca, n & ~(size_t)1, pr);
                    if (n & 1) pr[n / 2] = ca[n - 1];
                    r->quantize4_src(src[d], dts[d], n, &qr, add, pa);
                    v->quantize4_src(src[d], dts[d], n, &qr, add, pb);
                    CHECK_MSG(!memcmp(pr, pa, (n + 1) / 2), "reference quantize4_src n %zu", n);
                    CHECK_MSG(!memcmp(pa, pb, (n + 1) / 2), "%s quantize4_src %s n %zu fmt %d",
                              name, mq_dtype_name(dts[d]), n, f);
                }
            }
        }
        /* a NaN or an Inf anywhere, in the vector body or the tail */
        static uint8_t bad[2 * 4 * 70];
        uint16_t one = dts[d] == MQ_F16 ? 0x3c00 : 0x3f80;
        uint16_t nan16 = dts[d] == MQ_F16 ? 0x7e00 : 0x7fc0, inf16 = dts[d] == MQ_F16 ? 0x7c00 : 0x7f80;
        for (int pos = 0; pos < 70; pos += 3) {
            for (int kind = 0; kind < 3; kind++) {
                for (int i = 0; i < 70; i++) {
                    float fv = i == pos ? (kind == 0 ? NAN : kind == 1 ? -INFINITY : INFINITY) : 1.0f;
                    uint16_t hv = i == pos ? (kind == 0 ? nan16 : (uint16_t)(inf16 | (kind == 1) << 15)) : one;
                    if (dts[d] == MQ_F32) memcpy(bad + 4 * i, &fv, 4);
                    else memcpy(bad + 2 * i, &hv, 2);
                }
                float mn, mx;
                CHECK_MSG(!v->minmax_src(bad, dts[d], 70, &mn, &mx), "%s %s non-finite at %d",
                          name, mq_dtype_name(dts[d]), pos);
            }
        }
    }
}

/* The search against the reference: candidates of random ranges as the quantizer makes them
 * (stage 0 and stage 1), groups of every size, with outliers, weights (some 0), and values
 * so large that errors overflow to Inf (and to NaN under a 0 weight). */
static void compare_search(const mq_qkernels *v, const char *name) {
    const mq_qkernels *r = mq__qkernels_ref();
    if (!v->search) return; /* optional: the quantizer then runs the candidates one by one */
    enum { N = 1100 }; /* short groups and per-channel rows (kernels may switch strategy) */
    float x[N], w[N];
    int cases = 0, differ = 0;
    for (int trial = 0; trial < 400; trial++) {
        size_t n = trial < 100 ? (size_t)trial + 1 : 1 + (size_t)(unif() * N);
        if (n > N) n = N;
        float big = trial % 37 == 5 ? 3e37f : trial % 11 == 3 ? 1e20f : 1.0f;
        for (size_t i = 0; i < n; i++) {
            x[i] = (unif() - 0.5f) * 2.0f * (unif() < 0.03f ? 8.0f : 1.0f) * big;
            w[i] = trial % 3 == 0 && unif() < 0.2f ? 0.0f : unif();
        }
        if (trial % 9 == 0) x[n / 2] = 0.0f * x[0]; /* a signed zero */
        float mn, mx;
        r->minmax(x, n, &mn, &mx);
        for (int t = 0; t < 4; t++) {
            mq_qformat f;
            mq__qformat(t == 0 ? MQ_Q_INT4 : t == 1 ? MQ_Q_UINT4 : t == 2 ? MQ_Q_INT8 : MQ_Q_UINT8, &f);
            mq_scheme sch = t % 2 ? MQ_ASYMMETRIC : MQ_SYMMETRIC;
            for (int stage = 0; stage < 2; stage++) {
                mq_qcand cand[MQ_MAX_CANDIDATES];
                mq_qround qr[MQ_MAX_CANDIDATES];
                int nc = mq__qcandidates(&f, sch, mn, mx, stage, 0.8f + 0.05f * (float)(trial % 4), cand);
                for (int c = 0; c < nc; c++) mq__qround_init(&f, cand[c].p, &qr[c]);
                for (int wt = 0; wt < 2; wt++) {
                    const float *wp = wt ? w : NULL;
                    float ea = 0, eb = 0;
                    int ba = r->search(x, wp, n, mn, mx, qr, nc, &ea);
                    int bb = v->search(x, wp, n, mn, mx, qr, nc, &eb);
                    CHECK_MSG(ba == bb && bits(ea) == bits(eb),
                              "%s search n %zu type %d stage %d weighted %d: %d (%.9g) vs %d (%.9g)",
                              name, n, t, stage, wt, ba, (double)ea, bb, (double)eb);
                    /* and the vector sqerr agrees on every candidate */
                    for (int c = 0; c < nc; c++) {
                        float sa = r->sqerr(x, wp, n, &qr[c]), sb = v->sqerr(x, wp, n, &qr[c]);
                        differ += bits(sa) != bits(sb);
                    }
                    cases++;
                }
            }
        }
    }
    CHECK_EQ_INT(differ, 0);
    CHECK(cases > 1000);
}

/* The fixed-point errors against the reference: 4-bit candidates of both stages, groups of
 * every size up to 300 (tails and several 32-bit blocks), values at the largest |x|. */
static void compare_sqerr_fix(const mq_qkernels *v, const char *name) {
    if (!v->sqerr_fix) return; /* optional: the quantizer then runs the reference's */
    enum { N = 700 };
    float x[N];
    int cases = 0;
    for (int trial = 0; trial < 300; trial++) {
        size_t n = trial < 100 ? (size_t)trial + 1 : 1 + (size_t)(unif() * N);
        if (n > N) n = N;
        for (size_t i = 0; i < n; i++)
            x[i] = (unif() - 0.5f) * 2.0f * (unif() < 0.03f ? 8.0f : 1.0f);
        if (trial % 5 == 1) x[n - 1] = -8.0f; /* the extreme last, in a tail */
        float mn, mx;
        mq__qkernels_ref()->minmax(x, n, &mn, &mx);
        float amax = -mn > mx ? -mn : mx;
        if (!(amax > 0)) continue;
        for (int t = 0; t < 2; t++) {
            mq_qformat f;
            mq__qformat(t ? MQ_Q_UINT4 : MQ_Q_INT4, &f);
            for (int stage = 0; stage < 2; stage++) {
                mq_qcand cand[MQ_MAX_CANDIDATES];
                mq_qfix q[MQ_MAX_CANDIDATES];
                int nc = mq__qcandidates(&f, t ? MQ_ASYMMETRIC : MQ_SYMMETRIC, mn, mx, stage,
                                         0.5f + 0.05f * (float)(trial % 13), cand);
                for (int c = 0; c < nc; c++) q[c] = mq__qfix_init(&f, cand[c].p, amax);
                int64_t a[MQ_MAX_CANDIDATES], b[MQ_MAX_CANDIDATES];
                mq__sqerr_fix_ref(x, n, MQ_QFIX_ONE / amax, q, nc, a);
                v->sqerr_fix(x, n, MQ_QFIX_ONE / amax, q, nc, b);
                for (int c = 0; c < nc; c++)
                    CHECK_MSG(a[c] == b[c], "%s sqerr_fix n %zu type %d stage %d cand %d: %lld vs %lld",
                              name, n, t, stage, c, (long long)a[c], (long long)b[c]);
                cases++;
            }
        }
    }
    CHECK(cases > 1000);
}

/* Symmetric INT4 groups of 128 with exact ties between different candidates (errors d / m^2
 * equal as fractions; random data never makes them), found by a search over seeds and
 * edits: X = x * 16384 from a small generator, then two values set so that the tie is
 * exact. kind 0: stage-0 candidates 6 and 7 (ratios 0.8, 0.75) tie as the least (the first
 * must win); kind 1: the two stage-1 candidates tie, below the stage-0 winner (the first
 * must win); kind 2: the stage-1 winner ties the stage-0 winner (stage 0 must stay). */
static void compare_search_fix_ties(const mq_qkernels *v, const char *name) {
    static const struct { int kind, amp, p; uint32_t seed; int i1, v1, i2, v2; } tie[3] = {
        {0, 3, 1, 49, 72, -14926, 4, 11350},
        {1, 8, 4, 7629, 36, -14353, 110, 4593},
        {2, 2, 1, 79, 3, -14339, 65, -13576}};
    enum { N = 128, NG = 9 };
    static float x[NG * N];
    float mn[NG], mx[NG];
    mq_qformat f;
    mq__qformat(MQ_Q_INT4, &f);
    for (int g = 0; g < NG; g++) {
        int t = g % 3;
        float *xg = x + g * N;
        uint32_t s = tie[t].seed;
        for (int i = 0; i < N; i++) {
            s = s * 1664525u + 1013904223u;
            int64_t r = (int64_t)(s >> 17) - 16384, X = r;
            for (int k = 1; k < tie[t].p; k++) X = X * (r < 0 ? -r : r) / 16384;
            X = X * tie[t].amp / 8;
            X = X > 16383 ? 16383 : X < -16383 ? -16383 : X;
            xg[i] = (float)X / 16384.0f;
        }
        xg[0] = 1.0f;
        xg[tie[t].i1] = (float)tie[t].v1 / 16384.0f;
        xg[tie[t].i2] = (float)tie[t].v2 / 16384.0f;
        mq__minmax_ref(xg, N, &mn[g], &mx[g]);
        /* the tie is there: the reference's errors of the two candidates */
        mq_qcand c0[MQ_MAX_CANDIDATES], c1[MQ_MAX_CANDIDATES];
        mq_qfix q0[MQ_MAX_CANDIDATES], q1[MQ_MAX_CANDIDATES];
        int64_t d0[MQ_MAX_CANDIDATES], d1[MQ_MAX_CANDIDATES];
        int n0 = mq__qcandidates(&f, MQ_SYMMETRIC, mn[g], mx[g], 0, 1.0f, c0);
        for (int c = 0; c < n0; c++) q0[c] = mq__qfix_init(&f, c0[c].p, 1.0f);
        mq__sqerr_fix_ref(xg, N, MQ_QFIX_ONE, q0, n0, d0);
        int w = 0;
        for (int c = 1; c < n0; c++)
            if (mq__fix_less((mq_fix_err){d0[c], q0[c].m}, (mq_fix_err){d0[w], q0[w].m})) w = c;
        int n1 = mq__qcandidates(&f, MQ_SYMMETRIC, mn[g], mx[g], 1, c0[w].ratio, c1);
        for (int c = 0; c < n1; c++) q1[c] = mq__qfix_init(&f, c1[c].p, 1.0f);
        mq__sqerr_fix_ref(xg, N, MQ_QFIX_ONE, q1, n1, d1);
        mq_fix_err a = {d0[w], q0[w].m}, b = {d1[1], q1[1].m};
        if (tie[t].kind == 1) a = (mq_fix_err){d1[0], q1[0].m};
        if (tie[t].kind == 0) b = (mq_fix_err){d0[7], q0[7].m};
        CHECK_MSG(mx[g] == 1.0f && (tie[t].kind != 0 || w == 6) &&
                      a.m != b.m && !mq__fix_less(a, b) && !mq__fix_less(b, a),
                  "tie case %d: no exact tie (winner %d)", t, w);
    }
    mq_qparam p[NG];
    v->search_fix(&f, MQ_SYMMETRIC, x, MQ_F32, N, NG, mn, mx, p);
    for (int g = 0; g < NG; g++) {
        mq_qparam want = mq__search_fix(&f, MQ_SYMMETRIC, x + g * N, N, mn[g], mx[g],
                                        mq__sqerr_fix_ref);
        CHECK_MSG(bits(p[g].scale) == bits(want.scale) && p[g].zp == want.zp,
                  "%s search_fix tie case %d: %.9g vs %.9g", name, g % 3, (double)p[g].scale,
                  (double)want.scale);
    }
}

/* The many-group fixed-point search against mq__search_fix on the reference's errors: F32,
 * F16 and BF16 sources at odd byte offsets, INT4 / UINT4, both schemes, groups of every size
 * up to a few chunks (and past 1024 values), shapes that clip hard (winners at the grid's
 * ends), one-sided ranges (zero points at their bounds), few distinct values (ties), the
 * ends of the fixed-point ranges, and 1 to 11 groups per call (kernels may take groups in
 * blocks of 8: a full block and a partial one). */
static void compare_search_fix(const mq_qkernels *v, const char *name) {
    if (!v->search_fix) return; /* optional: the quantizer then runs mq__search_fix */
    compare_search_fix_ties(v, name);
    enum { NMAX = 1300, NG = 11 };
    static float xf[NG * NMAX];
    static uint8_t raw[NG * NMAX * 4 + 8];
    mq_dtype dts[3] = {MQ_F32, MQ_F16, MQ_BF16};
    int cases = 0, clipped = 0;
    for (int trial = 0; trial < 280; trial++) {
        size_t gs = trial < 70 ? (size_t)trial + 1 : trial % 9 == 0 ? 1025 + (size_t)(unif() * 270)
                                                                    : 1 + (size_t)(unif() * 600);
        size_t ng = 1 + (size_t)trial % NG;
        int shape = trial % 7;
        float scale = trial % 17 == 3 ? 2e-5f : trial % 17 == 5 ? 3e29f : 1.0f;
        mq_dtype dt = dts[trial % 3];
        for (size_t i = 0; i < ng * gs; i++) {
            float u = (unif() - 0.5f) * 2.0f;
            float x = shape == 0 ? u * (unif() < 0.03f ? 8.0f : 1.0f)  /* outliers */
                    : shape == 1 ? u                                     /* uniform */
                    : shape == 2 ? (i % gs == 0 ? 50.0f : u * 0.2f)      /* one far value */
                    : shape == 6 ? (i % gs == 0 ? (trial / 7 % 2 ? -1.0f : 1.0f) : u * 0.6f)
                    : shape == 3 ? 1.0f + unif()                         /* all positive */
                    : shape == 4 ? -0.5f - unif() * unif()               /* all negative */
                                 : (float)((int)(u * 4.0f)) * 0.25f;     /* few values */
            x *= scale;
            /* the values as the source holds them */
            if (dt == MQ_F16) x = mq_f16_to_f32(mq_f32_to_f16(x));
            if (dt == MQ_BF16) x = mq_bf16_to_f32(mq_f32_to_bf16(x));
            xf[i] = x;
        }
        size_t off = 1 + (size_t)trial % 3;
        for (size_t i = 0; i < ng * gs; i++) {
            uint16_t h = dt == MQ_F16 ? mq_f32_to_f16(xf[i]) : mq_f32_to_bf16(xf[i]);
            if (dt == MQ_F32) memcpy(raw + off + 4 * i, &xf[i], 4);
            else memcpy(raw + off + 2 * i, &h, 2);
        }
        float mn[NG], mx[NG];
        for (size_t g = 0; g < ng; g++) mq__minmax_ref(xf + g * gs, gs, &mn[g], &mx[g]);
        for (int t = 0; t < 4; t++) {
            mq_qformat f;
            mq__qformat(t < 2 ? MQ_Q_INT4 : MQ_Q_UINT4, &f);
            mq_scheme sch = t % 2 ? MQ_ASYMMETRIC : MQ_SYMMETRIC;
            bool all = true;
            for (size_t g = 0; g < ng; g++) all = all && mq__search_fix_applies(&f, mn[g], mx[g]);
            if (!all) continue;
            mq_qparam p[NG];
            v->search_fix(&f, sch, raw + off, dt, gs, ng, mn, mx, p);
            for (size_t g = 0; g < ng; g++) {
                mq_qparam want = mq__search_fix(&f, sch, xf + g * gs, gs, mn[g], mx[g],
                                                mq__sqerr_fix_ref);
                CHECK_MSG(bits(p[g].scale) == bits(want.scale) && p[g].zp == want.zp,
                          "%s search_fix %s gs %zu group %zu type %d shape %d: %.9g/%d vs %.9g/%d",
                          name, mq_dtype_name(dt), gs, g, t, shape, (double)p[g].scale, p[g].zp,
                          (double)want.scale, want.zp);
                float amax = -mn[g] > mx[g] ? -mn[g] : mx[g];
                clipped += want.scale * (float)(f.qmax - f.qmin) < amax * 1.2f;
                cases++;
            }
        }
    }
    CHECK(cases > 1000);
    CHECK(clipped > 100); /* winners at small ratios: stage 1 below the stage-0 grid */
}

TEST(vector_kernels_match_reference) {
    mq_ctx *ctx = mq_ctx_create();
    int tables = 0;
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
        const mq_qkernels *k = mq__qkernels(ctx);
        CHECK_MSG(k != mq__qkernels_ref(), "no vector table at %s", mq_isa_name((mq_isa)isa));
        compare_tables(k, mq_isa_name((mq_isa)isa));
        compare_src_kernels(k, mq_isa_name((mq_isa)isa));
        compare_search(k, mq_isa_name((mq_isa)isa));
        compare_sqerr_fix(k, mq_isa_name((mq_isa)isa));
        compare_search_fix(k, mq_isa_name((mq_isa)isa));
        tables++;
    }
#if defined(__x86_64__) || defined(__i386__)
    /* the AVX-512 entries that need VBMI2 replace the plain ones when the CPU has it: each
     * table of that level is compared on its own (the plain one on every AVX-512 CPU) */
    if (mq_ctx_set_isa(ctx, MQ_ISA_AVX512) == MQ_OK) {
        bool vbmi2 = ctx->cpu.avx512vbmi2;
        ctx->cpu.avx512vbmi2 = false;
        CHECK(mq__qkernels(ctx) == mq__qkernels_avx512());
        if (vbmi2) {
            ctx->cpu.avx512vbmi2 = true;
            CHECK(mq__qkernels(ctx) == mq__qkernels_avx512_vbmi2());
            compare_search_fix(mq__qkernels_avx512(), "avx512 without vbmi2");
        }
        ctx->cpu.avx512vbmi2 = vbmi2;
    }
#endif
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

/* The search's lower bound really is one: never above the full error (any lane order). */
TEST(search_bound_below_error) {
    const mq_qkernels *r = mq__qkernels_ref();
    mq_qformat f;
    mq__qformat(MQ_Q_INT4, &f);
    float x[128];
    int pruned = 0;
    for (int trial = 0; trial < 200; trial++) {
        size_t n = 1 + (size_t)trial % 128;
        for (size_t i = 0; i < n; i++) x[i] = (unif() - 0.5f) * (unif() < 0.05f ? 10.0f : 1.0f);
        float mn, mx;
        r->minmax(x, n, &mn, &mx);
        mq_qcand cand[MQ_MAX_CANDIDATES];
        int nc = mq__qcandidates(&f, MQ_SYMMETRIC, mn, mx, 0, 1.0f, cand);
        float best = 0;
        for (int c = 0; c < nc; c++) {
            mq_qround qr;
            mq__qround_init(&f, cand[c].p, &qr);
            float e = r->sqerr(x, NULL, n, &qr), b = mq__sqerr_bound(mn, mx, &qr);
            CHECK_MSG(b <= e, "bound %.9g above error %.9g (n %zu)", (double)b, (double)e, n);
            if (c == 0 || e < best) best = e;
            else pruned += !(b < best);
        }
    }
    CHECK(pruned > 0); /* the bound does prune candidates on such data */
}

int main(void) {
    RUN(vector_kernels_match_reference);
    RUN(reference_rounding_is_half_to_even);
    RUN(search_bound_below_error);
    return test_summary();
}
