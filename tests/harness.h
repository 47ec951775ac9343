/* Minimal unit-test harness. Each test binary prints one line per test case:
 *   ok <name>        or        not ok <name>: <file>:<line>: <what failed>
 * and exits nonzero if any case failed. tests/run_tests.sh counts the lines.
 *
 *   TEST(name) { CHECK(x == 1); CHECK_EQ_INT(a, b); ... }
 *   int main(void) { RUN(name); ...; return test_summary(); }
 */
#ifndef MQ_TEST_HARNESS_H
#define MQ_TEST_HARNESS_H

#include "monoquant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int th_failed_cases, th_passed_cases;
static int th_case_failed;
static char th_first_failure[512];

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                                  \
    do {                                                                           \
        th_case_failed = 0;                                                        \
        th_first_failure[0] = 0;                                                   \
        test_##name();                                                             \
        if (th_case_failed) {                                                      \
            th_failed_cases++;                                                     \
            printf("not ok %s: %s\n", #name, th_first_failure);                    \
        } else {                                                                   \
            th_passed_cases++;                                                     \
            printf("ok %s\n", #name);                                              \
        }                                                                          \
        fflush(stdout);                                                            \
    } while (0)

#define TH_FAIL(...)                                                               \
    do {                                                                           \
        if (!th_case_failed) {                                                     \
            int th_n = snprintf(th_first_failure, sizeof th_first_failure,         \
                                "%s:%d: ", __FILE__, __LINE__);                    \
            snprintf(th_first_failure + th_n, sizeof th_first_failure - (size_t)th_n, \
                     __VA_ARGS__);                                                 \
        }                                                                          \
        th_case_failed = 1;                                                        \
    } while (0)

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) TH_FAIL("CHECK(%s)", #cond);                                  \
    } while (0)

#define CHECK_MSG(cond, ...)                                                       \
    do {                                                                           \
        if (!(cond)) TH_FAIL(__VA_ARGS__);                                         \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                         \
    do {                                                                           \
        long long th_a = (long long)(a), th_b = (long long)(b);                    \
        if (th_a != th_b) TH_FAIL("%s == %s (%lld vs %lld)", #a, #b, th_a, th_b);  \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                         \
    do {                                                                           \
        const char *th_a = (a), *th_b = (b);                                       \
        if (!th_a || !th_b || strcmp(th_a, th_b))                                  \
            TH_FAIL("%s == %s (\"%s\" vs \"%s\")", #a, #b, th_a ? th_a : "(null)",  \
                    th_b ? th_b : "(null)");                                       \
    } while (0)

/* The context's message contains `needle`. */
#define CHECK_MSG_HAS(ctx, needle)                                                 \
    do {                                                                           \
        const char *th_m = mq_ctx_message(ctx);                                    \
        if (!strstr(th_m, (needle)))                                               \
            TH_FAIL("message \"%s\" lacks \"%s\"", th_m, (needle));                \
    } while (0)

static inline int test_summary(void) { return th_failed_cases ? 1 : 0; }

/* Directory for scratch files: $TEST_TMPDIR or /tmp. */
static inline const char *test_tmpdir(void) {
    const char *d = getenv("TEST_TMPDIR");
    return d && *d ? d : "/tmp";
}

/* 1 when both files exist and hold the same bytes. */
static inline int test_same_files(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* Fixtures folder: $FIXTURES or ../shared/fixtures. */
static inline const char *test_fixtures(void) {
    const char *d = getenv("FIXTURES");
    return d && *d ? d : "../shared/fixtures";
}

/* One step of xorshift64 (deterministic test data); returns the new state. */
static inline uint64_t test_xorshift64(uint64_t *state) {
    uint64_t s = *state;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return *state = s;
}

/* Allocator callbacks for out-of-memory paths: allocations succeed while test_allocs_left
 * stays positive, then fail. Use as {test_failing_alloc, test_plain_free, NULL}. */
static long test_allocs_left;
static inline void *test_failing_alloc(void *ud, size_t n) {
    (void)ud;
    if (test_allocs_left-- <= 0) return NULL;
    return malloc(n);
}
static inline void test_plain_free(void *ud, void *p) {
    (void)ud;
    free(p);
}

/* Instruction-set levels this machine runs (those mq_ctx_set_isa accepts; each architecture
 * has its own), for testing every path:
 *   for (int isa = 0; isa >= 0; isa = test_next_isa(isa))                  every level
 *   for (int isa = test_next_isa(0); isa >= 0; isa = test_next_isa(isa))  vector levels
 * Returns the next such level above `isa`, or -1. */
static inline int test_next_isa(int isa) {
    mq_ctx *ctx = mq_ctx_create();
    int next = -1;
    for (int l = isa + 1; ctx && next < 0 && l <= (int)MQ_ISA_DOTPROD; l++)
        if (mq_ctx_set_isa(ctx, (mq_isa)l) == MQ_OK) next = l;
    mq_ctx_free(ctx);
    return next;
}

/* Bit patterns of floats, without aliasing games. */
static inline uint32_t test_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float test_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#endif
