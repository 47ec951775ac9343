/* The internal JSON reader and writer (src/io/json.c). */
#include "harness.h"
#include "io/json.h"

#include <stdint.h>

static mq_ctx *g_ctx;

/* Checks a whole document for syntax: skip one value, then only whitespace. */
static mq_status validate(const char *text, size_t len) {
    mq_json j;
    mq__json_init(&j, g_ctx, text, len, "doc.json", 0);
    mq_status st = mq__json_skip(&j);
    if (st == MQ_OK) st = mq__json_finish(&j);
    mq__json_free(&j);
    return st;
}
#define VALID(s) validate((s), sizeof(s) - 1)

TEST(valid_documents) {
    CHECK_EQ_INT(VALID("{}"), MQ_OK);
    CHECK_EQ_INT(VALID(" \t\r\n[ ] \n"), MQ_OK);
    CHECK_EQ_INT(VALID("{\"a\":[1,-2.5e+3,0.0,true,false,null,\"x\"],\"b\":{\"c\":{}}}"), MQ_OK);
    CHECK_EQ_INT(VALID("\"top-level string\""), MQ_OK);
    CHECK_EQ_INT(VALID("-0"), MQ_OK);
    CHECK_EQ_INT(VALID("1E5"), MQ_OK);
    CHECK_EQ_INT(VALID("[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"]"), MQ_OK); /* é € 😀 raw */
}

TEST(syntax_errors) {
    static const struct { const char *doc, *msg; } bad[] = {
        {"", "unexpected end of input"},
        {"{", "unexpected end of input"},
        {"{\"a\" 1}", "expected ':'"},
        {"{\"a\":1,}", "trailing comma"},
        {"[1,]", "trailing comma"},
        {"[1 2]", "expected ',' or ']'"},
        {"{1:2}", "expected a string as object key"},
        {"[01]", "expected ',' or ']'"},
        {"[1.]", "digits must follow '.'"},
        {"[1e]", "digits must follow 'e'"},
        {"[-]", "a number needs digits"},
        {"[tru]", "invalid literal"},
        {"[nul]", "invalid literal"},
        {"{} x", "unexpected data after the JSON value"},
        {"[\"abc]", "unterminated string"},
        {"[\"a\tb\"]", "control character"},
        {"[\"\\x\"]", "invalid escape"},
        {"[\"\\u12", "truncated \\u escape"},
        {"[\"\\u12g4\"]", "invalid \\u escape"},
        {"[\"\\ud800\"]", "unpaired high surrogate"},
        {"[\"\\ud800\\u0041\"]", "unpaired high surrogate"},
        {"[\"\\udc00\"]", "unpaired low surrogate"},
        {"[+1]", "unexpected character"},
        {"[NaN]", "unexpected character"},
        {"['a']", "unexpected character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mq_status st = validate(bad[i].doc, strlen(bad[i].doc));
        CHECK_MSG(st == MQ_ERR_FORMAT, "'%s' gave status %d", bad[i].doc, (int)st);
        CHECK_MSG_HAS(g_ctx, bad[i].msg);
        CHECK_MSG_HAS(g_ctx, "doc.json: at byte ");
    }
}

TEST(invalid_utf8) {
    static const char *const bad[] = {
        "[\"\xc0\x80\"]",         /* overlong NUL */
        "[\"\xc1\xbf\"]",         /* overlong */
        "[\"\xe0\x80\xaf\"]",     /* overlong '/' */
        "[\"\xed\xa0\x80\"]",     /* UTF-8 encoded surrogate */
        "[\"\xf0\x80\x80\xaf\"]", /* overlong 4-byte */
        "[\"\xf4\x90\x80\x80\"]", /* past U+10FFFF */
        "[\"\xf5\x80\x80\x80\"]", /* invalid lead */
        "[\"\x80\"]",             /* stray continuation */
        "[\"\xe2\x82\"]",         /* truncated */
        "[\"\xff\"]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK_EQ_INT(validate(bad[i], strlen(bad[i])), MQ_ERR_FORMAT);
        CHECK_MSG_HAS(g_ctx, "invalid UTF-8");
        CHECK_MSG_HAS(g_ctx, "at byte 2");
    }
    CHECK_EQ_INT(mq__utf8_check("ab\xed\xa0\x80", 5), 2);
    CHECK_EQ_INT(mq__utf8_check("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF is fine */
    CHECK_EQ_INT(mq__utf8_check("\xef\xbf\xbf", 3), 3);
    /* outside strings, non-ASCII is a syntax error */
    CHECK_EQ_INT(VALID("[\xc3\xa9]"), MQ_ERR_FORMAT);
}

TEST(nesting_depth) {
    char doc[2 * MQ_JSON_MAX_DEPTH + 3];
    for (int depth = MQ_JSON_MAX_DEPTH; depth <= MQ_JSON_MAX_DEPTH + 1; depth++) {
        for (int i = 0; i < depth; i++) doc[i] = '[';
        for (int i = 0; i < depth; i++) doc[depth + i] = ']';
        mq_status st = validate(doc, (size_t)(2 * depth));
        if (depth == MQ_JSON_MAX_DEPTH) CHECK_EQ_INT(st, MQ_OK);
        else {
            CHECK_EQ_INT(st, MQ_ERR_FORMAT);
            CHECK_MSG_HAS(g_ctx, "nesting deeper than 64");
        }
    }
    /* a huge nesting attempt fails fast, without recursion */
    size_t n = 1000000;
    char *deep = (char *)malloc(n);
    memset(deep, '{', n);
    CHECK_EQ_INT(validate(deep, n), MQ_ERR_FORMAT);
    memset(deep, '[', n);
    CHECK_EQ_INT(validate(deep, n), MQ_ERR_FORMAT);
    free(deep);
}

TEST(strings_unescaped) {
    const char doc[] = "{\"k\\u00e9y\":\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0000e\\ud83d\\ude00\"}";
    mq_json j;
    mq__json_init(&j, g_ctx, doc, sizeof doc - 1, "x", 0);
    const char *k, *s;
    size_t klen, slen;
    bool more;
    CHECK_EQ_INT(mq__json_object_begin(&j), MQ_OK);
    CHECK_EQ_INT(mq__json_object_next(&j, &k, &klen, &more), MQ_OK);
    CHECK(more);
    CHECK_EQ_INT(klen, 4);
    CHECK(!memcmp(k, "k\xc3\xa9y", 4));
    CHECK_EQ_INT(mq__json_peek(&j), MQ_JSON_STRING);
    CHECK_EQ_INT(mq__json_string(&j, &s, &slen), MQ_OK);
    const char want[] = "a\"b\\c/d\b\f\n\r\t\0e\xf0\x9f\x98\x80";
    CHECK_EQ_INT(slen, sizeof want - 1);
    CHECK(!memcmp(s, want, sizeof want - 1));
    CHECK_EQ_INT(mq__json_object_next(&j, &k, &klen, &more), MQ_OK);
    CHECK(!more);
    CHECK_EQ_INT(mq__json_finish(&j), MQ_OK);
    mq__json_free(&j);
}

static mq_status read_u64(const char *doc, uint64_t *v) {
    mq_json j;
    mq__json_init(&j, g_ctx, doc, strlen(doc), "n", 100);
    mq_status st = mq__json_u64(&j, "the value", v);
    if (st == MQ_OK) st = mq__json_finish(&j);
    mq__json_free(&j);
    return st;
}

static mq_status read_i64(const char *doc, int64_t *v) {
    mq_json j;
    mq__json_init(&j, g_ctx, doc, strlen(doc), "n", 0);
    mq_status st = mq__json_i64(&j, "the value", v);
    if (st == MQ_OK) st = mq__json_finish(&j);
    mq__json_free(&j);
    return st;
}

TEST(integers_exact) {
    uint64_t u = 0;
    CHECK_EQ_INT(read_u64("0", &u), MQ_OK);
    CHECK_EQ_INT(u, 0);
    CHECK_EQ_INT(read_u64(" 18446744073709551615 ", &u), MQ_OK);
    CHECK(u == UINT64_MAX);
    CHECK_EQ_INT(read_u64("9007199254740993", &u), MQ_OK); /* not representable in a double */
    CHECK(u == 9007199254740993ull);
    CHECK_EQ_INT(read_u64("18446744073709551616", &u), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(g_ctx, "the value is too large");
    CHECK_MSG_HAS(g_ctx, "at byte 100");
    CHECK_EQ_INT(read_u64("99999999999999999999999", &u), MQ_ERR_FORMAT);
    CHECK_EQ_INT(read_u64("-1", &u), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(g_ctx, "must be a non-negative integer");
    CHECK_EQ_INT(read_u64("-0", &u), MQ_ERR_FORMAT);
    CHECK_EQ_INT(read_u64("1.0", &u), MQ_ERR_FORMAT);
    CHECK_EQ_INT(read_u64("1e2", &u), MQ_ERR_FORMAT);
    CHECK_EQ_INT(read_u64("\"1\"", &u), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(g_ctx, "expected a number, found a string");
    int64_t i = 0;
    CHECK_EQ_INT(read_i64("-9223372036854775808", &i), MQ_OK);
    CHECK(i == INT64_MIN);
    CHECK_EQ_INT(read_i64("9223372036854775807", &i), MQ_OK);
    CHECK(i == INT64_MAX);
    CHECK_EQ_INT(read_i64("-9223372036854775809", &i), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(g_ctx, "out of range");
    CHECK_EQ_INT(read_i64("9223372036854775808", &i), MQ_ERR_FORMAT);
    CHECK_EQ_INT(read_i64("-2.5", &i), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(g_ctx, "must be an integer");
}

TEST(walk_and_literals) {
    const char doc[] = "[true, false, null, 12.5e-1, {\"skip\": [1, {\"x\": []}]}, \"end\"]";
    mq_json j;
    mq__json_init(&j, g_ctx, doc, sizeof doc - 1, "w", 0);
    bool more, b;
    mq_json_type t;
    CHECK_EQ_INT(mq__json_array_begin(&j), MQ_OK);
    CHECK_EQ_INT(mq__json_array_next(&j, &more), MQ_OK);
    CHECK_EQ_INT(mq__json_literal(&j, &t, &b), MQ_OK);
    CHECK(t == MQ_JSON_BOOL && b);
    CHECK_EQ_INT(mq__json_array_next(&j, &more), MQ_OK);
    CHECK_EQ_INT(mq__json_literal(&j, &t, &b), MQ_OK);
    CHECK(t == MQ_JSON_BOOL && !b);
    CHECK_EQ_INT(mq__json_array_next(&j, &more), MQ_OK);
    CHECK_EQ_INT(mq__json_literal(&j, &t, &b), MQ_OK);
    CHECK(t == MQ_JSON_NULL);
    CHECK_EQ_INT(mq__json_array_next(&j, &more), MQ_OK);
    const char *num;
    size_t nlen;
    CHECK_EQ_INT(mq__json_number_text(&j, &num, &nlen), MQ_OK);
    CHECK_EQ_INT(nlen, 7);
    CHECK(!memcmp(num, "12.5e-1", 7));
    CHECK_EQ_INT(mq__json_array_next(&j, &more), MQ_OK);
    CHECK_EQ_INT(mq__json_peek(&j), MQ_JSON_OBJECT);
    CHECK_EQ_INT(mq__json_skip(&j), MQ_OK);
    CHECK_EQ_INT(mq__json_array_next(&j, &more), MQ_OK);
    const char *s;
    size_t slen;
    CHECK_EQ_INT(mq__json_string(&j, &s, &slen), MQ_OK);
    CHECK_EQ_STR(s, "end");
    CHECK_EQ_INT(mq__json_array_next(&j, &more), MQ_OK);
    CHECK(!more);
    CHECK_EQ_INT(mq__json_finish(&j), MQ_OK);
    /* a type mismatch names both types and the offset */
    mq__json_free(&j);
    mq__json_init(&j, g_ctx, "  [1]", 5, "w", 8);
    CHECK_EQ_INT(mq__json_object_begin(&j), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(g_ctx, "w: at byte 10: expected an object, found an array");
    mq__json_free(&j);
}

TEST(string_writer) {
    mq_buf b;
    mq__buf_init(&b, g_ctx);
    const char in[] = "q\"b\\s/\n\t\r\b\f\x01\x1f\x7f\xc3\xa9";
    CHECK_EQ_INT(mq__json_write_string(&b, in, sizeof in - 1), MQ_OK);
    CHECK_EQ_STR(b.data, "\"q\\\"b\\\\s/\\n\\t\\r\\b\\f\\u0001\\u001f\x7f\xc3\xa9\"");
    /* every byte 1..127 round-trips through the reader */
    char all[127];
    for (int i = 0; i < 127; i++) all[i] = (char)(i + 1);
    b.len = 0;
    CHECK_EQ_INT(mq__json_write_string(&b, all, sizeof all), MQ_OK);
    mq_json j;
    mq__json_init(&j, g_ctx, b.data, b.len, "rt", 0);
    const char *s;
    size_t n;
    CHECK_EQ_INT(mq__json_string(&j, &s, &n), MQ_OK);
    CHECK_EQ_INT(n, sizeof all);
    CHECK(!memcmp(s, all, sizeof all));
    mq__json_free(&j);
    /* the public escaper gives the same bytes, truncating like snprintf */
    char all_z[128], out[1024];
    memcpy(all_z, all, sizeof all);
    all_z[127] = 0;
    CHECK_EQ_INT(mq_json_string_format(all_z, out, sizeof out), b.len);
    CHECK(!memcmp(out, b.data, b.len) && !out[b.len]);
    char small[5];
    CHECK_EQ_INT(mq_json_string_format("a\"b", small, sizeof small), 6);
    CHECK_EQ_STR(small, "\"a\\\"");
    CHECK_EQ_INT(mq_json_string_format("abc", NULL, 0), 5);
    CHECK_EQ_INT(mq_json_string_format(NULL, out, sizeof out), 2);
    CHECK(!strcmp(out, "\"\""));
    CHECK_EQ_INT(mq__buf_printf(&b, "%d-%s", 42, "x"), MQ_OK);
    CHECK(b.len > 2 && !strcmp(b.data + b.len - 4, "42-x"));
    mq__buf_free(&b);
}

TEST(string_set) {
    mq_strset s;
    mq__strset_init(&s, g_ctx);
    bool added;
    char key[32];
    for (long i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "tensor.%ld", i);
        CHECK_EQ_INT(mq__strset_add(&s, key, (size_t)n, i, &added), MQ_OK);
        CHECK(added);
    }
    CHECK_EQ_INT(mq__strset_add(&s, "tensor.7", 8, 99, &added), MQ_OK);
    CHECK(!added);
    CHECK_EQ_INT(mq__strset_get(&s, "tensor.7", 8), 7);
    CHECK_EQ_INT(mq__strset_get(&s, "tensor.999", 10), 999);
    CHECK_EQ_INT(mq__strset_get(&s, "tensor.1000", 11), -1);
    CHECK_EQ_INT(mq__strset_add(&s, "a\0b", 3, 5, &added), MQ_OK); /* NUL inside is distinct */
    CHECK(added);
    CHECK_EQ_INT(mq__strset_get(&s, "a", 1), -1);
    CHECK_EQ_INT(mq__strset_get(&s, "a\0b", 3), 5);
    mq__strset_clear(&s);
    CHECK_EQ_INT(mq__strset_get(&s, "tensor.7", 8), -1);
    mq__strset_free(&s);
}

int main(void) {
    g_ctx = mq_ctx_create();
    RUN(valid_documents);
    RUN(syntax_errors);
    RUN(invalid_utf8);
    RUN(nesting_depth);
    RUN(strings_unescaped);
    RUN(integers_exact);
    RUN(walk_and_literals);
    RUN(string_writer);
    RUN(string_set);
    mq_ctx_free(g_ctx);
    return test_summary();
}
