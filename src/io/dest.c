/* Output policy: what may be replaced, temporary names, the final rename, and the registry
 * of temporary paths for signal-time cleanup (io/dest.h). */
#include "io/dest.h"
#include "io/model_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

static const char *kind_text(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISLNK(m)) return "a symbolic link";
    return "not a regular file";
}

mq_status mq__dest_check(mq_ctx *ctx, const char *path, mq__dest_kind kind, mq__dest_info *info) {
    memset(info, 0, sizeof *info);
    if (!path || !*path) return mq__fail(ctx, MQ_ERR_INVALID, "empty output path");
    if (!strcmp(path, "-")) {
        if (kind == MQ__DEST_DIR)
            return mq__fail(ctx, MQ_ERR_INVALID, "a folder output cannot go to standard output");
        info->is_stdout = true;
        return MQ_OK;
    }
    struct stat sb;
    if (lstat(path, &sb) != 0) {
        if (errno == ENOENT) return MQ_OK;
        return mq__fail(ctx, MQ_ERR_IO, "%s: cannot inspect the destination: %s", path,
                        strerror(errno));
    }
    bool right = kind == MQ__DEST_DIR ? S_ISDIR(sb.st_mode) : S_ISREG(sb.st_mode);
    if (S_ISLNK(sb.st_mode))
        /* replacing the link would silently cut it; writing through it would replace a file
         * named elsewhere: name the target instead */
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: the destination is a symbolic link; "
                        "monoquant does not replace links: give the target's path or remove "
                        "the link", path);
    if (!right)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: the destination is %s; only %s %s replaced",
                        path, kind_text(sb.st_mode),
                        kind == MQ__DEST_DIR ? "folders" : "regular files",
                        kind == MQ__DEST_DIR ? "are" : "are ever");
    if (!ctx->overwrite)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: already exists; not replaced (overwriting "
                        "is off: mq_ctx_set_overwrite, or -f/--force)", path);
    info->exists = true;
    info->mode = sb.st_mode & 07777;
    return MQ_OK;
}

mq_status mq__dest_not_input(mq_ctx *ctx, const char *path, const mq_model *m) {
    struct stat so, si;
    if (!m || !strcmp(path, "-") || stat(path, &so) != 0) return MQ_OK;
    if (m->path && stat(m->path, &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: the output is the input file; refusing to "
                        "overwrite it", path);
    if (m->source_dir && stat(m->source_dir, &si) == 0 && si.st_dev == so.st_dev &&
        si.st_ino == so.st_ino)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: the output is the model's own folder; "
                        "refusing to replace it", path);
    for (size_t i = 0; i < m->nmaps; i++)
        if (stat(m->maps[i].path, &si) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: the output is an input file (%s); "
                            "refusing to overwrite it", path, m->maps[i].path);
    return MQ_OK;
}

/* "<dir of dest>/.monoquant-<pid>-<n>.tmp": short, so any destination name that fits
 * NAME_MAX works, and recognisable, so stale ones can be found. */
static char *temp_name(mq_ctx *ctx, const char *dest) {
    const char *slash = strrchr(dest, '/');
    size_t dl = slash ? (size_t)(slash - dest) + 1 : 0;
    size_t cap = dl + 64;
    char *t = (char *)mq__malloc(ctx, cap);
    if (!t) return NULL;
    memcpy(t, dest, dl);
    snprintf(t + dl, cap - dl, MQ__TEMP_PREFIX "%ld-%u" MQ__TEMP_SUFFIX, (long)getpid(),
             ctx->temp_seq++);
    return t;
}

mq_status mq__temp_open(mq_ctx *ctx, const char *dest, const mq__dest_info *info, char **tmp,
                        int *fd) {
    *tmp = NULL;
    *fd = -1;
    for (unsigned attempt = 0; attempt < 100; attempt++) {
        char *t = temp_name(ctx, dest);
        if (!t) return MQ_ERR_NOMEM;
        int f = open(t, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666); /* RDWR: patches */
        if (f >= 0) {
            mq_status st = mq__temp_register(ctx, t);
            /* keep the destination's permissions (a read-only file stays read-only) */
            if (st == MQ_OK && info && info->exists && fchmod(f, info->mode) != 0)
                st = mq__fail(ctx, MQ_ERR_IO, "%s: cannot set the mode of the temporary file: "
                              "%s", dest, strerror(errno));
            if (st != MQ_OK) {
                close(f);
                unlink(t);
                mq__temp_unregister(ctx, t);
                mq__free(ctx, t);
                return st;
            }
            *tmp = t;
            *fd = f;
            return MQ_OK;
        }
        int e = errno;
        mq__free(ctx, t);
        if (e != EEXIST)
            return mq__fail(ctx, MQ_ERR_IO, "%s: cannot create a temporary file beside it: %s",
                            dest, strerror(e));
    }
    return mq__fail(ctx, MQ_ERR_IO, "%s: cannot create a temporary file beside it: %s", dest,
                    strerror(EEXIST));
}

mq_status mq__temp_mkdir(mq_ctx *ctx, const char *dest, char **tmp) {
    *tmp = NULL;
    size_t n = strlen(dest);
    while (n > 1 && dest[n - 1] == '/') n--;
    char *d = mq__strndup(ctx, dest, n);
    if (!d) return MQ_ERR_NOMEM;
    mq_status st = MQ_OK;
    for (unsigned attempt = 0; attempt < 100; attempt++) {
        char *t = temp_name(ctx, d);
        if (!t) {
            st = MQ_ERR_NOMEM;
            break;
        }
        if (mkdir(t, 0777) == 0) {
            st = mq__temp_register(ctx, t);
            if (st != MQ_OK) {
                rmdir(t);
                mq__free(ctx, t);
            } else {
                *tmp = t;
            }
            break;
        }
        int e = errno;
        mq__free(ctx, t);
        if (e != EEXIST || attempt == 99) {
            st = mq__fail(ctx, MQ_ERR_IO, "%s: cannot create a temporary folder beside it: %s",
                          d, strerror(e));
            break;
        }
    }
    mq__free(ctx, d);
    return st;
}

static int rename2(const char *from, const char *to, unsigned flags) {
    return renameat2(AT_FDCWD, from, AT_FDCWD, to, flags);
}

mq_status mq__dest_commit(mq_ctx *ctx, const char *tmp, const char *dest) {
    struct stat sb, st_tmp;
    bool tmp_dir = lstat(tmp, &st_tmp) == 0 && S_ISDIR(st_tmp.st_mode);
    int r;
    if (!ctx->overwrite) {
        r = rename2(tmp, dest, RENAME_NOREPLACE);
        if (r != 0 && (errno == EINVAL || errno == ENOSYS)) {
            /* a file system without RENAME_NOREPLACE: check, then rename */
            if (lstat(dest, &sb) == 0) errno = EEXIST;
            else r = rename(tmp, dest);
        }
        if (r != 0 && errno == EEXIST)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: appeared while the output was being "
                            "written; not replaced (overwriting is off)", dest);
    } else {
        /* the destination may have changed kind since it was checked */
        mq__dest_info info;
        mq_status st = mq__dest_check(ctx, dest, tmp_dir ? MQ__DEST_DIR : MQ__DEST_FILE, &info);
        if (st != MQ_OK) return st;
        if (tmp_dir && info.exists) r = rename2(tmp, dest, RENAME_EXCHANGE);
        else r = rename(tmp, dest);
    }
    if (r != 0)
        return mq__fail(ctx, MQ_ERR_IO, "%s: cannot rename the temporary %s into place: %s",
                        dest, tmp_dir ? "folder" : "file", strerror(errno));
    if (!tmp_dir || lstat(tmp, &sb) != 0) mq__temp_unregister(ctx, tmp);
    return MQ_OK;
}

void mq__temp_discard(mq_ctx *ctx, const char *tmp) {
    if (!tmp) return;
    if (unlink(tmp) != 0 && errno == EISDIR) rmdir(tmp);
    mq__temp_unregister(ctx, tmp);
}

mq_status mq__temp_register(mq_ctx *ctx, const char *path) {
    MQ_TRY(mq__grow(ctx, (void **)&ctx->temp_store, &ctx->cap_temp_store, ctx->ntemp_store + 1,
                    sizeof *ctx->temp_store));
    char *c = mq__strdup(ctx, path);
    if (!c) return MQ_ERR_NOMEM;
    ctx->temp_store[ctx->ntemp_store++] = c;
    for (size_t i = 0; i < MQ__MAX_TEMPS; i++) {
        char *expected = NULL;
        if (__atomic_compare_exchange_n(&ctx->temps[i], &expected, c, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            return MQ_OK;
    }
    return mq__fail(ctx, MQ_ERR_INTERNAL, "%s: more than %d temporary files at once", path,
                    MQ__MAX_TEMPS);
}

void mq__temp_unregister(mq_ctx *ctx, const char *path) {
    for (size_t i = 0; i < MQ__MAX_TEMPS; i++) {
        char *p = __atomic_load_n(&ctx->temps[i], __ATOMIC_SEQ_CST);
        if (p && !strcmp(p, path)) __atomic_store_n(&ctx->temps[i], NULL, __ATOMIC_SEQ_CST);
    }
}

void mq__temp_registry_free(mq_ctx *ctx) {
    for (size_t i = 0; i < ctx->ntemp_store; i++) mq__free(ctx, ctx->temp_store[i]);
    mq__free(ctx, ctx->temp_store);
}

/* Async-signal-safe: only atomic operations, unlink and rmdir. Files first, then folders,
 * so files registered inside a temporary folder go before the folder. */
int mq_ctx_remove_temporaries(mq_ctx *ctx) {
    if (!ctx) return 0;
    int removed = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < MQ__MAX_TEMPS; i++) {
            char *p = __atomic_load_n(&ctx->temps[i], __ATOMIC_SEQ_CST);
            if (!p) continue;
            int r = pass == 0 ? unlink(p) : rmdir(p);
            if (r == 0 || errno == ENOENT || pass == 1) {
                __atomic_store_n(&ctx->temps[i], NULL, __ATOMIC_SEQ_CST);
                removed += r == 0;
            }
        }
    return removed;
}

mq_status mq_output_check(mq_ctx *ctx, const char *path, const mq_model *input) {
    if (!ctx || !path) return mq__fail(ctx, MQ_ERR_INVALID, "mq_output_check: NULL argument");
    mq__dest_info info;
    MQ_TRY(mq__dest_not_input(ctx, path, input));
    return mq__dest_check(ctx, path, MQ__DEST_FILE, &info);
}
