/* CRC-32 of zip records: slice-by-8 reference, combining, and the pick of a faster path.
 *
 * Folding (used by the carry-less-multiply kernels). In the reflected bit order the CRC
 * uses, a 128-bit block X loaded little-endian holds the message polynomial with bit k the
 * coefficient of x^(127-k): X = L x^64 + H, L its low and H its high 64-bit half. The CRC
 * is linear in the message modulo P, so X followed by d more bits is equivalent to
 * X x^d = L x^(d+64) + H x^d, which is congruent to L (x^(d+64) mod P) + H (x^d mod P): a
 * value of fewer than 128 bits that is XORed into the block d bits later. A carry-less
 * product of two reflected 64-bit values is the reflected 128-bit value of their product
 * times x, so the constants are x^(d+63) and x^(d-1) modulo P. A 32-bit residue r (bit i is
 * the coefficient of x^(31-i)) shifted left by 1 is, as a reflected 64-bit value, r x^31:
 * hence constant(e) = residue(x^(e-31)) << 1 (for d = 128 this gives 0x1751997d0 and
 * 0xccaa009e, the published pair). The folded block at the end is itself a message that,
 * with a zero register, has the CRC of everything folded into it; slice-by-8 finishes it
 * and the bytes after it. The register enters by XOR into the first 4 bytes. */
#include "io/crc32.h"

/* Product of two polynomials modulo the CRC polynomial, in the reflected bit order the CRC
 * uses (bit 31 is x^0). */
static uint32_t mulmod(uint32_t a, uint32_t b) {
    uint32_t prod = 0;
    for (uint32_t bit = 1u << 31; bit; bit >>= 1) {
        if (a & bit) prod ^= b;
        b = (b >> 1) ^ (0xEDB88320u & (0u - (b & 1))); /* b *= x */
    }
    return prod;
}

/* x^n modulo the polynomial: the product of x^(2^k) over the set bits of n. */
static uint32_t xpow(const mq_crc32 *c, uint64_t n) {
    uint32_t r = 1u << 31; /* x^0 */
    for (int k = 0; n && k < 64; k++, n >>= 1)
        if (n & 1) r = mulmod(r, c->pow[k]);
    return r;
}

static void fold_pair(mq_crc32 *c, int which, uint64_t d) {
    c->fold[which][0] = (uint64_t)xpow(c, d + 63 - 31) << 1;
    c->fold[which][1] = (uint64_t)xpow(c, d - 1 - 31) << 1;
}

uint32_t mq__crc32_raw(const mq_crc32 *c, uint32_t crc, const uint8_t *p, size_t n) {
    while (n >= 8) {
        uint32_t lo = mq__load_le32(p) ^ crc, hi = mq__load_le32(p + 4);
        crc = c->t[7][lo & 0xFF] ^ c->t[6][(lo >> 8) & 0xFF] ^ c->t[5][(lo >> 16) & 0xFF] ^
              c->t[4][lo >> 24] ^ c->t[3][hi & 0xFF] ^ c->t[2][(hi >> 8) & 0xFF] ^
              c->t[1][(hi >> 16) & 0xFF] ^ c->t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = (crc >> 8) ^ c->t[0][(crc ^ *p++) & 0xFF];
    return crc;
}

static const mq__crc32_kernel *pick(const mq_ctx *ctx) {
    static const mq__crc32_kernel ref = {mq__crc32_raw};
    const mq_cpu *cpu = &ctx->cpu;
    /* the level gates plus the multiply each kernel needs */
    const mq__crc32_kernel *arm = NULL;
#if defined(__aarch64__)
    arm = cpu->pmull ? mq__crc32_kernel_pmull() : cpu->crc32 ? mq__crc32_kernel_crc32() : NULL;
#endif
    const void *by_level[] = {
        &ref, cpu->pclmul ? MQ__X86_ONLY(mq__crc32_kernel_avx2()) : NULL,
        cpu->pclmul && cpu->vpclmulqdq ? MQ__X86_ONLY(mq__crc32_kernel_avx512()) : NULL, arm,
        NULL};
    return (const mq__crc32_kernel *)mq__isa_pick(ctx, by_level, 5);
}

void mq__crc32_init(mq_crc32 *c, const mq_ctx *ctx) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t r = i;
        for (int k = 0; k < 8; k++) r = (r >> 1) ^ (0xEDB88320u & (0u - (r & 1)));
        c->t[0][i] = r;
    }
    c->pow[0] = 1u << 30; /* x^1 */
    for (int k = 1; k < 64; k++) c->pow[k] = mulmod(c->pow[k - 1], c->pow[k - 1]);
    for (int s = 1; s < 8; s++)
        for (int i = 0; i < 256; i++)
            c->t[s][i] = (c->t[s - 1][i] >> 8) ^ c->t[0][c->t[s - 1][i] & 0xFF];
    fold_pair(c, MQ__CRC32_FOLD_128, 128);
    fold_pair(c, MQ__CRC32_FOLD_512, 512);
    fold_pair(c, MQ__CRC32_FOLD_2048, 2048);
    c->update = ctx ? pick(ctx)->update : mq__crc32_raw;
}

uint32_t mq__crc32_combine(const mq_crc32 *c, uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
    /* CRC(A B) = CRC(A) * x^(8 len_b) + CRC(B) for the pre- and post-inverted CRC */
    return mulmod(xpow(c, len_b << 3), crc_a) ^ crc_b;
}

uint32_t mq__crc32_update(const mq_crc32 *c, uint32_t crc, const void *data, size_t n) {
    return ~c->update(c, ~crc, (const uint8_t *)data, n);
}
