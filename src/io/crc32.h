/* CRC-32 as zip records carry it (IEEE polynomial 0x04C11DB7, reflected, pre- and
 * post-inverted). Slice-by-8 is the reference; carry-less-multiply folding paths (x86
 * PCLMULQDQ / VPCLMULQDQ, ARM64 PMULL) and the ARM64 CRC32 instructions give the same
 * values at memory speed, picked at run time by the context's ISA level. */
#ifndef MQ_CRC32_H
#define MQ_CRC32_H

#include "common/internal.h"

typedef struct mq_crc32 mq_crc32;
/* Continues a raw CRC (the register: no inversion) over n bytes. */
typedef uint32_t (*mq__crc32_fn)(const mq_crc32 *c, uint32_t state, const uint8_t *p, size_t n);
typedef struct mq__crc32_kernel {
    mq__crc32_fn update;
} mq__crc32_kernel;

/* Folding constants: for a fold over a distance of d bits, the pair (x^(d+63), x^(d-1))
 * modulo the polynomial, as the kernels multiply with them (derivation in crc32.c). */
enum { MQ__CRC32_FOLD_128, MQ__CRC32_FOLD_512, MQ__CRC32_FOLD_2048, MQ__CRC32_NFOLD };

struct mq_crc32 {
    uint32_t t[8][256];
    uint32_t pow[64]; /* x^(2^k) modulo the CRC polynomial, for combining */
    uint64_t fold[MQ__CRC32_NFOLD][2];
    mq__crc32_fn update; /* the picked path */
};

/* Builds the tables once per user. ctx NULL: the slice-by-8 reference only; otherwise the
 * fastest path the context's ISA level and the CPU allow. */
MQ_HIDDEN void mq__crc32_init(mq_crc32 *c, const mq_ctx *ctx);
/* Continues a CRC: start with crc = 0. */
MQ_HIDDEN uint32_t mq__crc32_update(const mq_crc32 *c, uint32_t crc, const void *data, size_t n);
/* CRC of A followed by B from crc_a = CRC(A), crc_b = CRC(B) and B's length: lets pieces be
 * checksummed in parallel with a result identical to one serial pass. */
MQ_HIDDEN uint32_t mq__crc32_combine(const mq_crc32 *c, uint32_t crc_a, uint32_t crc_b,
                                     uint64_t len_b);

/* Slice-by-8 on the raw register: the reference, and the kernels' head and tail. */
MQ_HIDDEN uint32_t mq__crc32_raw(const mq_crc32 *c, uint32_t state, const uint8_t *p, size_t n);
/* Per-ISA kernels (NULL where the file is not built). */
MQ_HIDDEN const mq__crc32_kernel *mq__crc32_kernel_avx2(void);   /* PCLMULQDQ, 128-bit */
MQ_HIDDEN const mq__crc32_kernel *mq__crc32_kernel_avx512(void); /* VPCLMULQDQ, 512-bit */
MQ_HIDDEN const mq__crc32_kernel *mq__crc32_kernel_pmull(void);  /* ARM64 PMULL */
MQ_HIDDEN const mq__crc32_kernel *mq__crc32_kernel_crc32(void);  /* ARM64 CRC32X */

#endif
