/* Shared by the vector Linear kernels (linear_avx2.c, linear_avx512.c): forced inlining and
 * full unrolling, so a tile's accumulators live in registers, and one instantiation per tile
 * shape (MR rows x NB channel blocks) as a plain function for the dispatch tables. */
#ifndef MQ_KERNELS_TILE_H
#define MQ_KERNELS_TILE_H

#include "kernels/kernels.h"

#define INLINE static inline __attribute__((always_inline))
/* Loops over the tile's rows and blocks must unroll fully so accumulators live in registers. */
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 8")
#endif

typedef void (*tile_body)(const mq__lin *, const mq__act *, int64_t, int64_t, float *, int64_t);

/* name_MRxNB: fn with the tile shape as constants. */
#define INST(name, fn, MR, NB)                                                                  \
    static void name##_##MR##x##NB(const mq__lin *L, const mq__act *A, int64_t m, int64_t b,  \
                                   float *y, int64_t ldy) {                                     \
        fn(L, A, m, b, y, ldy, MR, NB);                                                         \
    }

#endif
