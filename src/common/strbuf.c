/* The growable string and the JSON string escaper. See strbuf.h. */
#include "common/strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void mq__buf_init(mq_buf *b, mq_ctx *ctx) {
    b->ctx = ctx;
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = false;
}

void mq__buf_free(mq_buf *b) {
    mq__free(b->ctx, b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* Makes room for n more bytes plus a terminating NUL. */
static mq_status buf_reserve(mq_buf *b, size_t n) {
    if (b->failed) return MQ_ERR_NOMEM;
    size_t need;
    if (__builtin_add_overflow(b->len, n, &need) || __builtin_add_overflow(need, 1, &need)) {
        b->failed = true;
        return mq__fail(b->ctx, MQ_ERR_NOMEM, "buffer size overflow");
    }
    if (need <= b->cap) return MQ_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = (char *)mq__realloc(b->ctx, b->data, b->cap, cap);
    if (!p) {
        b->failed = true;
        return MQ_ERR_NOMEM;
    }
    b->data = p;
    b->cap = cap;
    return MQ_OK;
}

mq_status mq__buf_append(mq_buf *b, const void *data, size_t n) {
    MQ_TRY(buf_reserve(b, n));
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
    return MQ_OK;
}

mq_status mq__buf_add(mq_buf *b, const char *s) { return mq__buf_append(b, s, strlen(s)); }

mq_status mq__buf_printf(mq_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return mq__fail(b->ctx, MQ_ERR_INTERNAL, "formatting failed");
    if (b->failed) return MQ_ERR_NOMEM;
    MQ_TRY(buf_reserve(b, (size_t)n));
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return MQ_OK;
}

/* The escape of byte c into esc (its length), or 0 when c is copied as it is. */
static size_t json_escape(uint8_t c, char esc[6]) {
    static const char hex[] = "0123456789abcdef";
    if (c >= 0x20 && c != '"' && c != '\\') return 0;
    esc[0] = '\\';
    switch (c) {
    case '"': esc[1] = '"'; return 2;
    case '\\': esc[1] = '\\'; return 2;
    case '\b': esc[1] = 'b'; return 2;
    case '\f': esc[1] = 'f'; return 2;
    case '\n': esc[1] = 'n'; return 2;
    case '\r': esc[1] = 'r'; return 2;
    case '\t': esc[1] = 't'; return 2;
    default:
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 15];
        return 6;
    }
}

mq_status mq__json_write_string(mq_buf *b, const char *str, size_t len) {
    const uint8_t *s = (const uint8_t *)str;
    MQ_TRY(mq__buf_append(b, "\"", 1));
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        char esc[6];
        size_t k = json_escape(s[i], esc);
        if (!k) continue;
        MQ_TRY(mq__buf_append(b, s + run, i - run));
        run = i + 1;
        MQ_TRY(mq__buf_append(b, esc, k));
    }
    MQ_TRY(mq__buf_append(b, s + run, len - run));
    return mq__buf_append(b, "\"", 1);
}

/* The same escape into a caller's buffer, without allocating (snprintf's convention). */
size_t mq_json_string_format(const char *str, char *buf, size_t cap) {
    size_t n = 0;
#define PUT(ch) (n + 1 < cap ? (void)(buf[n] = (ch)) : (void)0, n++)
    PUT('"');
    for (const uint8_t *s = (const uint8_t *)(str ? str : ""); *s; s++) {
        char esc[6];
        size_t k = json_escape(*s, esc);
        if (!k) PUT((char)*s);
        for (size_t i = 0; i < k; i++) PUT(esc[i]);
    }
    PUT('"');
#undef PUT
    if (cap) buf[n < cap ? n : cap - 1] = 0;
    return n;
}
