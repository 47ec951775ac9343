/* A small persistent thread pool owned by a context. Work is a range split into fixed-size
 * chunks taken from an atomic counter, so chunk boundaries never depend on the thread count. */
#include "common/internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

typedef struct worker_arg {
    struct mq_pool *pool;
    int tid;
} worker_arg;

struct mq_pool {
    worker_arg *args;           /* one per thread, read by the workers */
    int nthreads;               /* including the calling thread */
    pthread_t *workers;         /* nthreads - 1 */
    pthread_mutex_t mu;
    pthread_cond_t start_cv, done_cv;
    uint64_t generation;
    int running;                /* workers still busy with the current job */
    bool quit;
    /* current job */
    mq_range_fn fn;
    void *arg;
    int64_t n, grain, nchunks;
    atomic_llong next;
    atomic_llong fail_chunk;    /* lowest failing chunk, or nchunks */
    mq_status fail_status;      /* status of fail_chunk, under mu */
};


/* Chunk being run by this thread, for mq__fail to order failures. */
static _Thread_local int64_t tl_chunk = INT64_MAX;

int64_t mq__current_chunk(void) { return tl_chunk; }

static void run_chunks(mq_pool *p, int tid) {
    for (;;) {
        long long c = atomic_fetch_add(&p->next, 1);
        if (c >= p->nchunks) break;
        if (c > atomic_load(&p->fail_chunk)) continue; /* a lower chunk failed: skip */
        int64_t b = c * p->grain, e = b + p->grain;
        if (e > p->n) e = p->n;
        tl_chunk = c;
        mq_status st = p->fn(p->arg, b, e, tid);
        tl_chunk = INT64_MAX;
        if (st != MQ_OK) {
            pthread_mutex_lock(&p->mu);
            if (c < atomic_load(&p->fail_chunk)) {
                atomic_store(&p->fail_chunk, c);
                p->fail_status = st;
            }
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker_main(void *varg) {
    worker_arg wa = *(worker_arg *)varg;
    mq_pool *p = wa.pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->start_cv, &p->mu);
        if (p->quit) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, wa.tid);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0) pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int mq__online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 256) n = 256;
    return (int)n;
}

int mq__thread_count(mq_ctx *ctx) {
    if (ctx->threads > 0) return ctx->threads;
    return ctx->online_cpus > 0 ? ctx->online_cpus : 1;
}

void mq__pool_free(mq_ctx *ctx) {
    mq_pool *p = ctx->pool;
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads - 1; i++) pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start_cv);
    pthread_cond_destroy(&p->done_cv);
    mq__free(ctx, p->workers);
    mq__free(ctx, p->args);
    mq__free(ctx, p);
    ctx->pool = NULL;
}

static mq_status pool_create(mq_ctx *ctx, int nthreads) {
    mq_pool *p = (mq_pool *)mq__calloc(ctx, 1, sizeof *p);
    if (!p) return MQ_ERR_NOMEM;
    p->nthreads = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    ctx->pool = p;
    if (nthreads > 1) {
        p->workers = (pthread_t *)mq__calloc(ctx, (size_t)nthreads - 1, sizeof(pthread_t));
        p->args = (worker_arg *)mq__calloc(ctx, (size_t)nthreads, sizeof(worker_arg));
        if (!p->workers || !p->args) {
            mq__pool_free(ctx);
            return MQ_ERR_NOMEM;
        }
        for (int i = 1; i < nthreads; i++) {
            p->args[i].pool = p;
            p->args[i].tid = i;
            if (pthread_create(&p->workers[i - 1], NULL, worker_main, &p->args[i]) != 0) break;
            p->nthreads++;
        }
    }
    return MQ_OK;
}

mq_status mq__parallel_for(mq_ctx *ctx, int64_t n, int64_t grain, mq_range_fn fn, void *arg) {
    if (n <= 0) return MQ_OK;
    if (grain < 1) grain = 1;
    int64_t nchunks = (n + grain - 1) / grain;
    int want = mq__thread_count(ctx);
    if (want > 1 && nchunks > 1 && !ctx->pool) MQ_TRY(pool_create(ctx, want));
    mq_pool *p = ctx->pool;
    if (!p || p->nthreads == 1 || nchunks == 1) {
        ctx->status = MQ_OK;
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t b = c * grain, e = b + grain < n ? b + grain : n;
            mq_status st = fn(arg, b, e, 0);
            if (st == MQ_OK) continue;
            /* as in parallel: a failure without a message of its own shows none */
            if (ctx->status == MQ_OK) ctx->message[0] = 0;
            ctx->status = st;
            return st;
        }
        return MQ_OK;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->grain = grain;
    p->nchunks = nchunks;
    atomic_store(&p->next, 0);
    atomic_store(&p->fail_chunk, nchunks);
    p->fail_status = MQ_OK;
    p->running = p->nthreads - 1;
    p->generation++;
    ctx->status = MQ_OK;
    ctx->fail_chunk = INT64_MAX;
    ctx->in_parallel = true;
    pthread_cond_broadcast(&p->start_cv);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->running > 0) pthread_cond_wait(&p->done_cv, &p->mu);
    mq_status st = p->fail_status;
    long long fc = atomic_load(&p->fail_chunk);
    pthread_mutex_unlock(&p->mu);
    ctx->in_parallel = false;
    /* the status is the lowest failing chunk's; so must the message be (a chunk may fail
     * without a message, e.g. a bare MQ_ERR_NOMEM) */
    if (st != MQ_OK && ctx->fail_chunk != fc) {
        ctx->message[0] = 0;
        ctx->status = st;
    } else if (st != MQ_OK) {
        ctx->status = st;
    }
    return st;
}
