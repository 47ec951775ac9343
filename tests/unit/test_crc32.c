/* CRC-32 paths (slice-by-8 reference, carry-less-multiply folding, ARM64 CRC32X) against a
 * bit-at-a-time CRC and against each other, on every ISA level. */
#include "harness.h"
#include "io/crc32.h"

#include <stdint.h>
#include <stdlib.h>

/* The definition: one bit at a time, reflected, pre- and post-inverted. */
static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

static uint8_t *random_bytes(size_t n, uint64_t seed) {
    uint8_t *b = (uint8_t *)malloc(n ? n : 1);
    for (size_t i = 0; b && i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        b[i] = (uint8_t)(seed >> 24);
    }
    return b;
}

/* A context at `isa` and the CRC state it picks. */
static mq_ctx *at_level(int isa, mq_crc32 *c) {
    mq_ctx *ctx = mq_ctx_create();
    if (ctx && mq_ctx_set_isa(ctx, (mq_isa)isa) != MQ_OK) {
        mq_ctx_free(ctx);
        return NULL;
    }
    if (ctx) mq__crc32_init(c, ctx);
    return ctx;
}

TEST(known_values_every_level) {
    static mq_crc32 c;
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        mq_ctx *ctx = at_level(isa, &c);
        CHECK(ctx != NULL);
        if (!ctx) return;
        CHECK_EQ_INT(mq__crc32_update(&c, 0, "123456789", 9), 0xCBF43926u);
        CHECK_EQ_INT(mq__crc32_update(&c, 0, "", 0), 0);
        static uint8_t zeros[4096];
        CHECK_EQ_INT(mq__crc32_update(&c, 0, zeros, sizeof zeros), crc_bitwise(0, zeros, sizeof zeros));
        mq_ctx_free(ctx);
    }
}

/* The vector levels pick a folding path where the CPU has the multiply (a test that would
 * pass with the reference everywhere checks nothing). */
TEST(vector_levels_pick_a_faster_path) {
    static mq_crc32 c;
    for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa)) {
        mq_ctx *ctx = at_level(isa, &c);
        CHECK(ctx != NULL);
        if (!ctx) return;
        bool has = ctx->cpu.pclmul || ctx->cpu.pmull || ctx->cpu.crc32;
        if (has) CHECK(c.update != mq__crc32_raw);
        mq_ctx_free(ctx);
    }
    mq__crc32_init(&c, NULL);
    CHECK(c.update == mq__crc32_raw);
}

/* Every length 0..320 at every misalignment 0..63 with a running CRC carried in, against
 * the bitwise definition. */
TEST(short_lengths_and_misalignments_every_level) {
    static mq_crc32 c;
    uint8_t *buf = random_bytes(320 + 64, 7);
    CHECK(buf != NULL);
    if (!buf) return;
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        mq_ctx *ctx = at_level(isa, &c);
        CHECK(ctx != NULL);
        if (!ctx) break;
        int bad = 0;
        for (size_t off = 0; off < 64; off++)
            for (size_t n = 0; n <= 320; n++) {
                uint32_t seed = (uint32_t)(off * 2654435761u + n);
                uint32_t want = crc_bitwise(seed, buf + off, n);
                if (mq__crc32_update(&c, seed, buf + off, n) != want && bad++ < 3)
                    CHECK_EQ_INT(mq__crc32_update(&c, seed, buf + off, n), want);
            }
        CHECK_EQ_INT(bad, 0);
        mq_ctx_free(ctx);
    }
    free(buf);
}

/* Large buffers, misaligned, in one pass and split at odd places: equal to slice-by-8. */
TEST(large_buffers_every_level) {
    static mq_crc32 ref, c;
    mq__crc32_init(&ref, NULL);
    enum { N = (3 << 20) + 77 };
    uint8_t *buf = random_bytes(N + 64, 11);
    CHECK(buf != NULL);
    if (!buf) return;
    static const size_t lens[] = {256, 257, 511, 1024 + 15, 65536 + 3, (1 << 20) + 48, N};
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        mq_ctx *ctx = at_level(isa, &c);
        CHECK(ctx != NULL);
        if (!ctx) break;
        for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
            for (size_t off = 0; off < 64; off += 13) {
                uint32_t want = mq__crc32_update(&ref, 0x12345678u, buf + off, lens[i]);
                CHECK_EQ_INT(mq__crc32_update(&c, 0x12345678u, buf + off, lens[i]), want);
            }
        uint32_t whole = mq__crc32_update(&ref, 0, buf, N);
        for (size_t cut = 1; cut < N; cut = cut * 3 + 5) {
            uint32_t a = mq__crc32_update(&c, 0, buf, cut);
            CHECK_EQ_INT(mq__crc32_update(&c, a, buf + cut, N - cut), whole);
        }
        mq_ctx_free(ctx);
    }
    CHECK_EQ_INT(mq__crc32_update(&ref, 0, buf, 1000), crc_bitwise(0, buf, 1000));
    free(buf);
}

/* Kernels the level loop may not reach (ARM64 cores with CRC32X but no PMULL). */
TEST(every_kernel_the_cpu_runs) {
    static mq_crc32 c;
    mq__crc32_init(&c, NULL);
    mq_ctx *ctx = mq_ctx_create();
    CHECK(ctx != NULL);
    if (!ctx) return;
    const mq__crc32_kernel *ks[4] = {NULL, NULL, NULL, NULL};
#if defined(__x86_64__) || defined(__i386__)
    if (ctx->cpu.pclmul && mq__cpu_level_ok(&ctx->cpu, MQ_ISA_AVX2)) ks[0] = mq__crc32_kernel_avx2();
    if (ctx->cpu.pclmul && ctx->cpu.vpclmulqdq && mq__cpu_level_ok(&ctx->cpu, MQ_ISA_AVX512))
        ks[1] = mq__crc32_kernel_avx512();
#elif defined(__aarch64__)
    if (ctx->cpu.pmull) ks[2] = mq__crc32_kernel_pmull();
    if (ctx->cpu.crc32) ks[3] = mq__crc32_kernel_crc32();
#endif
    uint8_t *buf = random_bytes(5000 + 8, 3);
    CHECK(buf != NULL);
    for (int k = 0; buf && k < 4; k++) {
        if (!ks[k]) continue;
        for (size_t n = 0; n <= 5000; n += n < 300 ? 1 : 97) {
            uint32_t want = ~crc_bitwise(0xA5A5A5A5u, buf + (n & 7), n);
            uint32_t got = ks[k]->update(&c, ~0xA5A5A5A5u, buf + (n & 7), n);
            CHECK_EQ_INT(got, want);
            if (got != want) break;
        }
    }
    free(buf);
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(known_values_every_level);
    RUN(vector_levels_pick_a_faster_path);
    RUN(short_lengths_and_misalignments_every_level);
    RUN(large_buffers_every_level);
    RUN(every_kernel_the_cpu_runs);
    return test_summary();
}
