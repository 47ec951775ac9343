/* The float lanes of the error figures (quant/error_stats.c): every ISA level's block loop
 * gives the scalar loop's bits, for F32, BF16 and F16 sources, any split of a part into
 * calls, and values that stress the order of operations (wide ranges, NaN, Inf, -0). */
#include "harness.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* n values of wide range, a few of them special when `special`. */
static void fill(float *a, float *b, size_t n, uint64_t seed, int special) {
    for (size_t i = 0; i < n; i++) {
        uint64_t r = next(&seed);
        float x = ldexpf((float)(r >> 40) / 16777216.0f - 0.5f, (int)(r % 40) - 20);
        a[i] = x;
        b[i] = x + ldexpf((float)((r >> 20) & 0xfffff) / 1048576.0f - 0.5f, (int)(r % 40) - 30);
        if (special && r % 97 == 0) b[i] = -a[i] * 0.0f; /* -0 or +0 differences */
        if (special && r % 89 == 0) b[i] = a[i];
    }
    if (special && n > 40) {
        a[7] = -0.0f;
        b[7] = 0.0f;
        a[33] = INFINITY;
        b[38] = NAN;
        a[39] = -NAN;
    }
}

/* The source `a` stored as dtype (bf16/f16: truncated/rounded copies of the f32 values). */
static void *as_dtype(mq_ctx *ctx, const float *a, size_t n, mq_dtype dt) {
    void *p = malloc(n * 4 + 4);
    if (!p) return NULL;
    if (dt == MQ_F32) memcpy(p, a, n * 4);
    else if (mq_convert(ctx, dt, p, MQ_F32, a, n) != MQ_OK) {
        free(p);
        return NULL;
    }
    return p;
}

/* Lanes of one part, summed in calls of the given lengths (cycled), at a context's level. */
static mq__err_lanes sum_in_calls(mq_ctx *ctx, mq_dtype dt, const void *a, const float *b,
                                  size_t n, const size_t *calls, size_t ncalls) {
    mq__err_lanes l;
    memset(&l, 0, sizeof l);
    size_t es = mq_dtype_size(dt);
    for (size_t i = 0, c = 0; i < n; c++) {
        size_t k = calls[c % ncalls];
        if (k > n - i) k = n - i;
        mq__err_lanes_add(ctx, &l, dt, (const uint8_t *)a + i * es, b + i, k);
        i += k;
    }
    return l;
}

static mq_ctx *at_level(int isa) {
    mq_ctx *ctx = mq_ctx_create();
    if (ctx && mq_ctx_set_isa(ctx, (mq_isa)isa) != MQ_OK) {
        mq_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

TEST(levels_match_scalar) {
    static const size_t lengths[] = {1, 15, 16, 17, 100, 4096, 4099, 16384};
    static const size_t calls[][3] = {{1u << 20, 0, 0}, {5, 16, 33}, {1, 1, 1}, {4096, 3, 0}};
    static const size_t ncalls[] = {1, 3, 3, 2};
    static const mq_dtype dts[] = {MQ_F32, MQ_BF16, MQ_F16};
    size_t nmax = 16384;
    float *a = (float *)malloc(nmax * 4), *b = (float *)malloc(nmax * 4);
    mq_ctx *ref = at_level(MQ_ISA_SCALAR);
    CHECK(a && b && ref);
    int levels = 0;
    for (int isa = test_next_isa(0); a && b && ref && isa >= 0; isa = test_next_isa(isa)) {
        mq_ctx *ctx = at_level(isa);
        CHECK(ctx != NULL);
        levels++;
        for (int special = 0; ctx && special < 2; special++)
            for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++)
                for (size_t d = 0; d < sizeof dts / sizeof *dts; d++) {
                    size_t n = lengths[li];
                    fill(a, b, n, 1234567 + n * 31 + d, special);
                    void *src = as_dtype(ref, a, n, dts[d]);
                    CHECK(src != NULL);
                    for (size_t c = 0; src && c < sizeof ncalls / sizeof *ncalls; c++) {
                        mq__err_lanes want = sum_in_calls(ref, dts[d], src, b, n, calls[c],
                                                          ncalls[c]);
                        mq__err_lanes got = sum_in_calls(ctx, dts[d], src, b, n, calls[c],
                                                         ncalls[c]);
                        CHECK_MSG(!memcmp(&want, &got, sizeof want),
                                  "isa %d, dtype %d, n %zu, calls %zu, special %d: lanes differ",
                                  isa, (int)dts[d], n, c, special);
                    }
                    free(src);
                }
        mq_ctx_free(ctx);
    }
    printf("# %d vector level(s) compared with the scalar lanes\n", levels);
    mq_ctx_free(ref);
    free(a);
    free(b);
}

/* The lanes are those of the definition: element i of a part in lane i % 16, each sum in
 * float in element order (checked on the scalar level, which the others match). */
TEST(lanes_definition) {
    enum { N = 1000 };
    float a[N], b[N];
    fill(a, b, N, 99, 0);
    mq_ctx *ctx = at_level(MQ_ISA_SCALAR);
    CHECK(ctx != NULL);
    size_t calls[] = {7, 64, 3};
    mq__err_lanes got = sum_in_calls(ctx, MQ_F32, a, b, N, calls, 3);
    mq__err_lanes want;
    memset(&want, 0, sizeof want);
    for (size_t i = 0; i < N; i++) {
        int k = (int)(i % MQ__ERR_LANES);
        float d = a[i] - b[i], ad = d < 0 ? -d : d;
        want.a2[k] += a[i] * a[i];
        want.b2[k] += b[i] * b[i];
        want.ab[k] += a[i] * b[i];
        want.d2[k] += d * d;
        want.mx[k] = ad > want.mx[k] ? ad : want.mx[k];
    }
    want.n = N;
    CHECK(!memcmp(&want, &got, sizeof want));
    mq_ctx_free(ctx);
}

int main(void) {
    RUN(levels_match_scalar);
    RUN(lanes_definition);
    return test_summary();
}
