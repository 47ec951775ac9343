/* mq_writer: temporary file, bounded buffer, per-tensor accounting, fsync + rename. */
#include "io/writer_internal.h"
#include "io/dest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define WRITER_BUF (4u << 20)
/* Buffers, block sizes and offsets of O_DIRECT writes are multiples of this. */
#define DIRECT_ALIGN 4096u

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* Writeback is started every WRITEBACK_STEP bytes and waited for one step behind, so the
 * final fsync finds little left to do and the dirty pages of the output stay bounded. */
#define WRITEBACK_STEP ((uint64_t)32 << 20)
/* An early sync is asked for every this many bytes written: large enough that the syncs
 * cost little more than the one final fsync, small enough to leave it little to do. */
uint64_t mq__writer_sync_step = (uint64_t)128 << 20;

/* 0 or the errno of the failed write. */
static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* A buffer of `n` bytes aligned to `align` (a power of two) inside a new allocation kept in
 * *raw. */
static uint8_t *alloc_aligned(mq_ctx *ctx, size_t n, size_t align, void **raw) {
    *raw = mq__malloc(ctx, n + align);
    if (!*raw) return NULL;
    return (uint8_t *)(((uintptr_t)*raw + align - 1) & ~(uintptr_t)(align - 1));
}

/* The output buffers sit on huge pages where Linux has them for madvise: an O_DIRECT write
 * from 4 KB pages reaches the virtual disk as one segment per page (a 4 MB write was split
 * into several requests, and the writer managed 0.6 GB/s), from 2 MB pages as two segments
 * (1.6 GB/s measured). Fewer first-touch faults too. Advice only. */
#define HUGE_ALIGN ((size_t)2 << 20)

static uint8_t *alloc_out_buf(mq_ctx *ctx, size_t n, void **raw) {
    uint8_t *p = alloc_aligned(ctx, n, HUGE_ALIGN, raw);
#ifdef MADV_HUGEPAGE
    if (p) (void)madvise(p, n, MADV_HUGEPAGE);
#endif
    return p;
}

/* Writes that bypass the page cache: the data goes from our buffer to the device, with no
 * copy into the page cache and no writeback left for the fsync. Only whole aligned blocks;
 * the first write that is not one (the tail, a patch) turns it off for good. */
static void direct_on(mq_writer *w) {
#ifdef O_DIRECT
    int fl = fcntl(w->fd, F_GETFL);
    w->direct = fl >= 0 && fcntl(w->fd, F_SETFL, fl | O_DIRECT) == 0;
#else
    (void)w;
#endif
}

static void direct_off(mq_writer *w) {
#ifdef O_DIRECT
    if (!w->direct) return;
    int fl = fcntl(w->fd, F_GETFL);
    if (fl >= 0) fcntl(w->fd, F_SETFL, fl & ~O_DIRECT);
    w->direct = false;
#else
    (void)w;
#endif
}

/* 0 or the errno of the failed write of n bytes at the file's end (offset w->written). */
static int write_block(mq_writer *w, const uint8_t *p, size_t n) {
    if (w->direct && (n % DIRECT_ALIGN || w->written % DIRECT_ALIGN ||
                      (uintptr_t)p % DIRECT_ALIGN))
        direct_off(w);
    if (w->direct) {
        ssize_t k;
        do k = write(w->fd, p, n);
        while (k < 0 && errno == EINTR);
        if (k == (ssize_t)n) return 0;
        /* refused (a file system without it) or short: the rest through the page cache */
        int e = errno;
        direct_off(w);
        if (k < 0 && e != EINVAL) return e;
        if (k > 0) p += k, n -= (size_t)k;
    }
    return write_all(w->fd, p, n);
}

/* Linux: sync_file_range on the bytes written since the last step; elsewhere the final fsync
 * does all of it. Advice only: failures (a pipe, a file system without it) are ignored. */
static void writeback(mq_writer *w) {
#if defined(__linux__) && defined(SYNC_FILE_RANGE_WRITE)
    if (w->to_stdout || w->written - w->kicked < WRITEBACK_STEP) return;
    uint64_t from = w->kicked;
    sync_file_range(w->fd, (off_t)from, (off_t)(w->written - from), SYNC_FILE_RANGE_WRITE);
    if (from >= WRITEBACK_STEP)
        sync_file_range(w->fd, (off_t)(from - WRITEBACK_STEP), (off_t)WRITEBACK_STEP,
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                        SYNC_FILE_RANGE_WAIT_AFTER);
    w->kicked = w->written;
#else
    (void)w;
#endif
}

/* 0 or the errno: n bytes at `offset`, through the page cache. */
static int pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t offset) {
    while (n) {
        ssize_t k = pwrite(fd, p, n, (off_t)offset);
        if (k < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += k;
        n -= (size_t)k;
        offset += (uint64_t)k;
    }
    return 0;
}

/* Patches bytes already in a file written with O_DIRECT without turning it off: each block
 * they touch is read, changed and written back whole. false: not done (the caller falls back
 * to the page cache). */
static bool patch_direct(mq_writer *w, uint64_t offset, const uint8_t *p, size_t n) {
    if (!w->patch_blk) return false;
    while (n) {
        uint64_t blk = offset & ~(uint64_t)(DIRECT_ALIGN - 1);
        size_t at = (size_t)(offset - blk), k = DIRECT_ALIGN - at < n ? DIRECT_ALIGN - at : n;
        ssize_t r;
        do r = pread(w->fd, w->patch_blk, DIRECT_ALIGN, (off_t)blk);
        while (r < 0 && errno == EINTR);
        if (r != (ssize_t)DIRECT_ALIGN) return false;
        memcpy(w->patch_blk + at, p, k);
        do r = pwrite(w->fd, w->patch_blk, DIRECT_ALIGN, (off_t)blk);
        while (r < 0 && errno == EINTR);
        if (r != (ssize_t)DIRECT_ALIGN) return false; /* rewritten through the page cache */
        offset += k;
        p += k;
        n -= k;
    }
    return true;
}

/* 0 or the errno: patches bytes that are in the file (O_DIRECT kept where it can be). */
static int patch_file(mq_writer *w, uint64_t offset, const uint8_t *p, size_t n) {
    if (w->direct && patch_direct(w, offset, p, n)) return 0;
    direct_off(w);
    return pwrite_all(w->fd, p, n, offset);
}

/* Asks the syncer for an fdatasync once mq__writer_sync_step more bytes are in the file. */
static void sync_kick(mq_writer *w) {
    if (!w->syncer) return;
    pthread_mutex_lock(&w->sync_mu);
    if (w->written - w->sync_target >= mq__writer_sync_step) {
        w->sync_target = w->written;
        pthread_cond_signal(&w->sync_cv);
    }
    pthread_mutex_unlock(&w->sync_mu);
}

static void *syncer_main(void *arg) {
    mq_writer *w = (mq_writer *)arg;
    pthread_mutex_lock(&w->sync_mu);
    for (;;) {
        while (w->sync_target <= w->synced && !w->sync_quit)
            pthread_cond_wait(&w->sync_cv, &w->sync_mu);
        if (w->sync_quit) break;
        uint64_t target = w->sync_target;
        pthread_mutex_unlock(&w->sync_mu);
        int e = fdatasync(w->fd) != 0 ? errno : 0;
        pthread_mutex_lock(&w->sync_mu);
        if (e && !w->sync_errno) w->sync_errno = e;
        w->synced = target;
    }
    pthread_mutex_unlock(&w->sync_mu);
    return NULL;
}

/* A helper thread with its mutex and condition variable; false (nothing left to undo) when
 * one of them cannot be made. */
static bool start_thread(pthread_t *t, pthread_mutex_t *mu, pthread_cond_t *cv,
                         void *(*fn)(void *), void *arg) {
    if (pthread_mutex_init(mu, NULL) != 0) return false;
    if (pthread_cond_init(cv, NULL) == 0) {
        if (pthread_create(t, NULL, fn, arg) == 0) return true;
        pthread_cond_destroy(cv);
    }
    pthread_mutex_destroy(mu);
    return false;
}

/* Sets *quit under the mutex, wakes the thread, joins it and frees what start_thread made. */
static void stop_thread(pthread_t t, pthread_mutex_t *mu, pthread_cond_t *cv, bool *quit) {
    pthread_mutex_lock(mu);
    *quit = true;
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(mu);
    pthread_join(t, NULL);
    pthread_cond_destroy(cv);
    pthread_mutex_destroy(mu);
}

/* Early syncs are an optimization: without the thread, the final fsync does all of it. */
static void start_syncer(mq_writer *w) {
    if (w->flusher && !w->to_stdout)
        w->syncer = start_thread(&w->sync_thread, &w->sync_mu, &w->sync_cv, syncer_main, w);
}

/* Waits for an early sync in progress; 0 or the errno of a failed one. The flusher must
 * have stopped (it asks for syncs). */
static int stop_syncer(mq_writer *w) {
    if (!w->syncer) return w->sync_errno;
    stop_thread(w->sync_thread, &w->sync_mu, &w->sync_cv, &w->sync_quit);
    w->syncer = false;
    return w->sync_errno;
}

static void *flusher_main(void *arg) {
    mq_writer *w = (mq_writer *)arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->pending && !w->quit) pthread_cond_wait(&w->cv, &w->mu);
        if (!w->pending) break;
        size_t n = w->pending;
        bool failed = w->flush_errno != 0;
        pthread_mutex_unlock(&w->mu);
        uint64_t t0 = mq__now_ns();
        int err = failed ? 0 : write_block(w, w->spare, n);
        if (!failed && !err) {
            w->written += n;
            writeback(w);
            sync_kick(w);
        }
        pthread_mutex_lock(&w->mu);
        /* patches queued while this buffer was in flight: they follow it */
        while (!err && !failed && w->npatch) {
            mq__writer_patch_rec q[MQ__WRITER_MAX_PATCH];
            size_t nq = w->npatch;
            memcpy(q, w->patches, nq * sizeof *q);
            w->npatch = 0;
            pthread_mutex_unlock(&w->mu);
            for (size_t i = 0; !err && i < nq; i++) err = patch_file(w, q[i].offset, q[i].data, q[i].n);
            pthread_mutex_lock(&w->mu);
        }
        w->npatch = 0;
        w->times.write_ns += mq__now_ns() - t0;
        if (err) w->flush_errno = err;
        w->pending = 0;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* A second buffer and the thread that writes it; without them the writer stays synchronous. */
static void start_flusher(mq_writer *w) {
    w->spare = alloc_out_buf(w->ctx, w->buf_cap, &w->raw[1]);
    if (!w->spare) {
        mq_ctx_clear_error(w->ctx);
        return;
    }
    w->flusher = start_thread(&w->thread, &w->mu, &w->cv, flusher_main, w);
}

/* Waits until the flusher has written what it was handed; its error fails the writer. */
static mq_status drain(mq_writer *w) {
    if (!w->flusher) return MQ_OK;
    pthread_mutex_lock(&w->mu);
    if (w->pending) {
        uint64_t t0 = mq__now_ns();
        while (w->pending) pthread_cond_wait(&w->cv, &w->mu);
        w->times.wait_ns += mq__now_ns() - t0;
    }
    int e = w->flush_errno;
    pthread_mutex_unlock(&w->mu);
    if (!e) return MQ_OK;
    w->failed = true;
    return mq__fail(w->ctx, MQ_ERR_IO, "%s: write failed: %s", w->path, strerror(e));
}

static void stop_flusher(mq_writer *w) {
    if (!w->flusher) return;
    stop_thread(w->thread, &w->mu, &w->cv, &w->quit);
    w->flusher = false;
}

/* Hands the buffer to the flusher (after it finished the previous one), or writes it. */
static mq_status flush_buf(mq_writer *w) {
    if (!w->buf_len) return MQ_OK;
    if (w->flusher) {
        MQ_TRY(drain(w));
        uint8_t *full = w->buf;
        w->buf = w->spare;
        pthread_mutex_lock(&w->mu);
        w->spare = full;
        w->pending = w->buf_len;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        w->buf_len = 0;
        return MQ_OK;
    }
    uint64_t t0 = mq__now_ns();
    int e = write_block(w, w->buf, w->buf_len);
    if (!e) {
        w->written += w->buf_len;
        writeback(w);
    }
    w->times.write_ns += mq__now_ns() - t0;
    if (e) {
        w->failed = true;
        return mq__fail(w->ctx, MQ_ERR_IO, "%s: write failed: %s", w->path, strerror(e));
    }
    w->buf_len = 0;
    return MQ_OK;
}

/* Everything handed over is in the file. */
static mq_status flush_all(mq_writer *w) {
    MQ_TRY(flush_buf(w));
    return drain(w);
}

void mq__writer_add_times(const mq_writer *w, mq__write_times *t) {
    t->write_ns += w->times.write_ns;
    t->wait_ns += w->times.wait_ns;
    t->sync_ns += w->times.sync_ns;
}

mq_status mq__writer_out(mq_writer *w, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    w->pos += n;
    while (n) {
        if (w->buf_len == w->buf_cap) MQ_TRY(flush_buf(w));
        size_t k = w->buf_cap - w->buf_len;
        if (k > n) k = n;
        memcpy(w->buf + w->buf_len, p, k);
        w->buf_len += k;
        p += k;
        n -= k;
    }
    return MQ_OK;
}

mq_status mq__writer_patch(mq_writer *w, uint64_t offset, const void *data, size_t n) {
    if (w->to_stdout) {
        w->failed = true;
        return mq__fail(w->ctx, MQ_ERR_UNSUPPORTED, "standard output: this output cannot be "
                        "streamed (bytes already written must change); write to a file");
    }
    const uint8_t *p = (const uint8_t *)data;
    /* bytes still in the buffer change there */
    uint64_t buffered_from = w->pos - w->buf_len;
    if (offset + n > buffered_from) {
        size_t k = offset >= buffered_from ? n : (size_t)(offset + n - buffered_from);
        memcpy(w->buf + (offset + n - k - buffered_from), p + n - k, k);
        n -= k;
    }
    if (!n) return MQ_OK;
    if (w->direct && !w->patch_blk) { /* a block for read-modify-write, made once */
        w->patch_blk = alloc_aligned(w->ctx, DIRECT_ALIGN, DIRECT_ALIGN, &w->raw[2]);
        if (!w->patch_blk) mq_ctx_clear_error(w->ctx);
    }
    /* the rest: after the buffer in flight (queued for the flusher, no wait), or now */
    if (w->flusher && n <= sizeof w->patches[0].data) {
        pthread_mutex_lock(&w->mu);
        bool queued = w->pending && w->npatch < MQ__WRITER_MAX_PATCH;
        if (queued) {
            mq__writer_patch_rec *q = &w->patches[w->npatch++];
            q->offset = offset;
            q->n = (uint8_t)n;
            memcpy(q->data, p, n);
        }
        pthread_mutex_unlock(&w->mu);
        if (queued) return MQ_OK;
    }
    MQ_TRY(drain(w));
    int e = patch_file(w, offset, p, n);
    if (!e) return MQ_OK;
    w->failed = true;
    return mq__fail(w->ctx, MQ_ERR_IO, "%s: write failed: %s", w->path, strerror(e));
}

mq_status mq__writer_set_meta(mq_writer *w, const char *key, const char *value) {
    mq_ctx *ctx = w->ctx;
    if (!key || !value) return mq__fail(ctx, MQ_ERR_INVALID, "%s: NULL metadata entry", w->path);
    if (w->committed || w->failed || (!w->be->meta_at_end && !w->be->replace_meta))
        return mq__fail(ctx, MQ_ERR_INTERNAL, "%s: metadata '%s' can no longer change", w->path,
                        key);
    char *v = mq__strdup(ctx, value);
    if (!v) return MQ_ERR_NOMEM;
    for (size_t i = 0; i < w->nmeta; i++)
        if (!strcmp(w->meta[i].key, key)) {
            mq_status st = w->be->meta_at_end ? MQ_OK : w->be->replace_meta(w, i, value);
            if (st != MQ_OK) {
                mq__free(ctx, v);
                return st;
            }
            mq__free(ctx, (void *)w->meta[i].value);
            w->meta[i].value = v;
            return MQ_OK;
        }
    if (!w->be->meta_at_end) {
        mq__free(ctx, v);
        return mq__fail(ctx, MQ_ERR_INTERNAL, "%s: metadata '%s' is not in the file", w->path,
                        key);
    }
    char *k = mq__strdup(ctx, key);
    mq_kv *grown = k ? (mq_kv *)mq__realloc(ctx, w->meta, (w->nmeta ? w->nmeta : 1) * sizeof *grown,
                                           (w->nmeta + 1) * sizeof *grown)
                     : NULL;
    if (!grown) {
        mq__free(ctx, k);
        mq__free(ctx, v);
        return MQ_ERR_NOMEM;
    }
    w->meta = grown;
    w->meta[w->nmeta++] = (mq_kv){k, v};
    return MQ_OK;
}

static void writer_release(mq_writer *w) {
    mq_ctx *ctx = w->ctx;
    stop_flusher(w);
    stop_syncer(w);
    mq__free(ctx, w->raw[0]);
    mq__free(ctx, w->raw[1]);
    mq__free(ctx, w->raw[2]);
    if (w->be && w->be->release) w->be->release(w);
    if (w->fd >= 0 && !w->to_stdout) close(w->fd);
    if (!w->committed && w->tmp_path) mq__temp_discard(ctx, w->tmp_path);
    for (size_t i = 0; i < w->n; i++) mq__free(ctx, (void *)w->tensors[i].name);
    for (size_t i = 0; i < w->nmeta; i++) {
        mq__free(ctx, (void *)w->meta[i].key);
        mq__free(ctx, (void *)w->meta[i].value);
    }
    mq__free(ctx, w->tensors);
    mq__free(ctx, w->sizes);
    mq__free(ctx, w->meta);
    mq__free(ctx, w->path);
    mq__free(ctx, w->tmp_path);
}

void mq_writer_free(mq_writer *w) {
    if (!w) return;
    mq_ctx *ctx = w->ctx;
    writer_release(w);
    mq__free(ctx, w);
}

static mq_status copy_inputs(mq_writer *w, const mq_tensor_desc *t, size_t n, const mq_kv *meta,
                             size_t nmeta) {
    mq_ctx *ctx = w->ctx;
    w->tensors = (mq_tensor_desc *)mq__calloc(ctx, n ? n : 1, sizeof *w->tensors);
    w->sizes = (uint64_t *)mq__calloc(ctx, n ? n : 1, sizeof *w->sizes);
    w->meta = (mq_kv *)mq__calloc(ctx, nmeta ? nmeta : 1, sizeof *w->meta);
    if (!w->tensors || !w->sizes || !w->meta) return MQ_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!t[i].name || !*t[i].name)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: tensor %zu has no name", w->path, i);
        if (t[i].ndim < 0 || t[i].ndim > MQ_MAX_DIMS)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: tensor '%s' has %d dimensions", w->path,
                            t[i].name, t[i].ndim);
        size_t es = mq_dtype_size(t[i].dtype);
        if (!es)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: tensor '%s' has an invalid dtype", w->path,
                            t[i].name);
        uint64_t bytes = es;
        for (int d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0 || !mq__mul_u64(bytes, (uint64_t)t[i].shape[d], &bytes))
                return mq__fail(ctx, MQ_ERR_INVALID, "%s: tensor '%s' has an invalid shape",
                                w->path, t[i].name);
        }
        w->tensors[i] = t[i];
        w->tensors[i].name = NULL;
        w->n = i + 1;
        w->tensors[i].name = mq__strdup(ctx, t[i].name);
        if (!w->tensors[i].name) return MQ_ERR_NOMEM;
        w->sizes[i] = bytes;
    }
    w->n = n;
    for (size_t i = 0; i < nmeta; i++) {
        if (!meta[i].key || !meta[i].value)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: metadata entry %zu is NULL", w->path, i);
        w->meta[i].key = mq__strdup(ctx, meta[i].key);
        w->meta[i].value = mq__strdup(ctx, meta[i].value);
        w->nmeta = i + 1;
        if (!w->meta[i].key || !w->meta[i].value) return MQ_ERR_NOMEM;
    }
    return MQ_OK;
}

static mq_status open_temp(mq_writer *w) {
    mq__dest_info info;
    MQ_TRY(mq__dest_check(w->ctx, w->path, MQ__DEST_FILE, &info));
    if (info.is_stdout) {
        if (w->be != &mq__safetensors_backend)
            return mq__fail(w->ctx, MQ_ERR_UNSUPPORTED, "standard output: the %s format cannot "
                            "be streamed (its entries are completed after their data); write "
                            "to a file", mq_format_name(w->format));
        w->to_stdout = true;
        w->fd = STDOUT_FILENO;
        return MQ_OK;
    }
    return mq__temp_open(w->ctx, w->path, &info, &w->tmp_path, &w->fd);
}

mq_status mq_writer_open(mq_ctx *ctx, const char *path, mq_format fmt,
                         const mq_tensor_desc *tensors, size_t n, const mq_kv *meta, size_t nmeta,
                         mq_writer **out) {
    if (!ctx || !path || !out || (n && !tensors) || (nmeta && !meta))
        return mq__fail(ctx, MQ_ERR_INVALID, "mq_writer_open: NULL argument");
    *out = NULL;
    if (fmt == MQ_FORMAT_AUTO) {
        if (has_suffix(path, ".pt") || has_suffix(path, ".pth") || has_suffix(path, ".bin"))
            fmt = MQ_FORMAT_PYTORCH;
        else fmt = MQ_FORMAT_SAFETENSORS;
    }
    mq_writer *w = (mq_writer *)mq__calloc(ctx, 1, sizeof *w);
    if (!w) return MQ_ERR_NOMEM;
    w->ctx = ctx;
    w->fd = -1;
    w->format = fmt;
    w->be = fmt == MQ_FORMAT_PYTORCH ? &mq__pytorch_backend : &mq__safetensors_backend;
    mq_status st = MQ_ERR_NOMEM;
    w->path = mq__strdup(ctx, path);
    w->buf_cap = WRITER_BUF;
    w->buf = alloc_out_buf(ctx, w->buf_cap, &w->raw[0]);
    if (w->path && w->buf) st = copy_inputs(w, tensors, n, meta, nmeta);
    if (st == MQ_OK) st = open_temp(w);
    if (st == MQ_OK) st = w->be->begin(w);
    if (st == MQ_OK && !w->to_stdout) direct_on(w);
    if (st == MQ_OK) start_flusher(w);
    if (st == MQ_OK) start_syncer(w);
    if (st != MQ_OK) {
        mq_writer_free(w);
        return st;
    }
    *out = w;
    return MQ_OK;
}

/* Moves past finished tensors (including empty ones), calling the hooks. */
static mq_status advance(mq_writer *w) {
    while (w->cur < w->n) {
        if (!w->started_cur) {
            if (w->be->tensor_begin) MQ_TRY(w->be->tensor_begin(w, w->cur));
            w->started_cur = true;
        }
        if (w->cur_done < w->sizes[w->cur]) return MQ_OK;
        if (w->be->tensor_end) MQ_TRY(w->be->tensor_end(w, w->cur));
        w->cur++;
        w->cur_done = 0;
        w->started_cur = false;
    }
    return MQ_OK;
}

mq_status mq_writer_write(mq_writer *w, const void *data, size_t nbytes) {
    if (w->failed) return mq__fail(w->ctx, MQ_ERR_INVALID, "%s: writer already failed", w->path);
    const uint8_t *p = (const uint8_t *)data;
    mq_status st = advance(w);
    while (st == MQ_OK && nbytes) {
        if (w->cur >= w->n) {
            st = mq__fail(w->ctx, MQ_ERR_INVALID, "%s: %zu bytes written beyond the last tensor",
                          w->path, nbytes);
            break;
        }
        uint64_t left = w->sizes[w->cur] - w->cur_done;
        size_t k = nbytes < left ? nbytes : (size_t)left;
        if (w->be->observe) w->be->observe(w, p, k);
        st = mq__writer_out(w, p, k);
        w->cur_done += k;
        p += k;
        nbytes -= k;
        if (st == MQ_OK) st = advance(w);
    }
    if (st != MQ_OK) w->failed = true;
    return st;
}

/* Makes the rename durable. Best effort and allocation-free: the file is already complete and
 * in place, so nothing here can fail the commit. */
static void sync_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (!slash) strcpy(dir, ".");
    else if (n == 0) strcpy(dir, "/");
    else if (n < sizeof dir) {
        memcpy(dir, path, n);
        dir[n] = 0;
    } else return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd); /* some file systems refuse a directory fsync */
        close(fd);
    }
}

static mq_status commit(mq_writer *w);

mq_status mq_writer_commit(mq_writer *w) {
    if (w->failed) return mq__fail(w->ctx, MQ_ERR_INVALID, "%s: writer already failed", w->path);
    if (w->committed) return MQ_OK;
    uint64_t t0 = mq__now_ns();
    mq_status st = commit(w);
    w->times.sync_ns += mq__now_ns() - t0;
    return st;
}

static mq_status commit(mq_writer *w) {
    mq_status st = advance(w);
    if (st == MQ_OK && w->cur < w->n)
        st = mq__fail(w->ctx, MQ_ERR_INVALID,
                      "%s: tensor '%s' is incomplete: %llu of %llu bytes written", w->path,
                      w->tensors[w->cur].name, (unsigned long long)w->cur_done,
                      (unsigned long long)w->sizes[w->cur]);
    if (st == MQ_OK && w->be->finish) st = w->be->finish(w);
    if (st == MQ_OK) st = flush_all(w);
    stop_flusher(w);
    /* an error seen by an early sync is reported to it only, not again to the fsync below */
    int se = stop_syncer(w);
    if (st == MQ_OK && se)
        st = mq__fail(w->ctx, MQ_ERR_IO, "%s: fsync failed: %s", w->path, strerror(se));
    if (st == MQ_OK && w->to_stdout) {
        /* a pipe or terminal cannot be synced; a file given as standard output can */
        if (fsync(w->fd) != 0 && errno != EINVAL && errno != EROFS && errno != ENOTSUP)
            st = mq__fail(w->ctx, MQ_ERR_IO, "standard output: fsync failed: %s",
                          strerror(errno));
        if (st != MQ_OK) w->failed = true;
        else w->committed = true;
        return st;
    }
    if (st == MQ_OK && fsync(w->fd) != 0)
        st = mq__fail(w->ctx, MQ_ERR_IO, "%s: fsync failed: %s", w->path, strerror(errno));
    if (st == MQ_OK) {
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) != 0)
            st = mq__fail(w->ctx, MQ_ERR_IO, "%s: close failed: %s", w->path, strerror(errno));
    }
    if (st == MQ_OK) st = mq__dest_commit(w->ctx, w->tmp_path, w->path);
    if (st != MQ_OK) {
        w->failed = true;
        return st;
    }
    w->committed = true;
    sync_dir(w->path);
    return MQ_OK;
}
