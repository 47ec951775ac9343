/* Float conversions: every instruction-set path bit-identical to the scalar reference, on
 * every F16/BF16 value and on f32 values chosen to hit ties, subnormals, NaN payloads and
 * overflow, with odd lengths and unaligned pointers. */
#include "harness.h"
#include "monoquant.h"

#include <math.h>
#include <stdint.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd32(void) {
    return (uint32_t)(test_xorshift64(&rng_state) >> 16);
}

/* The f32 test set: specials, every F16 and BF16 tie and neighbour, subnormals, random bits. */
static size_t make_f32_set(uint32_t **out) {
    size_t cap = 65536 * 8 + 300000, n = 0;
    uint32_t *v = malloc(cap * 4);
    static const uint32_t specials[] = {
        0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001,
        0xff800001, 0x7fbfffff, 0x7fffffff, 0xffffffff, 0x7f7fffff, 0xff7fffff, 0x00000001,
        0x807fffff, 0x00800000, 0x477fefff, 0x477ff000, 0x477fffff, 0x47800000, 0x38800000,
        0x387fffff, 0x33000000, 0x33000001, 0x32ffffff, 0x7f7f8000, 0x7f7f7fff, 0x7f7fc000,
        0x3f808000, 0x3f818000, 0x3f800001, 0x7fa00000, 0x7f802000, 0x7f800100};
    for (size_t i = 0; i < sizeof specials / 4; i++) {
        v[n++] = specials[i];
        v[n++] = specials[i] ^ 0x80000000u;
    }
    for (uint32_t h = 0; h < 0x7c00; h++) { /* f16 midpoints (exact in f32) and neighbours */
        float a = mq_f16_to_f32((uint16_t)h), b = mq_f16_to_f32((uint16_t)(h + 1));
        uint32_t mid = test_f32_bits((a + b) / 2);
        v[n++] = mid;
        v[n++] = mid + 1;
        v[n++] = mid - 1;
        v[n++] = mid | 0x80000000u;
    }
    for (uint32_t h = 0; h < 65536; h++) { /* bf16 ties, both parities */
        v[n++] = h << 16 | 0x8000;
        v[n++] = h << 16 | 0x7fff;
        v[n++] = h << 16 | 0x8001;
    }
    for (int i = 0; i < 100000; i++) v[n++] = rnd32();
    for (int i = 0; i < 50000; i++) v[n++] = rnd32() & 0x807fffffu;            /* subnormal */
    for (int i = 0; i < 50000; i++) v[n++] = (rnd32() & 0x8fffffffu) | 0x30000000u; /* f16 range */
    for (int i = 0; i < 1000; i++) v[n++] = rnd32() | 0x7f800000u;              /* NaN payloads */
    if (n > cap) abort();
    *out = v;
    return n;
}

/* Runs mq_convert at `isa` on n elements at byte offsets soff/doff; out gets n results. */
static int convert_at(mq_isa isa, mq_dtype dt, void *out, mq_dtype st, const void *in, size_t n,
                      size_t soff, size_t doff) {
    mq_ctx *ctx = mq_ctx_create();
    size_t ss = mq_dtype_size(st), ds = mq_dtype_size(dt);
    unsigned char *sb = malloc(n * ss + 80), *db = malloc(n * ds + 80);
    memcpy(sb + soff, in, n * ss);
    memset(db, 0xa5, n * ds + 80);
    int ok = mq_ctx_set_isa(ctx, isa) == MQ_OK &&
             mq_convert(ctx, dt, db + doff, st, sb + soff, n) == MQ_OK;
    for (size_t i = 0; i < doff; i++) ok &= db[i] == 0xa5;               /* no write before */
    for (size_t i = doff + n * ds; i < n * ds + 80; i++) ok &= db[i] == 0xa5; /* nor after */
    memcpy(out, db + doff, n * ds);
    free(sb);
    free(db);
    mq_ctx_free(ctx);
    return ok;
}

TEST(f16_to_f32_all_values) {
    uint16_t *h = malloc(65536 * 2);
    float *out = malloc(65536 * 4);
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        CHECK(convert_at((mq_isa)isa, MQ_F32, out, MQ_F16, h, 65536, 0, 0));
        for (uint32_t i = 0; i < 65536; i++)
            CHECK_MSG(test_f32_bits(out[i]) == test_f32_bits(mq_f16_to_f32((uint16_t)i)), "%s: f16 %04x -> %08x",
                      mq_isa_name((mq_isa)isa), i, test_f32_bits(out[i]));
    }
    /* the reference itself: widening is exact and narrowing gives the value back */
    for (uint32_t i = 0; i < 65536; i++) {
        float f = mq_f16_to_f32((uint16_t)i);
        uint16_t back = mq_f32_to_f16(f);
        if ((i & 0x7c00) == 0x7c00 && (i & 0x3ff)) CHECK(isnan(f) && back == (i | 0x200));
        else CHECK_MSG(back == i, "f16 %04x round trip gives %04x", i, back);
    }
    CHECK(mq_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(mq_f16_to_f32(0x3c00) == 1.0f && mq_f16_to_f32(0xfbff) == -65504.0f);
    free(h);
    free(out);
}

TEST(bf16_to_f32_all_values) {
    uint16_t *h = malloc(65536 * 2);
    float *out = malloc(65536 * 4);
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        CHECK(convert_at((mq_isa)isa, MQ_F32, out, MQ_BF16, h, 65536, 0, 0));
        for (uint32_t i = 0; i < 65536; i++)
            CHECK_MSG(test_f32_bits(out[i]) == i << 16, "%s: bf16 %04x", mq_isa_name((mq_isa)isa), i);
    }
    free(h);
    free(out);
}

/* The reference rounds to nearest, ties to even: check against the neighbours. */
TEST(reference_rounds_to_nearest_even) {
    uint32_t *v;
    size_t n = make_f32_set(&v);
    for (size_t i = 0; i < n; i++) {
        float x = test_bits_f32(v[i]);
        uint16_t h = mq_f32_to_f16(x), b = mq_f32_to_bf16(x);
        if (isnan(x)) {
            CHECK(isnan(mq_f16_to_f32(h)) && (h & 0x200) && (h & 0x8000) == (v[i] >> 16 & 0x8000));
            CHECK(isnan(mq_bf16_to_f32(b)) && (b & 0x40) && (b >> 8 & 0x7f) == 0x7f);
            continue;
        }
        double xd = x, hd = mq_f16_to_f32(h), bd = mq_bf16_to_f32(b);
        /* neighbours of the result towards and away from zero, within range */
        for (int d = -1; d <= 1; d += 2) {
            uint16_t hn = (uint16_t)(h + d), bn = (uint16_t)(b + d);
            if ((h & 0x7fff) != 0 || d > 0) {
                double nd = mq_f16_to_f32(hn);
                if (!isnan(nd) && (hn & 0x8000) == (h & 0x8000) && !isinf(hd)) {
                    CHECK_MSG(fabs(xd - hd) <= fabs(xd - nd), "f16 of %08x not nearest", v[i]);
                    if (fabs(xd - hd) == fabs(xd - nd)) CHECK_MSG(!(h & 1), "f16 tie %08x", v[i]);
                }
            }
            if ((b & 0x7fff) != 0 || d > 0) {
                double nd = mq_bf16_to_f32(bn);
                if (!isnan(nd) && (bn & 0x8000) == (b & 0x8000) && !isinf(bd)) {
                    CHECK_MSG(fabs(xd - bd) <= fabs(xd - nd), "bf16 of %08x not nearest", v[i]);
                    if (fabs(xd - bd) == fabs(xd - nd)) CHECK_MSG(!(b & 1), "bf16 tie %08x", v[i]);
                }
            }
        }
        if (isinf(hd)) CHECK(isinf(x) || fabs(xd) >= 65520.0);
        if (isinf(bd)) CHECK(isinf(x) || fabs(xd) >= 0x1.ffp127);
    }
    free(v);
}

TEST(f32_narrowing_all_paths) {
    uint32_t *v;
    size_t n = make_f32_set(&v);
    uint16_t *out = malloc(n * 2);
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        CHECK(convert_at((mq_isa)isa, MQ_F16, out, MQ_F32, v, n, 0, 0));
        for (size_t i = 0; i < n; i++)
            CHECK_MSG(out[i] == mq_f32_to_f16(test_bits_f32(v[i])), "%s: f32 %08x -> f16 %04x, want %04x",
                      mq_isa_name((mq_isa)isa), v[i], out[i], mq_f32_to_f16(test_bits_f32(v[i])));
        CHECK(convert_at((mq_isa)isa, MQ_BF16, out, MQ_F32, v, n, 0, 0));
        for (size_t i = 0; i < n; i++)
            CHECK_MSG(out[i] == mq_f32_to_bf16(test_bits_f32(v[i])), "%s: f32 %08x -> bf16 %04x, want %04x",
                      mq_isa_name((mq_isa)isa), v[i], out[i], mq_f32_to_bf16(test_bits_f32(v[i])));
    }
    free(out);
    free(v);
}

/* Every length 0..70 at many byte offsets of source and destination (misaligned elements,
 * and every 64-byte alignment head). */
TEST(odd_lengths_unaligned) {
    uint32_t *v;
    make_f32_set(&v);
    uint16_t h[80], got16[80];
    float got32[80];
    for (int i = 0; i < 80; i++) h[i] = (uint16_t)rnd32();
    static const mq_dtype pairs[][2] = {{MQ_F16, MQ_F32}, {MQ_BF16, MQ_F32}, {MQ_F32, MQ_F16},
                                        {MQ_F32, MQ_BF16}};
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa))
        for (size_t len = 0; len <= 70; len++)
            for (size_t o = 0; o < 12; o++)
                for (int p = 0; p < 4; p++) {
                    static const size_t offs[12] = {0, 1, 2, 3, 4, 8, 12, 20, 36, 48, 60, 62};
                    size_t off = offs[o];
                    mq_dtype st = pairs[p][0], dt = pairs[p][1];
                    const void *in = st == MQ_F32 ? (const void *)(v + 100 + 3 * len) : h;
                    void *out = dt == MQ_F32 ? (void *)got32 : got16;
                    CHECK(convert_at((mq_isa)isa, dt, out, st, in, len, off, offs[(o * 5) % 12]));
                    for (size_t i = 0; i < len; i++) {
                        uint32_t want, have;
                        if (st == MQ_F16) want = test_f32_bits(mq_f16_to_f32(h[i])), have = test_f32_bits(got32[i]);
                        else if (st == MQ_BF16) want = (uint32_t)h[i] << 16, have = test_f32_bits(got32[i]);
                        else {
                            float x = test_bits_f32(v[100 + 3 * len + i]);
                            want = dt == MQ_F16 ? mq_f32_to_f16(x) : mq_f32_to_bf16(x);
                            have = got16[i];
                        }
                        CHECK_MSG(want == have, "%s %s->%s len %zu off %zu elem %zu",
                                  mq_isa_name((mq_isa)isa), mq_dtype_name(st), mq_dtype_name(dt),
                                  len, off, i);
                    }
                }
    free(v);
}

/* Pairs without a vector path (F64, F16<->BF16) on unaligned pointers; F64 rounds once. */
TEST(f64_and_cross_conversions) {
    double d[] = {1.0, -2.5, 0x1.002p0 + 0x1p-40, 0x1.002p0, 65519.99, 65520.0, 1e300, -1e-300,
                  NAN, INFINITY, 0x1.01p0, 0x1.01p0 + 0x1p-50};
    size_t n = sizeof d / sizeof d[0];
    uint16_t h[16], b[16], hb[16];
    double back[16];
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        CHECK(convert_at((mq_isa)isa, MQ_F16, h, MQ_F64, d, n, 3, 1));
        CHECK(convert_at((mq_isa)isa, MQ_BF16, b, MQ_F64, d, n, 5, 1));
        CHECK(convert_at((mq_isa)isa, MQ_F64, back, MQ_F16, h, n, 1, 7));
        CHECK(convert_at((mq_isa)isa, MQ_BF16, hb, MQ_F16, h, n, 1, 1));
        for (size_t i = 0; i < n; i++) {
            if (isnan(d[i])) {
                CHECK(isnan(back[i]) && isnan(mq_bf16_to_f32(b[i])));
                continue;
            }
            CHECK(back[i] == mq_f16_to_f32(h[i]));
            CHECK(hb[i] == mq_f32_to_bf16(mq_f16_to_f32(h[i])));
        }
        /* just above a tie must round up: a double rounding through f32 would not */
        CHECK_EQ_INT(h[2], 0x3c01);
        CHECK_EQ_INT(h[3], 0x3c00);
        CHECK_EQ_INT(h[4], 0x7bff);
        CHECK_EQ_INT(h[5], 0x7c00);
        CHECK_EQ_INT(b[10], 0x3f80);
        CHECK_EQ_INT(b[11], 0x3f81);
    }
    mq_ctx *ctx = mq_ctx_create();
    CHECK_EQ_INT(mq_convert(ctx, MQ_I8, h, MQ_F32, d, 1), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "I8");
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(f16_to_f32_all_values);
    RUN(bf16_to_f32_all_values);
    RUN(reference_rounds_to_nearest_even);
    RUN(f32_narrowing_all_paths);
    RUN(odd_lengths_unaligned);
    RUN(f64_and_cross_conversions);
    return test_summary();
}
