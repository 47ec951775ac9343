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

#define ST_MAX_HEADER 100000000u

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

static mq_status build_header(mq_writer *w, mq_buf *h) {
    const char *format = "pt";
    for (size_t i = 0; i < w->nmeta; i++)
        if (!strcmp(w->meta[i].key, "format")) format = w->meta[i].value;
    MQ_TRY(mq__buf_append(h, "{\"__metadata__\":{\"format\":", 26));
    MQ_TRY(mq__json_write_string(h, format, strlen(format)));
    for (size_t i = 0; i < w->nmeta; i++) {
        const mq_kv *kv = &w->meta[i];
        if (!strcmp(kv->key, "format")) continue;
        MQ_TRY(mq__buf_append(h, ",", 1));
        MQ_TRY(mq__json_write_string(h, kv->key, strlen(kv->key)));
        MQ_TRY(mq__buf_append(h, ":", 1));
        MQ_TRY(mq__json_write_string(h, kv->value, strlen(kv->value)));
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
    if (h->len > ST_MAX_HEADER)
        return mq__fail(w->ctx, MQ_ERR_INVALID, "%s: the header would be %zu bytes, over the "
                        "safetensors limit of %u", w->path, h->len, ST_MAX_HEADER);
    return MQ_OK;
}

static mq_status st_begin(mq_writer *w) {
    MQ_TRY(check_inputs(w));
    mq_buf h;
    mq__buf_init(&h, w->ctx);
    mq_status st = build_header(w, &h);
    uint8_t len[8];
    mq__store_le64(len, h.len);
    if (st == MQ_OK) st = mq__writer_out(w, len, 8);
    if (st == MQ_OK) st = mq__writer_out(w, h.data, h.len);
    mq__buf_free(&h);
    return st;
}

const mq_writer_backend mq__safetensors_backend = {st_begin, NULL, NULL, NULL,
                                                   NULL,     NULL, false};
