/* Internal helpers shared by every module: errors, allocation, threads, CPU features.
 * Names with a double underscore are private to the library. */
#ifndef MQ_INTERNAL_H
#define MQ_INTERNAL_H

#include "monoquant.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MQ_HIDDEN __attribute__((visibility("hidden")))

#if defined(__GNUC__)
#define MQ_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define MQ_PRINTF(a, b)
#endif

#define MQ_MSG_MAX 1024
#define MQ__MAX_TEMPS 64 /* temporary paths tracked at once per context */

/* CPU features, read once per context: those the vector levels are compiled for. */
typedef struct mq_cpu {
    bool avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512dq, avx512vnni;
    bool avx512vbmi2; /* beside the AVX-512 gate: entries of that level that can use it */
    bool neon, dotprod; /* ARM64: Advanced SIMD; SDOT/UDOT (HWCAP_ASIMDDP) */
    /* carry-less multiply and CRC instructions (io/crc32*.c), checked beside the level gate */
    bool pclmul, vpclmulqdq; /* x86 */
    bool pmull, crc32;       /* ARM64 (HWCAP_PMULL, HWCAP_CRC32) */
} mq_cpu;

typedef struct mq_pool mq_pool;

struct mq_ctx {
    mq_status status;
    char message[MQ_MSG_MAX];
    mq_allocator alloc;
    int threads;          /* requested; 0 = online CPUs */
    int online_cpus;      /* read once at creation (sysconf opens a /sys file each call) */
    mq_isa isa;           /* current level */
    mq_isa isa_max;       /* best the machine supports */
    mq_cpu cpu;
    mq_progress_fn progress;
    void *progress_ud;
    uint64_t progress_last_ns;
    mq_pool *pool;        /* created on first parallel call */
    bool in_parallel;     /* a parallel job runs: mq__fail serializes, and the failure of the
                             lowest chunk wins (status and message alike) */
    int64_t fail_chunk;   /* during a job: chunk whose failure the message holds */
    void *err_mu;         /* pthread_mutex_t, for mq__fail during parallel jobs */
    bool overwrite;       /* writers may replace an existing destination (io/dest.h) */
    /* temporary paths now on disk, removed by mq_ctx_remove_temporaries (a signal handler
     * reads them: slots are published and cleared atomically; the strings live in
     * temp_store until the context is freed, so a handler never reads freed memory) */
    char *temps[MQ__MAX_TEMPS];
    char **temp_store;
    size_t ntemp_store, cap_temp_store;
    unsigned temp_seq;    /* <n> of the next temporary name */
};

/* Records a failure on ctx and returns st. The message should name the file, the tensor and
 * the problem. Safe to call from inside an mq__parallel_for range function: the failure of
 * the lowest failing chunk is kept, whatever the thread count or timing. */
MQ_HIDDEN mq_status mq__fail(mq_ctx *ctx, mq_status st, const char *fmt, ...) MQ_PRINTF(3, 4);
/* Prefixes the current message with "<prefix>: " (for adding the file name on the way up). */
MQ_HIDDEN mq_status mq__fail_prefix(mq_ctx *ctx, const char *fmt, ...) MQ_PRINTF(2, 3);

#define MQ_TRY(expr)                          \
    do {                                      \
        mq_status mq__st = (expr);            \
        if (mq__st != MQ_OK) return mq__st;   \
    } while (0)

/* Allocation through the context's allocator. mq__malloc fails with MQ_ERR_NOMEM recorded. */
MQ_HIDDEN void *mq__malloc(mq_ctx *ctx, size_t n);
MQ_HIDDEN void *mq__calloc(mq_ctx *ctx, size_t count, size_t size);
MQ_HIDDEN void *mq__realloc(mq_ctx *ctx, void *p, size_t old_size, size_t new_size);
MQ_HIDDEN void mq__free(mq_ctx *ctx, void *p);
MQ_HIDDEN char *mq__strdup(mq_ctx *ctx, const char *s);
MQ_HIDDEN char *mq__strndup(mq_ctx *ctx, const char *s, size_t n);
/* Grows *items (capacity *cap, element size elem) to hold at least need elements. */
MQ_HIDDEN mq_status mq__grow(mq_ctx *ctx, void **items, size_t *cap, size_t need, size_t elem);

/* Overflow-checked arithmetic: return false on overflow. */
static inline bool mq__mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
/* 1 when a scale is finite and > 0 and every value of its grid, (q - zero_point) * scale
 * for q in [qmin, qmax], is finite in float32: parameters that dequantize without Inf. */
static inline bool mq__qparam_finite(float scale, int32_t zero_point, int32_t qmin, int32_t qmax) {
    if (!(scale > 0.0f && scale <= 3.4028234663852886e38f)) return false;
    float a = (float)(qmin - zero_point) * scale, b = (float)(qmax - zero_point) * scale;
    return a >= -3.4028234663852886e38f && a <= 3.4028234663852886e38f &&
           b >= -3.4028234663852886e38f && b <= 3.4028234663852886e38f;
}
static inline bool mq__add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Progress: reports at most every 100 ms (and always when done == total). Returns
 * MQ_ERR_CANCELLED when the callback asks to stop. */
MQ_HIDDEN mq_status mq__progress(mq_ctx *ctx, const char *what, uint64_t done, uint64_t total);

/* Runs fn over [0, n) split into chunks of `grain` items (the last may be shorter), on the
 * context's threads. Chunk boundaries do not depend on the thread count, so a fn that writes
 * only its own chunk's outputs gives identical results for any thread count. fn returns a
 * status; the first failure (lowest chunk) is returned and remaining chunks are skipped.
 * `tid` is in [0, threads) and can index per-thread scratch. */
typedef mq_status (*mq_range_fn)(void *arg, int64_t begin, int64_t end, int tid);
MQ_HIDDEN mq_status mq__parallel_for(mq_ctx *ctx, int64_t n, int64_t grain, mq_range_fn fn,
                                     void *arg);
/* Number of threads mq__parallel_for will use (>= 1): the requested count, else the online
 * CPUs counted when the context was created. */
MQ_HIDDEN int mq__thread_count(mq_ctx *ctx);
/* Chunk the calling thread runs in the current parallel job (INT64_MAX outside one). */
MQ_HIDDEN int64_t mq__current_chunk(void);
/* Online CPUs now, in [1, 256]. */
MQ_HIDDEN int mq__online_cpus(void);
MQ_HIDDEN void mq__pool_free(mq_ctx *ctx);

/* Extensible structs (ABI policy in monoquant.h). MQ__LAYOUT_END(type, last) is the size of
 * a struct's first released layout, whose last field is `last`. */
#define MQ__LAYOUT_END(type, last) (offsetof(type, last) + sizeof(((type *)0)->last))
/* Zeroes the caller's `size` bytes at dst, copies the defaults (a full struct of `own` bytes)
 * over that prefix and sets struct_size to `size`: what every _default/_init function does. */
MQ_HIDDEN void mq__struct_default(void *dst, size_t size, const void *defaults, size_t own);
/* Copies the caller's struct `src` over `dst` (which holds the defaults, `own` bytes): only
 * the bytes within its struct_size, which must lie in [first, own], else MQ_ERR_INVALID naming
 * `what`. dst's struct_size becomes `own`. */
MQ_HIDDEN mq_status mq__struct_read(mq_ctx *ctx, const char *what, const void *src, void *dst,
                                    size_t own, size_t first);

/* Length of the layer in a `<layer>.weight` name of `len` bytes ("blocks.0.fc.weight" -> 11),
 * or 0 when the name is not of that form. */
static inline size_t mq__weight_layer_len(const char *name, size_t len) {
    static const char suffix[] = ".weight";
    size_t k = sizeof suffix - 1;
    return len > k && !memcmp(name + len - k, suffix, k) ? len - k : 0;
}

/* The safetensors header limit (bytes of JSON), as the reference reader enforces it. */
#define MQ__SAFETENSORS_MAX_HEADER 100000000u

/* Value of metadata entry `key`, or NULL. */
MQ_HIDDEN const char *mq__model_meta(const mq_model *m, const char *key);

MQ_HIDDEN void mq__cpu_detect(mq_cpu *cpu, mq_isa *best);
/* The one feature gate of each level: exactly the extensions its files are compiled with
 * (Makefile: AVX2_FLAGS, AVX512_FLAGS, DOTPROD_FLAGS); MQ_ISA_SCALAR always passes. */
MQ_HIDDEN bool mq__cpu_level_ok(const mq_cpu *cpu, mq_isa level);
/* Whether `level` is a level of the architecture this library is built for (scalar always):
 * levels of another architecture are neither set nor used as a cap. */
MQ_HIDDEN bool mq__isa_native(mq_isa level);
/* The one ISA dispatch: by_level[l] (the table of level l, NULL when there is none) for the
 * highest l <= the context's level whose gate passes, else by_level[0], the scalar
 * reference. */
MQ_HIDDEN const void *mq__isa_pick(const mq_ctx *ctx, const void *const *by_level, int nlevels);
/* The x86 vector files are built on x86 only: elsewhere their tables are absent. */
#if defined(__x86_64__) || defined(__i386__)
#define MQ__X86_ONLY(table) (table)
#else
#define MQ__X86_ONLY(table) NULL
#endif
/* Likewise the ARM64 files (*_neon.c, *_dotprod.c). Dispatch tables are indexed by mq_isa:
 * {scalar, avx2, avx512, neon, dotprod}. */
#if defined(__aarch64__)
#define MQ__ARM64_ONLY(table) (table)
#else
#define MQ__ARM64_ONLY(table) NULL
#endif
MQ_HIDDEN uint64_t mq__now_ns(void);

/* Loads a little-endian integer from unaligned memory. */
static inline uint64_t mq__load_le64(const void *p) {
    const uint8_t *b = (const uint8_t *)p;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}
static inline uint32_t mq__load_le32(const void *p) {
    const uint8_t *b = (const uint8_t *)p;
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}
static inline uint16_t mq__load_le16(const void *p) {
    const uint8_t *b = (const uint8_t *)p;
    return (uint16_t)(b[0] | b[1] << 8);
}
static inline void mq__store_le64(void *p, uint64_t v) {
    uint8_t *b = (uint8_t *)p;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}
static inline void mq__store_le32(void *p, uint32_t v) {
    uint8_t *b = (uint8_t *)p;
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
}
static inline void mq__store_le16(void *p, uint16_t v) {
    uint8_t *b = (uint8_t *)p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}

#endif
