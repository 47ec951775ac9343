/* mq_model: opening a checkpoint of any supported kind, and the accessors. */
#include "io/model_internal.h"
#include "io/io.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

const char *mq_format_name(mq_format fmt) {
    switch (fmt) {
    case MQ_FORMAT_AUTO: return "auto";
    case MQ_FORMAT_SAFETENSORS: return "safetensors";
    case MQ_FORMAT_PYTORCH: return "pytorch";
    }
    return "unknown";
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Detects the format of a regular file from its first bytes. */
static mq_status sniff_file(mq_ctx *ctx, const char *path, mq_format *fmt, bool *is_index) {
    *is_index = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return mq__fail(ctx, MQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t head[16] = {0};
    ssize_t got = read(fd, head, sizeof head);
    close(fd);
    if (got < 0) return mq__fail(ctx, MQ_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    if (got >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) {
        *fmt = MQ_FORMAT_PYTORCH;
        return MQ_OK;
    }
    /* A pickle starts with PROTO (0x80, version). So can a safetensors header length (e.g.
     * 640 = 80 02 00 ...), but that one has zero high bytes: a header is at most 100 MB. */
    bool length_like = got >= 8 && !head[4] && !head[5] && !head[6] && !head[7];
    if (got >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5 && !length_like)
        return mq__fail(ctx, MQ_ERR_UNSUPPORTED,
                        "%s: a legacy (pre-1.6, non-zip) PyTorch checkpoint is not supported; "
                        "re-save it with torch.save in a current PyTorch", path);
    if (ends_with(path, ".json")) {
        *is_index = true;
        *fmt = MQ_FORMAT_SAFETENSORS; /* refined by the index reader */
        return MQ_OK;
    }
    *fmt = MQ_FORMAT_SAFETENSORS;
    return MQ_OK;
}

static void model_release(mq_model *m) {
    mq_ctx *ctx = m->ctx;
    for (size_t i = 0; i < m->ntensors; i++) mq__free(ctx, (void *)m->tensors[i].name);
    for (size_t i = 0; i < m->nmeta; i++) {
        mq__free(ctx, (void *)m->meta[i].key);
        mq__free(ctx, (void *)m->meta[i].value);
    }
    for (size_t i = 0; i < m->nmaps; i++) {
        if (m->maps[i].addr && m->maps[i].len) munmap(m->maps[i].addr, m->maps[i].len);
        if (m->maps[i].fd >= 0) close(m->maps[i].fd);
        mq__free(ctx, m->maps[i].path);
    }
    for (size_t i = 0; i < m->nowned; i++) mq__free(ctx, m->owned[i]);
    mq__free(ctx, m->tensors);
    mq__free(ctx, m->meta);
    mq__free(ctx, m->maps);
    mq__free(ctx, m->owned);
    mq__free(ctx, m->hash);
    mq__free(ctx, m->path);
    mq__free(ctx, m->source_dir);
}

void mq_model_free(mq_model *m) {
    if (!m) return;
    mq_ctx *ctx = m->ctx;
    model_release(m);
    mq__free(ctx, m);
}

mq_status mq_model_open(mq_ctx *ctx, const char *path, const mq_open_options *opts,
                        mq_model **out) {
    if (!ctx || !path || !out) return mq__fail(ctx, MQ_ERR_INVALID, "mq_model_open: NULL argument");
    *out = NULL;
    mq_open_options o;
    mq_open_options_default(&o);
    if (opts) MQ_TRY(mq__struct_read(ctx, "mq_open_options", opts, &o, sizeof o,
                                     MQ__LAYOUT_END(mq_open_options, key)));
    mq_model *m = (mq_model *)mq__calloc(ctx, 1, sizeof *m);
    if (!m) return MQ_ERR_NOMEM;
    m->ctx = ctx;
    m->path = mq__strdup(ctx, path);
    if (!m->path) {
        mq__free(ctx, m);
        return MQ_ERR_NOMEM;
    }
    mq_status st;
    char *resolved = NULL;
    const char *file = path;
    mq_format fmt = o.format;
    bool is_index = false;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = mq__fail(ctx, MQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(sb.st_mode)) {
        st = mq__resolve_dir(ctx, path, &resolved, &fmt);
        if (st != MQ_OK) goto done;
        file = resolved;
        is_index = ends_with(file, ".json");
    } else if (!S_ISREG(sb.st_mode)) {
        st = mq__fail(ctx, MQ_ERR_IO, "%s: not a regular file or folder", path);
        goto done;
    } else {
        mq_format sniffed = MQ_FORMAT_SAFETENSORS;
        st = sniff_file(ctx, path, &sniffed, &is_index);
        if (st != MQ_OK) goto done;
        if (fmt == MQ_FORMAT_AUTO) fmt = sniffed;
    }
    m->format = fmt;
    if (is_index) st = mq__sharded_read(m, file);
    else if (fmt == MQ_FORMAT_PYTORCH) st = mq__pytorch_read(m, file, o.key);
    else st = mq__safetensors_read(m, file);
    if (st == MQ_OK && !m->hash) st = mq__model_index(m, file);
done:
    mq__free(ctx, resolved);
    if (st != MQ_OK) {
        mq_model_free(m);
        return st;
    }
    *out = m;
    return MQ_OK;
}

mq_format mq_model_format(const mq_model *m) { return m->format; }
size_t mq_model_tensor_count(const mq_model *m) { return m->ntensors; }
const mq_tensor *mq_model_tensor(const mq_model *m, size_t i) {
    return i < m->ntensors ? &m->tensors[i] : NULL;
}
size_t mq_model_file_count(const mq_model *m) { return m->nmaps ? m->nmaps : 1; }
size_t mq_model_metadata_count(const mq_model *m) { return m->nmeta; }
const char *mq_model_metadata_key(const mq_model *m, size_t i) {
    return i < m->nmeta ? m->meta[i].key : NULL;
}
const char *mq_model_metadata_value(const mq_model *m, size_t i) {
    return i < m->nmeta ? m->meta[i].value : NULL;
}
int64_t mq_model_metadata_find(const mq_model *m, const char *key) {
    for (size_t i = 0; m && key && i < m->nmeta; i++)
        if (!strcmp(m->meta[i].key, key)) return (int64_t)i;
    return -1;
}
const char *mq__model_meta(const mq_model *m, const char *key) {
    int64_t i = mq_model_metadata_find(m, key);
    return i < 0 ? NULL : m->meta[i].value;
}

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

int64_t mq_model_find(const mq_model *m, const char *name) {
    if (!m->hash) {
        for (size_t i = 0; i < m->ntensors; i++)
            if (!strcmp(m->tensors[i].name, name)) return (int64_t)i;
        return -1;
    }
    size_t mask = m->hash_cap - 1;
    for (size_t j = hash_name(name) & mask;; j = (j + 1) & mask) {
        long idx = m->hash[j];
        if (idx < 0) return -1;
        if (!strcmp(m->tensors[idx].name, name)) return idx;
    }
}

mq_status mq__model_index(mq_model *m, const char *where) {
    size_t cap = 16;
    while (cap < m->ntensors * 2 + 1) cap *= 2;
    long *h = (long *)mq__malloc(m->ctx, cap * sizeof *h);
    if (!h) return MQ_ERR_NOMEM;
    for (size_t j = 0; j < cap; j++) h[j] = -1;
    size_t mask = cap - 1;
    for (size_t i = 0; i < m->ntensors; i++) {
        size_t j = hash_name(m->tensors[i].name) & mask;
        for (; h[j] >= 0; j = (j + 1) & mask) {
            if (!strcmp(m->tensors[h[j]].name, m->tensors[i].name)) {
                mq__free(m->ctx, h);
                return mq__fail(m->ctx, MQ_ERR_FORMAT, "%s: duplicate tensor name '%s'", where,
                                m->tensors[i].name);
            }
        }
        h[j] = (long)i;
    }
    mq__free(m->ctx, m->hash);
    m->hash = h;
    m->hash_cap = cap;
    return MQ_OK;
}

/* A mapped file's descriptor is kept for mq__model_read only while few are: at most 64 and
 * an eighth of the process's limit, so that a model of thousands of shards, or a host
 * process short of descriptors, still opens (its other files are read through the mapping,
 * the same bytes). */
static bool keep_fd(mq_model *m) {
    if (m->fds_scarce || m->nfds >= 64) return false;
    struct rlimit rl;
    return getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
           m->nfds < rl.rlim_cur / 8;
}

/* open(2) that, out of descriptors, gives back the kept ones and tries once more. */
static int open_input(mq_model *m, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || !m->nfds) return fd;
    int e = errno;
    m->fds_scarce = true;
    for (size_t i = 0; i < m->nmaps; i++)
        if (m->maps[i].fd >= 0) {
            close(m->maps[i].fd);
            m->maps[i].fd = -1;
        }
    m->nfds = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != EMFILE && errno != ENFILE) e = errno;
    if (fd < 0) errno = e;
    return fd;
}

mq_status mq__model_map_file(mq_model *m, const char *path, const uint8_t **addr, size_t *len) {
    mq_ctx *ctx = m->ctx;
    MQ_TRY(mq__grow(ctx, (void **)&m->maps, &m->cap_maps, m->nmaps + 1, sizeof *m->maps));
    int fd = open_input(m, path);
    if (fd < 0) return mq__fail(ctx, MQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return mq__fail(ctx, MQ_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return mq__fail(ctx, MQ_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)sb.st_size;
    void *p = NULL;
    if (n) {
        p = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            return mq__fail(ctx, MQ_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
    }
    char *pc = mq__strdup(ctx, path);
    if (!pc) {
        if (p) munmap(p, n);
        close(fd);
        return MQ_ERR_NOMEM;
    }
    if (p && keep_fd(m)) {
        m->nfds++;
    } else {
        close(fd);
        fd = -1;
    }
    m->maps[m->nmaps++] = (mq_mapping){p, n, pc, fd};
    *addr = (const uint8_t *)p;
    *len = n;
    return MQ_OK;
}

mq_status mq__model_add_tensor(mq_model *m, const char *name, size_t name_len, mq_dtype dtype,
                               int ndim, const int64_t *shape, const void *data, uint64_t nbytes) {
    mq_ctx *ctx = m->ctx;
    if (ndim < 0 || ndim > MQ_MAX_DIMS)
        return mq__fail(ctx, MQ_ERR_UNSUPPORTED, "tensor '%.*s' has %d dimensions (at most %d)",
                        (int)name_len, name, ndim, MQ_MAX_DIMS);
    MQ_TRY(mq__grow(ctx, (void **)&m->tensors, &m->cap_tensors, m->ntensors + 1,
                    sizeof *m->tensors));
    char *nm = mq__strndup(ctx, name, name_len);
    if (!nm) return MQ_ERR_NOMEM;
    mq_tensor *t = &m->tensors[m->ntensors++];
    memset(t, 0, sizeof *t);
    t->name = nm;
    t->dtype = dtype;
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (uint64_t)shape[i]; /* callers validated the product */
    }
    t->nbytes = nbytes;
    t->data = data;
    return MQ_OK;
}

mq_status mq__model_set_meta(mq_model *m, const char *key, size_t key_len, const char *value,
                             size_t value_len) {
    mq_ctx *ctx = m->ctx;
    char *v = mq__strndup(ctx, value, value_len);
    if (!v) return MQ_ERR_NOMEM;
    for (size_t i = 0; i < m->nmeta; i++) {
        if (strlen(m->meta[i].key) == key_len && !memcmp(m->meta[i].key, key, key_len)) {
            mq__free(ctx, (void *)m->meta[i].value);
            m->meta[i].value = v;
            return MQ_OK;
        }
    }
    char *k = mq__strndup(ctx, key, key_len);
    mq_status st = k ? mq__grow(ctx, (void **)&m->meta, &m->cap_meta, m->nmeta + 1, sizeof *m->meta)
                     : MQ_ERR_NOMEM;
    if (st != MQ_OK) {
        mq__free(ctx, k);
        mq__free(ctx, v);
        return st;
    }
    m->meta[m->nmeta++] = (mq_kv){k, v};
    return MQ_OK;
}

mq_status mq__model_own(mq_model *m, void *buf) {
    mq_status st = mq__grow(m->ctx, (void **)&m->owned, &m->cap_owned, m->nowned + 1,
                            sizeof *m->owned);
    if (st != MQ_OK) {
        mq__free(m->ctx, buf);
        return st;
    }
    m->owned[m->nowned++] = buf;
    return MQ_OK;
}

void mq_open_options_default_sized(mq_open_options *opts, size_t struct_size) {
    mq_open_options d;
    memset(&d, 0, sizeof d);
    d.format = MQ_FORMAT_AUTO;
    mq__struct_default(opts, struct_size, &d, sizeof d);
}

/* ---- what the pipeline uses (io/io.h) ---- */

const char *mq__model_path(const mq_model *m) { return m->path; }
const char *mq__model_source_dir(const mq_model *m) { return m->source_dir; }

uint64_t mq__model_mapped_bytes(const mq_model *m) {
    uint64_t n = 0;
    for (size_t i = 0; i < m->nmaps; i++) n += m->maps[i].len;
    return n;
}

mq_status mq__model_ensure_index(mq_model *m, const char *where) {
    return m->hash ? MQ_OK : mq__model_index(m, where);
}

/* The whole pages of [p, p+n) inside one of the model's file mappings: false when the range
 * lies in an owned buffer (or is empty). */
static bool mapped_pages(const mq_model *m, const void *p, uint64_t n, bool outer,
                         uintptr_t *begin, uintptr_t *end) {
    uintptr_t b = (uintptr_t)p, e = b + (uintptr_t)n;
    for (size_t i = 0; p && n && i < m->nmaps; i++) {
        uintptr_t mb = (uintptr_t)m->maps[i].addr, me = mb + m->maps[i].len;
        if (!m->maps[i].addr || b < mb || e > me) continue;
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        /* outer: every page the range touches; else only pages it covers entirely */
        *begin = outer ? b & ~(page - 1) : (b + page - 1) & ~(page - 1);
        *end = outer ? (e + page - 1) & ~(page - 1) : e & ~(page - 1);
        if (*end > me) *end = me;
        return *end > *begin;
    }
    return false;
}

void mq__model_will_read(const mq_model *m, const void *p, uint64_t n, const void *ahead,
                         uint64_t ahead_n) {
    uintptr_t b, e;
#ifdef MADV_POPULATE_READ
    /* one call maps the pages in, instead of a fault per few pages inside the compute */
    if (mapped_pages(m, p, n, true, &b, &e)) madvise((void *)b, e - b, MADV_POPULATE_READ);
#else
    (void)p, (void)n;
#endif
    if (mapped_pages(m, ahead, ahead_n, true, &b, &e)) madvise((void *)b, e - b, MADV_WILLNEED);
}

/* The file mapping of the model that holds [p, p+n), or NULL. */
static const mq_mapping *file_mapping(const mq_model *m, const void *p, uint64_t n) {
    uintptr_t b = (uintptr_t)p;
    for (size_t i = 0; p && n && i < m->nmaps; i++) {
        const mq_mapping *mp = &m->maps[i];
        uintptr_t mb = (uintptr_t)mp->addr;
        if (mp->addr && mp->fd >= 0 && b >= mb && b + n <= mb + mp->len) return mp;
    }
    return NULL;
}

/* n bytes of the file at *off into dst: 0, the errno, or -1 when the file ends first;
 * *off is where it stopped. Touches nothing but dst (any thread may call it). */
static int pread_whole(int fd, uint8_t *dst, uint64_t n, uint64_t *off) {
    while (n) {
        ssize_t k = pread(fd, dst, (size_t)n, (off_t)*off);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return errno ? errno : EIO;
        if (k == 0) return -1;
        dst += k;
        n -= (uint64_t)k;
        *off += (uint64_t)k;
    }
    return 0;
}

mq_status mq__model_read(const mq_model *m, const void *p, uint64_t n, void *dst, bool *done) {
    *done = false;
    const mq_mapping *mp = file_mapping(m, p, n);
    if (!mp) return MQ_OK;
    uint64_t off = (uint64_t)((uintptr_t)p - (uintptr_t)mp->addr);
    int e = pread_whole(mp->fd, (uint8_t *)dst, n, &off);
    if (e)
        return mq__fail(m->ctx, MQ_ERR_IO, "input changed while reading: %s: %s at offset %llu",
                        mp->path, e > 0 ? strerror(e) : "the file shrank",
                        (unsigned long long)off);
    *done = true;
    return MQ_OK;
}

bool mq__model_pread(const mq_model *m, const void *p, uint64_t n, void *dst) {
    const mq_mapping *mp = file_mapping(m, p, n);
    uint64_t off = mp ? (uint64_t)((uintptr_t)p - (uintptr_t)mp->addr) : 0;
    return mp && pread_whole(mp->fd, (uint8_t *)dst, n, &off) == 0;
}

void mq__model_release(const mq_model *m, const void *p, uint64_t n) {
    /* each mapping's share of the range: a range handed back in one piece may span two
     * mappings that happen to be adjacent */
    uintptr_t rb = (uintptr_t)p, re = rb + (uintptr_t)n, page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (size_t i = 0; p && n && i < m->nmaps; i++) {
        uintptr_t mb = (uintptr_t)m->maps[i].addr, me = mb + m->maps[i].len;
        if (!m->maps[i].addr || re <= mb || rb >= me) continue;
        uintptr_t b = rb > mb ? rb : mb, e = re < me ? re : me;
        b = (b + page - 1) & ~(page - 1); /* only pages the range covers entirely */
        if (e != me) e &= ~(page - 1);
        if (e > b) madvise((void *)b, e - b, MADV_DONTNEED);
    }
}
