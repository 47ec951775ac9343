/* Output policy of the writers (io/dest.h): what may be replaced, modes kept, temporary names,
 * standard output, signal-time cleanup. */
#include "harness.h"
#include "io/dest.h"
#include "io/writer_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[512];

static void path_in(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", dir, name);
}

static int write_text(const char *path, const char *text, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return 0;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) && chmod(path, mode) == 0;
}

static int holds(const char *path, const char *text) {
    char buf[256] = {0};
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    return n == (ssize_t)strlen(text) && !memcmp(buf, text, (size_t)n);
}

/* Entries of dir whose name starts with the temporary prefix. */
static int temps_in(const char *d) {
    DIR *h = opendir(d);
    int n = 0;
    for (struct dirent *e; h && (e = readdir(h));)
        n += !strncmp(e->d_name, MQ__TEMP_PREFIX, strlen(MQ__TEMP_PREFIX));
    if (h) closedir(h);
    return n;
}

/* One F32 tensor of 4 values written to path; the status of the whole sequence. */
static mq_status write_one(mq_ctx *ctx, const char *path, mq_format fmt) {
    mq_tensor_desc d = {"t", MQ_F32, 1, {4}};
    float v[4] = {1, 2, 3, 4};
    mq_writer *w = NULL;
    mq_status st = mq_writer_open(ctx, path, fmt, &d, 1, NULL, 0, &w);
    if (st == MQ_OK) st = mq_writer_write(w, v, sizeof v);
    if (st == MQ_OK) st = mq_writer_commit(w);
    mq_writer_free(w);
    return st;
}

TEST(existing_file_needs_overwrite) {
    char p[700];
    path_in(p, sizeof p, "exists.safetensors");
    CHECK(write_text(p, "old", 0600));
    mq_ctx *ctx = mq_ctx_create();
    CHECK_EQ_INT(mq_ctx_overwrite(ctx), 0);
    CHECK_EQ_INT(write_one(ctx, p, MQ_FORMAT_AUTO), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "already exists");
    CHECK(holds(p, "old"));
    CHECK_EQ_INT(mq_output_check(ctx, p, NULL), MQ_ERR_INVALID);
    CHECK_EQ_INT(temps_in(dir), 0);
    /* allowed: replaced, permission bits kept */
    mq_ctx_set_overwrite(ctx, 1);
    CHECK_EQ_INT(mq_output_check(ctx, p, NULL), MQ_OK);
    CHECK_EQ_INT(write_one(ctx, p, MQ_FORMAT_AUTO), MQ_OK);
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 07777) == 0600 && sb.st_size > 16);
    /* a read-only destination stays read-only */
    CHECK(chmod(p, 0444) == 0);
    CHECK_EQ_INT(write_one(ctx, p, MQ_FORMAT_PYTORCH), MQ_OK);
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 07777) == 0444);
    CHECK_EQ_INT(temps_in(dir), 0);
    unlink(p);
    mq_ctx_free(ctx);
}

TEST(only_regular_files_are_replaced) {
    char sub[700], fifo[700], link[700], target[700];
    path_in(sub, sizeof sub, "a_folder");
    path_in(fifo, sizeof fifo, "a_fifo");
    path_in(link, sizeof link, "a_link");
    path_in(target, sizeof target, "link_target");
    CHECK(mkdir(sub, 0755) == 0);
    CHECK(mkfifo(fifo, 0644) == 0);
    CHECK(write_text(target, "target", 0644));
    CHECK(symlink(target, link) == 0);
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1);
    CHECK_EQ_INT(write_one(ctx, sub, MQ_FORMAT_AUTO), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "is a directory");
    CHECK_EQ_INT(write_one(ctx, fifo, MQ_FORMAT_AUTO), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "is a FIFO");
    CHECK_EQ_INT(write_one(ctx, link, MQ_FORMAT_AUTO), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "symbolic link");
    CHECK_EQ_INT(write_one(ctx, "/dev/null", MQ_FORMAT_AUTO), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "character device");
    struct stat sb;
    CHECK(stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode));
    CHECK(lstat(link, &sb) == 0 && S_ISLNK(sb.st_mode));
    CHECK(holds(target, "target"));
    CHECK(lstat(fifo, &sb) == 0 && S_ISFIFO(sb.st_mode));
    CHECK_EQ_INT(temps_in(dir), 0);
    /* the folder kind: an existing folder needs overwrite, a file in its place is refused */
    mq__dest_info info;
    CHECK_EQ_INT(mq__dest_check(ctx, sub, MQ__DEST_DIR, &info), MQ_OK);
    CHECK(info.exists);
    CHECK_EQ_INT(mq__dest_check(ctx, target, MQ__DEST_DIR, &info), MQ_ERR_INVALID);
    mq_ctx_set_overwrite(ctx, 0);
    CHECK_EQ_INT(mq__dest_check(ctx, sub, MQ__DEST_DIR, &info), MQ_ERR_INVALID);
    rmdir(sub);
    unlink(fifo);
    unlink(link);
    unlink(target);
    mq_ctx_free(ctx);
}

/* A folder written through a temporary folder and committed over an existing one. */
TEST(folder_commit) {
    char dest[600], old_file[700];
    path_in(dest, sizeof dest, "out_folder");
    snprintf(old_file, sizeof old_file, "%s/old", dest);
    CHECK(mkdir(dest, 0755) == 0);
    CHECK(write_text(old_file, "old", 0644));
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1);
    char *tmp = NULL;
    CHECK_EQ_INT(mq__temp_mkdir(ctx, dest, &tmp), MQ_OK);
    if (tmp) {
        char f[800];
        snprintf(f, sizeof f, "%s/new", tmp);
        CHECK(write_text(f, "new", 0644));
        CHECK_EQ_INT(mq__dest_commit(ctx, tmp, dest), MQ_OK);
        snprintf(f, sizeof f, "%s/new", dest);
        CHECK(holds(f, "new"));
        snprintf(f, sizeof f, "%s/old", tmp); /* the old folder, now at tmp */
        CHECK(holds(f, "old"));
        unlink(f);
        mq__temp_discard(ctx, tmp);
        snprintf(f, sizeof f, "%s/new", dest);
        unlink(f);
    }
    CHECK_EQ_INT(temps_in(dir), 0);
    rmdir(dest);
    mq__free(ctx, tmp);
    mq_ctx_free(ctx);
}

TEST(long_names_and_temp_pattern) {
    char name[NAME_MAX + 1], p[PATH_MAX];
    memset(name, 'n', NAME_MAX);
    memcpy(name + NAME_MAX - 12, ".safetensors", 12);
    name[NAME_MAX] = 0;
    path_in(p, sizeof p, name);
    mq_ctx *ctx = mq_ctx_create();
    mq_tensor_desc d = {"t", MQ_F32, 1, {4}};
    mq_writer *w = NULL;
    CHECK_EQ_INT(mq_writer_open(ctx, p, MQ_FORMAT_AUTO, &d, 1, NULL, 0, &w), MQ_OK);
    /* while open: one temporary file named .monoquant-<pid>-<n>.tmp beside the destination */
    CHECK_EQ_INT(temps_in(dir), 1);
    char expect[64];
    snprintf(expect, sizeof expect, MQ__TEMP_PREFIX "%ld-", (long)getpid());
    DIR *h = opendir(dir);
    int found = 0;
    for (struct dirent *e; h && (e = readdir(h));)
        found |= !strncmp(e->d_name, expect, strlen(expect)) &&
                 strlen(e->d_name) > 4 && !strcmp(e->d_name + strlen(e->d_name) - 4, ".tmp");
    if (h) closedir(h);
    CHECK(found);
    float v[4] = {1, 2, 3, 4};
    if (w) CHECK_EQ_INT(mq_writer_write(w, v, sizeof v), MQ_OK);
    if (w) CHECK_EQ_INT(mq_writer_commit(w), MQ_OK);
    mq_writer_free(w);
    CHECK(access(p, F_OK) == 0);
    CHECK_EQ_INT(temps_in(dir), 0);
    unlink(p);
    mq_ctx_free(ctx);
}

/* What a signal handler calls: the open writer's temporary file goes, the destination stays. */
TEST(remove_temporaries) {
    char p[700];
    path_in(p, sizeof p, "interrupted.safetensors");
    CHECK(write_text(p, "old", 0644));
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1);
    mq_tensor_desc d = {"t", MQ_F32, 1, {4}};
    mq_writer *w = NULL;
    CHECK_EQ_INT(mq_writer_open(ctx, p, MQ_FORMAT_AUTO, &d, 1, NULL, 0, &w), MQ_OK);
    CHECK_EQ_INT(temps_in(dir), 1);
    CHECK_EQ_INT(mq_ctx_remove_temporaries(ctx), 1);
    CHECK_EQ_INT(temps_in(dir), 0);
    CHECK_EQ_INT(mq_ctx_remove_temporaries(ctx), 0);
    CHECK(holds(p, "old"));
    mq_writer_free(w);
    unlink(p);
    mq_ctx_free(ctx);
}

TEST(standard_output) {
    char p[700];
    path_in(p, sizeof p, "stdout.safetensors");
    fflush(stdout);
    int saved = dup(1);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(saved >= 0 && fd >= 0);
    dup2(fd, 1);
    close(fd);
    mq_ctx *ctx = mq_ctx_create();
    mq_status st = write_one(ctx, "-", MQ_FORMAT_AUTO);
    mq_status st_pt = write_one(ctx, "-", MQ_FORMAT_PYTORCH);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", mq_ctx_message(ctx));
    dup2(saved, 1);
    close(saved);
    CHECK_EQ_INT(st, MQ_OK);
    CHECK_EQ_INT(st_pt, MQ_ERR_UNSUPPORTED);
    CHECK(strstr(msg, "cannot be streamed") != NULL);
    mq_model *m = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, p, NULL, &m), MQ_OK);
    if (m) CHECK_EQ_INT(mq_model_tensor_count(m), 1);
    mq_model_free(m);
    CHECK_EQ_INT(access("-", F_OK) != 0, 1);
    unlink(p);
    mq_ctx_free(ctx);
}

/* The writer's early syncs come here (this definition replaces libc's in this program):
 * counted, and failed on demand. */
static int fdatasync_calls, fdatasync_fail; /* the calls: counted by the syncer, polled */

int fdatasync(int fd) {
    __atomic_fetch_add(&fdatasync_calls, 1, __ATOMIC_SEQ_CST);
    if (fdatasync_fail) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

/* A 24 MB tensor written in 1 MB pieces with an early sync asked for every 4 MB; waits
 * (up to 10 s) until the syncer has run before the commit. */
static mq_status write_synced(mq_ctx *ctx, const char *path) {
    enum { PIECE = 1 << 18, PIECES = 24 };
    mq_tensor_desc d = {"t", MQ_F32, 1, {(int64_t)PIECE * PIECES}};
    float *v = (float *)malloc(PIECE * sizeof *v);
    mq_writer *w = NULL;
    mq_status st = v ? mq_writer_open(ctx, path, MQ_FORMAT_SAFETENSORS, &d, 1, NULL, 0, &w)
                     : MQ_ERR_NOMEM;
    for (int k = 0; st == MQ_OK && k < PIECES; k++) {
        for (int i = 0; i < PIECE; i++) v[i] = (float)(k * PIECE + i);
        st = mq_writer_write(w, v, PIECE * sizeof *v);
    }
    for (int t = 0; st == MQ_OK && t < 1000; t++) {
        if (__atomic_load_n(&fdatasync_calls, __ATOMIC_SEQ_CST)) break;
        usleep(10000);
    }
    if (st == MQ_OK) st = mq_writer_commit(w);
    mq_writer_free(w);
    free(v);
    return st;
}

TEST(early_syncs) {
    char p[700];
    path_in(p, sizeof p, "synced.safetensors");
    uint64_t step = mq__writer_sync_step;
    mq__writer_sync_step = 4u << 20;
    mq_ctx *ctx = mq_ctx_create();
    fdatasync_calls = 0;
    CHECK_EQ_INT(write_synced(ctx, p), MQ_OK);
    CHECK(fdatasync_calls > 0);
    mq_model *m = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, p, NULL, &m), MQ_OK);
    const mq_tensor *t = m ? mq_model_tensor(m, 0) : NULL;
    CHECK(t && t->numel == 24u << 18);
    if (t && t->numel == 24u << 18) {
        const float *f = (const float *)t->data;
        int same = 1;
        for (uint64_t i = 0; i < t->numel; i += 4093) same &= f[i] == (float)i;
        CHECK(same && f[t->numel - 1] == (float)(t->numel - 1));
    }
    mq_model_free(m);
    unlink(p);
    /* a failed early sync fails the commit: its error is not reported again to the fsync */
    fdatasync_calls = 0;
    fdatasync_fail = 1;
    CHECK_EQ_INT(write_synced(ctx, p), MQ_ERR_IO);
    CHECK_MSG_HAS(ctx, "fsync failed");
    fdatasync_fail = 0;
    CHECK(fdatasync_calls > 0);
    CHECK_EQ_INT(access(p, F_OK) != 0, 1);
    CHECK_EQ_INT(temps_in(dir), 0);
    mq__writer_sync_step = step;
    mq_ctx_free(ctx);
}

int main(void) {
    snprintf(dir, sizeof dir, "%s/test_destXXXXXX", test_tmpdir());
    if (!mkdtemp(dir)) {
        printf("not ok setup: cannot create %s\n", dir);
        return 1;
    }
    RUN(existing_file_needs_overwrite);
    RUN(only_regular_files_are_replaced);
    RUN(folder_commit);
    RUN(long_names_and_temp_pattern);
    RUN(remove_temporaries);
    RUN(standard_output);
    RUN(early_syncs);
    rmdir(dir);
    return test_summary();
}
