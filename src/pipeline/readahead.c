/* Input read-ahead (readahead.h). */
#include "pipeline/readahead.h"
#include "io/io.h"

static void *reader_main(void *arg) {
    mq__readahead *ra = (mq__readahead *)arg;
    pthread_mutex_lock(&ra->mu);
    for (;;) {
        while (!ra->busy && !ra->quit) pthread_cond_wait(&ra->cv, &ra->mu);
        if (!ra->busy) break;
        const void *src = ra->src;
        uint64_t n = ra->n;
        void *dst = ra->dst;
        pthread_mutex_unlock(&ra->mu);
        bool ok = mq__model_pread(ra->model, src, n, dst);
        pthread_mutex_lock(&ra->mu);
        ra->ok = ok;
        ra->busy = false;
        pthread_cond_broadcast(&ra->cv);
    }
    pthread_mutex_unlock(&ra->mu);
    return NULL;
}

void mq__readahead_start(mq__readahead *ra, const mq_model *m) {
    *ra = (mq__readahead){.model = m};
    if (pthread_mutex_init(&ra->mu, NULL) != 0) return;
    if (pthread_cond_init(&ra->cv, NULL) == 0) {
        ra->on = pthread_create(&ra->thread, NULL, reader_main, ra) == 0;
        if (ra->on) return;
        pthread_cond_destroy(&ra->cv);
    }
    pthread_mutex_destroy(&ra->mu);
}

void mq__readahead_ask(mq__readahead *ra, const void *src, uint64_t n, void *dst) {
    if (!ra->on || !n) return;
    pthread_mutex_lock(&ra->mu);
    if (!ra->busy) {
        ra->src = src;
        ra->n = n;
        ra->dst = dst;
        ra->ok = false;
        ra->busy = true;
        pthread_cond_broadcast(&ra->cv);
    }
    pthread_mutex_unlock(&ra->mu);
}

bool mq__readahead_take(mq__readahead *ra, const void *src, uint64_t n, const void *dst) {
    if (!ra->on) return false;
    pthread_mutex_lock(&ra->mu);
    while (ra->busy) pthread_cond_wait(&ra->cv, &ra->mu);
    bool hit = ra->ok && ra->src == src && ra->n == n && ra->dst == dst;
    ra->ok = false; /* taken once: the caller reuses the buffer */
    pthread_mutex_unlock(&ra->mu);
    return hit;
}

void mq__readahead_stop(mq__readahead *ra) {
    if (!ra->on) return;
    pthread_mutex_lock(&ra->mu);
    ra->quit = true;
    pthread_cond_broadcast(&ra->cv);
    pthread_mutex_unlock(&ra->mu);
    pthread_join(ra->thread, NULL); /* a piece in flight is finished first */
    pthread_cond_destroy(&ra->cv);
    pthread_mutex_destroy(&ra->mu);
    ra->on = false;
}
