/* A folder built under a temporary name beside its destination (the output policy of
 * io/dest.h) and renamed into place once complete: a failed run leaves nothing behind. */
#include "io/folder.h"
#include "io/dest.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct mq__folder {
    mq_ctx *ctx;
    char *dest, *tmp;
    char **files;      /* files created inside tmp (registered temporaries) */
    size_t nfiles, cap;
    bool committed, replaced;
};

char *mq__path_join(mq_ctx *ctx, const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = (char *)mq__malloc(ctx, n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

mq_status mq__folder_check(mq_ctx *ctx, const char *dest, const mq_model *input) {
    mq__dest_info info;
    MQ_TRY(mq__dest_check(ctx, dest, MQ__DEST_DIR, &info));
    return mq__dest_not_input(ctx, dest, input);
}

mq_status mq__folder_begin(mq_ctx *ctx, const char *dest, mq__folder **out) {
    *out = NULL;
    mq__dest_info info;
    MQ_TRY(mq__dest_check(ctx, dest, MQ__DEST_DIR, &info));
    mq__folder *f = (mq__folder *)mq__calloc(ctx, 1, sizeof *f);
    if (!f) return MQ_ERR_NOMEM;
    f->ctx = ctx;
    f->replaced = info.exists;
    f->dest = mq__strdup(ctx, dest);
    mq_status st = f->dest ? mq__temp_mkdir(ctx, dest, &f->tmp) : MQ_ERR_NOMEM;
    if (st != MQ_OK) {
        mq__free(ctx, f->dest);
        mq__free(ctx, f);
        return st;
    }
    chmod(f->tmp, 0755); /* a model folder is usually shared */
    *out = f;
    return MQ_OK;
}

char *mq__folder_path(mq__folder *f, const char *name) {
    return mq__path_join(f->ctx, f->tmp, name);
}

mq_status mq__folder_add(mq__folder *f, const char *name) {
    char *p = mq__folder_path(f, name);
    if (!p) return MQ_ERR_NOMEM;
    mq_status st = mq__grow(f->ctx, (void **)&f->files, &f->cap, f->nfiles + 1, sizeof *f->files);
    if (st != MQ_OK) {
        unlink(p);
        mq__free(f->ctx, p);
        return st;
    }
    f->files[f->nfiles++] = p;
    /* for signal-time removal; past the registry's capacity (a model of many shards) only the
     * ordinary failure path removes it */
    if (mq__temp_register(f->ctx, p) != MQ_OK) mq_ctx_clear_error(f->ctx);
    return MQ_OK;
}

static mq_status write_all(mq__folder *f, int fd, const char *name, const void *data, size_t n) {
    const char *p = (const char *)data;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0)
            return mq__fail(f->ctx, MQ_ERR_IO, "%s/%s: write failed: %s", f->dest, name,
                            strerror(errno));
        p += k;
        n -= (size_t)k;
    }
    return MQ_OK;
}

static mq_status open_new(mq__folder *f, const char *name, int *fd) {
    char *path = mq__folder_path(f, name);
    if (!path) return MQ_ERR_NOMEM;
    *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    int e = errno;
    mq__free(f->ctx, path);
    if (*fd < 0)
        return mq__fail(f->ctx, MQ_ERR_IO, "%s/%s: cannot create: %s", f->dest, name, strerror(e));
    mq_status st = mq__folder_add(f, name);
    if (st != MQ_OK) close(*fd);
    return st;
}

static mq_status close_synced(mq__folder *f, int fd, const char *name, mq_status st) {
    if (st == MQ_OK && fsync(fd) != 0)
        st = mq__fail(f->ctx, MQ_ERR_IO, "%s/%s: fsync failed: %s", f->dest, name, strerror(errno));
    if (close(fd) != 0 && st == MQ_OK)
        st = mq__fail(f->ctx, MQ_ERR_IO, "%s/%s: close failed: %s", f->dest, name, strerror(errno));
    return st;
}

mq_status mq__folder_write_file(mq__folder *f, const char *name, const void *data, size_t n) {
    int fd;
    MQ_TRY(open_new(f, name, &fd));
    return close_synced(f, fd, name, write_all(f, fd, name, data, n));
}

mq_status mq__folder_copy_file(mq__folder *f, const char *src, const char *name) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return mq__fail(f->ctx, MQ_ERR_IO, "%s: cannot open: %s", src, strerror(errno));
    int fd;
    mq_status st = open_new(f, name, &fd);
    if (st != MQ_OK) {
        close(in);
        return st;
    }
    char buf[1 << 16];
    for (;;) {
        ssize_t k = read(in, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            st = mq__fail(f->ctx, MQ_ERR_IO, "%s: read failed: %s", src, strerror(errno));
            break;
        }
        if (k == 0) break;
        st = write_all(f, fd, name, buf, (size_t)k);
        if (st != MQ_OK) break;
    }
    close(in);
    return close_synced(f, fd, name, st);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)ftw;
    if (flag == FTW_DP) rmdir(path);
    else unlink(path);
    return 0;
}

mq_status mq__folder_commit(mq__folder *f) {
    int dfd = open(f->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* the folder's entries; some file systems refuse: best effort */
        close(dfd);
    }
    mq_status st = mq__dest_commit(f->ctx, f->tmp, f->dest);
    if (st != MQ_OK) return st;
    for (size_t i = 0; i < f->nfiles; i++) mq__temp_unregister(f->ctx, f->files[i]);
    f->committed = true;
    /* a replaced folder was exchanged into the temporary name: remove it (links not followed) */
    if (f->replaced) {
        nftw(f->tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        mq__temp_unregister(f->ctx, f->tmp);
    }
    return MQ_OK;
}

void mq__folder_free(mq__folder *f) {
    if (!f) return;
    if (!f->committed) {
        for (size_t i = f->nfiles; i-- > 0;) mq__temp_discard(f->ctx, f->files[i]);
        mq__temp_discard(f->ctx, f->tmp); /* empty now */
    }
    for (size_t i = 0; i < f->nfiles; i++) mq__free(f->ctx, f->files[i]);
    mq__free(f->ctx, f->files);
    mq__free(f->ctx, f->dest);
    mq__free(f->ctx, f->tmp);
    mq__free(f->ctx, f);
}

mq_status mq__read_small_file(mq_ctx *ctx, const char *path, uint64_t max, const char *what,
                              char **out, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mq__fail(ctx, MQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return mq__fail(ctx, MQ_ERR_IO, "%s: not a readable regular file", path);
    }
    if ((uint64_t)sb.st_size > max) {
        close(fd);
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: %s of %lld bytes is over the limit of %llu", path,
                        what, (long long)sb.st_size, (unsigned long long)max);
    }
    size_t n = (size_t)sb.st_size, got = 0;
    char *buf = (char *)mq__malloc(ctx, n + 1);
    if (!buf) {
        close(fd);
        return MQ_ERR_NOMEM;
    }
    while (got < n) {
        ssize_t k = read(fd, buf + got, n - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            close(fd);
            mq__free(ctx, buf);
            return mq__fail(ctx, MQ_ERR_IO, "%s: cannot read: %s", path, strerror(e));
        }
        got += (size_t)k;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return MQ_OK;
}
