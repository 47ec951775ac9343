/* CRC-32 on ARM64: carry-less-multiply folding with PMULL (four 128-bit blocks in flight,
 * then one; derivation in crc32.c), or the CRC32X instruction (8 bytes at a time) on cores
 * that have it but not PMULL. Both are compiled for their extension and used only when the
 * kernel reports it (src/common/cpu.c). */
#include "io/crc32.h"

#include <arm_acle.h>
#include <arm_neon.h>

#define PMULL __attribute__((target("+crypto")))
#define CRC   __attribute__((target("+crc")))

static inline PMULL uint64x2_t fold(uint64x2_t x, uint64x2_t k, uint64x2_t next) {
    poly128_t lo = vmull_p64((poly64_t)vgetq_lane_u64(x, 0), (poly64_t)vgetq_lane_u64(k, 0));
    poly128_t hi = vmull_high_p64(vreinterpretq_p64_u64(x), vreinterpretq_p64_u64(k));
    return veorq_u64(veorq_u64(vreinterpretq_u64_p128(lo), vreinterpretq_u64_p128(hi)), next);
}

static inline uint64x2_t ld(const uint8_t *p) {
    return vreinterpretq_u64_u8(vld1q_u8(p));
}

static PMULL uint32_t update_pmull(const mq_crc32 *c, uint32_t state, const uint8_t *p,
                                   size_t n) {
    if (n < 64) return mq__crc32_raw(c, state, p, n);
    const uint64x2_t k512 = vld1q_u64(c->fold[MQ__CRC32_FOLD_512]);
    const uint64x2_t k128 = vld1q_u64(c->fold[MQ__CRC32_FOLD_128]);
    uint64x2_t a0 = veorq_u64(ld(p), vsetq_lane_u64(state, vdupq_n_u64(0), 0)), a1 = ld(p + 16),
               a2 = ld(p + 32), a3 = ld(p + 48);
    p += 64;
    n -= 64;
    for (; n >= 64; p += 64, n -= 64) {
        a0 = fold(a0, k512, ld(p));
        a1 = fold(a1, k512, ld(p + 16));
        a2 = fold(a2, k512, ld(p + 32));
        a3 = fold(a3, k512, ld(p + 48));
    }
    uint64x2_t x = fold(fold(fold(a0, k128, a1), k128, a2), k128, a3);
    for (; n >= 16; p += 16, n -= 16) x = fold(x, k128, ld(p));
    uint8_t last[16];
    vst1q_u8(last, vreinterpretq_u8_u64(x));
    return mq__crc32_raw(c, mq__crc32_raw(c, 0, last, 16), p, n);
}

static CRC uint32_t update_crc32(const mq_crc32 *c, uint32_t state, const uint8_t *p, size_t n) {
    (void)c;
    for (; n >= 8; p += 8, n -= 8) state = __crc32d(state, mq__load_le64(p));
    for (; n; p++, n--) state = __crc32b(state, *p);
    return state;
}

const mq__crc32_kernel *mq__crc32_kernel_pmull(void) {
    static const mq__crc32_kernel k = {update_pmull};
    return &k;
}

const mq__crc32_kernel *mq__crc32_kernel_crc32(void) {
    static const mq__crc32_kernel k = {update_crc32};
    return &k;
}
