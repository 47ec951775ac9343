/* A folder built under a temporary name beside its destination and renamed into place once
 * complete: a failed run leaves nothing behind. */
#include "io/folder.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct mq__folder {
    mq_ctx *ctx;
    char *dest, *tmp;
    bool committed;
};

char *mq__path_join(mq_ctx *ctx, const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = (char *)mq__malloc(ctx, n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

mq_status mq__folder_begin(mq_ctx *ctx, const char *dest, mq__folder **out) {
    *out = NULL;
    size_t n = strlen(dest);
    while (n > 1 && dest[n - 1] == '/') n--;
    struct stat sb;
    char *d = mq__strndup(ctx, dest, n);
    if (!d) return MQ_ERR_NOMEM;
    if (lstat(d, &sb) == 0) {
        mq_status st = mq__fail(ctx, MQ_ERR_IO, "%s: already exists; refusing to replace it", d);
        mq__free(ctx, d);
        return st;
    }
    mq__folder *f = (mq__folder *)mq__calloc(ctx, 1, sizeof *f);
    char *tmp = (char *)mq__malloc(ctx, n + 32);
    if (!f || !tmp) {
        mq__free(ctx, f);
        mq__free(ctx, tmp);
        mq__free(ctx, d);
        return MQ_ERR_NOMEM;
    }
    /* beside the destination (same file system for the rename), recognisable */
    snprintf(tmp, n + 32, "%s.mq-tmp-XXXXXX", d);
    if (!mkdtemp(tmp)) {
        int e = errno;
        mq__free(ctx, f);
        mq__free(ctx, tmp);
        mq_status st = mq__fail(ctx, MQ_ERR_IO, "%s: cannot create a temporary folder beside it: "
                                "%s", d, strerror(e));
        mq__free(ctx, d);
        return st;
    }
    chmod(tmp, 0755); /* mkdtemp makes it 0700; a model folder is usually shared */
    f->ctx = ctx;
    f->dest = d;
    f->tmp = tmp;
    *out = f;
    return MQ_OK;
}

char *mq__folder_path(mq__folder *f, const char *name) {
    return mq__path_join(f->ctx, f->tmp, name);
}

const char *mq__folder_dest(const mq__folder *f) { return f->dest; }

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
    char *path = mq__path_join(f->ctx, f->tmp, name);
    if (!path) return MQ_ERR_NOMEM;
    *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    int e = errno;
    mq__free(f->ctx, path);
    if (*fd < 0)
        return mq__fail(f->ctx, MQ_ERR_IO, "%s/%s: cannot create: %s", f->dest, name, strerror(e));
    return MQ_OK;
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

mq_status mq__folder_commit(mq__folder *f) {
    int dfd = open(f->tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* the entries of the folder; some file systems refuse: best effort */
        close(dfd);
    }
    /* rename() would silently replace an empty folder: look first */
    struct stat sb;
    if (lstat(f->dest, &sb) == 0)
        return mq__fail(f->ctx, MQ_ERR_IO, "%s: appeared while it was being written; refusing "
                        "to replace it", f->dest);
    if (rename(f->tmp, f->dest) != 0)
        return mq__fail(f->ctx, MQ_ERR_IO, "%s: cannot rename the temporary folder into place: "
                        "%s", f->dest, strerror(errno));
    f->committed = true;
    const char *slash = strrchr(f->dest, '/');
    char *parent = slash ? mq__strndup(f->ctx, f->dest, slash == f->dest ? 1 : (size_t)(slash - f->dest))
                         : mq__strdup(f->ctx, ".");
    if (parent) {
        dfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        mq__free(f->ctx, parent);
    }
    return MQ_OK;
}

/* Removes the temporary folder: it holds only regular files this run created. */
static void remove_tmp(mq__folder *f) {
    DIR *d = opendir(f->tmp);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char *p = mq__path_join(f->ctx, f->tmp, de->d_name);
            if (p) unlink(p);
            mq__free(f->ctx, p);
        }
        closedir(d);
    }
    rmdir(f->tmp);
}

void mq__folder_free(mq__folder *f) {
    if (!f) return;
    if (!f->committed) remove_tmp(f);
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
