/* CRC-32 by carry-less-multiply folding with 512-bit VPCLMULQDQ: sixteen 128-bit blocks in
 * flight (256 bytes a step), then four, then one; slice-by-8 finishes (derivation in
 * crc32.c). Buffers under 256 bytes take the 128-bit path. */
#include "io/crc32.h"

#include <immintrin.h>

#define CLMUL __attribute__((target("pclmul,vpclmulqdq")))

static inline CLMUL __m512i fold4(__m512i x, __m512i k, __m512i next) {
    __m512i lo = _mm512_clmulepi64_epi128(x, k, 0x00), hi = _mm512_clmulepi64_epi128(x, k, 0x11);
    return _mm512_ternarylogic_epi64(lo, hi, next, 0x96); /* lo ^ hi ^ next */
}

static inline CLMUL __m128i fold(__m128i x, __m128i k, __m128i next) {
    __m128i lo = _mm_clmulepi64_si128(x, k, 0x00), hi = _mm_clmulepi64_si128(x, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(lo, hi), next);
}

static inline __m512i ld4(const uint8_t *p) {
    return _mm512_loadu_si512((const void *)p);
}

static inline __m512i pair4(const mq_crc32 *c, int which) {
    return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)c->fold[which]));
}

static CLMUL uint32_t update(const mq_crc32 *c, uint32_t state, const uint8_t *p, size_t n) {
    if (n < 256) return mq__crc32_kernel_avx2()->update(c, state, p, n);
    const __m512i k2048 = pair4(c, MQ__CRC32_FOLD_2048), k512 = pair4(c, MQ__CRC32_FOLD_512);
    __m512i a0 = _mm512_xor_si512(ld4(p), _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)state))),
            a1 = ld4(p + 64), a2 = ld4(p + 128), a3 = ld4(p + 192);
    p += 256;
    n -= 256;
    for (; n >= 256; p += 256, n -= 256) {
        a0 = fold4(a0, k2048, ld4(p));
        a1 = fold4(a1, k2048, ld4(p + 64));
        a2 = fold4(a2, k2048, ld4(p + 128));
        a3 = fold4(a3, k2048, ld4(p + 192));
    }
    __m512i z = fold4(fold4(fold4(a0, k512, a1), k512, a2), k512, a3);
    for (; n >= 64; p += 64, n -= 64) z = fold4(z, k512, ld4(p));
    /* the four lanes, each 128 bits after the previous one */
    const __m128i k128 = _mm_loadu_si128((const __m128i *)(const void *)c->fold[MQ__CRC32_FOLD_128]);
    __m128i x = _mm512_castsi512_si128(z);
    x = fold(x, k128, _mm512_extracti32x4_epi32(z, 1));
    x = fold(x, k128, _mm512_extracti32x4_epi32(z, 2));
    x = fold(x, k128, _mm512_extracti32x4_epi32(z, 3));
    for (; n >= 16; p += 16, n -= 16) x = fold(x, k128, _mm_loadu_si128((const __m128i *)(const void *)p));
    uint8_t last[16];
    _mm_storeu_si128((__m128i *)(void *)last, x);
    return mq__crc32_raw(c, mq__crc32_raw(c, 0, last, 16), p, n);
}

const mq__crc32_kernel *mq__crc32_kernel_avx512(void) {
    static const mq__crc32_kernel k = {update};
    return &k;
}
