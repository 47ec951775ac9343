/* PyTorch checkpoint reader: the zip archive torch.save writes (PyTorch >= 1.6). The pickle
 * in <root>/data.pkl is run by the bounded interpreter in pickle.c (nothing is executed);
 * tensors are views of the <root>/data/<key> records, zero-copy when contiguous, otherwise
 * gathered into a buffer the model owns. */
#include "io/pickle.h"
#include "io/pytorch_internal.h"
#include "io/zip.h"

#include <stdio.h>
#include <string.h>

#define MAX_NESTING     64           /* nested dicts/lists walked when looking for tensors */
#define MAX_VISITS      (1ull << 24) /* objects visited in one walk (shared references) */
#define VISITS_PER_BYTE 16           /* ... and at most this many per pickle byte (plus 2^20) */
#define METADATA_RECORD "monoquant_metadata.pkl"

typedef struct pt_reader {
    mq_model *m;
    mq_ctx *ctx;
    const char *path;
    mq_zip zip;
    char *root; /* "<root>/" */
    size_t root_len;
    char *name; /* current dotted tensor name */
    size_t name_len, name_cap;
    uint64_t visits, max_visits;
} pt_reader;

static const mq_zip_entry *find_record(pt_reader *r, const char *rel, size_t rel_len) {
    char buf[512];
    if (r->root_len + rel_len > sizeof buf) return NULL;
    memcpy(buf, r->root, r->root_len);
    memcpy(buf + r->root_len, rel, rel_len);
    return mq__zip_find(&r->zip, buf, r->root_len + rel_len);
}

static mq_status check_archive(pt_reader *r) {
    if (r->zip.n == 0) return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: empty zip archive", r->path);
    const mq_zip_entry *first = &r->zip.entries[0];
    const char *slash = memchr(first->name, '/', first->name_len);
    if (!slash)
        return mq__fail(r->ctx, MQ_ERR_FORMAT,
                        "%s: not a torch.save archive (first entry is not inside a folder)",
                        r->path);
    r->root_len = (size_t)(slash - first->name) + 1;
    r->root = mq__strndup(r->ctx, first->name, r->root_len);
    if (!r->root) return MQ_ERR_NOMEM;
    if (find_record(r, "constants.pkl", 13) || find_record(r, "code/", 5))
        return mq__fail(r->ctx, MQ_ERR_UNSUPPORTED,
                        "%s: a TorchScript archive (torch.jit.save) is not supported; save the "
                        "model's state_dict with torch.save instead",
                        r->path);
    for (size_t i = 0; i < r->zip.n; i++) {
        const mq_zip_entry *e = &r->zip.entries[i];
        if (e->name_len > r->root_len + 5 && !memcmp(e->name, r->root, r->root_len) &&
            !memcmp(e->name + r->root_len, "code/", 5))
            return mq__fail(r->ctx, MQ_ERR_UNSUPPORTED,
                            "%s: a TorchScript archive (torch.jit.save) is not supported; save "
                            "the model's state_dict with torch.save instead",
                            r->path);
    }
    const mq_zip_entry *bo = find_record(r, "byteorder", 9);
    if (bo) {
        MQ_TRY(mq__zip_stored(r->ctx, r->path, bo));
        const char *s = (const char *)r->zip.data + bo->data_off;
        if (bo->size == 3 && !memcmp(s, "big", 3))
            return mq__fail(r->ctx, MQ_ERR_UNSUPPORTED,
                            "%s: big-endian tensor data is not supported", r->path);
        if (bo->size != 6 || memcmp(s, "little", 6))
            return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: unknown byteorder record", r->path);
    }
    return MQ_OK;
}

/* Checks the CRC of a small record (the pickles). */
static mq_status check_crc(pt_reader *r, const mq_zip_entry *e, const char *what) {
    mq_crc32 *c = (mq_crc32 *)mq__malloc(r->ctx, sizeof *c);
    if (!c) return MQ_ERR_NOMEM;
    mq__crc32_init(c, r->ctx);
    uint32_t crc = mq__crc32_update(c, 0, r->zip.data + e->data_off, (size_t)e->size);
    mq__free(r->ctx, c);
    if (crc != e->crc)
        return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: record '%s%s' fails its CRC-32 check", r->path,
                        r->root, what);
    return MQ_OK;
}

/* ---- finding the dict of tensors ------------------------------------------------------ */

static bool is_container(const mq_pk_obj *o) {
    return o->kind == MQ_PK_DICT || o->kind == MQ_PK_LIST || o->kind == MQ_PK_TUPLE;
}

static mq_status holds_tensors(pt_reader *r, const mq_pk_obj *o, int depth, bool *out) {
    *out = false;
    if (++r->visits > r->max_visits)
        return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: the pickle's object graph is too large",
                        r->path);
    if (o->kind == MQ_PK_TENSOR) {
        *out = true;
        return MQ_OK;
    }
    if (!is_container(o)) return MQ_OK;
    if (depth >= MAX_NESTING)
        return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: containers nested more than %d deep", r->path,
                        MAX_NESTING);
    size_t step = o->kind == MQ_PK_DICT ? 2 : 1, first = o->kind == MQ_PK_DICT ? 1 : 0;
    for (size_t i = first; i < o->u.seq.n; i += step) {
        MQ_TRY(holds_tensors(r, o->u.seq.items[i], depth + 1, out));
        if (*out) return MQ_OK;
    }
    return MQ_OK;
}

static bool key_is(const mq_pk_obj *k, const char *s) {
    size_t n = strlen(s);
    return k->kind == MQ_PK_STR && k->u.str.len == n && !memcmp(k->u.str.s, s, n);
}

static mq_status list_keys(pt_reader *r, const mq_pk_obj *d, bool only_tensors, char *out,
                           size_t cap) {
    size_t k = 0;
    out[0] = 0;
    for (size_t i = 0; i + 1 < d->u.seq.n; i += 2) {
        const mq_pk_obj *key = d->u.seq.items[i];
        bool t = true;
        if (only_tensors) MQ_TRY(holds_tensors(r, d->u.seq.items[i + 1], 1, &t));
        if (!t || key->kind != MQ_PK_STR) continue;
        int w = snprintf(out + k, cap - k, "%s'%.*s'", k ? ", " : "",
                         (int)(key->u.str.len > 64 ? 64 : key->u.str.len), key->u.str.s);
        if (w < 0 || (size_t)w >= cap - k) {
            if (cap > 4) memcpy(out + cap - 4, "...", 4);
            break;
        }
        k += (size_t)w;
    }
    return MQ_OK;
}

static mq_status select_dict(pt_reader *r, const mq_pk_obj *root, const char *key,
                             const mq_pk_obj **out) {
    char keys[600];
    if (root->kind != MQ_PK_DICT)
        return mq__fail(r->ctx, MQ_ERR_FORMAT,
                        "%s: the checkpoint holds no dict of tensors (its top-level object is not "
                        "a dict)",
                        r->path);
    if (key && strcmp(key, ".") != 0) {
        for (size_t i = 0; i + 1 < root->u.seq.n; i += 2) {
            if (key_is(root->u.seq.items[i], key)) {
                const mq_pk_obj *v = root->u.seq.items[i + 1];
                if (v->kind != MQ_PK_DICT)
                    return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: entry '%s' is not a dict", r->path,
                                    key);
                *out = v;
                return MQ_OK;
            }
        }
        MQ_TRY(list_keys(r, root, false, keys, sizeof keys));
        return mq__fail(r->ctx, MQ_ERR_INVALID, "%s: no entry '%s' in the checkpoint (it has %s)",
                        r->path, key, keys[0] ? keys : "no string keys");
    }
    if (key) { /* "." selects the top level itself */
        *out = root;
        return MQ_OK;
    }
    size_t candidates = 0;
    const mq_pk_obj *found = NULL;
    for (size_t i = 0; i + 1 < root->u.seq.n; i += 2) {
        const mq_pk_obj *v = root->u.seq.items[i + 1];
        if (v->kind == MQ_PK_TENSOR) {
            *out = root;
            return MQ_OK;
        }
        bool t = false;
        MQ_TRY(holds_tensors(r, v, 1, &t));
        if (t) {
            candidates++;
            found = v;
        }
    }
    if (candidates <= 1) {
        /* one dict of tensors; or tensors in one list (named by index under its key); or
         * no tensors at all (an empty state dict) */
        *out = candidates == 1 && found->kind == MQ_PK_DICT ? found : root;
        return MQ_OK;
    }
    MQ_TRY(list_keys(r, root, true, keys, sizeof keys));
    return mq__fail(r->ctx, MQ_ERR_INVALID,
                    "%s: several entries hold tensors (%s); choose one with the key option "
                    "(--key NAME on the command line; \".\" takes them all, with dotted names)",
                    r->path, keys);
}

/* ---- tensors ---------------------------------------------------------------------------- */

static mq_status name_push(pt_reader *r, const mq_pk_obj *key, size_t *saved) {
    char num[32];
    const char *s;
    size_t n;
    if (key->kind == MQ_PK_STR) {
        s = key->u.str.s;
        n = key->u.str.len;
        if (memchr(s, 0, n))
            return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: a tensor name contains a NUL byte",
                            r->path);
    } else if (key->kind == MQ_PK_INT) {
        n = (size_t)snprintf(num, sizeof num, "%lld", (long long)key->u.i);
        s = num;
    } else {
        return mq__fail(r->ctx, MQ_ERR_FORMAT,
                        "%s: a dict holding tensors has a key that is neither a string nor an "
                        "integer",
                        r->path);
    }
    *saved = r->name_len;
    size_t need = r->name_len + 1 + n + 1;
    MQ_TRY(mq__grow(r->ctx, (void **)&r->name, &r->name_cap, need, 1));
    if (r->name_len) r->name[r->name_len++] = '.';
    memcpy(r->name + r->name_len, s, n);
    r->name_len += n;
    r->name[r->name_len] = 0;
    return MQ_OK;
}

static void gather(uint8_t *dst, const uint8_t *base, const mq_pk_tensor *t, size_t es) {
    int64_t idx[MQ_MAX_DIMS] = {0};
    int nd = t->ndim;
    int64_t inner = nd ? t->shape[nd - 1] : 1, inner_stride = nd ? t->stride[nd - 1] : 0;
    for (;;) {
        int64_t off = t->offset;
        for (int d = 0; d < nd - 1; d++) off += idx[d] * t->stride[d];
        const uint8_t *src = base + (size_t)off * es;
        if (inner_stride == 1) {
            memcpy(dst, src, (size_t)inner * es);
            dst += (size_t)inner * es;
        } else {
            for (int64_t j = 0; j < inner; j++, dst += es)
                memcpy(dst, src + (size_t)(j * inner_stride) * es, es);
        }
        int d = nd - 2;
        for (; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
        if (d < 0) return;
    }
}

static mq_status add_tensor(pt_reader *r, const mq_pk_tensor *t) {
    const char *nm = r->name;
    size_t es = mq_dtype_size(t->dtype);
    uint64_t numel = 1, span = 1;
    for (int d = 0; d < t->ndim; d++)
        if (!mq__mul_u64(numel, (uint64_t)t->shape[d], &numel))
            return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: tensor '%s': shape overflows", r->path, nm);
    uint64_t nbytes;
    if (!mq__mul_u64(numel, es, &nbytes))
        return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: tensor '%s': size overflows", r->path, nm);
    const mq_pk_obj *s = t->storage;
    char rel[300];
    if (s->u.storage.key_len > 200)
        return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: tensor '%s': storage key too long", r->path,
                        nm);
    int rl = snprintf(rel, sizeof rel, "data/%.*s", (int)s->u.storage.key_len, s->u.storage.key);
    const mq_zip_entry *e = find_record(r, rel, (size_t)rl);
    if (!e)
        return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: tensor '%s': storage record '%s%s' is missing",
                        r->path, nm, r->root, rel);
    MQ_TRY(mq__zip_stored(r->ctx, r->path, e));
    if (e->size != s->u.storage.nbytes)
        return mq__fail(r->ctx, MQ_ERR_FORMAT,
                        "%s: tensor '%s': storage record '%s%s' holds %llu bytes, the pickle says "
                        "%llu",
                        r->path, nm, r->root, rel, (unsigned long long)e->size,
                        (unsigned long long)s->u.storage.nbytes);
    const uint8_t *base = r->zip.data + e->data_off;
    if (numel == 0)
        return mq__model_add_tensor(r->m, nm, r->name_len, t->dtype, t->ndim, t->shape, base, 0);
    /* last element reached, in elements from the storage start */
    uint64_t last = (uint64_t)t->offset;
    bool contiguous = true;
    uint64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        uint64_t reach;
        if (!mq__mul_u64((uint64_t)(t->shape[d] - 1), (uint64_t)t->stride[d], &reach) ||
            !mq__add_u64(last, reach, &last))
            return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: tensor '%s': strides overflow", r->path,
                            nm);
        if (t->shape[d] != 1 && (uint64_t)t->stride[d] != expect) contiguous = false;
        expect *= (uint64_t)t->shape[d];
    }
    (void)span;
    uint64_t avail = e->size / es;
    if (last >= avail)
        return mq__fail(
            r->ctx, MQ_ERR_FORMAT,
            "%s: tensor '%s': offset and strides reach element %llu of a storage of %llu", r->path,
            nm, (unsigned long long)last, (unsigned long long)avail);
    const uint8_t *first = base + (size_t)t->offset * es;
    if (contiguous) /* zero-copy; possibly unaligned, which mq_tensor allows */
        return mq__model_add_tensor(r->m, nm, r->name_len, t->dtype, t->ndim, t->shape, first,
                                    nbytes);
    if (nbytes > SIZE_MAX)
        return mq__fail(r->ctx, MQ_ERR_NOMEM, "%s: tensor '%s' is too large", r->path, nm);
    uint8_t *buf = (uint8_t *)mq__malloc(r->ctx, (size_t)nbytes);
    if (!buf) return MQ_ERR_NOMEM;
    gather(buf, base, t, es);
    MQ_TRY(mq__model_own(r->m, buf));
    return mq__model_add_tensor(r->m, nm, r->name_len, t->dtype, t->ndim, t->shape, buf, nbytes);
}

/* Adds every tensor under `o`, naming each by its path of keys joined with dots. */
static mq_status collect(pt_reader *r, const mq_pk_obj *o, int depth) {
    if (++r->visits > r->max_visits)
        return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: the pickle's object graph is too large",
                        r->path);
    if (o->kind == MQ_PK_TENSOR) return add_tensor(r, o->u.tensor);
    if (!is_container(o)) return MQ_OK; /* numbers, strings, None: not tensors */
    if (depth >= MAX_NESTING)
        return mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: containers nested more than %d deep", r->path,
                        MAX_NESTING);
    bool dict = o->kind == MQ_PK_DICT;
    size_t count = dict ? o->u.seq.n / 2 : o->u.seq.n;
    for (size_t i = 0; i < count; i++) {
        const mq_pk_obj *v = dict ? o->u.seq.items[2 * i + 1] : o->u.seq.items[i];
        if (v->kind != MQ_PK_TENSOR && !is_container(v)) continue;
        mq_pk_obj idx = {.kind = MQ_PK_INT, .u.i = (int64_t)i};
        size_t saved = 0;
        MQ_TRY(name_push(r, dict ? o->u.seq.items[2 * i] : &idx, &saved));
        MQ_TRY(collect(r, v, depth + 1));
        r->name_len = saved;
        r->name[saved] = 0;
    }
    return MQ_OK;
}

static mq_status read_metadata(pt_reader *r) {
    const mq_zip_entry *e = find_record(r, METADATA_RECORD, strlen(METADATA_RECORD));
    if (!e) return MQ_OK;
    MQ_TRY(mq__zip_stored(r->ctx, r->path, e));
    MQ_TRY(check_crc(r, e, METADATA_RECORD));
    mq_pk_arena *arena = NULL;
    const mq_pk_obj *d = NULL;
    MQ_TRY(mq__pk_load(r->ctx, r->path, r->zip.data + e->data_off, (size_t)e->size, &arena, &d));
    mq_status st = MQ_OK;
    if (d->kind != MQ_PK_DICT)
        st = mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: record '%s' is not a dict", r->path,
                      METADATA_RECORD);
    for (size_t i = 0; st == MQ_OK && i + 1 < d->u.seq.n; i += 2) {
        const mq_pk_obj *k = d->u.seq.items[i], *v = d->u.seq.items[i + 1];
        if (k->kind != MQ_PK_STR || v->kind != MQ_PK_STR)
            st = mq__fail(r->ctx, MQ_ERR_FORMAT, "%s: record '%s' holds a non-string entry",
                          r->path, METADATA_RECORD);
        else
            st = mq__model_set_meta(r->m, k->u.str.s, k->u.str.len, v->u.str.s, v->u.str.len);
    }
    mq__pk_free(r->ctx, arena);
    return st;
}

static mq_status read_archive(pt_reader *r, const uint8_t *data, size_t len, const char *key) {
    MQ_TRY(mq__zip_open(r->ctx, r->path, data, len, &r->zip));
    MQ_TRY(check_archive(r));
    const mq_zip_entry *pkl = find_record(r, "data.pkl", 8);
    if (!pkl)
        return mq__fail(r->ctx, MQ_ERR_FORMAT,
                        "%s: no '%sdata.pkl' record: not a torch.save checkpoint", r->path,
                        r->root);
    MQ_TRY(mq__zip_stored(r->ctx, r->path, pkl));
    MQ_TRY(check_crc(r, pkl, "data.pkl"));
    mq_pk_arena *arena = NULL;
    const mq_pk_obj *root = NULL;
    MQ_TRY(mq__pk_load(r->ctx, r->path, data + pkl->data_off, (size_t)pkl->size, &arena, &root));
    /* shared references could make a small pickle name millions of tensors */
    r->max_visits = pkl->size * VISITS_PER_BYTE + (1u << 20);
    if (r->max_visits > MAX_VISITS) r->max_visits = MAX_VISITS;
    const mq_pk_obj *sd = NULL;
    mq_status st = select_dict(r, root, key, &sd);
    if (st == MQ_OK) {
        r->visits = 0;
        st = collect(r, sd, 0);
    }
    mq__pk_free(r->ctx, arena);
    if (st == MQ_OK) st = read_metadata(r);
    return st;
}

mq_status mq__pytorch_read_mem(mq_model *m, const char *path, const uint8_t *data, size_t len,
                               const char *key) {
    pt_reader r;
    memset(&r, 0, sizeof r);
    r.m = m;
    r.ctx = m->ctx;
    r.path = path;
    mq_status st = read_archive(&r, data, len, key);
    mq__zip_close(r.ctx, &r.zip);
    mq__free(r.ctx, r.root);
    mq__free(r.ctx, r.name);
    return st;
}

mq_status mq__pytorch_read(mq_model *m, const char *path, const char *key) {
    const uint8_t *data;
    size_t len;
    MQ_TRY(mq__model_map_file(m, path, &data, &len));
    return mq__pytorch_read_mem(m, path, data, len, key);
}
