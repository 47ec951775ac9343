/* Input read-ahead: a thread copies the next piece of the input file (pread) into a spare
 * buffer while the caller quantizes the current one. An optimization only: a piece it did not
 * read whole is read again by the caller, whose read reports any error as before. */
#ifndef MQ_READAHEAD_H
#define MQ_READAHEAD_H

#include "common/internal.h"

#include <pthread.h>

typedef struct mq__readahead {
    const mq_model *model;
    bool on, quit;        /* the thread runs; asked to stop */
    bool busy;            /* a piece is asked for or being read (mu) */
    bool ok;              /* the last piece was read whole (mu) */
    const void *src;      /* the piece: input [src, src+n) into dst */
    uint64_t n;
    void *dst;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} mq__readahead;

/* Starts the thread; without it (it could not start) every read stays the caller's. */
MQ_HIDDEN void mq__readahead_start(mq__readahead *ra, const mq_model *m);
/* Asks for input [src, src+n) in dst, unless a piece is still in flight. */
MQ_HIDDEN void mq__readahead_ask(mq__readahead *ra, const void *src, uint64_t n, void *dst);
/* Waits for the piece in flight (its buffer is the caller's again); true when it was
 * exactly [src, src+n) into dst and was read whole. */
MQ_HIDDEN bool mq__readahead_take(mq__readahead *ra, const void *src, uint64_t n,
                                  const void *dst);
/* Waits for the piece in flight and ends the thread. */
MQ_HIDDEN void mq__readahead_stop(mq__readahead *ra);

#endif
