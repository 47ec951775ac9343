/* safetensors reader: validates a file the way the reference implementation does and adds
 * zero-copy tensor views over the mapped file to the model.
 *
 * Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON (an object of tensor
 * entries {"dtype", "shape", "data_offsets": [begin, end]} plus an optional "__metadata__"
 * object of strings), then the data section. Checks, all at open time:
 *  - N <= 100,000,000 and 8 + N <= file size;
 *  - the header is UTF-8 and strict JSON, nesting <= 64, surrounding whitespace allowed;
 *  - no duplicate tensor names, no duplicate keys in an entry or in __metadata__;
 *  - dtype known (sub-byte and FNUZ float types the reference knows are "unsupported");
 *    shape entries non-negative integers; numel and byte size computed without overflow;
 *  - begin <= end and end - begin == numel * dtype size;
 *  - sorted by (begin, end), the entries tile the data section from 0 with no gap or
 *    overlap (zero-size tensors sit at the running offset, as in the reference), and the
 *    last end is exactly the data section's size: no trailing bytes.
 * Tensors are added in file order (order of data offsets; ties in header order). */
#include "io/json.h"
#include "io/model_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


typedef struct st_entry {
    char *name;
    size_t name_len;
    size_t at;        /* header offset of the entry's key, for messages */
    size_t order;     /* position in the header */
    mq_dtype dtype;
    int ndim;
    int64_t shape[MQ_MAX_DIMS];
    uint64_t begin, end, nbytes;
} st_entry;

typedef struct st_reader {
    mq_model *m;
    const char *path;
    mq_json j;
    mq_strset names;
    st_entry *e;
    size_t n, cap;
} st_reader;

/* Dtypes the reference format defines that this library does not handle. */
static bool is_unsupported_dtype(const char *s) {
    static const char *const names[] = {"F4", "F6_E2M3", "F6_E3M2", "F8_E4M3FNUZ", "F8_E5M2FNUZ"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(s, names[i])) return true;
    return false;
}

#define NAMEFMT "%.200s"

static mq_status parse_metadata(st_reader *r) {
    mq_json *j = &r->j;
    if (mq__json_peek(j) == MQ_JSON_NULL) { /* the reference reads null as "no metadata" */
        mq_json_type t;
        bool b;
        return mq__json_literal(j, &t, &b);
    }
    size_t at = mq__json_offset(j);
    if (mq__json_peek(j) != MQ_JSON_OBJECT)
        return mq__json_error_at(j, at, "__metadata__ must be an object of strings");
    mq_strset keys;
    mq__strset_init(&keys, r->m->ctx);
    mq_status st = mq__json_object_begin(j);
    for (;;) {
        const char *k, *v;
        size_t klen, vlen;
        bool more, added;
        if (st == MQ_OK) st = mq__json_object_next(j, &k, &klen, &more);
        if (st != MQ_OK || !more) break;
        at = mq__json_offset(j);
        st = mq__strset_add(&keys, k, klen, 0, &added);
        if (st == MQ_OK && !added)
            st = mq__json_error_at(j, at, "duplicate __metadata__ key '" NAMEFMT "'", k);
        if (st == MQ_OK && memchr(k, 0, klen))
            st = mq__json_error_at(j, at, "__metadata__ key contains a NUL character");
        if (st == MQ_OK && mq__json_peek(j) != MQ_JSON_STRING)
            st = mq__json_error_at(j, at, "__metadata__ value of '" NAMEFMT "' must be a string",
                                   k);
        /* k lives in the key buffer, v in the string buffer: both valid here */
        if (st == MQ_OK) st = mq__json_string(j, &v, &vlen);
        if (st == MQ_OK && memchr(v, 0, vlen))
            st = mq__json_error_at(j, at, "__metadata__ value of '" NAMEFMT
                                   "' contains a NUL character", k);
        if (st == MQ_OK) st = mq__model_set_meta(r->m, k, klen, v, vlen);
    }
    mq__strset_free(&keys);
    return st;
}

static mq_status parse_dims(st_reader *r, st_entry *e, const char *key, uint64_t *vals,
                            int max, int *count) {
    mq_json *j = &r->j;
    size_t at = mq__json_offset(j);
    if (mq__json_peek(j) != MQ_JSON_ARRAY)
        return mq__json_error_at(j, at, "tensor '" NAMEFMT "': '%s' must be an array", e->name,
                                 key);
    MQ_TRY(mq__json_array_begin(j));
    *count = 0;
    for (;;) {
        bool more;
        MQ_TRY(mq__json_array_next(j, &more));
        if (!more) return MQ_OK;
        size_t here = mq__json_offset(j);
        if (*count == max)
            return mq__fail(r->m->ctx, !strcmp(key, "shape") ? MQ_ERR_UNSUPPORTED : MQ_ERR_FORMAT,
                            "%s: at byte %llu: tensor '" NAMEFMT "': '%s' has more than %d "
                            "entries", r->path, (unsigned long long)(r->j.base + here), e->name, key, max);
        char what[300];
        snprintf(what, sizeof what, "tensor '" NAMEFMT "': %s entry", e->name, key);
        MQ_TRY(mq__json_u64(j, what, &vals[(*count)++]));
    }
}

enum { F_DTYPE = 1, F_SHAPE = 2, F_OFFSETS = 4 };

static mq_status parse_entry(st_reader *r, st_entry *e) {
    mq_json *j = &r->j;
    size_t at = mq__json_offset(j);
    if (mq__json_peek(j) != MQ_JSON_OBJECT)
        return mq__json_error_at(j, at, "tensor '" NAMEFMT "': entry must be an object", e->name);
    MQ_TRY(mq__json_object_begin(j));
    unsigned seen = 0;
    for (;;) {
        const char *k;
        size_t klen;
        bool more;
        MQ_TRY(mq__json_object_next(j, &k, &klen, &more));
        if (!more) break;
        size_t vat = mq__json_offset(j);
        unsigned f = !strcmp(k, "dtype") ? F_DTYPE : !strcmp(k, "shape") ? F_SHAPE
                   : !strcmp(k, "data_offsets") ? F_OFFSETS : 0;
        if (klen != strlen(k)) f = 0;
        if (f & seen)
            return mq__json_error_at(j, vat, "tensor '" NAMEFMT "': duplicate key '%s'", e->name,
                                     k);
        seen |= f;
        if (f == F_DTYPE) {
            const char *s;
            size_t n;
            if (mq__json_peek(j) != MQ_JSON_STRING)
                return mq__json_error_at(j, vat, "tensor '" NAMEFMT "': dtype must be a string",
                                         e->name);
            MQ_TRY(mq__json_string(j, &s, &n));
            e->dtype = MQ_DTYPE_INVALID;
            if (n == strlen(s)) mq_dtype_from_name(s, &e->dtype);
            if (e->dtype == MQ_DTYPE_INVALID && is_unsupported_dtype(s))
                return mq__fail(r->m->ctx, MQ_ERR_UNSUPPORTED,
                                "%s: at byte %llu: tensor '" NAMEFMT "': unsupported dtype %s",
                                r->path, (unsigned long long)(j->base + vat), e->name, s);
            if (e->dtype == MQ_DTYPE_INVALID)
                return mq__json_error_at(j, vat, "tensor '" NAMEFMT "': unknown dtype '%.40s'",
                                         e->name, s);
        } else if (f == F_SHAPE) {
            uint64_t dims[MQ_MAX_DIMS];
            MQ_TRY(parse_dims(r, e, "shape", dims, MQ_MAX_DIMS, &e->ndim));
            for (int d = 0; d < e->ndim; d++) {
                if (dims[d] > (uint64_t)INT64_MAX)
                    return mq__json_error_at(j, vat, "tensor '" NAMEFMT "': shape entry %llu is "
                                             "too large", e->name, (unsigned long long)dims[d]);
                e->shape[d] = (int64_t)dims[d];
            }
        } else if (f == F_OFFSETS) {
            uint64_t off[2];
            int count;
            MQ_TRY(parse_dims(r, e, "data_offsets", off, 2, &count));
            if (count != 2)
                return mq__json_error_at(j, vat, "tensor '" NAMEFMT "': data_offsets must hold "
                                         "2 integers [begin, end], found %d", e->name, count);
            e->begin = off[0];
            e->end = off[1];
        } else {
            MQ_TRY(mq__json_skip(j)); /* extra keys are allowed, as in the reference */
        }
    }
    static const struct { unsigned flag; const char *name; } required[] = {
        {F_DTYPE, "dtype"}, {F_SHAPE, "shape"}, {F_OFFSETS, "data_offsets"}};
    for (size_t i = 0; i < 3; i++)
        if (!(seen & required[i].flag))
            return mq__json_error_at(j, at, "tensor '" NAMEFMT "': missing '%s'", e->name,
                                     required[i].name);
    /* element count and byte size, without wrapping */
    uint64_t numel = 1, nbytes;
    for (int d = 0; d < e->ndim; d++)
        if (!mq__mul_u64(numel, (uint64_t)e->shape[d], &numel))
            return mq__json_error_at(j, at, "tensor '" NAMEFMT "': element count overflows",
                                     e->name);
    if (!mq__mul_u64(numel, mq_dtype_size(e->dtype), &nbytes))
        return mq__json_error_at(j, at, "tensor '" NAMEFMT "': byte size overflows", e->name);
    if (e->end < e->begin)
        return mq__json_error_at(j, at, "tensor '" NAMEFMT "': data_offsets [%llu, %llu] end "
                                 "before they begin", e->name, (unsigned long long)e->begin,
                                 (unsigned long long)e->end);
    if (e->end - e->begin != nbytes)
        return mq__json_error_at(j, at, "tensor '" NAMEFMT "': data_offsets [%llu, %llu] span "
                                 "%llu bytes but dtype %s and its shape need %llu", e->name,
                                 (unsigned long long)e->begin, (unsigned long long)e->end,
                                 (unsigned long long)(e->end - e->begin),
                                 mq_dtype_name(e->dtype), (unsigned long long)nbytes);
    e->nbytes = nbytes;
    return MQ_OK;
}

static mq_status parse_header(st_reader *r) {
    mq_json *j = &r->j;
    MQ_TRY(mq__json_object_begin(j));
    bool have_meta = false;
    for (;;) {
        const char *k;
        size_t klen;
        bool more;
        MQ_TRY(mq__json_object_next(j, &k, &klen, &more));
        if (!more) break;
        size_t at = mq__json_offset(j);
        if (klen == 12 && !memcmp(k, "__metadata__", 12)) {
            if (have_meta) return mq__json_error_at(j, at, "duplicate __metadata__");
            have_meta = true;
            MQ_TRY(parse_metadata(r));
            continue;
        }
        bool added;
        MQ_TRY(mq__strset_add(&r->names, k, klen, (long)r->n, &added));
        if (!added) return mq__json_error_at(j, at, "duplicate tensor name '" NAMEFMT "'", k);
        if (memchr(k, 0, klen))
            return mq__json_error_at(j, at, "tensor name contains a NUL character");
        MQ_TRY(mq__grow(r->m->ctx, (void **)&r->e, &r->cap, r->n + 1, sizeof *r->e));
        st_entry *e = &r->e[r->n];
        memset(e, 0, sizeof *e);
        e->name = mq__strndup(r->m->ctx, k, klen);
        if (!e->name) return MQ_ERR_NOMEM;
        e->name_len = klen;
        e->at = at;
        e->order = r->n++;
        MQ_TRY(parse_entry(r, e));
    }
    return mq__json_finish(j);
}

static int by_offsets(const void *a, const void *b) {
    const st_entry *x = (const st_entry *)a, *y = (const st_entry *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* The entries, sorted by offsets, must cover [0, data_len) exactly. */
static mq_status check_tiling(st_reader *r, uint64_t data_len) {
    if (r->n) qsort(r->e, r->n, sizeof *r->e, by_offsets);
    uint64_t pos = 0;
    for (size_t i = 0; i < r->n; i++) {
        st_entry *e = &r->e[i];
        if (e->begin < pos)
            return mq__json_error_at(&r->j, e->at, "tensor '" NAMEFMT "': data_offsets [%llu, "
                                     "%llu] overlap tensor '" NAMEFMT "' (which ends at %llu)",
                                     e->name, (unsigned long long)e->begin,
                                     (unsigned long long)e->end, r->e[i - 1].name,
                                     (unsigned long long)pos);
        if (e->begin > pos)
            return mq__json_error_at(&r->j, e->at, "tensor '" NAMEFMT "': data_offsets [%llu, "
                                     "%llu] leave a gap: data bytes [%llu, %llu) belong to no "
                                     "tensor", e->name, (unsigned long long)e->begin,
                                     (unsigned long long)e->end, (unsigned long long)pos,
                                     (unsigned long long)e->begin);
        pos = e->end;
    }
    if (pos < data_len)
        return mq__fail(r->m->ctx, MQ_ERR_FORMAT, "%s: %llu trailing bytes after the last tensor "
                        "(the tensors cover %llu of %llu data bytes)", r->path,
                        (unsigned long long)(data_len - pos), (unsigned long long)pos,
                        (unsigned long long)data_len);
    if (pos > data_len)
        return mq__fail(r->m->ctx, MQ_ERR_FORMAT, "%s: the tensors need %llu data bytes but the "
                        "file holds %llu (truncated?)", r->path, (unsigned long long)pos,
                        (unsigned long long)data_len);
    return MQ_OK;
}

mq_status mq__safetensors_read(mq_model *m, const char *path) {
    mq_ctx *ctx = m->ctx;
    const uint8_t *p;
    size_t len;
    MQ_TRY(mq__model_map_file(m, path, &p, &len));
    if (len < 8)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file "
                        "(it starts with an 8-byte header length)", path, len);
    uint64_t n = mq__load_le64(p);
    if (n > MQ__SAFETENSORS_MAX_HEADER)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu "
                        "bytes (not a safetensors file?)", path, (unsigned long long)n,
                        (unsigned long long)MQ__SAFETENSORS_MAX_HEADER);
    if (n > (uint64_t)len - 8)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: header length %llu runs past the end of the "
                        "file (%zu bytes)", path, (unsigned long long)n, len);
    const uint8_t *hdr = p + 8;
    size_t bad = mq__utf8_check(hdr, (size_t)n);
    if (bad != n)
        return mq__fail(ctx, MQ_ERR_FORMAT, "%s: at byte %llu: header is not valid UTF-8", path,
                        (unsigned long long)bad + 8);
    st_reader r;
    memset(&r, 0, sizeof r);
    r.m = m;
    r.path = path;
    mq__json_init(&r.j, ctx, hdr, (size_t)n, path, 8);
    mq__strset_init(&r.names, ctx);
    mq_status st = parse_header(&r);
    if (st == MQ_OK) st = check_tiling(&r, (uint64_t)len - 8 - n);
    const uint8_t *data = hdr + n;
    for (size_t i = 0; st == MQ_OK && i < r.n; i++) {
        st_entry *e = &r.e[i];
        st = mq__model_add_tensor(m, e->name, e->name_len, e->dtype, e->ndim, e->shape,
                                  data + e->begin, e->nbytes);
    }
    for (size_t i = 0; i < r.n; i++) mq__free(ctx, r.e[i].name);
    mq__free(ctx, r.e);
    mq__strset_free(&r.names);
    mq__json_free(&r.j);
    return st;
}
