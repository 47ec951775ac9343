/* safetensors writer backend: the header, then the common code streams the data.
 *
 * Header layout (compact JSON, deterministic):
 *   {"__metadata__":{"format":"pt",<caller entries in order>},
 *    "<tensor 0>":{"dtype":"F32","shape":[..],"data_offsets":[0,b0]}, ... in the caller's order}
 * padded with spaces to a multiple of 8 bytes so the data section starts 8-aligned. A caller
 * entry with key "format" replaces the default "pt" value (it stays first), so a file this
 * writer produced reads back and rewrites to identical bytes. */
#include "io/json.h"
#include "io/writer_internal.h"

#include <string.h>


/* Where each metadata value (a JSON string, quotes included) lies in the header. */
typedef struct st_state {
    uint64_t *value_at;  /* header offset of entry i's value */
    size_t *value_len;   /* its bytes */
} st_state;

/* Names and metadata must survive a strict reader: unique, UTF-8, no NUL (C strings). */
static mq_status check_inputs(mq_writer *w) {
    mq_ctx *ctx = w->ctx;
    mq_strset seen;
    mq__strset_init(&seen, ctx);
    mq_status st = MQ_OK;
    for (size_t i = 0; st == MQ_OK && i < w->n; i++) {
        const char *name = w->tensors[i].name;
        size_t len = strlen(name);
        bool added;
        if (!strcmp(name, "__metadata__"))
            st = mq__fail(ctx, MQ_ERR_INVALID, "%s: '__metadata__' is reserved, not a tensor "
                          "name", w->path);
        else if (mq__utf8_check(name, len) != len)
            st = mq__fail(ctx, MQ_ERR_INVALID, "%s: tensor %zu: name is not valid UTF-8", w->path,
                          i);
        else if ((st = mq__strset_add(&seen, name, len, 0, &added)) == MQ_OK && !added)
            st = mq__fail(ctx, MQ_ERR_INVALID, "%s: duplicate tensor name '%.200s'", w->path,
                          name);
    }
    mq__strset_clear(&seen);
    for (size_t i = 0; st == MQ_OK && i < w->nmeta; i++) {
        const char *k = w->meta[i].key, *v = w->meta[i].value;
        bool added;
        if (mq__utf8_check(k, strlen(k)) != strlen(k) || mq__utf8_check(v, strlen(v)) != strlen(v))
            st = mq__fail(ctx, MQ_ERR_INVALID, "%s: metadata entry '%.200s' is not valid UTF-8",
                          w->path, k);
        else if ((st = mq__strset_add(&seen, k, strlen(k), 0, &added)) == MQ_OK && !added)
            st = mq__fail(ctx, MQ_ERR_INVALID, "%s: duplicate metadata key '%.200s'", w->path, k);
    }
    mq__strset_free(&seen);
    return st;
}

static mq_status build_header(mq_writer *w, st_state *ss, mq_buf *h) {
    const char *format = "pt";
    size_t format_at = w->nmeta;
    for (size_t i = 0; i < w->nmeta; i++)
        if (!strcmp(w->meta[i].key, "format")) format = w->meta[i].value, format_at = i;
    MQ_TRY(mq__buf_append(h, "{\"__metadata__\":{\"format\":", 26));
    size_t at = h->len;
    MQ_TRY(mq__json_write_string(h, format, strlen(format)));
    if (format_at < w->nmeta) ss->value_at[format_at] = at, ss->value_len[format_at] = h->len - at;
    for (size_t i = 0; i < w->nmeta; i++) {
        const mq_kv *kv = &w->meta[i];
        if (i == format_at) continue;
        MQ_TRY(mq__buf_append(h, ",", 1));
        MQ_TRY(mq__json_write_string(h, kv->key, strlen(kv->key)));
        MQ_TRY(mq__buf_append(h, ":", 1));
        at = h->len;
        MQ_TRY(mq__json_write_string(h, kv->value, strlen(kv->value)));
        ss->value_at[i] = at;
        ss->value_len[i] = h->len - at;
    }
    MQ_TRY(mq__buf_append(h, "}", 1));
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n; i++) {
        const mq_tensor_desc *t = &w->tensors[i];
        MQ_TRY(mq__buf_append(h, ",", 1));
        MQ_TRY(mq__json_write_string(h, t->name, strlen(t->name)));
        MQ_TRY(mq__buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", mq_dtype_name(t->dtype)));
        for (int d = 0; d < t->ndim; d++)
            MQ_TRY(mq__buf_printf(h, d ? ",%lld" : "%lld", (long long)t->shape[d]));
        uint64_t end;
        if (!mq__add_u64(offset, w->sizes[i], &end))
            return mq__fail(w->ctx, MQ_ERR_INVALID, "%s: total tensor size overflows", w->path);
        MQ_TRY(mq__buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                              (unsigned long long)end));
        offset = end;
    }
    MQ_TRY(mq__buf_append(h, "}", 1));
    while (h->len % 8) MQ_TRY(mq__buf_append(h, " ", 1));
    if (h->len > MQ__SAFETENSORS_MAX_HEADER)
        return mq__fail(w->ctx, MQ_ERR_INVALID, "%s: the header would be %zu bytes, over the "
                        "safetensors limit of %u", w->path, h->len, MQ__SAFETENSORS_MAX_HEADER);
    return MQ_OK;
}

static void st_release(mq_writer *w) {
    st_state *ss = (st_state *)w->state;
    if (!ss) return;
    mq__free(w->ctx, ss->value_at);
    mq__free(w->ctx, ss->value_len);
    mq__free(w->ctx, ss);
    w->state = NULL;
}

static mq_status st_begin(mq_writer *w) {
    MQ_TRY(check_inputs(w));
    st_state *ss = (st_state *)mq__calloc(w->ctx, 1, sizeof *ss);
    if (!ss) return MQ_ERR_NOMEM;
    w->state = ss;
    size_t nm = w->nmeta ? w->nmeta : 1;
    ss->value_at = (uint64_t *)mq__calloc(w->ctx, nm, sizeof *ss->value_at);
    ss->value_len = (size_t *)mq__calloc(w->ctx, nm, sizeof *ss->value_len);
    if (!ss->value_at || !ss->value_len) return MQ_ERR_NOMEM;
    mq_buf h;
    mq__buf_init(&h, w->ctx);
    mq_status st = build_header(w, ss, &h);
    uint8_t len[8];
    mq__store_le64(len, h.len);
    if (st == MQ_OK) st = mq__writer_out(w, len, 8);
    if (st == MQ_OK) st = mq__writer_out(w, h.data, h.len);
    mq__buf_free(&h);
    return st;
}

/* The new value, escaped, in place of the old one: its closing quote stays where it was and
 * spaces fill the string up to it. */
static mq_status st_replace_meta(mq_writer *w, size_t i, const char *value) {
    st_state *ss = (st_state *)w->state;
    mq_buf v;
    mq__buf_init(&v, w->ctx);
    mq_status st = mq__json_write_string(&v, value, strlen(value));
    size_t room = ss->value_len[i];
    if (st == MQ_OK && v.len > room)
        st = mq__fail(w->ctx, MQ_ERR_UNSUPPORTED, "%s: metadata '%s' does not fit in the room "
                      "reserved for it (%zu of %zu bytes)", w->path, w->meta[i].key, v.len, room);
    if (st == MQ_OK) {
        v.len--; /* the closing quote */
        while (st == MQ_OK && v.len < room - 1) st = mq__buf_append(&v, " ", 1);
        if (st == MQ_OK) st = mq__buf_append(&v, "\"", 1);
    }
    if (st == MQ_OK) st = mq__writer_patch(w, 8 + ss->value_at[i], v.data, v.len);
    mq__buf_free(&v);
    return st;
}

const mq_writer_backend mq__safetensors_backend = {st_begin, NULL,       NULL,  NULL,
                                                   NULL,     st_release, false, st_replace_meta};
