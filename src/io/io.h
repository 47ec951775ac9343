/* What the rest of the library uses from io/ beyond the public header: functions only, so
 * that the model and writer structs stay private to io/ (model_internal.h and
 * writer_internal.h are for the readers and writer backends). */
#ifndef MQ_IO_H
#define MQ_IO_H

#include "common/internal.h"

/* ---- input models ---- */

/* The path the model was opened from (NULL for a model built in memory). */
MQ_HIDDEN const char *mq__model_path(const mq_model *m);
/* An in-memory model's folder, when it was given one (mq_model_set_source_folder), else NULL. */
MQ_HIDDEN const char *mq__model_source_dir(const mq_model *m);
/* Bytes of the files mapped for the model (0 for a model in memory). */
MQ_HIDDEN uint64_t mq__model_mapped_bytes(const mq_model *m);
/* Builds the name index unless it exists; fails on a duplicate name (naming `where`). */
MQ_HIDDEN mq_status mq__model_ensure_index(mq_model *m, const char *where);
/* The caller reads [p, p+n) next and [ahead, ahead+ahead_n) after it (ahead may be NULL):
 * maps the first range's pages in and starts reading the second. Only for ranges inside a
 * file mapping of the model; advice only, never fails. */
MQ_HIDDEN void mq__model_will_read(const mq_model *m, const void *p, uint64_t n,
                                   const void *ahead, uint64_t ahead_n);
/* Copies input [p, p+n) into dst with pread(2) when it lies in one of the model's file
 * mappings (*done true): on some virtual machines the first touch of each newly mapped page
 * costs more than the copy. *done false: not mapped (an owned buffer), nothing read. A short
 * read (the file shrank) is an MQ_ERR_IO "input changed while reading". */
MQ_HIDDEN mq_status mq__model_read(const mq_model *m, const void *p, uint64_t n, void *dst,
                                   bool *done);
/* mq__model_read for another thread: no message, the context untouched. true: read whole;
 * false: not mapped, or failed (dst may hold part of it; mq__model_read tells why). */
MQ_HIDDEN bool mq__model_pread(const mq_model *m, const void *p, uint64_t n, void *dst);
/* Drops consumed input pages [p, p+n) from the process when they lie in a read-only file
 * mapping of the model (they stay in the page cache); owned buffers are left alone. */
MQ_HIDDEN void mq__model_release(const mq_model *m, const void *p, uint64_t n);

/* ---- output files ---- */

/* Where a writer's time went, in nanoseconds. */
typedef struct mq__write_times {
    uint64_t write_ns;  /* write(2) and early writeback, on the writer's own thread */
    uint64_t wait_ns;   /* callers waiting for a free buffer */
    uint64_t sync_ns;   /* the commit: last flush, fsync, rename, folder sync */
} mq__write_times;
/* Adds the writer's times to *t. */
MQ_HIDDEN void mq__writer_add_times(const mq_writer *w, mq__write_times *t);
/* Sets a metadata value before commit. Backends that write the metadata at the end add or
 * replace the entry; the others rewrite an existing entry in place (MQ_ERR_UNSUPPORTED when
 * the value does not fit in its reserved room, MQ_ERR_INTERNAL for an unknown key). Key and
 * value are copied. */
MQ_HIDDEN mq_status mq__writer_set_meta(mq_writer *w, const char *key, const char *value);

#endif
