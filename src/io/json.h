/* A strict, pull-style JSON reader (RFC 8259) for checkpoint
 * headers and index files.
 *
 * The reader walks the text without building a tree, so memory stays proportional to what
 * the caller keeps, whatever the input. The caller drives it with the expected structure:
 *
 *     mq__json_init(&j, ctx, text, len, "model.safetensors", 8);
 *     MQ_TRY(mq__json_object_begin(&j));
 *     while ((st = mq__json_object_next(&j, &key, &key_len, &more)) == MQ_OK && more) {
 *         ... mq__json_string / mq__json_u64 / mq__json_skip for the value ...
 *     }
 *     MQ_TRY(st);
 *     MQ_TRY(mq__json_finish(&j));
 *
 * Guarantees: text must be UTF-8 (overlong forms, surrogates and code points past U+10FFFF
 * are rejected, in raw bytes and in \u escapes; a \u escape of a surrogate pair must be
 * complete); nesting is bounded by MQ_JSON_MAX_DEPTH; integers are parsed exactly. Every
 * failure is MQ_ERR_FORMAT with "<where>: JSON error at byte N: <what>", where N counts
 * from the start of the file (the text's own offset plus `base`).
 */
#ifndef MQ_JSON_H
#define MQ_JSON_H

#include "common/internal.h"
#include "common/strbuf.h"

#define MQ_JSON_MAX_DEPTH 64

typedef enum mq_json_type {
    MQ_JSON_NONE = 0, /* end of input or a byte that cannot start a value */
    MQ_JSON_NULL,
    MQ_JSON_BOOL,
    MQ_JSON_NUMBER,
    MQ_JSON_STRING,
    MQ_JSON_ARRAY,
    MQ_JSON_OBJECT
} mq_json_type;

typedef struct mq_json {
    mq_ctx *ctx;
    const uint8_t *src;
    size_t len, pos;
    const char *where;   /* file name for messages */
    uint64_t base;       /* file offset of src[0] */
    int depth;
    /* per open container: whether a member/element was already read (a comma is due) */
    bool seen[MQ_JSON_MAX_DEPTH];
    mq_buf key;          /* last unescaped key (mq__json_object_next) */
    mq_buf str;          /* last unescaped string value (mq__json_string) */
} mq_json;

MQ_HIDDEN void mq__json_init(mq_json *j, mq_ctx *ctx, const void *text, size_t len,
                             const char *where, uint64_t base);
MQ_HIDDEN void mq__json_free(mq_json *j);

/* Records "<where>: JSON error at byte <pos>: <what>" and returns MQ_ERR_FORMAT. Also used by
 * callers for structural errors found in well-formed JSON (a wrong value type, ...). */
MQ_HIDDEN mq_status mq__json_error_at(mq_json *j, size_t pos, const char *fmt, ...)
    MQ_PRINTF(3, 4);

/* Type of the next value (whitespace skipped), without consuming it; MQ_JSON_NONE at the end
 * of input or before a byte that cannot start a value. */
MQ_HIDDEN mq_json_type mq__json_peek(mq_json *j);
/* Offset in src of the next non-whitespace byte. */
MQ_HIDDEN size_t mq__json_offset(mq_json *j);

/* Containers. object_next: *more = true with the member's key (unescaped, NUL-terminated, valid
 * until the next object_next) when a member follows and its ':' has been consumed; *more =
 * false when the closing '}' was consumed. Likewise array_next for elements. */
MQ_HIDDEN mq_status mq__json_object_begin(mq_json *j);
MQ_HIDDEN mq_status mq__json_object_next(mq_json *j, const char **key, size_t *key_len,
                                         bool *more);
MQ_HIDDEN mq_status mq__json_array_begin(mq_json *j);
MQ_HIDDEN mq_status mq__json_array_next(mq_json *j, bool *more);

/* Scalars. mq__json_string: unescaped, NUL-terminated, valid until the next string call (it
 * may contain NUL bytes: use *len). */
MQ_HIDDEN mq_status mq__json_string(mq_json *j, const char **s, size_t *len);
/* A number that must be a non-negative integer (no sign, fraction or exponent) <= UINT64_MAX;
 * `what` names the value in messages. */
MQ_HIDDEN mq_status mq__json_u64(mq_json *j, const char *what, uint64_t *out);
/* A number that must be an integer in int64 range. */
MQ_HIDDEN mq_status mq__json_i64(mq_json *j, const char *what, int64_t *out);
/* Any valid number: its text as written. */
MQ_HIDDEN mq_status mq__json_number_text(mq_json *j, const char **text, size_t *len);
/* true, false or null. */
MQ_HIDDEN mq_status mq__json_literal(mq_json *j, mq_json_type *type, bool *value);
/* Skips one complete value of any type, checking its syntax (iteratively, depth-bounded). */
MQ_HIDDEN mq_status mq__json_skip(mq_json *j);
/* After the top-level value: only whitespace may remain. */
MQ_HIDDEN mq_status mq__json_finish(mq_json *j);

/* UTF-8 check of a byte string (RFC 3629: no overlongs, surrogates or values > U+10FFFF).
 * Returns the offset of the first bad byte, or len when valid. */
MQ_HIDDEN size_t mq__utf8_check(const void *s, size_t len);

/* A set of strings with an integer value each: duplicate-key detection and name lookup.
 * Keys are copied. */
typedef struct mq_strset {
    mq_ctx *ctx;
    struct mq_strset_slot *slots;
    size_t cap, count;
} mq_strset;

MQ_HIDDEN void mq__strset_init(mq_strset *s, mq_ctx *ctx);
MQ_HIDDEN void mq__strset_free(mq_strset *s);
/* Adds key -> value. *added = false (and nothing changes) when the key is already there. */
MQ_HIDDEN mq_status mq__strset_add(mq_strset *s, const char *key, size_t len, long value,
                                   bool *added);
/* Value of key, or -1 when absent. */
MQ_HIDDEN long mq__strset_get(const mq_strset *s, const char *key, size_t len);
/* Removes every key (keeps the storage). */
MQ_HIDDEN void mq__strset_clear(mq_strset *s);

#endif
