/* The streaming writer shared by the output formats. Common code owns the temporary file,
 * a bounded output buffer, the byte accounting per tensor and the final fsync + rename; a
 * backend adds the format's framing through the hooks below. */
#ifndef MQ_WRITER_INTERNAL_H
#define MQ_WRITER_INTERNAL_H

#include "common/internal.h"
#include "io/io.h"

#include <pthread.h>

/* A patch of bytes already handed to the flusher, applied after the buffer in flight. */
#define MQ__WRITER_MAX_PATCH 8
typedef struct mq__writer_patch_rec {
    uint64_t offset;
    uint8_t data[8];
    uint8_t n;
} mq__writer_patch_rec;

typedef struct mq_writer_backend {
    /* After the temporary file is open, before any tensor data: e.g. the safetensors header. */
    mq_status (*begin)(mq_writer *w);
    /* Before the first byte of tensor i (called for empty tensors too). */
    mq_status (*tensor_begin)(mq_writer *w, size_t i);
    /* Sees every data byte of the current tensor before it is written (e.g. a CRC). May be NULL. */
    void (*observe)(mq_writer *w, const void *data, size_t n);
    /* After the last byte of tensor i. */
    mq_status (*tensor_end)(mq_writer *w, size_t i);
    /* After the last tensor: trailers (e.g. the zip central directory). */
    mq_status (*finish)(mq_writer *w);
    /* Releases backend state. */
    void (*release)(mq_writer *w);
    /* The metadata is written by `finish`: mq__writer_set_meta may change it until commit. */
    bool meta_at_end;
    /* For metadata written by `begin`: rewrites the value of entry i in the bytes it already
     * occupies in the file (room its writer reserved, e.g. trailing spaces), filling what
     * is left with spaces. MQ_ERR_UNSUPPORTED when the new value does not fit. */
    mq_status (*replace_meta)(mq_writer *w, size_t i, const char *value);
} mq_writer_backend;

struct mq_writer {
    mq_ctx *ctx;
    mq_format format;
    char *path;          /* destination */
    char *tmp_path;      /* temporary file beside it */
    int fd;
    mq_tensor_desc *tensors; /* copies; names owned */
    uint64_t *sizes;         /* bytes of each tensor */
    size_t n;
    mq_kv *meta;             /* copies, owned */
    size_t nmeta;
    size_t cur;              /* tensor being written */
    uint64_t cur_done;       /* its bytes so far */
    bool started_cur;        /* tensor_begin called for cur */
    uint8_t *buf;            /* bounded output buffer, being filled */
    size_t buf_len, buf_cap;
    /* Double buffering: a full buffer goes to the flusher thread, which writes it (and starts
     * its writeback) while the caller fills the other one. */
    uint8_t *spare;          /* the other buffer: free, or being written (pending) */
    void *raw[3];            /* the allocations (buffers are aligned inside them) */
    uint8_t *patch_blk;      /* one block, for patches of an O_DIRECT file (raw[2]) */
    mq__writer_patch_rec patches[MQ__WRITER_MAX_PATCH]; /* queued for the flusher (mu) */
    size_t npatch;
    bool direct;             /* the file is open with O_DIRECT (whole aligned blocks only) */
    size_t pending;          /* bytes of `spare` the flusher has yet to write (0: free) */
    bool flusher, quit;      /* the thread runs; asked to stop */
    int flush_errno;         /* the flusher's first write error */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t written;        /* bytes the flusher wrote */
    uint64_t kicked;         /* writeback started up to this offset */
    /* Early syncs: a third thread runs fdatasync on what the flusher has written, so that the
     * device's own write cache is emptied while the caller still computes and the final fsync
     * finds little left. */
    bool syncer, sync_quit;  /* the thread runs; asked to stop */
    uint64_t sync_target;    /* written bytes to sync next (sync_mu) */
    uint64_t synced;         /* bytes covered by the last early sync */
    int sync_errno;          /* the first failed early sync (its error is reported once) */
    pthread_t sync_thread;
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    mq__write_times times;
    uint64_t pos;            /* file offset of the next byte (buffer included) */
    bool failed, committed;
    bool to_stdout;          /* path "-": fd 1, no temporary file, no rename */
    const mq_writer_backend *be;
    void *state;             /* backend state */
};

/* Appends bytes to the file through the buffer. */
MQ_HIDDEN mq_status mq__writer_out(mq_writer *w, const void *data, size_t n);
/* Overwrites bytes at an earlier offset: in the buffer while they are there; else (up to 8
 * bytes) queued for the flusher to apply after the buffer it is writing, or in the file at
 * once when nothing is in flight. An O_DIRECT file stays O_DIRECT. Errors of a queued patch
 * fail the writer at its next wait (as a failed write does). */
MQ_HIDDEN mq_status mq__writer_patch(mq_writer *w, uint64_t offset, const void *data, size_t n);
/* mq__writer_set_meta (io/io.h) rewrites metadata through the backend's replace_meta or,
 * for meta_at_end backends, before `finish`. */

/* Bytes between early syncs (tests lower it). */
MQ_HIDDEN extern uint64_t mq__writer_sync_step;

MQ_HIDDEN extern const mq_writer_backend mq__safetensors_backend;
MQ_HIDDEN extern const mq_writer_backend mq__pytorch_backend;

#endif
