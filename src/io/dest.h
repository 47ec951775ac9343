/* Output policy shared by every writer (files and folders), and the registry of temporary
 * paths that mq_ctx_remove_temporaries() deletes from a signal handler.
 *
 * A writer of one file calls, in order:
 *   mq__dest_check(ctx, path, MQ__DEST_FILE, &info)   before any work: refuses a directory,
 *        device, FIFO, socket or symbolic link, and an existing file unless the context
 *        allows overwriting (mq_ctx_set_overwrite);
 *   mq__temp_open(ctx, path, &tmp, &fd)    creates "<dir>/.monoquant-<pid>-<n>.tmp" beside
 *        the destination (mode 0666 & ~umask, or the destination's mode when it exists) and
 *        registers it;
 *   mq__dest_commit(ctx, tmp, path)        renames into place: without overwrite permission
 *        atomically refusing a destination that appeared meanwhile (RENAME_NOREPLACE), with
 *        it re-checking that the destination is still a regular file; unregisters tmp;
 *   mq__temp_discard(ctx, tmp)             on failure instead: unlinks and unregisters.
 * A writer of a folder (one destination directory holding several files):
 *   mq__dest_check(ctx, dir, MQ__DEST_DIR, &info)   an existing directory needs overwrite
 *        permission; anything else existing under that name is refused;
 *   mq__temp_mkdir(ctx, dir, &tmpdir)      creates and registers "<parent>/.monoquant-<pid>-<n>.tmp"
 *        as a directory; write the files inside it and register each with mq__temp_register
 *        (the signal-time cleanup removes the registered paths newest first, so files go
 *        before their folder);
 *   mq__dest_commit(ctx, tmpdir, dir)      renames the folder into place; for an existing
 *        destination folder (overwrite allowed), exchanges the two atomically
 *        (RENAME_EXCHANGE): the old folder is then at tmpdir, still registered, and the
 *        caller removes its files and then calls mq__temp_discard(ctx, tmpdir).
 * Input identity: mq__dest_not_input(ctx, path, model) refuses a destination that is one of
 * the files (shards included) a model was read from, by device and inode. */
#ifndef MQ_DEST_H
#define MQ_DEST_H

#include "common/internal.h"

#include <sys/types.h>

/* The documented name pattern of temporary files and folders: ".monoquant-<pid>-<n>.tmp". */
#define MQ__TEMP_PREFIX ".monoquant-"
#define MQ__TEMP_SUFFIX ".tmp"

typedef enum mq__dest_kind { MQ__DEST_FILE, MQ__DEST_DIR } mq__dest_kind;

typedef struct mq__dest_info {
    bool exists;      /* a destination of the right kind exists (and may be replaced) */
    mode_t mode;      /* its permission bits, to keep */
    bool is_stdout;   /* path "-": standard output (files only) */
} mq__dest_info;

MQ_HIDDEN mq_status mq__dest_check(mq_ctx *ctx, const char *path, mq__dest_kind kind,
                                   mq__dest_info *info);
MQ_HIDDEN mq_status mq__dest_not_input(mq_ctx *ctx, const char *path, const mq_model *m);
MQ_HIDDEN mq_status mq__temp_open(mq_ctx *ctx, const char *dest, const mq__dest_info *info,
                                  char **tmp, int *fd);
MQ_HIDDEN mq_status mq__temp_mkdir(mq_ctx *ctx, const char *dest, char **tmp);
MQ_HIDDEN mq_status mq__dest_commit(mq_ctx *ctx, const char *tmp, const char *dest);
MQ_HIDDEN void mq__temp_discard(mq_ctx *ctx, const char *tmp);
/* Registry of paths removed by mq_ctx_remove_temporaries (path is copied). */
MQ_HIDDEN mq_status mq__temp_register(mq_ctx *ctx, const char *path);
MQ_HIDDEN void mq__temp_unregister(mq_ctx *ctx, const char *path);
/* Frees the registry (mq_ctx_free). */
MQ_HIDDEN void mq__temp_registry_free(mq_ctx *ctx);

#endif
