/* Helpers shared by the bench_*.c programs: a monotonic clock, buffers touched before any
 * timing (first touch of fresh pages is far slower than reuse), the memcpy baseline the
 * programs report ratios against, and a fixed-seed xorshift generator. */
#ifndef MQ_BENCH_UTIL_H
#define MQ_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* malloc that exits on failure and touches every page outside the timings. */
static inline void *bench_xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    memset(p, 1, n);
    return p;
}

/* Best of `reps` memcpy runs of n bytes, in bytes copied per second. */
static inline double bench_memcpy_bw(void *dst, const void *src, size_t n, int reps) {
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t = bench_now();
        memcpy(dst, src, n);
        t = bench_now() - t;
        if (t > 0 && (double)n / t > best) best = (double)n / t;
    }
    return best;
}

/* One xorshift64 step; returns the new state. */
static inline uint64_t bench_xorshift64(uint64_t *state) {
    uint64_t s = *state;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return *state = s;
}

#endif
