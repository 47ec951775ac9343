/* mq__search_fix with AVX-512 (the body of qsearch_avx512.c and, with VBMI2, of
 * qsearch_vbmi2_avx512.c): the same choices as the scalar code, found as follows.
 * - The candidates of a stage sit in the lanes of one vector: their ratios, scales, zero
 *   points and m, each lane computed with the scalar code's operations in its order.
 * - A group's values (X, 16-bit fixed point) are split once into those that no candidate of
 *   the stage clamps and the rest. For the first, t lies in [lo, hi], and its error
 *   t - round(t / 256) * 256 (half up) is the low byte of t as a signed byte: 4 operations
 *   per 32 values and candidate instead of 7. With VBMI2 the split compresses 16-bit X, 32
 *   values at a time (half the compresses of 32-bit X, which the plain AVX-512 set needs).
 * - The sums are exact integers (any order does), summed across lanes in one transposed
 *   tree for all candidates; the first least error d / m^2 is found by float estimates,
 *   near ties compared exactly (ties keep the lower index, as the scalar scan does).
 * - Groups go through each step in blocks: the steps of one group form a long chain (a
 *   split is read right after it is written), those of different groups overlap. */
#ifndef MQ_QSEARCH_AVX512_H
#define MQ_QSEARCH_AVX512_H

#include "quant/quant_internal.h"

#include <float.h>
#include <math.h>
#include <immintrin.h>

#include "quant/qload_avx512.h"

enum {
    CHUNK = 256, /* values split and summed at a time (32-bit lane sums cannot overflow) */
    BLOCK = 8,   /* groups taken through each step together */
    SYM0 = 13,   /* candidates of stage 0 and stage 1, symmetric and asymmetric; the */
    SYM1 = 2,    /* asymmetric stage 1 has 8 slots, a slot whose zero point would leave */
    ASYM0 = 11,  /* the range repeats slot 0 (equal error, a higher index: never chosen) */
    ASYM1 = 8
};


/* A stage's candidates, one per lane. */
typedef struct lanes {
    __m512 ratio, scale;
    __m512i zp, m, lo, hi; /* int32; lo, hi: (qmin - zp) * 256, (qmax - zp) * 256 */
} lanes;

/* mq__qfix_init's m and bounds of each lane. */
ALWAYS_INLINE void fix_lanes(const mq_qformat *f, float amax, lanes *c) {
    __m512 m = _mm512_div_ps(_mm512_set1_ps(512.0f * amax), c->scale);
    m = _mm512_sub_ps(_mm512_add_ps(m, _mm512_set1_ps(0x1.8p23f)), _mm512_set1_ps(0x1.8p23f));
    m = _mm512_min_ps(_mm512_max_ps(m, _mm512_set1_ps(1.0f)), _mm512_set1_ps(16383.0f));
    c->m = _mm512_cvttps_epi32(m);
    c->lo = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_set1_epi32(f->qmin), c->zp), 8);
    c->hi = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_set1_epi32(f->qmax), c->zp), 8);
}

/* symmetric_param / asymmetric_param of qparams.c at each lane's ratio (a ratio of 1 gives
 * the same as their unscaled branch: x * 1.0f == x). */
ALWAYS_INLINE void params(const mq_qformat *f, bool sym, float lo, float hi, lanes *c) {
    if (sym) {
        float amax = -lo > hi ? -lo : hi;
        float half = (float)(f->qmax - f->qmin) / 2.0f;
        __m512 s = _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(amax), c->ratio),
                                 _mm512_set1_ps(half));
        c->scale = _mm512_max_ps(s, _mm512_set1_ps(FLT_EPSILON));
        c->zp = _mm512_set1_epi32(f->qmin < 0 ? 0 : (f->qmin + f->qmax + 1) / 2);
        return;
    }
    __m512 s = _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(hi - lo), c->ratio),
                             _mm512_set1_ps((float)(f->qmax - f->qmin)));
    s = _mm512_max_ps(s, _mm512_set1_ps(FLT_EPSILON));
    c->scale = s;
    /* nearbyintf: the current rounding mode, as the conversion's */
    __m512i r = _mm512_cvtps_epi32(_mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(lo), c->ratio), s));
    __m512i zp = _mm512_sub_epi32(_mm512_set1_epi32(f->qmin), r);
    c->zp = _mm512_min_epi32(_mm512_max_epi32(zp, _mm512_set1_epi32(f->qmin)),
                             _mm512_set1_epi32(f->qmax));
}

/* The bounds of a stage's candidates (lanes c < NC): the largest m, least hi, largest lo.
 * Symmetric: one zero point, and m (a rounded 512 amax / scale, scale growing with the
 * ratio) largest at the least ratio, lane `least` (stage 0: 12, ratio 0.5; stage 1: 0). */
ALWAYS_INLINE void stage_bounds(const lanes *c, int NC, bool SYM, int least, int32_t *mb,
                                int32_t *hb, int32_t *lb) {
    if (SYM) {
        *mb = _mm_cvtsi128_si32(
            _mm512_castsi512_si128(_mm512_permutexvar_epi32(_mm512_set1_epi32(least), c->m)));
        *hb = _mm_cvtsi128_si32(_mm512_castsi512_si128(c->hi));
        *lb = _mm_cvtsi128_si32(_mm512_castsi512_si128(c->lo));
        return;
    }
    __mmask16 used = (__mmask16)((1u << NC) - 1);
    *mb = _mm512_mask_reduce_max_epi32(used, c->m);
    *hb = _mm512_mask_reduce_min_epi32(used, c->hi);
    *lb = _mm512_mask_reduce_max_epi32(used, c->lo);
}

/* A chunk's X split into the values that no candidate clamps (s[0, ns)) and the others
 * (l[0, nl), zeros after them). */
typedef struct split {
    _Alignas(64) int32_t s[CHUNK + 16];
    _Alignas(64) int32_t lbuf[32 + CHUNK + 48]; /* l = lbuf + 32: read (masked off) below l */
    int ns, nl;
    bool whole;         /* of the whole group, made for candidates with */
    int32_t mb, hb, lb; /* m <= mb, hi >= hb, lo <= lb (mb 0: none yet) */
    int32_t xh, xl;     /* their bounds of X (below) */
} split;

/* 32 values from element i (lanes past n - i: 0) as X in 16-bit lanes, in an order of their
 * own (the sums do not mind). bf16: the even elements are the words shifted up, the odd ones
 * the words with the low half cleared. */
ALWAYS_INLINE __m512i load_x32(const void *x, mq_dtype dt, size_t i, size_t n, __m512 vk) {
    __m512 a, b;
    if (dt == MQ_BF16) {
        __m512i h = _mm512_maskz_loadu_epi16(n - i >= 32 ? ~(__mmask32)0
                                                         : (__mmask32)((1u << (n - i)) - 1),
                                             (const char *)x + 2 * i);
        a = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
        b = _mm512_castsi512_ps(_mm512_and_si512(h, _mm512_set1_epi32((int)0xffff0000u)));
    } else {
        a = load16(x, dt, i, tail_mask(n - i));
        b = load16(x, dt, i + 16, n - i > 16 ? tail_mask(n - i - 16) : 0);
    }
    return _mm512_packs_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(a, vk)),
                              _mm512_cvtps_epi32(_mm512_mul_ps(b, vk)));
}

/* split_chunk of 16-bit X (VBMI2): a last partial vector is completed with zeros, which join
 * the small values (X = 0 has no error). */
ALWAYS_INLINE void split16(const void *x, mq_dtype dt, size_t n, __m512 vk, split *sp) {
#ifdef __AVX512VBMI2__
    const __m512i vh = _mm512_set1_epi16((short)(sp->xh < 32767 ? sp->xh : 32767));
    const __m512i vl = _mm512_set1_epi16((short)(sp->xl > -32768 ? sp->xl : -32768));
    int16_t *s = (int16_t *)sp->s, *l = (int16_t *)sp->lbuf + 32;
    int ns = 0;
    size_t i = 0;
    for (; i < n; i += 32) {
        __m512i X = load_x32(x, dt, i, n, vk);
        __mmask32 small = _mm512_mask_cmple_epi16_mask(_mm512_cmpge_epi16_mask(X, vl), X, vh);
        _mm512_storeu_si512(s + ns, _mm512_maskz_compress_epi16(small, X));
        _mm512_storeu_si512(l + (i - (size_t)ns), _mm512_maskz_compress_epi16(~small, X));
        ns += __builtin_popcount(small);
    }
    int nl = (int)i - ns;
    _mm512_storeu_si512(l + nl, _mm512_setzero_si512());
    sp->ns = ns;
    sp->nl = nl;
#else
    (void)x, (void)dt, (void)n, (void)vk, (void)sp;
#endif
}

/* X of a chunk split for candidates with m <= mb, hi >= hb >= 0 and lo <= lb <= 0: a value
 * is small when X * mb lies in [lb, hb] * 2^15, so that for every such candidate t lies in
 * [lo, hi] (t is monotonic in m, toward 0 for smaller m). W16: X kept as 16-bit values (|X| <=
 * 2^14), split 32 at a time (vpcompressw); else as 32-bit values, 16 at a time. */
ALWAYS_INLINE void split_chunk(const void *x, mq_dtype dt, size_t n, float k, int32_t mb,
                               int32_t hb, int32_t lb, bool W16, split *sp) {
    const __m512 vk = _mm512_set1_ps(k);
    /* X * mb <= hb * 2^15 for X <= xh, X * mb >= lb * 2^15 for X >= xl (the last split's
     * when its bounds were the same: mb rarely changes between groups) */
    if (mb != sp->mb || hb != sp->hb || lb != sp->lb) {
        sp->xh = hb * 32768 / mb;
        sp->xl = -(-lb * 32768 / mb);
    }
    sp->mb = mb;
    sp->hb = hb;
    sp->lb = lb;
    if (W16) {
        split16(x, dt, n, vk, sp);
        return;
    }
    const __m512i vh = _mm512_set1_epi32(sp->xh);
    const __m512i vl = _mm512_set1_epi32(sp->xl);
    int32_t *s = sp->s, *l = sp->lbuf + 32;
    int ns = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i X = _mm512_cvtps_epi32(_mm512_mul_ps(load16(x, dt, i, 0xffff), vk));
        __mmask16 small = _mm512_mask_cmple_epi32_mask(_mm512_cmpge_epi32_mask(X, vl), X, vh);
        _mm512_storeu_si512(s + ns, _mm512_maskz_compress_epi32(small, X));
        _mm512_storeu_si512(l + (i - (size_t)ns), _mm512_maskz_compress_epi32((__mmask16)~small, X));
        ns += __builtin_popcount(small);
    }
    int nl = (int)i - ns;
    if (i < n) {
        __mmask16 valid = tail_mask(n - i);
        __m512i X = _mm512_cvtps_epi32(_mm512_mul_ps(load16(x, dt, i, valid), vk));
        __mmask16 small = _mm512_mask_cmple_epi32_mask(_mm512_cmpge_epi32_mask(X, vl), X, vh) & valid;
        __mmask16 large = valid & (__mmask16)~small;
        _mm512_storeu_si512(s + ns, _mm512_maskz_compress_epi32(small, X));
        _mm512_storeu_si512(l + nl, _mm512_maskz_compress_epi32(large, X));
        ns += __builtin_popcount(small);
        nl += __builtin_popcount(large);
    }
    /* X = 0 has no error: zeros complete the last vector */
    _mm512_storeu_si512(l + nl, _mm512_setzero_si512());
    _mm512_storeu_si512(l + nl + 16, _mm512_setzero_si512());
    sp->ns = ns;
    sp->nl = nl;
}

/* Lane c of the result: the sum of the 16 lanes of a[c], c < NC (u32: the caller checked
 * that no sum reaches 2^32). */
ALWAYS_INLINE __m512i lane_sums(const __m512i *a, int NC) {
    const __m512i z = _mm512_setzero_si512();
    __m512i p[8], q[4], h[2];
    #pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        if (2 * i >= NC) {
            p[i] = z;
            continue;
        }
        __m512i b = 2 * i + 1 < NC ? a[2 * i + 1] : z;
        p[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a[2 * i], b),
                                _mm512_unpackhi_epi32(a[2 * i], b));
    }
    #pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        if (4 * i >= NC) {
            q[i] = z;
            continue;
        }
        q[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(p[2 * i], p[2 * i + 1]),
                                _mm512_unpackhi_epi64(p[2 * i], p[2 * i + 1]));
    }
    #pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {
        if (8 * i >= NC) {
            h[i] = z;
            continue;
        }
        h[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(q[2 * i], q[2 * i + 1], 0x88),
                                _mm512_shuffle_i32x4(q[2 * i], q[2 * i + 1], 0xdd));
    }
    return _mm512_add_epi32(_mm512_shuffle_i32x4(h[0], h[1], 0x88),
                            _mm512_shuffle_i32x4(h[0], h[1], 0xdd));
}

/* 32 values from p as 16-bit lanes (the pack interleaves the halves: the sums do not mind). */
ALWAYS_INLINE __m512i load32(const int32_t *p) {
    return _mm512_packs_epi32(_mm512_loadu_si512(p), _mm512_loadu_si512(p + 16));
}

/* The squared errors of NC candidates (m[i], lo[i], hi[i]: symmetric, lo[0], hi[0]) over a
 * split chunk, in the 16 u32 lanes of acc[i]. Returns a bound of the sum of the lanes:
 * |e| <= max(|t|, 128) and |t| <= (16384 mb + 16384) >> 15 (every m <= mb), and the fast
 * values have |e| <= 128. */
ALWAYS_INLINE uint64_t stage_acc(const split *sp, const int32_t *m, const int32_t *lo,
                                 const int32_t *hi, int32_t mb, int NC, bool SYM, bool W16,
                                 __m512i *acc) {
    __m512i vm[MQ_MAX_CANDIDATES];
    #pragma GCC unroll 16
    for (int i = 0; i < NC; i++) {
        vm[i] = _mm512_set1_epi16((short)m[i]);
        acc[i] = _mm512_setzero_si512();
    }
    int nf = sp->ns / 32, rest = sp->ns % 32;
    const int16_t *s16 = (const int16_t *)sp->s;
    for (int v = 0; v < nf; v++) {
        __m512i X = W16 ? _mm512_loadu_si512(s16 + 32 * v) : load32(sp->s + 32 * v);
        #pragma GCC unroll 16
        for (int i = 0; i < NC; i++) {
            __m512i t = _mm512_mulhrs_epi16(X, vm[i]);
            __m512i e = _mm512_srai_epi16(_mm512_slli_epi16(t, 8), 8);
            acc[i] = _mm512_dpwssd_epi32(acc[i], e, e);
        }
    }
    /* the small values past the last full vector, then the others */
    const int32_t *l = sp->lbuf + 32 - rest, *sl = sp->s + 32 * nf;
    const int16_t *l16 = (const int16_t *)sp->lbuf + 32 - rest, *sl16 = s16 + 32 * nf;
    __mmask16 r0 = tail_mask((size_t)rest), r1 = rest > 16 ? tail_mask((size_t)rest - 16) : 0;
    int nl = (rest + sp->nl + 31) / 32;
    const __m512i half = _mm512_set1_epi16(128), mask = _mm512_set1_epi16(-256);
    for (int v = 0; v < nl; v++) {
        __m512i X;
        if (W16) {
            X = _mm512_loadu_si512(l16 + 32 * v);
            if (v == 0) X = _mm512_mask_loadu_epi16(X, (__mmask32)((1ull << rest) - 1), sl16);
        } else {
            __m512i a = _mm512_loadu_si512(l + 32 * v), b = _mm512_loadu_si512(l + 32 * v + 16);
            if (v == 0) {
                a = _mm512_mask_loadu_epi32(a, r0, sl);
                b = _mm512_mask_loadu_epi32(b, r1, sl + 16);
            }
            X = _mm512_packs_epi32(a, b);
        }
        #pragma GCC unroll 16
        for (int i = 0; i < NC; i++) {
            __m512i vl = _mm512_set1_epi16((short)lo[SYM ? 0 : i]);
            __m512i vh = _mm512_set1_epi16((short)hi[SYM ? 0 : i]);
            __m512i t = _mm512_mulhrs_epi16(X, vm[i]);
            __m512i u = _mm512_min_epi16(_mm512_max_epi16(t, vl), vh);
            u = _mm512_and_si512(_mm512_add_epi16(u, half), mask);
            __m512i e = _mm512_sub_epi16(t, u);
            acc[i] = _mm512_dpwssd_epi32(acc[i], e, e);
        }
    }
    uint64_t tm = ((uint64_t)mb * 16384 + 16384) >> 15, em = tm > 128 ? tm : 128;
    return (uint64_t)nf * 32 * 16384 + (uint64_t)nl * 32 * em * em;
}

/* The squared errors of the NC candidates (m <= mb) over a split chunk, added to d (two
 * vectors of 8 u64 lanes: candidates 0-7, 8-15). */
ALWAYS_INLINE void chunk_sums(const split *sp, const lanes *c, int32_t mb, int NC, bool SYM,
                              bool W16, __m512i *d) {
    _Alignas(64) int32_t m[16], lo[16], hi[16];
    _mm512_store_si512(m, c->m);
    _mm512_store_si512(lo, c->lo);
    _mm512_store_si512(hi, c->hi);
    __m512i acc[MQ_MAX_CANDIDATES];
    uint64_t bound = stage_acc(sp, m, lo, hi, mb, NC, SYM, W16, acc);
    /* the lane sums of a chunk stay below 2^31; their total across lanes may not, then it
     * is summed in 64 bits */
    if (bound < ((uint64_t)1 << 32)) {
        __m512i s = lane_sums(acc, NC);
        d[0] = _mm512_add_epi64(d[0], _mm512_cvtepu32_epi64(_mm512_castsi512_si256(s)));
        d[1] = _mm512_add_epi64(d[1], _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(s, 1)));
        return;
    }
    _Alignas(64) uint64_t sums[16] = {0};
    #pragma GCC unroll 16
    for (int i = 0; i < NC; i++) {
        __m512i w = _mm512_add_epi64(_mm512_and_si512(acc[i], _mm512_set1_epi64(0xffffffff)),
                                     _mm512_srli_epi64(acc[i], 32));
        sums[i] = (uint64_t)_mm512_reduce_add_epi64(w);
    }
    d[0] = _mm512_add_epi64(d[0], _mm512_load_si512(sums));
    d[1] = _mm512_add_epi64(d[1], _mm512_load_si512(sums + 8));
}

/* The first least error d[c] / m[c]^2 over lanes c < NC: its index; *err receives it.
 * Each error is first estimated in float (relative error below 2^-22: the conversions of d
 * and m^2 and one division); every lane whose estimate is within 2^-19 of the least one is
 * a possible winner, and the exact winner is among them. One such lane is the winner; more
 * (ties, near ties) are compared exactly, in index order, as the scalar scan does. */
ALWAYS_INLINE int pick(const __m512i *d, __m512i m, int NC, mq_fix_err *err) {
    _Alignas(64) uint64_t ds[16];
    _Alignas(64) int32_t ms[16];
    __mmask16 used = (__mmask16)((1u << NC) - 1);
    __m512 df = _mm512_castps256_ps512(_mm512_cvtepu64_ps(d[0]));
    if (NC > 8) df = _mm512_insertf32x8(df, _mm512_cvtepu64_ps(d[1]), 1);
    __m512 mf = _mm512_cvtepi32_ps(m);
    __m512 e = _mm512_mask_div_ps(_mm512_set1_ps(INFINITY), used, df, _mm512_mul_ps(mf, mf));
    float least = _mm512_reduce_min_ps(e);
    __mmask16 near = _mm512_mask_cmp_ps_mask(used, e, _mm512_set1_ps(least * (1.0f + 0x1p-19f)),
                                             _CMP_LE_OQ);
    _mm512_store_si512(ds, d[0]);
    if (NC > 8) _mm512_store_si512(ds + 8, d[1]);
    _mm512_store_si512(ms, m);
    int best = __builtin_ctz(near);
    *err = (mq_fix_err){(int64_t)ds[best], ms[best]};
    for (unsigned rest = (unsigned)near & ((unsigned)near - 1); rest; rest &= rest - 1) {
        int c = __builtin_ctz(rest);
        mq_fix_err ec = {(int64_t)ds[c], ms[c]};
        if (mq__fix_less(ec, *err)) {
            best = c;
            *err = ec;
        }
    }
    return best;
}

/* A stage's sums over a group of n values. The split serves when it was made for bounds
 * that hold for these candidates, else chunks are split anew. */
ALWAYS_INLINE void group_sums(const void *x, mq_dtype dt, size_t n, float k, const lanes *c,
                              int NC, bool SYM, bool W16, split *sp, __m512i *d) {
    int32_t mb, hb, lb;
    stage_bounds(c, NC, SYM, NC == SYM0 ? SYM0 - 1 : 0, &mb, &hb, &lb);
    d[0] = d[1] = _mm512_setzero_si512();
    if (sp->whole && mb <= sp->mb && hb >= sp->hb && lb <= sp->lb) {
        chunk_sums(sp, c, mb, NC, SYM, W16, d);
        return;
    }
    for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
        size_t len = n - c0 < CHUNK ? n - c0 : CHUNK;
        split_chunk((const char *)x + c0 * (dt == MQ_F32 ? 4 : 2), dt, len, k, mb, hb, lb, W16,
                    sp);
        sp->whole = n <= CHUNK;
        chunk_sums(sp, c, mb, NC, SYM, W16, d);
    }
}

ALWAYS_INLINE mq_qparam lane_param(const lanes *c, int i) {
    _Alignas(64) float s[16];
    _Alignas(64) int32_t z[16];
    _mm512_store_ps(s, c->scale);
    _mm512_store_si512(z, c->zp);
    return (mq_qparam){s[i], z[i]};
}

/* A group's state between the steps. */
typedef struct gstate {
    lanes c0;
    float lo, hi, amax, k;
    int w0;
    mq_fix_err e0;
} gstate;

/* Step 1: the stage-0 candidates (PyTorch's rule, then ratios 1.1 (symmetric only) down to
 * 0.5 by 0.05, as mq__qcandidates computes them) and, for short groups, the split. */
ALWAYS_INLINE void step0(const mq_qformat *f, bool SYM, bool W16, const void *x, mq_dtype dt,
                         size_t n, float mn, float mx, gstate *g, split *sp) {
    g->lo = mn < 0.0f ? mn : 0.0f;
    g->hi = mx > 0.0f ? mx : 0.0f;
    g->amax = -mn > mx ? -mn : mx;
    g->k = MQ_QFIX_ONE / g->amax;
    lanes *c = &g->c0;
    c->ratio = SYM ? _mm512_setr_ps(1.0f, 1.0f - 0.05f * -2.0f, 1.0f - 0.05f * -1.0f,
                                    1.0f - 0.05f * 1.0f, 1.0f - 0.05f * 2.0f,
                                    1.0f - 0.05f * 3.0f, 1.0f - 0.05f * 4.0f,
                                    1.0f - 0.05f * 5.0f, 1.0f - 0.05f * 6.0f,
                                    1.0f - 0.05f * 7.0f, 1.0f - 0.05f * 8.0f,
                                    1.0f - 0.05f * 9.0f, 1.0f - 0.05f * 10.0f, 1.0f, 1.0f, 1.0f)
                   : _mm512_setr_ps(1.0f, 1.0f - 0.05f * 1.0f, 1.0f - 0.05f * 2.0f,
                                    1.0f - 0.05f * 3.0f, 1.0f - 0.05f * 4.0f,
                                    1.0f - 0.05f * 5.0f, 1.0f - 0.05f * 6.0f,
                                    1.0f - 0.05f * 7.0f, 1.0f - 0.05f * 8.0f,
                                    1.0f - 0.05f * 9.0f, 1.0f - 0.05f * 10.0f, 1.0f, 1.0f,
                                    1.0f, 1.0f, 1.0f);
    params(f, SYM, g->lo, g->hi, c);
    fix_lanes(f, g->amax, c);
    sp->whole = false;
    if (n > CHUNK) return;
    int32_t mb, hb, lb;
    stage_bounds(c, SYM ? SYM0 : ASYM0, SYM, SYM0 - 1, &mb, &hb, &lb);
    if (!SYM) { /* stage 1 moves zero points by one step: the split serves it too */
        hb = hb - 256 > 0 ? hb - 256 : 0;
        lb = lb + 256 < 0 ? lb + 256 : 0;
    }
    split_chunk(x, dt, n, g->k, mb, hb, lb, W16, sp);
    sp->whole = true;
}

/* Step 2: stage 0's errors and winner. */
ALWAYS_INLINE void step1(bool SYM, bool W16, const void *x, mq_dtype dt, size_t n, gstate *g,
                         split *sp) {
    __m512i d[2];
    if (SYM) {
        group_sums(x, dt, n, g->k, &g->c0, SYM0, true, W16, sp, d);
        g->w0 = pick(d, g->c0.m, SYM0, &g->e0);
    } else {
        group_sums(x, dt, n, g->k, &g->c0, ASYM0, false, W16, sp, d);
        g->w0 = pick(d, g->c0.m, ASYM0, &g->e0);
    }
}

/* The asymmetric stage 1's 8 slots: half a step either side of the stage-0 winner's ratio,
 * and the zero point one step either way at those ratios and the winner's. */
ALWAYS_INLINE void asym1_lanes(const mq_qformat *f, const gstate *g, lanes *c1) {
    _Alignas(64) float r[16];
    _mm512_store_ps(r, g->c0.ratio);
    __m512 center = _mm512_set1_ps(r[g->w0]);
    c1->ratio = _mm512_add_ps(center, _mm512_setr_ps(0.025f * -1.0f, 0.025f * -1.0f,
                                                    0.025f * -1.0f, 0.025f * 0.0f,
                                                    0.025f * 0.0f, 0.025f * 1.0f,
                                                    0.025f * 1.0f, 0.025f * 1.0f, 0, 0, 0,
                                                    0, 0, 0, 0, 0));
    params(f, false, g->lo, g->hi, c1);
    const __m512i dz = _mm512_setr_epi32(0, -1, 1, -1, 1, 0, -1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i zero = _mm512_setzero_si512();
    __mmask16 ok = _mm512_cmpeq_epi32_mask(dz, zero) |
                   _mm512_mask_cmpgt_epi32_mask(_mm512_cmplt_epi32_mask(dz, zero), c1->zp,
                                                _mm512_set1_epi32(f->qmin)) |
                   _mm512_mask_cmplt_epi32_mask(_mm512_cmpgt_epi32_mask(dz, zero), c1->zp,
                                                _mm512_set1_epi32(f->qmax));
    c1->zp = _mm512_add_epi32(c1->zp, dz);
    /* a slot left out repeats slot 0 */
    c1->zp = _mm512_mask_blend_epi32(ok, _mm512_permutexvar_epi32(zero, c1->zp), c1->zp);
    c1->scale = _mm512_mask_blend_ps(ok, _mm512_permutexvar_ps(zero, c1->scale), c1->scale);
    fix_lanes(f, g->amax, c1);
}

/* Step 3, symmetric: stage 1, half a step either side of the winner's ratio, and the group's
 * choice. */
ALWAYS_INLINE mq_qparam step2_sym(const mq_qformat *f, bool W16, const void *x, mq_dtype dt,
                                  size_t n, gstate *g, split *sp) {
    _Alignas(64) float r[16];
    _mm512_store_ps(r, g->c0.ratio);
    __m512 center = _mm512_set1_ps(r[g->w0]);
    lanes c1;
    __m512i d[2];
    mq_fix_err e1;
    c1.ratio = _mm512_add_ps(center, _mm512_setr_ps(0.025f * -1.0f, 0.025f * 1.0f, 0, 0, 0, 0, 0,
                                                    0, 0, 0, 0, 0, 0, 0, 0, 0));
    params(f, true, g->lo, g->hi, &c1);
    fix_lanes(f, g->amax, &c1);
    group_sums(x, dt, n, g->k, &c1, SYM1, true, W16, sp, d);
    int w1 = pick(d, c1.m, SYM1, &e1);
    return mq__fix_less(e1, g->e0) ? lane_param(&c1, w1) : lane_param(&g->c0, g->w0);
}

/* Step 3, symmetric, for a block of nb <= 8 short groups at once: group b's two stage-1
 * candidates in lanes 2b (center - 0.025) and 2b + 1 (center + 0.025), their setup, sums and
 * choices computed together. A group whose split does not serve (a stage-1 m above the
 * split's) or whose sums could reach 2^32 takes step2_sym. */
ALWAYS_INLINE void step2_sym_block(const mq_qformat *f, bool W16, const void *x, mq_dtype dt,
                                   size_t n, size_t nb, gstate *st, split *sp, mq_qparam *p) {
    _Alignas(64) float ctr[16], amax[16], r0[16], sc1[16];
    _Alignas(64) int32_t m[16], lo[16], hi[16];
    _Alignas(64) uint64_t e0d[8] = {0}, e0m[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    for (size_t b = 0; b < 8; b++) {
        size_t g = b < nb ? b : 0; /* unused lanes repeat group 0 */
        _mm512_store_ps(r0, st[g].c0.ratio);
        ctr[2 * b] = ctr[2 * b + 1] = r0[st[g].w0];
        amax[2 * b] = amax[2 * b + 1] = -st[g].lo > st[g].hi ? -st[g].lo : st[g].hi;
        e0d[b] = (uint64_t)st[g].e0.d;
        e0m[b] = (uint64_t)st[g].e0.m;
    }
    /* params and fix_lanes of the symmetric stage 1, each lane with its group's amax */
    const __m512 va = _mm512_load_ps(amax);
    __m512 ratio = _mm512_add_ps(_mm512_load_ps(ctr),
                                 _mm512_setr_ps(0.025f * -1.0f, 0.025f * 1.0f, 0.025f * -1.0f,
                                                0.025f * 1.0f, 0.025f * -1.0f, 0.025f * 1.0f,
                                                0.025f * -1.0f, 0.025f * 1.0f, 0.025f * -1.0f,
                                                0.025f * 1.0f, 0.025f * -1.0f, 0.025f * 1.0f,
                                                0.025f * -1.0f, 0.025f * 1.0f, 0.025f * -1.0f,
                                                0.025f * 1.0f));
    float half = (float)(f->qmax - f->qmin) / 2.0f;
    __m512 scale = _mm512_div_ps(_mm512_mul_ps(va, ratio), _mm512_set1_ps(half));
    scale = _mm512_max_ps(scale, _mm512_set1_ps(FLT_EPSILON));
    __m512 mf = _mm512_div_ps(_mm512_mul_ps(_mm512_set1_ps(512.0f), va), scale);
    mf = _mm512_sub_ps(_mm512_add_ps(mf, _mm512_set1_ps(0x1.8p23f)), _mm512_set1_ps(0x1.8p23f));
    mf = _mm512_min_ps(_mm512_max_ps(mf, _mm512_set1_ps(1.0f)), _mm512_set1_ps(16383.0f));
    __m512i vm = _mm512_cvttps_epi32(mf);
    _mm512_store_si512(m, vm);
    _mm512_store_ps(sc1, scale);
    int32_t zp = f->qmin < 0 ? 0 : (f->qmin + f->qmax + 1) / 2;
    lo[0] = (f->qmin - zp) * 256;
    hi[0] = (f->qmax - zp) * 256;
    __m512i acc[16];
    unsigned own = 0; /* groups done here */
    for (size_t b = 0; b < nb; b++) {
        int32_t mb = m[2 * b];
        acc[2 * b] = acc[2 * b + 1] = _mm512_setzero_si512();
        if (!sp[b].whole || mb > sp[b].mb || hi[0] < sp[b].hb || lo[0] > sp[b].lb) continue;
        if (stage_acc(&sp[b], m + 2 * b, lo, hi, mb, 2, true, W16, acc + 2 * b) >> 32) continue;
        own |= 1u << b;
    }
    for (size_t b = nb; b < 8; b++) acc[2 * b] = acc[2 * b + 1] = _mm512_setzero_si512();
    /* group b's sums: u64 lane b, low half candidate 0, high half candidate 1 */
    __m512i s = lane_sums(acc, 16);
    const __m512i lo32 = _mm512_set1_epi64(0xffffffff);
    __m512i d0 = _mm512_and_si512(s, lo32), d1 = _mm512_srli_epi64(s, 32);
    __m512i q0 = _mm512_mul_epu32(vm, vm), m1 = _mm512_srli_epi64(vm, 32);
    __m512i q1 = _mm512_mul_epu32(m1, m1);
    /* the first least of the two (d < 2^32, m^2 < 2^28), then against stage 0 (d < 2^36) */
    __mmask8 w1 = _mm512_cmplt_epu64_mask(_mm512_mul_epu32(d1, q0), _mm512_mul_epu32(d0, q1));
    __m512i d = _mm512_mask_blend_epi64(w1, d0, d1), q = _mm512_mask_blend_epi64(w1, q0, q1);
    __m512i ed = _mm512_load_si512(e0d), em = _mm512_load_si512(e0m);
    __m512i eq = _mm512_mul_epu32(em, em);
    __mmask8 better = _mm512_cmplt_epu64_mask(_mm512_mullo_epi64(d, eq),
                                              _mm512_mullo_epi64(ed, q));
    for (size_t b = 0; b < nb; b++) {
        if (!(own >> b & 1))
            p[b] = step2_sym(f, W16, (const char *)x + b * n * (dt == MQ_F32 ? 4 : 2), dt, n,
                             &st[b], &sp[b]);
        else if (better >> b & 1) p[b] = (mq_qparam){sc1[2 * b + (w1 >> b & 1)], zp};
        else p[b] = lane_param(&st[b].c0, st[b].w0);
    }
}

/* Step 3, asymmetric, for a block of nb groups: each step for all groups before the next
 * (the setup and the choice are chains of divisions and reductions; groups overlap). */
ALWAYS_INLINE void step2_asym_block(const mq_qformat *f, bool W16, const void *x, mq_dtype dt,
                                    size_t n, size_t nb, gstate *st, split *sp, mq_qparam *p) {
    lanes c1[BLOCK];
    __m512i d[BLOCK][2];
    for (size_t b = 0; b < nb; b++) asym1_lanes(f, &st[b], &c1[b]);
    for (size_t b = 0; b < nb; b++)
        group_sums((const char *)x + b * n * (dt == MQ_F32 ? 4 : 2), dt, n, st[b].k, &c1[b],
                   ASYM1, false, W16, &sp[b], d[b]);
    for (size_t b = 0; b < nb; b++) {
        mq_fix_err e1;
        int w1 = pick(d[b], c1[b].m, ASYM1, &e1);
        p[b] = mq__fix_less(e1, st[b].e0) ? lane_param(&c1[b], w1)
                                           : lane_param(&st[b].c0, st[b].w0);
    }
}

ALWAYS_INLINE void search_t(const mq_qformat *f, bool SYM, bool W16, const void *x,
                            mq_dtype dt, size_t gs, size_t ng, const float *mn, const float *mx,
                            mq_qparam *p) {
    gstate st[BLOCK];
    split sp[BLOCK];
    for (int b = 0; b < BLOCK; b++) sp[b].mb = 0;
    size_t esz = dt == MQ_F32 ? 4 : 2;
    for (size_t g0 = 0; g0 < ng; g0 += BLOCK) {
        size_t nb = ng - g0 < BLOCK ? ng - g0 : BLOCK;
        const char *xb = (const char *)x + g0 * gs * esz;
        for (size_t b = 0; b < nb; b++)
            step0(f, SYM, W16, xb + b * gs * esz, dt, gs, mn[g0 + b], mx[g0 + b], &st[b], &sp[b]);
        for (size_t b = 0; b < nb; b++) step1(SYM, W16, xb + b * gs * esz, dt, gs, &st[b], &sp[b]);
        if (!SYM) step2_asym_block(f, W16, xb, dt, gs, nb, st, sp, p + g0);
        else if (gs <= CHUNK) step2_sym_block(f, W16, xb, dt, gs, nb, st, sp, p + g0);
        else
            for (size_t b = 0; b < nb; b++)
                p[g0 + b] = step2_sym(f, W16, xb + b * gs * esz, dt, gs, &st[b], &sp[b]);
    }
}

/* The entries' dispatch on the source type and the scheme. */
ALWAYS_INLINE void search_fix(const mq_qformat *f, mq_scheme scheme, const void *x, mq_dtype dt,
                              size_t gs, size_t ng, const float *mn, const float *mx,
                              mq_qparam *p, bool W16) {
    bool sym = scheme == MQ_SYMMETRIC;
    if (dt == MQ_BF16) {
        if (sym) search_t(f, true, W16, x, MQ_BF16, gs, ng, mn, mx, p);
        else search_t(f, false, W16, x, MQ_BF16, gs, ng, mn, mx, p);
    } else if (dt == MQ_F16) {
        if (sym) search_t(f, true, W16, x, MQ_F16, gs, ng, mn, mx, p);
        else search_t(f, false, W16, x, MQ_F16, gs, ng, mn, mx, p);
    } else {
        if (sym) search_t(f, true, W16, x, MQ_F32, gs, ng, mn, mx, p);
        else search_t(f, false, W16, x, MQ_F32, gs, ng, mn, mx, p);
    }
}

#endif
