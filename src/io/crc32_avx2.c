/* CRC-32 by carry-less-multiply folding with 128-bit PCLMULQDQ: four blocks in flight
 * (64 bytes a step), then one; slice-by-8 finishes (derivation in crc32.c). */
#include "io/crc32.h"

#include <immintrin.h>

#define CLMUL __attribute__((target("pclmul")))

/* X moved d bits on (k: the pair for d) and added to the block there. */
static inline CLMUL __m128i fold(__m128i x, __m128i k, __m128i next) {
    __m128i lo = _mm_clmulepi64_si128(x, k, 0x00), hi = _mm_clmulepi64_si128(x, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

static inline __m128i ld(const uint8_t *p) {
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

static CLMUL uint32_t update(const mq_crc32 *c, uint32_t state, const uint8_t *p, size_t n) {
    if (n < 64) return mq__crc32_raw(c, state, p, n);
    const __m128i k512 = ld((const uint8_t *)c->fold[MQ__CRC32_FOLD_512]);
    const __m128i k128 = ld((const uint8_t *)c->fold[MQ__CRC32_FOLD_128]);
    __m128i a0 = _mm_xor_si128(ld(p), _mm_cvtsi32_si128((int)state)), a1 = ld(p + 16),
            a2 = ld(p + 32), a3 = ld(p + 48);
    p += 64;
    n -= 64;
    for (; n >= 64; p += 64, n -= 64) {
        a0 = fold(a0, k512, ld(p));
        a1 = fold(a1, k512, ld(p + 16));
        a2 = fold(a2, k512, ld(p + 32));
        a3 = fold(a3, k512, ld(p + 48));
    }
    __m128i x = fold(fold(fold(a0, k128, a1), k128, a2), k128, a3);
    for (; n >= 16; p += 16, n -= 16) x = fold(x, k128, ld(p));
    uint8_t last[16];
    _mm_storeu_si128((__m128i *)(void *)last, x);
    return mq__crc32_raw(c, mq__crc32_raw(c, 0, last, 16), p, n);
}

const mq__crc32_kernel *mq__crc32_kernel_avx2(void) {
    static const mq__crc32_kernel k = {update};
    return &k;
}
