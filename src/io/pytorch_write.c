/* PyTorch checkpoint writer backend: a zip archive that torch.load(weights_only=True) reads.
 *
 *   archive/data.pkl        protocol-2 pickle of an OrderedDict name -> tensor, using only
 *                           collections.OrderedDict, torch._utils._rebuild_tensor_v2 and
 *                           torch.<Type>Storage; storage i is record data/<i>
 *   archive/byteorder       "little"
 *   archive/data/<i>        tensor i's bytes, stored, starting on a 64-byte boundary
 *   archive/version         "3\n"
 *   archive/monoquant_metadata.pkl   the writer's string metadata as a pickled dict (only
 *                           when there is metadata; torch ignores records it does not use)
 *
 * The pickle only references storages, so it is written first and tensor data streams after
 * it; each local header's CRC-32 is patched once its data has gone by. */
#include "io/pickle.h"
#include "io/pytorch_internal.h"
#include "io/writer_internal.h"
#include "io/zip.h"

#include <stdio.h>
#include <string.h>

#define ROOT      "archive/"
#define ALIGN     64u
#define U32_MAX   0xFFFFFFFFull
#define CRC_PIECE ((size_t)1 << 20)

typedef struct pt_record {
    char *name;
    uint64_t header_off, size;
    uint32_t crc;
} pt_record;

typedef struct pt_state {
    mq_crc32 tab;
    uint32_t crc; /* of the tensor being streamed */
    pt_record *recs;
    size_t nrecs, cap;
    uint64_t zip64_limit; /* sizes and offsets from here on take their ZIP64 forms */
    uint32_t *piece_crc;  /* per-piece CRCs of a large chunk */
    size_t piece_cap;
    uint8_t *pk; /* pickle being built */
    size_t pk_len, pk_cap;
} pt_state;

/* ---- pickle building ------------------------------------------------------------------ */

static mq_status pk_put(mq_writer *w, const void *p, size_t n) {
    pt_state *s = (pt_state *)w->state;
    MQ_TRY(mq__grow(w->ctx, (void **)&s->pk, &s->pk_cap, s->pk_len + n, 1));
    memcpy(s->pk + s->pk_len, p, n);
    s->pk_len += n;
    return MQ_OK;
}

static mq_status pk_op(mq_writer *w, uint8_t op) {
    return pk_put(w, &op, 1);
}

static mq_status pk_str(mq_writer *w, const char *str) {
    size_t n = strlen(str);
    uint8_t h[5] = {'X'};
    mq__store_le32(h + 1, (uint32_t)n);
    MQ_TRY(pk_put(w, h, 5));
    return pk_put(w, str, n);
}

static mq_status pk_int(mq_writer *w, uint64_t v) {
    uint8_t b[10];
    if (v < 256) {
        b[0] = 'K';
        b[1] = (uint8_t)v;
        return pk_put(w, b, 2);
    }
    if (v < 65536) {
        b[0] = 'M';
        mq__store_le16(b + 1, (uint16_t)v);
        return pk_put(w, b, 3);
    }
    if (v < 0x80000000u) {
        b[0] = 'J';
        mq__store_le32(b + 1, (uint32_t)v);
        return pk_put(w, b, 5);
    }
    b[0] = 0x8a; /* LONG1: little-endian two's complement, with a clear sign bit */
    b[1] = 8;
    mq__store_le64(b + 2, v);
    if (v >> 63) return MQ_ERR_INTERNAL; /* sizes from the writer are below 2^63 */
    return pk_put(w, b, 10);
}

static mq_status pk_global(mq_writer *w, const char *module, const char *name) {
    MQ_TRY(pk_op(w, 'c'));
    MQ_TRY(pk_put(w, module, strlen(module)));
    MQ_TRY(pk_op(w, '\n'));
    MQ_TRY(pk_put(w, name, strlen(name)));
    return pk_op(w, '\n');
}

static mq_status pk_tuple_of(mq_writer *w, int n, const int64_t *v) {
    if (n == 0) return pk_op(w, ')');
    MQ_TRY(pk_op(w, '('));
    for (int i = 0; i < n; i++) MQ_TRY(pk_int(w, (uint64_t)v[i]));
    return pk_op(w, 't');
}

static mq_status pk_tensor(mq_writer *w, size_t i) {
    const mq_tensor_desc *t = &w->tensors[i];
    char key[32];
    snprintf(key, sizeof key, "%zu", i);
    int64_t stride[MQ_MAX_DIMS];
    int64_t run = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        stride[d] = run;
        run *= t->shape[d] > 1 ? t->shape[d] : 1;
    }
    MQ_TRY(pk_str(w, t->name));
    MQ_TRY(pk_global(w, "torch._utils", "_rebuild_tensor_v2"));
    MQ_TRY(pk_op(w, '('));
    MQ_TRY(pk_op(w, '(')); /* persistent id */
    MQ_TRY(pk_str(w, "storage"));
    MQ_TRY(pk_global(w, "torch", mq__pk_storage_name(t->dtype)));
    MQ_TRY(pk_str(w, key));
    MQ_TRY(pk_str(w, "cpu"));
    MQ_TRY(pk_int(w, w->sizes[i] / mq_dtype_size(t->dtype)));
    MQ_TRY(pk_op(w, 't'));
    MQ_TRY(pk_op(w, 'Q'));
    MQ_TRY(pk_int(w, 0)); /* storage offset */
    MQ_TRY(pk_tuple_of(w, t->ndim, t->shape));
    MQ_TRY(pk_tuple_of(w, t->ndim, stride));
    MQ_TRY(pk_op(w, 0x89)); /* requires_grad False */
    MQ_TRY(pk_global(w, "collections", "OrderedDict"));
    MQ_TRY(pk_op(w, ')'));
    MQ_TRY(pk_op(w, 'R')); /* backward hooks: OrderedDict() */
    MQ_TRY(pk_op(w, 't'));
    return pk_op(w, 'R');
}

static mq_status build_state_pickle(mq_writer *w) {
    static const uint8_t proto[2] = {0x80, 2};
    MQ_TRY(pk_put(w, proto, 2));
    MQ_TRY(pk_global(w, "collections", "OrderedDict"));
    MQ_TRY(pk_op(w, ')'));
    MQ_TRY(pk_op(w, 'R'));
    for (size_t i = 0; i < w->n; i += 1000) { /* SETITEMS in batches, as pickle does */
        MQ_TRY(pk_op(w, '('));
        for (size_t j = i; j < w->n && j < i + 1000; j++) MQ_TRY(pk_tensor(w, j));
        MQ_TRY(pk_op(w, 'u'));
    }
    return pk_op(w, '.');
}

static mq_status build_meta_pickle(mq_writer *w) {
    static const uint8_t head[3] = {0x80, 2, '}'};
    MQ_TRY(pk_put(w, head, 3));
    MQ_TRY(pk_op(w, '('));
    for (size_t i = 0; i < w->nmeta; i++) {
        MQ_TRY(pk_str(w, w->meta[i].key));
        MQ_TRY(pk_str(w, w->meta[i].value));
    }
    MQ_TRY(pk_op(w, 'u'));
    return pk_op(w, '.');
}

/* ---- zip records ---------------------------------------------------------------------- */

static mq_status add_record(mq_writer *w, const char *name, uint64_t size, pt_record **out) {
    pt_state *s = (pt_state *)w->state;
    MQ_TRY(mq__grow(w->ctx, (void **)&s->recs, &s->cap, s->nrecs + 1, sizeof *s->recs));
    pt_record *r = &s->recs[s->nrecs];
    memset(r, 0, sizeof *r);
    r->name = mq__strdup(w->ctx, name);
    if (!r->name) return MQ_ERR_NOMEM;
    s->nrecs++;
    r->header_off = w->pos;
    r->size = size;
    *out = r;
    return MQ_OK;
}

/* Local header whose data starts on an ALIGN boundary (padding in an 'FB' extra field, as
 * PyTorch's own writer does); ZIP64 sizes when the record needs them. */
static mq_status local_header(mq_writer *w, const pt_record *r) {
    uint8_t h[30 + 256 + 20 + 4 + ALIGN];
    size_t nlen = strlen(r->name);
    const pt_state *s = (const pt_state *)w->state;
    bool zip64 = r->size >= s->zip64_limit;
    size_t x64 = zip64 ? 20 : 0;
    uint64_t base = r->header_off + 30 + nlen + x64;
    size_t pad = (size_t)((ALIGN - (base + 4) % ALIGN) % ALIGN);
    size_t xlen = x64 + 4 + pad;
    memset(h, 0, sizeof h);
    mq__store_le32(h, 0x04034b50u);
    mq__store_le16(h + 4, zip64 ? 45 : 20);
    mq__store_le16(h + 10, 0);    /* time */
    mq__store_le16(h + 12, 0x21); /* 1980-01-01 */
    mq__store_le32(h + 14, r->crc);
    mq__store_le32(h + 18, zip64 ? (uint32_t)U32_MAX : (uint32_t)r->size);
    mq__store_le32(h + 22, zip64 ? (uint32_t)U32_MAX : (uint32_t)r->size);
    mq__store_le16(h + 26, (uint16_t)nlen);
    mq__store_le16(h + 28, (uint16_t)xlen);
    memcpy(h + 30, r->name, nlen);
    uint8_t *x = h + 30 + nlen;
    if (zip64) {
        mq__store_le16(x, 0x0001);
        mq__store_le16(x + 2, 16);
        mq__store_le64(x + 4, r->size);
        mq__store_le64(x + 12, r->size);
        x += 20;
    }
    mq__store_le16(x, 0x4246); /* "FB" */
    mq__store_le16(x + 2, (uint16_t)pad);
    memset(x + 4, 'Z', pad);
    return mq__writer_out(w, h, 30 + nlen + xlen);
}

static mq_status whole_record(mq_writer *w, const char *name, const void *data, size_t n) {
    pt_state *s = (pt_state *)w->state;
    pt_record *r;
    MQ_TRY(add_record(w, name, n, &r));
    r->crc = mq__crc32_update(&s->tab, 0, data, n);
    MQ_TRY(local_header(w, r));
    return mq__writer_out(w, data, n);
}

static mq_status central_directory(mq_writer *w) {
    pt_state *s = (pt_state *)w->state;
    uint64_t cd_off = w->pos;
    for (size_t i = 0; i < s->nrecs; i++) {
        const pt_record *r = &s->recs[i];
        uint8_t h[46 + 256 + 28];
        size_t nlen = strlen(r->name);
        bool big_size = r->size >= s->zip64_limit, big_off = r->header_off >= s->zip64_limit;
        size_t xlen = (big_size || big_off) ? 4 + (big_size ? 16 : 0) + (big_off ? 8 : 0) : 0;
        memset(h, 0, sizeof h);
        mq__store_le32(h, 0x02014b50u);
        mq__store_le16(h + 4, 45);
        mq__store_le16(h + 6, xlen ? 45 : 20);
        mq__store_le16(h + 14, 0x21);
        mq__store_le32(h + 16, r->crc);
        mq__store_le32(h + 20, big_size ? (uint32_t)U32_MAX : (uint32_t)r->size);
        mq__store_le32(h + 24, big_size ? (uint32_t)U32_MAX : (uint32_t)r->size);
        mq__store_le16(h + 28, (uint16_t)nlen);
        mq__store_le16(h + 30, (uint16_t)xlen);
        mq__store_le32(h + 42, big_off ? (uint32_t)U32_MAX : (uint32_t)r->header_off);
        memcpy(h + 46, r->name, nlen);
        uint8_t *x = h + 46 + nlen;
        if (xlen) {
            mq__store_le16(x, 0x0001);
            mq__store_le16(x + 2, (uint16_t)(xlen - 4));
            x += 4;
            if (big_size) {
                mq__store_le64(x, r->size);
                mq__store_le64(x + 8, r->size);
                x += 16;
            }
            if (big_off) mq__store_le64(x, r->header_off);
        }
        MQ_TRY(mq__writer_out(w, h, 46 + nlen + xlen));
    }
    uint64_t cd_size = w->pos - cd_off, count = s->nrecs;
    bool zip64 = count >= 0xFFFF || cd_off >= s->zip64_limit || cd_size >= s->zip64_limit;
    if (zip64) {
        uint8_t e64[56 + 20] = {0};
        uint64_t e64_off = w->pos;
        mq__store_le32(e64, 0x06064b50u);
        mq__store_le64(e64 + 4, 44);
        mq__store_le16(e64 + 12, 45);
        mq__store_le16(e64 + 14, 45);
        mq__store_le64(e64 + 24, count);
        mq__store_le64(e64 + 32, count);
        mq__store_le64(e64 + 40, cd_size);
        mq__store_le64(e64 + 48, cd_off);
        mq__store_le32(e64 + 56, 0x07064b50u);
        mq__store_le64(e64 + 64, e64_off);
        mq__store_le32(e64 + 72, 1);
        MQ_TRY(mq__writer_out(w, e64, sizeof e64));
    }
    uint8_t e[22] = {0};
    mq__store_le32(e, 0x06054b50u);
    mq__store_le16(e + 8, zip64 ? 0xFFFF : (uint16_t)count);
    mq__store_le16(e + 10, zip64 ? 0xFFFF : (uint16_t)count);
    mq__store_le32(e + 12, zip64 ? (uint32_t)U32_MAX : (uint32_t)cd_size);
    mq__store_le32(e + 16, zip64 ? (uint32_t)U32_MAX : (uint32_t)cd_off);
    return mq__writer_out(w, e, sizeof e);
}

/* ---- backend hooks -------------------------------------------------------------------- */

static bool valid_utf8(const char *str) {
    const uint8_t *p = (const uint8_t *)str;
    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xE0) == 0xC0 ? 1
                : (*p & 0xF0) == 0xE0 ? 2
                : (*p & 0xF8) == 0xF0 ? 3
                                      : -1;
        if (n < 0 || (n == 1 && *p < 0xC2) || *p > 0xF4) return false;
        /* no overlong forms, nothing above U+10FFFF (surrogates pass, as Python allows) */
        if ((*p == 0xE0 && p[1] < 0xA0) || (*p == 0xF0 && p[1] < 0x90) ||
            (*p == 0xF4 && p[1] > 0x8F))
            return false;
        p++;
        for (int k = 0; k < n; k++, p++)
            if ((*p & 0xC0) != 0x80) return false;
    }
    return true;
}

static mq_status pt_begin(mq_writer *w) {
    for (size_t i = 0; i < w->n; i++) {
        if (!mq__pk_storage_name(w->tensors[i].dtype))
            return mq__fail(w->ctx, MQ_ERR_UNSUPPORTED,
                            "%s: tensor '%s': dtype %s has no PyTorch storage type; write "
                            "safetensors instead",
                            w->path, w->tensors[i].name, mq_dtype_name(w->tensors[i].dtype));
        if (!valid_utf8(w->tensors[i].name))
            return mq__fail(w->ctx, MQ_ERR_INVALID, "%s: tensor name '%s' is not valid UTF-8",
                            w->path, w->tensors[i].name);
    }
    for (size_t i = 0; i < w->nmeta; i++)
        if (!valid_utf8(w->meta[i].key) || !valid_utf8(w->meta[i].value))
            return mq__fail(w->ctx, MQ_ERR_INVALID, "%s: metadata '%s' is not valid UTF-8", w->path,
                            w->meta[i].key);
    pt_state *s = (pt_state *)mq__calloc(w->ctx, 1, sizeof *s);
    if (!s) return MQ_ERR_NOMEM;
    w->state = s;
    s->zip64_limit = U32_MAX;
    mq__crc32_init(&s->tab, w->ctx);
    MQ_TRY(build_state_pickle(w));
    MQ_TRY(whole_record(w, ROOT "data.pkl", s->pk, s->pk_len));
    return whole_record(w, ROOT "byteorder", "little", 6);
}

static mq_status pt_tensor_begin(mq_writer *w, size_t i) {
    pt_state *s = (pt_state *)w->state;
    char name[64];
    snprintf(name, sizeof name, ROOT "data/%zu", i);
    pt_record *r;
    MQ_TRY(add_record(w, name, w->sizes[i], &r));
    s->crc = 0;
    return local_header(w, r);
}

typedef struct crc_job {
    const mq_crc32 *tab;
    const uint8_t *data;
    size_t n;
    uint32_t *out;
} crc_job;

static mq_status crc_pieces(void *arg, int64_t begin, int64_t end, int tid) {
    (void)tid;
    const crc_job *j = (const crc_job *)arg;
    for (int64_t i = begin; i < end; i++) {
        size_t off = (size_t)i * CRC_PIECE, len = j->n - off < CRC_PIECE ? j->n - off : CRC_PIECE;
        j->out[i] = mq__crc32_update(j->tab, 0, j->data + off, len);
    }
    return MQ_OK;
}

/* CRC-32 of the data going by. With the slice-by-8 reference (no carry-less multiply),
 * large chunks are split into pieces checksummed on the context's threads and combined: the
 * result is the same as one serial pass. The folding paths run at memory speed, where waking
 * the threads costs more than it saves. */
static void pt_observe(mq_writer *w, const void *data, size_t n) {
    pt_state *s = (pt_state *)w->state;
    size_t pieces = n / CRC_PIECE + (n % CRC_PIECE != 0);
    if (pieces >= 2 && s->tab.update == mq__crc32_raw && mq__thread_count(w->ctx) > 1) {
        crc_job j = {&s->tab, (const uint8_t *)data, n, NULL};
        if (mq__grow(w->ctx, (void **)&s->piece_crc, &s->piece_cap, pieces, sizeof *s->piece_crc) ==
            MQ_OK) {
            j.out = s->piece_crc;
            if (mq__parallel_for(w->ctx, (int64_t)pieces, 1, crc_pieces, &j) == MQ_OK) {
                for (size_t i = 0; i < pieces; i++) {
                    size_t len = n - i * CRC_PIECE < CRC_PIECE ? n - i * CRC_PIECE : CRC_PIECE;
                    s->crc = mq__crc32_combine(&s->tab, s->crc, s->piece_crc[i], len);
                }
                return;
            }
        }
        mq_ctx_clear_error(w->ctx); /* the attempt failed: fall back to one pass */
    }
    s->crc = mq__crc32_update(&s->tab, s->crc, data, n);
}

static mq_status pt_tensor_end(mq_writer *w, size_t i) {
    (void)i;
    pt_state *s = (pt_state *)w->state;
    pt_record *r = &s->recs[s->nrecs - 1];
    r->crc = s->crc;
    if (r->crc == 0) return MQ_OK;
    uint8_t crc[4];
    mq__store_le32(crc, r->crc);
    return mq__writer_patch(w, r->header_off + 14, crc, 4);
}

static mq_status pt_finish(mq_writer *w) {
    pt_state *s = (pt_state *)w->state;
    MQ_TRY(whole_record(w, ROOT "version", "3\n", 2));
    if (w->nmeta) {
        s->pk_len = 0;
        MQ_TRY(build_meta_pickle(w));
        MQ_TRY(whole_record(w, ROOT "monoquant_metadata.pkl", s->pk, s->pk_len));
    }
    return central_directory(w);
}

static void pt_release(mq_writer *w) {
    pt_state *s = (pt_state *)w->state;
    if (!s) return;
    for (size_t i = 0; i < s->nrecs; i++) mq__free(w->ctx, s->recs[i].name);
    mq__free(w->ctx, s->recs);
    mq__free(w->ctx, s->pk);
    mq__free(w->ctx, s->piece_crc);
    mq__free(w->ctx, s);
    w->state = NULL;
}

const mq_writer_backend mq__pytorch_backend = {pt_begin,      pt_tensor_begin, pt_observe,
                                               pt_tensor_end, pt_finish,       pt_release,
                                               true,          NULL};

void mq__pytorch_writer_set_zip64_limit(mq_writer *w, uint64_t limit) {
    pt_state *s = (pt_state *)w->state;
    if (w->be == &mq__pytorch_backend && s) s->zip64_limit = limit < U32_MAX ? limit : U32_MAX;
}
