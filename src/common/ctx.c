/* Contexts: error messages, allocation, settings. */
#include "common/internal.h"
#include "io/dest.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *mq_version(void) { return MQ_VERSION_STRING; }
unsigned mq_version_number(void) { return MQ_VERSION_NUMBER; }

const char *mq_status_str(mq_status st) {
    switch (st) {
    case MQ_OK: return "ok";
    case MQ_ERR_INVALID: return "invalid argument";
    case MQ_ERR_IO: return "I/O error";
    case MQ_ERR_FORMAT: return "format error";
    case MQ_ERR_UNSUPPORTED: return "unsupported";
    case MQ_ERR_QUANT: return "quantization error";
    case MQ_ERR_VALIDATION: return "validation failed";
    case MQ_ERR_NOMEM: return "out of memory";
    case MQ_ERR_CANCELLED: return "cancelled";
    case MQ_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

static void *default_alloc(void *ud, size_t n) {
    (void)ud;
    return malloc(n ? n : 1);
}
static void default_free(void *ud, void *p) {
    (void)ud;
    free(p);
}

mq_ctx *mq_ctx_create_with_allocator(const mq_allocator *alloc) {
    mq_allocator a = {default_alloc, default_free, NULL};
    if (alloc && alloc->alloc && alloc->free) a = *alloc;
    mq_ctx *ctx = (mq_ctx *)a.alloc(a.ud, sizeof *ctx);
    if (!ctx) return NULL;
    memset(ctx, 0, sizeof *ctx);
    ctx->alloc = a;
    ctx->err_mu = a.alloc(a.ud, sizeof(pthread_mutex_t));
    if (!ctx->err_mu) {
        a.free(a.ud, ctx);
        return NULL;
    }
    pthread_mutex_init((pthread_mutex_t *)ctx->err_mu, NULL);
    mq__cpu_detect(&ctx->cpu, &ctx->isa_max);
    ctx->online_cpus = mq__online_cpus();
    ctx->isa = ctx->isa_max;
    const char *env = getenv("MQ_ISA");
    if (env) {
        mq_isa cap = ctx->isa;
        if (!strcmp(env, "scalar")) cap = MQ_ISA_SCALAR;
        else if (!strcmp(env, "avx2")) cap = MQ_ISA_AVX2;
        else if (!strcmp(env, "avx512")) cap = MQ_ISA_AVX512;
        else if (!strcmp(env, "neon")) cap = MQ_ISA_NEON;
        else if (!strcmp(env, "dotprod")) cap = MQ_ISA_DOTPROD;
        if (cap < ctx->isa && mq__isa_native(cap)) ctx->isa = cap;
    }
    return ctx;
}

mq_ctx *mq_ctx_create(void) { return mq_ctx_create_with_allocator(NULL); }

void mq_ctx_free(mq_ctx *ctx) {
    if (!ctx) return;
    mq__pool_free(ctx);
    mq__temp_registry_free(ctx);
    pthread_mutex_destroy((pthread_mutex_t *)ctx->err_mu);
    ctx->alloc.free(ctx->alloc.ud, ctx->err_mu);
    ctx->alloc.free(ctx->alloc.ud, ctx);
}

const char *mq_ctx_message(const mq_ctx *ctx) { return ctx ? ctx->message : "no context"; }
mq_status mq_ctx_status(const mq_ctx *ctx) { return ctx ? ctx->status : MQ_ERR_INVALID; }

void mq_ctx_clear_error(mq_ctx *ctx) {
    if (!ctx) return;
    ctx->status = MQ_OK;
    ctx->message[0] = 0;
}

mq_status mq_ctx_set_threads(mq_ctx *ctx, int threads) {
    if (threads < 0 || threads > 1024)
        return mq__fail(ctx, MQ_ERR_INVALID, "thread count %d is out of range [0, 1024]", threads);
    if (threads != ctx->threads) mq__pool_free(ctx);
    ctx->threads = threads;
    return MQ_OK;
}

int mq_ctx_threads(const mq_ctx *ctx) { return mq__thread_count((mq_ctx *)ctx); }

void mq_ctx_set_progress(mq_ctx *ctx, mq_progress_fn fn, void *ud) {
    ctx->progress = fn;
    ctx->progress_ud = ud;
    ctx->progress_last_ns = 0;
}

mq_isa mq_ctx_isa(const mq_ctx *ctx) { return ctx->isa; }

void mq_ctx_set_overwrite(mq_ctx *ctx, int allow) {
    if (ctx) ctx->overwrite = allow != 0;
}

int mq_ctx_overwrite(const mq_ctx *ctx) { return ctx && ctx->overwrite; }

mq_status mq_ctx_set_isa(mq_ctx *ctx, mq_isa isa) {
    if (isa < MQ_ISA_SCALAR || isa > MQ_ISA_DOTPROD)
        return mq__fail(ctx, MQ_ERR_INVALID, "unknown instruction-set level %d", (int)isa);
    if (isa > ctx->isa_max || !mq__isa_native(isa))
        return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "instruction-set level %s is not supported here "
                        "(best: %s)", mq_isa_name(isa), mq_isa_name(ctx->isa_max));
    ctx->isa = isa;
    return MQ_OK;
}

const char *mq_isa_name(mq_isa isa) {
    switch (isa) {
    case MQ_ISA_SCALAR: return "scalar";
    case MQ_ISA_AVX2: return "avx2";
    case MQ_ISA_AVX512: return "avx512";
    case MQ_ISA_NEON: return "neon";
    case MQ_ISA_DOTPROD: return "dotprod";
    }
    return "unknown";
}

mq_isa mq_isa_supported(void) {
    mq_cpu cpu;
    mq_isa best;
    mq__cpu_detect(&cpu, &best);
    return best;
}

mq_status mq__fail(mq_ctx *ctx, mq_status st, const char *fmt, ...) {
    if (!ctx) return st;
    bool par = ctx->in_parallel;
    if (par) {
        /* a later chunk never overwrites an earlier one's failure; within one chunk the
         * latest call wins, as outside jobs */
        int64_t c = mq__current_chunk();
        pthread_mutex_lock((pthread_mutex_t *)ctx->err_mu);
        if (ctx->status != MQ_OK && c > ctx->fail_chunk) {
            pthread_mutex_unlock((pthread_mutex_t *)ctx->err_mu);
            return st;
        }
        ctx->fail_chunk = c;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->message, sizeof ctx->message, fmt, ap);
    va_end(ap);
    ctx->status = st;
    if (par) pthread_mutex_unlock((pthread_mutex_t *)ctx->err_mu);
    return st;
}

mq_status mq__fail_prefix(mq_ctx *ctx, const char *fmt, ...) {
    if (!ctx) return MQ_ERR_INTERNAL;
    char prefix[MQ_MSG_MAX], old[MQ_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, ctx->message, sizeof old);
    size_t k = strlen(prefix);
    if (k > sizeof ctx->message - 3) k = sizeof ctx->message - 3;
    memcpy(ctx->message, prefix, k);
    memcpy(ctx->message + k, ": ", 2);
    size_t rest = sizeof ctx->message - k - 3, n = strlen(old);
    if (n > rest) n = rest;
    memcpy(ctx->message + k + 2, old, n);
    ctx->message[k + 2 + n] = 0;
    return ctx->status;
}

void *mq__malloc(mq_ctx *ctx, size_t n) {
    void *p = ctx->alloc.alloc(ctx->alloc.ud, n ? n : 1);
    if (!p) mq__fail(ctx, MQ_ERR_NOMEM, "out of memory (%zu bytes)", n);
    return p;
}

void *mq__calloc(mq_ctx *ctx, size_t count, size_t size) {
    size_t n;
    if (__builtin_mul_overflow(count, size, &n)) {
        mq__fail(ctx, MQ_ERR_NOMEM, "out of memory (%zu x %zu bytes)", count, size);
        return NULL;
    }
    void *p = mq__malloc(ctx, n);
    if (p) memset(p, 0, n);
    return p;
}

void *mq__realloc(mq_ctx *ctx, void *p, size_t old_size, size_t new_size) {
    void *q = mq__malloc(ctx, new_size);
    if (!q) return NULL;
    if (p) {
        memcpy(q, p, old_size < new_size ? old_size : new_size);
        mq__free(ctx, p);
    }
    return q;
}

void mq__free(mq_ctx *ctx, void *p) {
    if (p) ctx->alloc.free(ctx->alloc.ud, p);
}

char *mq__strndup(mq_ctx *ctx, const char *s, size_t n) {
    char *d = (char *)mq__malloc(ctx, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *mq__strdup(mq_ctx *ctx, const char *s) { return mq__strndup(ctx, s, strlen(s)); }

mq_status mq__grow(mq_ctx *ctx, void **items, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return MQ_OK;
    size_t ncap = *cap ? *cap : 8;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) return mq__fail(ctx, MQ_ERR_NOMEM, "out of memory");
        ncap *= 2;
    }
    size_t bytes;
    if (__builtin_mul_overflow(ncap, elem, &bytes)) return mq__fail(ctx, MQ_ERR_NOMEM, "out of memory");
    void *p = mq__realloc(ctx, *items, *cap * elem, bytes);
    if (!p) return MQ_ERR_NOMEM;
    *items = p;
    *cap = ncap;
    return MQ_OK;
}

uint64_t mq__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

mq_status mq__progress(mq_ctx *ctx, const char *what, uint64_t done, uint64_t total) {
    if (!ctx->progress) return MQ_OK;
    uint64_t now = mq__now_ns();
    if (done != total && now - ctx->progress_last_ns < 100000000u) return MQ_OK;
    ctx->progress_last_ns = now;
    if (ctx->progress(ctx->progress_ud, what, done, total))
        return mq__fail(ctx, MQ_ERR_CANCELLED, "cancelled by the progress callback");
    return MQ_OK;
}
