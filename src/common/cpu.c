/* Run-time CPU feature detection. x86: CPUID for the instructions, XGETBV for the OS saving
 * the vector registers (a CPU that has AVX-512 under an OS that does not enable it must not use
 * it). ARM64: NEON is part of the base architecture; dot products are read from the kernel's
 * hardware capabilities (it reports what both the CPU and the kernel support). */
#include "common/internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

void mq__cpu_detect(mq_cpu *cpu, mq_isa *best) {
    unsigned a, b, c, d;
    *cpu = (mq_cpu){0};
    *best = MQ_ISA_SCALAR;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    bool fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    cpu->pclmul = (c >> 1) & 1;
    if (!osxsave || !avx) return;
    uint64_t xcr0 = xgetbv0();
    bool os_avx = (xcr0 & 0x6) == 0x6;             /* XMM and YMM state */
    bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0; /* opmask, ZMM_Hi256, Hi16_ZMM */
    if (!os_avx) return;
    unsigned max = __get_cpuid_max(0, 0);
    if (max < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    cpu->avx2 = (b >> 5) & 1;
    cpu->fma = fma;
    cpu->f16c = f16c;
    if (os_avx512) {
        cpu->avx512f = (b >> 16) & 1;
        cpu->avx512dq = (b >> 17) & 1;
        cpu->avx512bw = (b >> 30) & 1;
        cpu->avx512vl = (b >> 31) & 1;
        cpu->avx512vnni = (c >> 11) & 1;
        cpu->avx512vbmi2 = (c >> 6) & 1;
        cpu->vpclmulqdq = (c >> 10) & 1;
    }
    if (mq__cpu_level_ok(cpu, MQ_ISA_AVX2)) *best = MQ_ISA_AVX2;
    if (mq__cpu_level_ok(cpu, MQ_ISA_AVX512)) *best = MQ_ISA_AVX512;
}
#elif defined(__aarch64__)
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1ul << 20)
#endif
#ifndef HWCAP_PMULL
#define HWCAP_PMULL (1ul << 4)
#endif
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1ul << 7)
#endif
#endif

void mq__cpu_detect(mq_cpu *cpu, mq_isa *best) {
    *cpu = (mq_cpu){0};
    cpu->neon = true;
#if defined(__linux__)
    unsigned long hw = getauxval(AT_HWCAP);
    cpu->dotprod = (hw & HWCAP_ASIMDDP) != 0;
    cpu->pmull = (hw & HWCAP_PMULL) != 0;
    cpu->crc32 = (hw & HWCAP_CRC32) != 0;
#endif
    *best = MQ_ISA_NEON;
    if (mq__cpu_level_ok(cpu, MQ_ISA_DOTPROD)) *best = MQ_ISA_DOTPROD;
}
#else
void mq__cpu_detect(mq_cpu *cpu, mq_isa *best) {
    *cpu = (mq_cpu){0};
    *best = MQ_ISA_SCALAR;
}
#endif

bool mq__isa_native(mq_isa level) {
    switch (level) {
    case MQ_ISA_SCALAR: return true;
#if defined(__x86_64__) || defined(__i386__)
    case MQ_ISA_AVX2:
    case MQ_ISA_AVX512: return true;
#elif defined(__aarch64__)
    case MQ_ISA_NEON:
    case MQ_ISA_DOTPROD: return true;
#endif
    default: return false;
    }
}

bool mq__cpu_level_ok(const mq_cpu *cpu, mq_isa level) {
    bool avx2 = cpu->avx2 && cpu->fma && cpu->f16c;
    switch (level) {
    case MQ_ISA_SCALAR: return true;
    case MQ_ISA_AVX2: return avx2;
    case MQ_ISA_AVX512:
        return avx2 && cpu->avx512f && cpu->avx512bw && cpu->avx512vl && cpu->avx512dq &&
               cpu->avx512vnni;
    case MQ_ISA_NEON: return cpu->neon;
    case MQ_ISA_DOTPROD: return cpu->neon && cpu->dotprod;
    default: return false;
    }
}

const void *mq__isa_pick(const mq_ctx *ctx, const void *const *by_level, int nlevels) {
    for (int l = (int)ctx->isa < nlevels - 1 ? (int)ctx->isa : nlevels - 1; l > 0; l--)
        if (by_level[l] && mq__cpu_level_ok(&ctx->cpu, (mq_isa)l)) return by_level[l];
    return by_level[0];
}
