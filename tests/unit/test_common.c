/* Contexts, status strings, dtypes, the thread pool. */
#include "harness.h"
#include "monoquant.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>

TEST(status_strings) {
    for (int s = MQ_OK; s <= MQ_ERR_INTERNAL; s++) CHECK(mq_status_str((mq_status)s)[0] != 0);
    CHECK_EQ_STR(mq_status_str(MQ_OK), "ok");
    /* the linked library's version, against the header's numbers (not its own string) */
    char want[64];
    snprintf(want, sizeof want, "%d.%d.%d", MQ_VERSION_MAJOR, MQ_VERSION_MINOR, MQ_VERSION_PATCH);
    CHECK_EQ_STR(mq_version(), want);
}

TEST(ctx_settings) {
    mq_ctx *ctx = mq_ctx_create();
    CHECK(ctx != NULL);
    CHECK_EQ_STR(mq_ctx_message(ctx), "");
    CHECK_EQ_INT(mq_ctx_set_threads(ctx, -1), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "thread count");
    CHECK_EQ_INT(mq_ctx_status(ctx), MQ_ERR_INVALID);
    mq_ctx_clear_error(ctx);
    CHECK_EQ_INT(mq_ctx_status(ctx), MQ_OK);
    CHECK_EQ_INT(mq_ctx_set_threads(ctx, 3), MQ_OK);
    CHECK_EQ_INT(mq_ctx_threads(ctx), 3);
    CHECK_EQ_INT(mq_ctx_set_isa(ctx, MQ_ISA_SCALAR), MQ_OK);
    CHECK_EQ_INT(mq_ctx_isa(ctx), MQ_ISA_SCALAR);
    CHECK(mq_isa_supported() >= MQ_ISA_SCALAR);
    mq_ctx_free(ctx);
    mq_ctx_free(NULL);
}

/* A context's level under MQ_ISA=value (NULL: unset); the caller's MQ_ISA is restored. */
static mq_isa isa_under_env(const char *value) {
    const char *was = getenv("MQ_ISA");
    char saved[64];
    snprintf(saved, sizeof saved, "%s", was ? was : "");
    if (value) setenv("MQ_ISA", value, 1);
    else unsetenv("MQ_ISA");
    mq_ctx *ctx = mq_ctx_create();
    mq_isa isa = ctx ? mq_ctx_isa(ctx) : (mq_isa)-1;
    mq_ctx_free(ctx);
    if (was) setenv("MQ_ISA", saved, 1);
    else unsetenv("MQ_ISA");
    return isa;
}

/* Each architecture has its own levels; another's are refused and ignored as a cap. */
TEST(isa_levels_per_architecture) {
    mq_ctx *ctx = mq_ctx_create();
    mq_isa best = mq_isa_supported();
    const char *names[] = {"scalar", "avx2", "avx512", "neon", "dotprod"};
    for (int l = 0; l <= (int)MQ_ISA_DOTPROD; l++) CHECK_EQ_STR(mq_isa_name((mq_isa)l), names[l]);
    CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)((int)MQ_ISA_DOTPROD + 1)), MQ_ERR_INVALID);
    CHECK_EQ_INT(isa_under_env(NULL), best);
    CHECK_EQ_INT(isa_under_env("scalar"), MQ_ISA_SCALAR);
    CHECK_EQ_INT(isa_under_env("sse9"), best);
#if defined(__aarch64__)
    CHECK(best == MQ_ISA_NEON || best == MQ_ISA_DOTPROD);
    CHECK_EQ_INT(mq_ctx_set_isa(ctx, MQ_ISA_AVX2), MQ_ERR_UNSUPPORTED);
    CHECK_EQ_INT(mq_ctx_set_isa(ctx, MQ_ISA_AVX512), MQ_ERR_UNSUPPORTED);
    CHECK_EQ_INT(mq_ctx_set_isa(ctx, MQ_ISA_NEON), MQ_OK);
    CHECK_EQ_INT(isa_under_env("neon"), MQ_ISA_NEON);
    CHECK_EQ_INT(isa_under_env("avx2"), best);
    CHECK_EQ_INT(isa_under_env("dotprod"), best);
    CHECK_EQ_INT(test_next_isa(MQ_ISA_SCALAR), MQ_ISA_NEON);
#else
    CHECK(best <= MQ_ISA_AVX512);
    CHECK_EQ_INT(mq_ctx_set_isa(ctx, MQ_ISA_NEON), MQ_ERR_UNSUPPORTED);
    CHECK_EQ_INT(mq_ctx_set_isa(ctx, MQ_ISA_DOTPROD), MQ_ERR_UNSUPPORTED);
    CHECK_EQ_INT(isa_under_env("neon"), best);
    CHECK_EQ_INT(isa_under_env("dotprod"), best);
#endif
    if (getenv("MQ_TEST_VERBOSE")) printf("# best level %s\n", mq_isa_name(best));
    mq_ctx_free(ctx);
}

TEST(dtype_names) {
    for (int d = 1; d < MQ_DTYPE_COUNT; d++) {
        mq_dtype back = MQ_DTYPE_INVALID;
        CHECK(mq_dtype_from_name(mq_dtype_name((mq_dtype)d), &back) && back == (mq_dtype)d);
        CHECK(mq_dtype_size((mq_dtype)d) > 0);
    }
    mq_dtype none = MQ_BOOL;
    CHECK(!mq_dtype_from_name("f32", &none) && none == MQ_BOOL);
    CHECK_EQ_INT(mq_dtype_size(MQ_BF16), 2);
    CHECK_EQ_INT(mq_dtype_size(MQ_F64), 8);
}


TEST(half_scalar) {
    CHECK_EQ_INT(mq_f32_to_f16(1.0f), 0x3c00);
    CHECK_EQ_INT(mq_f32_to_f16(-2.0f), 0xc000);
    CHECK_EQ_INT(mq_f32_to_f16(65504.0f), 0x7bff);
    CHECK_EQ_INT(mq_f32_to_f16(65519.0f), 0x7bff);
    CHECK_EQ_INT(mq_f32_to_f16(65520.0f), 0x7c00); /* tie rounds to even: Inf */
    CHECK_EQ_INT(mq_f32_to_f16(INFINITY), 0x7c00);
    CHECK_EQ_INT(mq_f32_to_f16(0x1p-24f), 0x0001);  /* smallest subnormal */
    CHECK_EQ_INT(mq_f32_to_f16(0x1p-25f), 0x0000);  /* tie to even: 0 */
    CHECK_EQ_INT(mq_f32_to_f16(0x1.8p-25f), 0x0001);
    CHECK_EQ_INT(mq_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie: even */
    CHECK_EQ_INT(mq_f32_to_f16(1.0f + 0x1.8p-11f), 0x3c01);
    CHECK((mq_f32_to_f16(NAN) & 0x7e00) == 0x7e00);
    /* every half round-trips exactly */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = mq_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        if (mq_f32_to_f16(f) != h) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(bf16_scalar) {
    CHECK_EQ_INT(mq_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(mq_f32_to_bf16(test_bits_f32(0x3f808000u)), 0x3f80); /* tie to even (down) */
    CHECK_EQ_INT(mq_f32_to_bf16(test_bits_f32(0x3f818000u)), 0x3f82); /* tie to even (up) */
    CHECK_EQ_INT(mq_f32_to_bf16(test_bits_f32(0x3f808001u)), 0x3f81);
    CHECK_EQ_INT(mq_f32_to_bf16(test_bits_f32(0x7f7fffffu)), 0x7f80); /* max float rounds to Inf */
    CHECK_EQ_INT(mq_f32_to_bf16(-INFINITY), 0xff80);
    CHECK(isnan(mq_bf16_to_f32(mq_f32_to_bf16(NAN))));
    CHECK(isnan(mq_bf16_to_f32(mq_f32_to_bf16(test_bits_f32(0x7f800001u))))); /* NaN must not become Inf */
    CHECK_EQ_INT(test_f32_bits(mq_bf16_to_f32(0x0001)), 0x00010000u);
}

TEST(convert_f64_single_rounding) {
    mq_ctx *ctx = mq_ctx_create();
    /* 1 + 2^-11 + 2^-40 is just above the f16 tie: correct rounding goes up. Through a
     * plain f32 it would round to the tie first and then to even (down). */
    double d = 1.0 + 0x1p-11 + 0x1p-40;
    uint16_t h = 0;
    CHECK_EQ_INT(mq_convert(ctx, MQ_F16, &h, MQ_F64, &d, 1), MQ_OK);
    CHECK_EQ_INT(h, 0x3c01);
    CHECK_EQ_INT(mq_convert(ctx, MQ_I8, &h, MQ_F64, &d, 1), MQ_ERR_INVALID);
    mq_ctx_free(ctx);
}

/* Internal thread pool (the unit test sees src/ too). */
#include "common/internal.h"

typedef struct sum_arg {
    const int *v;
    unsigned long long *partial; /* one slot per chunk */
    int64_t grain;
    int fail_at;        /* chunk index that fails, or -1 */
} sum_arg;

static mq_status sum_chunk(void *varg, int64_t b, int64_t e, int tid) {
    sum_arg *a = (sum_arg *)varg;
    (void)tid;
    unsigned long long s = 0;
    for (int64_t i = b; i < e; i++) s = s * 31 + a->v[i]; /* order-sensitive within a chunk */
    a->partial[b / a->grain] = s;
    return (b / a->grain) == a->fail_at ? MQ_ERR_QUANT : MQ_OK;
}

TEST(parallel_for_is_thread_count_independent) {
    enum { N = 100003, G = 1000 };
    static int v[N];
    static unsigned long long p1[N / G + 1], pk[N / G + 1];
    for (int i = 0; i < N; i++) v[i] = (i * 7919) % 1013;
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_threads(ctx, 1);
    sum_arg a = {v, p1, G, -1};
    CHECK_EQ_INT(mq__parallel_for(ctx, N, G, sum_chunk, &a), MQ_OK);
    for (int t = 2; t <= 5; t++) {
        mq_ctx_set_threads(ctx, t);
        memset(pk, 0, sizeof pk);
        sum_arg b = {v, pk, G, -1};
        for (int rep = 0; rep < 20; rep++)
            CHECK_EQ_INT(mq__parallel_for(ctx, N, G, sum_chunk, &b), MQ_OK);
        CHECK(memcmp(p1, pk, sizeof pk) == 0);
    }
    mq_ctx_free(ctx);
}

TEST(parallel_for_reports_failure) {
    enum { N = 50000, G = 100 };
    static int v[N];
    static unsigned long long p[N / G + 1];
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_threads(ctx, 3);
    sum_arg a = {v, p, G, 7};
    CHECK_EQ_INT(mq__parallel_for(ctx, N, G, sum_chunk, &a), MQ_ERR_QUANT);
    a.fail_at = -1;
    CHECK_EQ_INT(mq__parallel_for(ctx, N, G, sum_chunk, &a), MQ_OK); /* pool still usable */
    CHECK_EQ_INT(mq__parallel_for(ctx, 0, G, sum_chunk, &a), MQ_OK);
    mq_ctx_free(ctx);
}

/* Every chunk from `from` on fails, each with its own status and message; chunk `from`
 * is the slowest to get there. */
typedef struct many_fail {
    mq_ctx *ctx;
    int64_t grain, from;
    volatile unsigned long long sink;
} many_fail;

static mq_status fail_many(void *varg, int64_t b, int64_t e, int tid) {
    many_fail *m = (many_fail *)varg;
    (void)e;
    (void)tid;
    int64_t c = b / m->grain;
    if (c < m->from) return MQ_OK;
    if (c == m->from)
        for (int i = 0; i < 200000; i++) m->sink += (unsigned long long)i * 3;
    if (c % 3 == 2) return MQ_ERR_NOMEM; /* a failure without a message of its own */
    return mq__fail(m->ctx, c % 3 ? MQ_ERR_FORMAT : MQ_ERR_QUANT, "chunk %lld failed",
                    (long long)c);
}

TEST(parallel_failure_is_deterministic) {
    mq_ctx *ctx = mq_ctx_create();
    for (int t = 1; t <= 4; t++) {
        mq_ctx_set_threads(ctx, t);
        for (int rep = 0; rep < 10; rep++) {
            many_fail m = {ctx, 10, 30, 0};
            CHECK_EQ_INT(mq__parallel_for(ctx, 2000, 10, fail_many, &m), MQ_ERR_QUANT);
            CHECK_EQ_INT(mq_ctx_status(ctx), MQ_ERR_QUANT);
            CHECK_EQ_STR(mq_ctx_message(ctx), "chunk 30 failed");
            m.from = 31;
            CHECK_EQ_INT(mq__parallel_for(ctx, 2000, 10, fail_many, &m), MQ_ERR_FORMAT);
            CHECK_EQ_STR(mq_ctx_message(ctx), "chunk 31 failed");
            m.from = 32; /* the lowest failure has no message: none is shown, not another's */
            CHECK_EQ_INT(mq__parallel_for(ctx, 2000, 10, fail_many, &m), MQ_ERR_NOMEM);
            CHECK_EQ_INT(mq_ctx_status(ctx), MQ_ERR_NOMEM);
            CHECK(strstr(mq_ctx_message(ctx), "chunk") == NULL);
        }
    }
    mq_ctx_free(ctx);
}

TEST(online_cpus_counted_once) {
    mq_ctx *ctx = mq_ctx_create();
    CHECK_EQ_INT(ctx->online_cpus, mq__online_cpus());
    CHECK_EQ_INT(mq_ctx_threads(ctx), ctx->online_cpus); /* threads 0: the cached count */
    ctx->online_cpus = 3; /* stands in for a count that changed since creation */
    CHECK_EQ_INT(mq__thread_count(ctx), 3);
    CHECK_EQ_INT(mq_ctx_set_threads(ctx, 2), MQ_OK);
    CHECK_EQ_INT(mq__thread_count(ctx), 2);
    mq_ctx_free(ctx);
}

TEST(allocation_failure_is_reported) {
    mq_allocator al = {test_failing_alloc, test_plain_free, NULL};
    test_allocs_left = 0;
    CHECK(mq_ctx_create_with_allocator(&al) == NULL);
    test_allocs_left = 2; /* the context and its mutex */
    mq_ctx *ctx = mq_ctx_create_with_allocator(&al);
    CHECK(ctx != NULL);
    if (!ctx) return;
    mq_ctx_set_threads(ctx, 2);
    int v[4000];
    unsigned long long p[40];
    memset(v, 0, sizeof v);
    sum_arg a = {v, p, 100, -1};
    CHECK_EQ_INT(mq__parallel_for(ctx, 4000, 100, sum_chunk, &a), MQ_ERR_NOMEM);
    CHECK_MSG_HAS(ctx, "out of memory");
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(parallel_for_is_thread_count_independent);
    RUN(parallel_for_reports_failure);
    RUN(parallel_failure_is_deterministic);
    RUN(allocation_failure_is_reported);
    RUN(online_cpus_counted_once);
    RUN(status_strings);
    RUN(ctx_settings);
    RUN(isa_levels_per_architecture);
    RUN(dtype_names);
    RUN(half_scalar);
    RUN(bf16_scalar);
    RUN(convert_f64_single_rounding);
    return test_summary();
}
