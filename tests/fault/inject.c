/* Fault injection for the CLI tests (tests/cli/faults.sh), loaded with LD_PRELOAD. It wraps
 * open, write, pwrite, fsync and rename for the files whose path contains MQF_MATCH (default
 * ".monoquant-": the temporary files of the output policy) and counts the bytes written to
 * them. The library has no hook of its own: this sits between it and libc. Environment:
 *   MQF_ENOSPC_AT=N       writes beyond N bytes fail with ENOSPC (a full disk)
 *   MQF_FSYNC_EIO=1       fsync fails with EIO
 *   MQF_SIGNAL_AT=N:SIG   raise SIG once N bytes have been written; N = -1: at the fsync,
 *                         N = -2: just before the rename into place
 *   MQF_TRUNCATE_AT=N:P   truncate the file P to 0 bytes once N bytes have been written
 *   MQF_TRUNCATE_ON_MAP=P truncate the file P to 4096 bytes right after it is mapped
 *   MQF_LOG=FILE          one line per injected fault appended (the tests check it fired) */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096
static char tracked[MAX_FD];
static long long written;
static int signal_done, truncate_done;

#define REAL(ret, name, ...) \
    static ret (*real)(__VA_ARGS__); \
    if (!real) real = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

static const char *match(void) {
    const char *m = getenv("MQF_MATCH");
    return m && *m ? m : ".monoquant-";
}

static long long env_num(const char *name, long long dflt) {
    const char *v = getenv(name);
    return v && *v ? atoll(v) : dflt;
}

static void note(const char *what) {
    const char *log = getenv("MQF_LOG");
    if (!log) return;
    REAL(int, "open", const char *, int, ...);
    ssize_t (*real_write)(int, const void *, size_t) =
        (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    int fd = real(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) return;
    char line[128];
    int n = snprintf(line, sizeof line, "%s\n", what);
    if (real_write(fd, line, (size_t)n) < 0) { /* best effort */ }
    int (*real_close)(int) = (int (*)(int))dlsym(RTLD_NEXT, "close");
    real_close(fd);
}

/* Faults triggered by the byte count (phase 0) or at a step (-1 fsync, -2 rename). */
static void triggers(long long phase) {
    const char *s = getenv("MQF_SIGNAL_AT");
    if (s && *s && !signal_done) {
        long long n = atoll(s);
        const char *colon = strchr(s, ':');
        int sig = colon ? atoi(colon + 1) : SIGINT;
        if ((n >= 0 && phase == 0 && written >= n) || (n < 0 && n == phase)) {
            signal_done = 1;
            note("signal");
            raise(sig);
        }
    }
    const char *t = getenv("MQF_TRUNCATE_AT");
    if (t && *t && !truncate_done && phase == 0) {
        const char *colon = strchr(t, ':');
        if (colon && written >= atoll(t)) {
            truncate_done = 1;
            /* noted first: the writes may come from a writer thread, and another thread
             * reading the truncated input exits the process at once */
            note("truncate");
            if (truncate(colon + 1, 0) != 0) note("truncate failed");
        }
    }
}

static void track(int fd, const char *path, int flags) {
    if (fd >= 0 && fd < MAX_FD)
        tracked[fd] = path && (flags & (O_WRONLY | O_RDWR)) && strstr(path, match()) != NULL;
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) ? (mode_t)va_arg(ap, int) : 0;
}

static int open_tracked(const char *name, const char *path, int flags, va_list ap) {
    int (*real)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, name);
    int fd = real(path, flags, mode_arg(flags, ap));
    track(fd, path, flags);
    return fd;
}

int open(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int fd = open_tracked("open", path, flags, ap);
    va_end(ap);
    return fd;
}

int open64(const char *path, int flags, ...) {
    va_list ap;
    va_start(ap, flags);
    int fd = open_tracked("open64", path, flags, ap);
    va_end(ap);
    return fd;
}

int close(int fd) {
    REAL(int, "close", int);
    if (fd >= 0 && fd < MAX_FD) tracked[fd] = 0;
    return real(fd);
}

static int is_tracked(int fd) { return fd >= 0 && fd < MAX_FD && tracked[fd]; }

/* A full disk: shortens the write to what fits, or fails it. */
static int full(int fd, size_t *n) {
    long long cap = env_num("MQF_ENOSPC_AT", -1);
    if (!is_tracked(fd) || cap < 0 || written + (long long)*n <= cap) return 0;
    if (written >= cap) {
        note("enospc");
        errno = ENOSPC;
        return 1;
    }
    *n = (size_t)(cap - written);
    return 0;
}

static void count(int fd, ssize_t k) {
    if (k > 0 && is_tracked(fd)) {
        written += k;
        triggers(0);
    }
}

ssize_t write(int fd, const void *buf, size_t n) {
    REAL(ssize_t, "write", int, const void *, size_t);
    if (full(fd, &n)) return -1;
    ssize_t k = real(fd, buf, n);
    count(fd, k);
    return k;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    REAL(ssize_t, "pwrite", int, const void *, size_t, off_t);
    if (full(fd, &n)) return -1;
    ssize_t k = real(fd, buf, n, off);
    count(fd, k);
    return k;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { return pwrite(fd, buf, n, off); }

static int sync_fault(int fd) {
    if (!is_tracked(fd)) return 0;
    triggers(-1);
    if (env_num("MQF_FSYNC_EIO", 0)) {
        note("fsync eio");
        errno = EIO;
        return 1;
    }
    return 0;
}

int fsync(int fd) {
    REAL(int, "fsync", int);
    return sync_fault(fd) ? -1 : real(fd);
}

int fdatasync(int fd) {
    REAL(int, "fdatasync", int);
    return sync_fault(fd) ? -1 : real(fd);
}

int rename(const char *from, const char *to) {
    REAL(int, "rename", const char *, const char *);
    if (strstr(from, match())) triggers(-2);
    return real(from, to);
}

int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned flags) {
    REAL(int, "renameat2", int, const char *, int, const char *, unsigned);
    if (strstr(from, match())) triggers(-2);
    return real(fd1, from, fd2, to, flags);
}

/* The input shrinks under its mapping: later reads beyond 4096 bytes raise SIGBUS. */
static void map_fault(int fd) {
    const char *p = getenv("MQF_TRUNCATE_ON_MAP");
    if (!p || !*p || fd < 0) return;
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return;
    target[n] = 0;
    char want[4096];
    if (!realpath(p, want) || strcmp(want, target)) return;
    note(truncate(p, 4096) == 0 ? "truncate on map" : "truncate failed");
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    REAL(void *, "mmap", void *, size_t, int, int, int, off_t);
    void *r = real(addr, len, prot, flags, fd, off);
    if (r != MAP_FAILED) map_fault(fd);
    return r;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    return mmap(addr, len, prot, flags, fd, off);
}
