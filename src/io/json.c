/* Strict pull-style JSON reader and string set. See json.h. */
#include "io/json.h"

#include <stdio.h>
#include <string.h>

/* ---- UTF-8 ----------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence starting at s (avail bytes available), or 0. */
static size_t utf8_seq_len(const uint8_t *s, size_t avail) {
    uint8_t c = s[0];
    if (c < 0x80) return 1;
    size_t n;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;      /* overlong */
        else if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;      /* overlong */
        else if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
    } else {
        return 0; /* continuation byte, overlong C0/C1, or F5..FF */
    }
    if (avail < n || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return n;
}

size_t mq__utf8_check(const void *str, size_t len) {
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_seq_len(s + i, len - i);
        if (!n) return i;
        i += n;
    }
    return len;
}

static size_t utf8_encode(uint32_t cp, uint8_t out[4]) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- reader ---------------------------------------------------------------------------- */

enum { KIND_OBJECT = 1, KIND_ARRAY = 2 };

void mq__json_init(mq_json *j, mq_ctx *ctx, const void *text, size_t len, const char *where,
                   uint64_t base) {
    memset(j, 0, sizeof *j);
    j->ctx = ctx;
    j->src = (const uint8_t *)text;
    j->len = len;
    j->where = where ? where : "JSON";
    j->base = base;
    mq__buf_init(&j->key, ctx);
    mq__buf_init(&j->str, ctx);
}

void mq__json_free(mq_json *j) {
    mq__buf_free(&j->key);
    mq__buf_free(&j->str);
}

mq_status mq__json_error_at(mq_json *j, size_t pos, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return mq__fail(j->ctx, MQ_ERR_FORMAT, "%s: at byte %llu: %s", j->where,
                    (unsigned long long)(j->base + pos), what);
}

#define SYNTAX(j, pos, ...) mq__json_error_at((j), (pos), "invalid JSON: " __VA_ARGS__)

static void skip_ws(mq_json *j) {
    while (j->pos < j->len) {
        uint8_t c = j->src[j->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        j->pos++;
    }
}

size_t mq__json_offset(mq_json *j) {
    skip_ws(j);
    return j->pos;
}

mq_json_type mq__json_peek(mq_json *j) {
    skip_ws(j);
    if (j->pos >= j->len) return MQ_JSON_NONE;
    uint8_t c = j->src[j->pos];
    switch (c) {
    case '{': return MQ_JSON_OBJECT;
    case '[': return MQ_JSON_ARRAY;
    case '"': return MQ_JSON_STRING;
    case 't':
    case 'f': return MQ_JSON_BOOL;
    case 'n': return MQ_JSON_NULL;
    default: return (c == '-' || (c >= '0' && c <= '9')) ? MQ_JSON_NUMBER : MQ_JSON_NONE;
    }
}

static const char *type_name(mq_json_type t) {
    switch (t) {
    case MQ_JSON_NULL: return "null";
    case MQ_JSON_BOOL: return "a boolean";
    case MQ_JSON_NUMBER: return "a number";
    case MQ_JSON_STRING: return "a string";
    case MQ_JSON_ARRAY: return "an array";
    case MQ_JSON_OBJECT: return "an object";
    default: return "no value";
    }
}

/* Fails unless the next value has type `want`. */
static mq_status expect_type(mq_json *j, mq_json_type want) {
    mq_json_type t = mq__json_peek(j);
    if (t == want) return MQ_OK;
    if (t == MQ_JSON_NONE) {
        if (j->pos >= j->len) return SYNTAX(j, j->pos, "unexpected end of input");
        return SYNTAX(j, j->pos, "unexpected character 0x%02x", j->src[j->pos]);
    }
    return mq__json_error_at(j, j->pos, "expected %s, found %s", type_name(want), type_name(t));
}

static int hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p (bounds checked by the caller): the value, or -1. */
static long hex4(const uint8_t *p) {
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p[i]);
        if (h < 0) return -1;
        v = v << 4 | h;
    }
    return v;
}

/* Parses the string at pos (which is '"') into out, unescaped and NUL-terminated. */
static mq_status parse_string(mq_json *j, mq_buf *out) {
    size_t start = j->pos;
    const uint8_t *s = j->src;
    size_t i = j->pos + 1;
    out->len = 0;
    MQ_TRY(mq__buf_append(out, "", 0)); /* an empty string, NUL-terminated */
    for (;;) {
        /* copy a run of plain bytes at once */
        size_t run = i;
        while (run < j->len && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i) MQ_TRY(mq__buf_append(out, s + i, run - i));
        i = run;
        if (i >= j->len) return SYNTAX(j, start, "unterminated string");
        uint8_t c = s[i];
        if (c == '"') break;
        if (c < 0x20) return SYNTAX(j, i, "control character 0x%02x in a string", c);
        if (c >= 0x80) {
            size_t n = utf8_seq_len(s + i, j->len - i);
            if (!n) return SYNTAX(j, i, "invalid UTF-8 byte 0x%02x in a string", c);
            MQ_TRY(mq__buf_append(out, s + i, n));
            i += n;
            continue;
        }
        /* backslash escape */
        if (i + 1 >= j->len) return SYNTAX(j, start, "unterminated string");
        uint8_t e = s[i + 1], ch;
        switch (e) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            if (j->len - i < 6) return SYNTAX(j, i, "truncated \\u escape");
            long cp = hex4(s + i + 2);
            if (cp < 0) return SYNTAX(j, i, "invalid \\u escape");
            size_t used = 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return SYNTAX(j, i, "unpaired low surrogate \\u%04lx", cp);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                long lo = -1;
                if (j->len - i >= 12 && s[i + 6] == '\\' && s[i + 7] == 'u') lo = hex4(s + i + 8);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return SYNTAX(j, i, "unpaired high surrogate \\u%04lx", cp);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                used = 12;
            }
            uint8_t enc[4];
            MQ_TRY(mq__buf_append(out, enc, utf8_encode((uint32_t)cp, enc)));
            i += used;
            continue;
        }
        default: return SYNTAX(j, i, "invalid escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
        }
        MQ_TRY(mq__buf_append(out, &ch, 1));
        i += 2;
    }
    j->pos = i + 1;
    return MQ_OK;
}

static mq_status open_container(mq_json *j, int kind) {
    if (j->depth >= MQ_JSON_MAX_DEPTH)
        return mq__json_error_at(j, j->pos, "JSON nesting deeper than %d levels",
                                 MQ_JSON_MAX_DEPTH);
    j->seen[j->depth] = false;
    j->depth++;
    j->pos++;
    (void)kind;
    return MQ_OK;
}

mq_status mq__json_object_begin(mq_json *j) {
    MQ_TRY(expect_type(j, MQ_JSON_OBJECT));
    return open_container(j, KIND_OBJECT);
}

mq_status mq__json_array_begin(mq_json *j) {
    MQ_TRY(expect_type(j, MQ_JSON_ARRAY));
    return open_container(j, KIND_ARRAY);
}

/* Shared by object_next and array_next: consumes the closing byte or the separating comma. */
static mq_status container_next(mq_json *j, uint8_t close, bool *more) {
    *more = false;
    if (j->depth <= 0) return mq__fail(j->ctx, MQ_ERR_INTERNAL, "JSON reader misuse");
    skip_ws(j);
    if (j->pos >= j->len) return SYNTAX(j, j->pos, "unexpected end of input");
    bool *seen = &j->seen[j->depth - 1];
    uint8_t c = j->src[j->pos];
    if (c == close) {
        j->pos++;
        j->depth--;
        return MQ_OK;
    }
    if (*seen) {
        if (c != ',') return SYNTAX(j, j->pos, "expected ',' or '%c'", close);
        j->pos++;
        skip_ws(j);
        if (j->pos < j->len && j->src[j->pos] == close)
            return SYNTAX(j, j->pos, "trailing comma before '%c'", close);
    }
    *seen = true;
    *more = true;
    return MQ_OK;
}

mq_status mq__json_object_next(mq_json *j, const char **key, size_t *key_len, bool *more) {
    MQ_TRY(container_next(j, '}', more));
    if (!*more) return MQ_OK;
    if (j->pos >= j->len || j->src[j->pos] != '"')
        return j->pos >= j->len ? SYNTAX(j, j->pos, "unexpected end of input")
                                : SYNTAX(j, j->pos, "expected a string as object key");
    MQ_TRY(parse_string(j, &j->key));
    skip_ws(j);
    if (j->pos >= j->len || j->src[j->pos] != ':')
        return SYNTAX(j, j->pos, "expected ':' after an object key");
    j->pos++;
    if (key) *key = j->key.data;
    if (key_len) *key_len = j->key.len;
    return MQ_OK;
}

mq_status mq__json_array_next(mq_json *j, bool *more) { return container_next(j, ']', more); }

mq_status mq__json_string(mq_json *j, const char **s, size_t *len) {
    MQ_TRY(expect_type(j, MQ_JSON_STRING));
    MQ_TRY(parse_string(j, &j->str));
    *s = j->str.data;
    *len = j->str.len;
    return MQ_OK;
}

/* Scans the number at pos (an error if the next value is not one) per the RFC grammar; sets
 * its extent and shape. */
static mq_status scan_number(mq_json *j, size_t *begin, size_t *end, bool *neg, bool *integer) {
    MQ_TRY(expect_type(j, MQ_JSON_NUMBER));
    const uint8_t *s = j->src;
    size_t i = j->pos, n = j->len;
    *begin = i;
    *neg = false;
    *integer = true;
    if (i < n && s[i] == '-') {
        *neg = true;
        i++;
    }
    if (i >= n || s[i] < '0' || s[i] > '9') return SYNTAX(j, i, "a number needs digits");
    if (s[i] == '0') i++;
    else
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i < n && s[i] == '.') {
        *integer = false;
        i++;
        if (i >= n || s[i] < '0' || s[i] > '9') return SYNTAX(j, i, "digits must follow '.'");
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        *integer = false;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || s[i] < '0' || s[i] > '9') return SYNTAX(j, i, "digits must follow 'e'");
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    }
    *end = i;
    j->pos = i;
    return MQ_OK;
}

/* How much of a number token [b, e) an error message quotes. */
static int excerpt_len(size_t b, size_t e) { return (int)(e - b > 40 ? 40 : e - b); }

/* Magnitude of an integer's digits; false on overflow. */
static bool digits_u64(const uint8_t *s, size_t begin, size_t end, uint64_t *out) {
    uint64_t v = 0;
    for (size_t i = begin; i < end; i++) {
        if (!mq__mul_u64(v, 10, &v) || !mq__add_u64(v, (uint64_t)(s[i] - '0'), &v)) return false;
    }
    *out = v;
    return true;
}

mq_status mq__json_u64(mq_json *j, const char *what, uint64_t *out) {
    size_t b, e;
    bool neg, integer;
    MQ_TRY(scan_number(j, &b, &e, &neg, &integer));
    int len = excerpt_len(b, e);
    if (neg || !integer)
        return mq__json_error_at(j, b, "%s must be a non-negative integer, found %.*s", what,
                                 len, (const char *)j->src + b);
    if (!digits_u64(j->src, b, e, out))
        return mq__json_error_at(j, b, "%s is too large: %.*s", what, len,
                                 (const char *)j->src + b);
    return MQ_OK;
}

mq_status mq__json_i64(mq_json *j, const char *what, int64_t *out) {
    size_t b, e;
    bool neg, integer;
    MQ_TRY(scan_number(j, &b, &e, &neg, &integer));
    int len = excerpt_len(b, e);
    if (!integer)
        return mq__json_error_at(j, b, "%s must be an integer, found %.*s", what, len,
                                 (const char *)j->src + b);
    uint64_t mag;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (!digits_u64(j->src, b + (neg ? 1 : 0), e, &mag) || mag > limit)
        return mq__json_error_at(j, b, "%s is out of range: %.*s", what, len,
                                 (const char *)j->src + b);
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return MQ_OK;
}

mq_status mq__json_number_text(mq_json *j, const char **text, size_t *len) {
    size_t b, e;
    bool neg, integer;
    MQ_TRY(scan_number(j, &b, &e, &neg, &integer));
    *text = (const char *)j->src + b;
    *len = e - b;
    return MQ_OK;
}

static bool match_word(mq_json *j, const char *w) {
    size_t k = strlen(w);
    if (j->len - j->pos < k || memcmp(j->src + j->pos, w, k) != 0) return false;
    j->pos += k;
    return true;
}

mq_status mq__json_literal(mq_json *j, mq_json_type *type, bool *value) {
    mq_json_type t = mq__json_peek(j);
    size_t at = j->pos;
    *value = false;
    *type = t;
    if (t == MQ_JSON_NULL && match_word(j, "null")) return MQ_OK;
    if (t == MQ_JSON_BOOL && match_word(j, "true")) return *value = true, MQ_OK;
    if (t == MQ_JSON_BOOL && match_word(j, "false")) return MQ_OK;
    if (t == MQ_JSON_NULL || t == MQ_JSON_BOOL) return SYNTAX(j, at, "invalid literal");
    return expect_type(j, MQ_JSON_NULL);
}

/* Consumes one scalar, or opens a container (then depth grows by one). */
static mq_status skip_scalar_or_open(mq_json *j) {
    mq_json_type t = mq__json_peek(j);
    const char *s;
    size_t n;
    bool b;
    switch (t) {
    case MQ_JSON_OBJECT: return open_container(j, KIND_OBJECT);
    case MQ_JSON_ARRAY: return open_container(j, KIND_ARRAY);
    case MQ_JSON_STRING: return parse_string(j, &j->str);
    case MQ_JSON_NUMBER: return mq__json_number_text(j, &s, &n);
    case MQ_JSON_NULL:
    case MQ_JSON_BOOL: return mq__json_literal(j, &t, &b);
    default:
        if (j->pos >= j->len) return SYNTAX(j, j->pos, "unexpected end of input");
        return SYNTAX(j, j->pos, "unexpected character 0x%02x", j->src[j->pos]);
    }
}

mq_status mq__json_skip(mq_json *j) {
    int d0 = j->depth;
    /* container kind per level above d0, to know which closing byte to expect */
    uint8_t kinds[MQ_JSON_MAX_DEPTH];
    for (;;) {
        mq_json_type t = mq__json_peek(j);
        MQ_TRY(skip_scalar_or_open(j));
        if (t == MQ_JSON_OBJECT || t == MQ_JSON_ARRAY)
            kinds[j->depth - 1] = t == MQ_JSON_OBJECT ? KIND_OBJECT : KIND_ARRAY;
        for (;;) {
            if (j->depth == d0) return MQ_OK;
            bool more;
            if (kinds[j->depth - 1] == KIND_OBJECT) MQ_TRY(mq__json_object_next(j, NULL, NULL, &more));
            else MQ_TRY(mq__json_array_next(j, &more));
            if (more) break;
        }
    }
}

mq_status mq__json_finish(mq_json *j) {
    skip_ws(j);
    if (j->depth != 0) return mq__fail(j->ctx, MQ_ERR_INTERNAL, "JSON reader misuse");
    if (j->pos != j->len) return SYNTAX(j, j->pos, "unexpected data after the JSON value");
    return MQ_OK;
}

/* ---- writer ---------------------------------------------------------------------------- */


/* ---- string set ------------------------------------------------------------------------ */

struct mq_strset_slot {
    char *key; /* NULL: empty */
    size_t len;
    long value;
};

void mq__strset_init(mq_strset *s, mq_ctx *ctx) {
    s->ctx = ctx;
    s->slots = NULL;
    s->cap = s->count = 0;
}

void mq__strset_clear(mq_strset *s) {
    for (size_t i = 0; i < s->cap; i++) {
        mq__free(s->ctx, s->slots[i].key);
        s->slots[i].key = NULL;
    }
    s->count = 0;
}

void mq__strset_free(mq_strset *s) {
    mq__strset_clear(s);
    mq__free(s->ctx, s->slots);
    s->slots = NULL;
    s->cap = 0;
}

static uint64_t hash_bytes(const char *k, size_t len) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h;
}

static struct mq_strset_slot *find_slot(struct mq_strset_slot *slots, size_t cap, const char *key,
                                        size_t len) {
    size_t mask = cap - 1;
    for (size_t i = hash_bytes(key, len) & mask;; i = (i + 1) & mask) {
        struct mq_strset_slot *sl = &slots[i];
        if (!sl->key || (sl->len == len && !memcmp(sl->key, key, len))) return sl;
    }
}

static mq_status strset_grow(mq_strset *s) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    struct mq_strset_slot *slots =
        (struct mq_strset_slot *)mq__calloc(s->ctx, cap, sizeof *slots);
    if (!slots) return MQ_ERR_NOMEM;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].key) *find_slot(slots, cap, s->slots[i].key, s->slots[i].len) = s->slots[i];
    mq__free(s->ctx, s->slots);
    s->slots = slots;
    s->cap = cap;
    return MQ_OK;
}

mq_status mq__strset_add(mq_strset *s, const char *key, size_t len, long value, bool *added) {
    *added = false;
    if ((s->count + 1) * 2 > s->cap) MQ_TRY(strset_grow(s));
    struct mq_strset_slot *sl = find_slot(s->slots, s->cap, key, len);
    if (sl->key) return MQ_OK;
    char *k = mq__strndup(s->ctx, key, len);
    if (!k) return MQ_ERR_NOMEM; /* a byte copy: keys may hold NUL bytes */
    sl->key = k;
    sl->len = len;
    sl->value = value;
    s->count++;
    *added = true;
    return MQ_OK;
}

long mq__strset_get(const mq_strset *s, const char *key, size_t len) {
    if (!s->cap) return -1;
    struct mq_strset_slot *sl = find_slot(s->slots, s->cap, key, len);
    return sl->key ? sl->value : -1;
}
