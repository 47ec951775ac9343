/* Float conversion throughput on every instruction-set path, as a ratio to memcpy of the same
 * bytes (read + written) measured in the same run. Buffers are touched before timing. */
#include "bench_util.h"
#include "monoquant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef N
#define N (8u << 20) /* elements: 32 MiB of f32, larger than the last-level cache */
#endif
#define REPS 7

int main(void) {
    float *f = aligned_alloc(64, (size_t)N * 4), *f2 = aligned_alloc(64, (size_t)N * 4);
    uint16_t *h = aligned_alloc(64, (size_t)N * 2);
    if (!f || !f2 || !h) return 1;
    uint32_t s = 1;
    for (size_t i = 0; i < N; i++) {
        s = s * 1664525u + 1013904223u;
        f[i] = (float)((int32_t)s) * 0x1p-24f;
    }
    memset(f2, 0, (size_t)N * 4);
    memset(h, 0, (size_t)N * 2);
    /* memcpy of the bytes each conversion moves: 4N -> 2N is about a 3N-byte copy */
    double copy_gbs = bench_memcpy_bw(f2, f, (size_t)N * 3 / 2 * 2, REPS) / 1e9;
    printf("memcpy baseline: %.2f GB/s (read+write %u MiB per pass)\n", copy_gbs, 3 * N * 2 >> 20);
    printf("%-8s %-12s %10s %10s %8s\n", "isa", "conversion", "Melem/s", "GB/s", "x memcpy");
    mq_ctx *ctx = mq_ctx_create();
    static const struct { mq_dtype dst, src; const char *name; } cv[] = {
        {MQ_F16, MQ_F32, "f32->f16"}, {MQ_F32, MQ_F16, "f16->f32"},
        {MQ_BF16, MQ_F32, "f32->bf16"}, {MQ_F32, MQ_BF16, "bf16->f32"}};
    for (int isa = 0; isa <= (int)mq_isa_supported(); isa++) {
        if (mq_ctx_set_isa(ctx, (mq_isa)isa) != MQ_OK) { /* another architecture's level */
            mq_ctx_clear_error(ctx);
            continue;
        }
        for (int c = 0; c < 4; c++) {
            void *dst = cv[c].dst == MQ_F32 ? (void *)f2 : (void *)h;
            const void *src = cv[c].src == MQ_F32 ? (const void *)f : (const void *)h;
            double best = 1e30;
            for (int r = 0; r < REPS; r++) {
                double t = bench_now();
                if (mq_convert(ctx, cv[c].dst, dst, cv[c].src, src, N) != MQ_OK) return 1;
                t = bench_now() - t;
                if (t < best) best = t;
            }
            double gbs = (double)N * 6 / best / 1e9;
            printf("%-8s %-12s %10.0f %10.2f %8.2f\n", mq_isa_name((mq_isa)isa), cv[c].name,
                   N / best / 1e6, gbs, gbs / copy_gbs);
        }
    }
    mq_ctx_free(ctx);
    free(f);
    free(f2);
    free(h);
    return 0;
}
