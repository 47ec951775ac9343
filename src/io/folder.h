/* Output folders: built under a temporary name beside the destination, renamed into place
 * when complete, removed on failure (the output policy of io/dest.h). */
#ifndef MQ_FOLDER_H
#define MQ_FOLDER_H

#include "common/internal.h"

typedef struct mq__folder mq__folder;

/* The output policy for a folder destination (io/dest.h): an existing folder needs the
 * context's overwrite permission, anything else under that name is refused, and so is the
 * folder a model was read from. */
MQ_HIDDEN mq_status mq__folder_check(mq_ctx *ctx, const char *dest, const mq_model *input);
/* Checks `dest` as mq__folder_check (without the input) and creates the temporary folder
 * ".monoquant-<pid>-<n>.tmp" beside it. */
MQ_HIDDEN mq_status mq__folder_begin(mq_ctx *ctx, const char *dest, mq__folder **out);
/* Records a file written into the folder by someone else (a committed writer): registered for
 * signal-time removal, and removed if the folder is never committed. */
MQ_HIDDEN mq_status mq__folder_add(mq__folder *f, const char *name);
/* Path of `name` inside the temporary folder (mq__malloc'd; NULL when out of memory). */
MQ_HIDDEN char *mq__folder_path(mq__folder *f, const char *name);
/* A new file `name` holding n bytes, fsynced. */
MQ_HIDDEN mq_status mq__folder_write_file(mq__folder *f, const char *name, const void *data,
                                          size_t n);
/* A byte-for-byte copy of `src` as `name`, fsynced. */
MQ_HIDDEN mq_status mq__folder_copy_file(mq__folder *f, const char *src, const char *name);
/* Renames the temporary folder to the destination; an existing destination folder (with
 * overwrite permission) is exchanged atomically and then removed. */
MQ_HIDDEN mq_status mq__folder_commit(mq__folder *f);
/* Removes the temporary folder and its files unless committed; frees. Accepts NULL. */
MQ_HIDDEN void mq__folder_free(mq__folder *f);

/* "<dir>/<name>" (mq__malloc'd; NULL when out of memory). */
MQ_HIDDEN char *mq__path_join(mq_ctx *ctx, const char *dir, const char *name);
/* Reads a whole regular file of at most `max` bytes (`what` names it in the message) into a
 * NUL-terminated buffer to mq__free. */
MQ_HIDDEN mq_status mq__read_small_file(mq_ctx *ctx, const char *path, uint64_t max,
                                        const char *what, char **out, size_t *len);

#endif
