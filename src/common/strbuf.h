/* The library's one growable string and its one JSON string escaper. */
#ifndef MQ_STRBUF_H
#define MQ_STRBUF_H

#include "common/internal.h"

/* A growable byte buffer allocated through the context, always NUL-terminated when not
 * empty. After an allocation failure `failed` is set and later appends do nothing but
 * return MQ_ERR_NOMEM, so a builder may append unchecked and test `failed` once. */
typedef struct mq_buf {
    mq_ctx *ctx;
    char *data;
    size_t len, cap;
    bool failed;
} mq_buf;

MQ_HIDDEN void mq__buf_init(mq_buf *b, mq_ctx *ctx);
MQ_HIDDEN void mq__buf_free(mq_buf *b);
MQ_HIDDEN mq_status mq__buf_append(mq_buf *b, const void *data, size_t n);
/* Appends a NUL-terminated string. */
MQ_HIDDEN mq_status mq__buf_add(mq_buf *b, const char *s);
MQ_HIDDEN mq_status mq__buf_printf(mq_buf *b, const char *fmt, ...) MQ_PRINTF(2, 3);

/* Appends s (len bytes, valid UTF-8 expected) as a JSON string literal with quotes: escapes
 * '"', '\\' and control characters; everything else is copied. */
MQ_HIDDEN mq_status mq__json_write_string(mq_buf *b, const char *s, size_t len);

#endif
