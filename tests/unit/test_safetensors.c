/* safetensors reading (every validation rule), writing, sharded indexes, folders, fixtures. */
#include "harness.h"
#include "io/model_internal.h"
#include "monoquant.h"
#include "api_helpers.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static mq_ctx *g_ctx;
static char g_dir[512]; /* scratch folder of this test binary */

/* ---- helpers --------------------------------------------------------------------------- */

static const char *tmp_path(const char *name) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        TH_FAIL("cannot create %s", path);
        return;
    }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

/* Writes a safetensors file: 8-byte length, `header` as given, then `data_len` bytes 0,1,2... */
static const char *make_st(const char *name, const char *header, size_t data_len) {
    size_t h = strlen(header);
    uint8_t *buf = (uint8_t *)malloc(8 + h + data_len + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    for (size_t i = 0; i < data_len; i++) buf[8 + h + i] = (uint8_t)i;
    const char *path = tmp_path(name);
    write_bytes(path, buf, 8 + h + data_len);
    free(buf);
    return path;
}

static mq_model *open_ok(const char *path) {
    mq_model *m = NULL;
    mq_status st = mq_model_open(g_ctx, path, NULL, &m);
    CHECK_MSG(st == MQ_OK, "open %s: %s", path, mq_ctx_message(g_ctx));
    return m;
}

/* Opening fails with `want` and a message holding `needle` and the file name. */
static void expect_fail(const char *path, mq_status want, const char *needle) {
    mq_model *m = NULL;
    mq_status st = mq_model_open(g_ctx, path, NULL, &m);
    CHECK_MSG(st == want, "%s: status %d, expected %d (%s)", needle, (int)st, (int)want,
              mq_ctx_message(g_ctx));
    CHECK(m == NULL);
    CHECK_MSG_HAS(g_ctx, needle);
    const char *slash = strrchr(path, '/');
    CHECK_MSG_HAS(g_ctx, slash ? slash + 1 : path);
    mq_model_free(m);
}

static void bad_header(const char *header, size_t data_len, mq_status want, const char *needle) {
    expect_fail(make_st("bad.safetensors", header, data_len), want, needle);
}

#define T1 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

/* ---- reading: valid files -------------------------------------------------------------- */

TEST(read_basic) {
    const char *p = make_st("basic.safetensors",
                            "{\"__metadata__\":{\"k\":\"v\",\"e\":\"\"},"
                            "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                            "\"b\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[24,26]}}",
                            26);
    mq_model *m = open_ok(p);
    if (!m) return;
    CHECK_EQ_INT(mq_model_format(m), MQ_FORMAT_SAFETENSORS);
    CHECK_EQ_INT(mq_model_tensor_count(m), 2);
    CHECK_EQ_INT(mq_model_file_count(m), 1);
    const mq_tensor *w = mq_model_tensor(m, 0), *b = mq_model_tensor(m, 1);
    CHECK_EQ_STR(w->name, "w");
    CHECK_EQ_INT(w->dtype, MQ_F32);
    CHECK_EQ_INT(w->ndim, 2);
    CHECK_EQ_INT(w->shape[0], 2);
    CHECK_EQ_INT(w->shape[1], 3);
    CHECK_EQ_INT(w->numel, 6);
    CHECK_EQ_INT(w->nbytes, 24);
    CHECK_EQ_INT(((const uint8_t *)w->data)[5], 5);
    CHECK_EQ_INT(b->ndim, 0);
    CHECK_EQ_INT(b->numel, 1);
    CHECK_EQ_INT(((const uint8_t *)b->data)[0], 24);
    CHECK(mq_model_tensor(m, 2) == NULL);
    CHECK_EQ_INT(mq_model_find(m, "b"), 1);
    CHECK_EQ_INT(mq_model_find(m, "zz"), -1);
    CHECK_EQ_INT(mq_model_metadata_count(m), 2);
    CHECK_EQ_STR(mq_model_metadata_key(m, 0), "k");
    CHECK_EQ_STR(meta_get(m, "k"), "v");
    CHECK_EQ_STR(meta_get(m, "e"), "");
    CHECK(meta_get(m, "none") == NULL);
    mq_model_free(m);
}

TEST(read_lenient_where_reference_is) {
    /* whitespace around the header, extra keys in an entry, null metadata, an empty model */
    mq_model *m = open_ok(make_st("ws.safetensors",
                                  " \n\t{\"a\":{\"x\":{\"nested\":[1,{}]},\"dtype\":\"F32\","
                                  "\"shape\":[2],\"data_offsets\":[0,8],\"y\":null},"
                                  "\"__metadata__\":null}\r\n  ",
                                  8));
    if (m) {
        CHECK_EQ_INT(mq_model_tensor_count(m), 1);
        CHECK_EQ_INT(mq_model_metadata_count(m), 0);
    }
    mq_model_free(m);
    m = open_ok(make_st("empty.safetensors", "{}", 0));
    if (m) CHECK_EQ_INT(mq_model_tensor_count(m), 0);
    mq_model_free(m);
    /* header length 640 starts the file with 80 02, like a pickle: still safetensors */
    char h640[641];
    snprintf(h640, sizeof h640, "{" T1 "}%*s", 640 - (int)strlen("{" T1 "}"), "");
    m = open_ok(make_st("len640.safetensors", h640, 8));
    if (m) CHECK_EQ_INT(mq_model_tensor_count(m), 1);
    mq_model_free(m);
    /* a header length that leaves the data unaligned is valid */
    m = open_ok(make_st("odd.safetensors", "{" T1 "} ", 8));
    if (m) CHECK_EQ_INT(((uintptr_t)mq_model_tensor(m, 0)->data) % 2, 1);
    mq_model_free(m);
}

TEST(read_file_order) {
    /* header order differs from data order: tensors come in data-offset order */
    mq_model *m = open_ok(make_st("order.safetensors",
                                  "{\"second\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[2,5]},"
                                  "\"first\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[0,2]}}",
                                  5));
    if (!m) return;
    CHECK_EQ_STR(mq_model_tensor(m, 0)->name, "first");
    CHECK_EQ_STR(mq_model_tensor(m, 1)->name, "second");
    CHECK_EQ_INT(((const uint8_t *)mq_model_tensor(m, 1)->data)[0], 2);
    mq_model_free(m);
}

TEST(read_zero_size_tensors) {
    /* empty tensors sit at the running offset: at the start, between, twice at one offset and
     * at the end, in any header order (ties keep header order) */
    mq_model *m = open_ok(make_st(
        "zero.safetensors",
        "{\"end\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
        "\"z1\":{\"dtype\":\"F64\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
        "\"z2\":{\"dtype\":\"I8\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"start\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},"
        "\"huge_zero\":{\"dtype\":\"F32\",\"shape\":[0,9223372036854775807],"
        "\"data_offsets\":[8,8]}}",
        8));
    if (!m) return;
    static const char *const want[] = {"start", "a", "z1", "z2", "b", "end", "huge_zero"};
    CHECK_EQ_INT(mq_model_tensor_count(m), 7);
    for (size_t i = 0; i < 7 && i < mq_model_tensor_count(m); i++)
        CHECK_EQ_STR(mq_model_tensor(m, i)->name, want[i]);
    CHECK_EQ_INT(mq_model_tensor(m, 2)->numel, 0);
    CHECK_EQ_INT(mq_model_tensor(m, 2)->nbytes, 0);
    mq_model_free(m);
    /* a zero-size tensor away from the running offset is a gap, as in the reference */
    bad_header("{" T1 ",\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[12,12]}}", 8,
               MQ_ERR_FORMAT, "leave a gap");
    bad_header("{" T1 ",\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8,
               MQ_ERR_FORMAT, "overlap");
}

/* ---- reading: every rejection ---------------------------------------------------------- */

TEST(reject_framing) {
    const char *p = tmp_path("short.safetensors");
    write_bytes(p, "\x08\0\0\0", 4);
    expect_fail(p, MQ_ERR_FORMAT, "too short");
    write_bytes(p, "", 0);
    expect_fail(p, MQ_ERR_FORMAT, "too short");
    uint8_t big[16] = {0x01, 0xe1, 0xf5, 0x05, 0, 0, 0, 0, '{', '}'}; /* 100,000,001 */
    write_bytes(p, big, sizeof big);
    expect_fail(p, MQ_ERR_FORMAT, "exceeds the limit of 100000000");
    uint8_t huge[16] = {0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    write_bytes(p, huge, sizeof huge); /* 8 + n would wrap */
    expect_fail(p, MQ_ERR_FORMAT, "exceeds the limit");
    uint8_t past[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
    write_bytes(p, past, sizeof past);
    expect_fail(p, MQ_ERR_FORMAT, "runs past the end of the file (12 bytes)");
    expect_fail(tmp_path("does-not-exist.safetensors"), MQ_ERR_IO, "cannot open");
}

TEST(reject_header_text) {
    bad_header("{\"a\xff\":1}", 0, MQ_ERR_FORMAT, "at byte 11: header is not valid UTF-8");
    bad_header("{\"\xed\xa0\x80\":1}", 0, MQ_ERR_FORMAT, "not valid UTF-8");
    bad_header("", 0, MQ_ERR_FORMAT, "unexpected end of input");
    bad_header("{\"a\":{\"dtype\":\"F32\",}}", 0, MQ_ERR_FORMAT, "invalid JSON");
    bad_header("[]", 0, MQ_ERR_FORMAT, "at byte 8: expected an object, found an array");
    bad_header("{} {}", 0, MQ_ERR_FORMAT, "unexpected data after the JSON value");
    char deep[400] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":";
    size_t n = strlen(deep);
    for (int i = 0; i < 70; i++) deep[n++] = '[';
    for (int i = 0; i < 70; i++) deep[n++] = ']';
    deep[n++] = '}';
    deep[n++] = '}';
    deep[n] = 0;
    bad_header(deep, 0, MQ_ERR_FORMAT, "nesting deeper than 64");
    /* a padding of NUL bytes instead of spaces is not JSON whitespace */
    const char *p = tmp_path("nulpad.safetensors");
    uint8_t buf[8 + 8] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, 0, 0, 0, 0, 0};
    write_bytes(p, buf, sizeof buf);
    expect_fail(p, MQ_ERR_FORMAT, "at byte 10: invalid JSON: unexpected data after");
}

TEST(reject_entries) {
    bad_header("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, MQ_ERR_FORMAT,
               "tensor 'a': unknown dtype 'F33'");
    bad_header("{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, MQ_ERR_FORMAT,
               "unknown dtype");
    bad_header("{\"a\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1,
               MQ_ERR_UNSUPPORTED, "tensor 'a': unsupported dtype F4");
    bad_header("{\"a\":{\"dtype\":\"F6_E2M3\",\"shape\":[4],\"data_offsets\":[0,3]}}", 3,
               MQ_ERR_UNSUPPORTED, "unsupported dtype F6_E2M3");
    bad_header("{\"a\":{\"dtype\":\"F8_E4M3FNUZ\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
               MQ_ERR_UNSUPPORTED, "unsupported dtype F8_E4M3FNUZ");
    bad_header("{\"a\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, MQ_ERR_FORMAT,
               "dtype must be a string");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
               MQ_ERR_FORMAT, "tensor 'a': shape entry must be a non-negative integer, found -2");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
               MQ_ERR_FORMAT, "shape entry must be a non-negative integer, found 2.0");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
               MQ_ERR_FORMAT, "expected a number, found a string");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, MQ_ERR_FORMAT,
               "'shape' must be an array");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}",
               8, MQ_ERR_UNSUPPORTED, "'shape' has more than 8 entries");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551615],"
               "\"data_offsets\":[0,8]}}", 8, MQ_ERR_FORMAT, "shape entry 18446744073709551615 is "
               "too large");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616],"
               "\"data_offsets\":[0,8]}}", 8, MQ_ERR_FORMAT, "shape entry is too large");
    /* 2^32 * 2^32 wraps to 0 in 64 bits: must be caught, not read as an empty tensor */
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
               "\"data_offsets\":[0,0]}}", 0, MQ_ERR_FORMAT, "tensor 'a': element count overflows");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
               "\"data_offsets\":[0,0]}}", 0, MQ_ERR_FORMAT, "tensor 'a': byte size overflows");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, MQ_ERR_FORMAT,
               "data_offsets must hold 2 integers [begin, end], found 1");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8,
               MQ_ERR_FORMAT, "'data_offsets' has more than 2 entries");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,-8]}}", 8,
               MQ_ERR_FORMAT, "data_offsets entry must be a non-negative integer");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
               MQ_ERR_FORMAT, "tensor 'a': data_offsets [8, 0] end before they begin");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16,
               MQ_ERR_FORMAT, "tensor 'a': data_offsets [0, 16] span 16 bytes but dtype F32 and "
               "its shape need 8");
    bad_header("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, MQ_ERR_FORMAT,
               "tensor 'a': missing 'dtype'");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, MQ_ERR_FORMAT,
               "missing 'shape'");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, MQ_ERR_FORMAT,
               "missing 'data_offsets'");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
               8, MQ_ERR_FORMAT, "tensor 'a': duplicate key 'dtype'");
    bad_header("{\"a\":[1]}", 0, MQ_ERR_FORMAT, "tensor 'a': entry must be an object");
    bad_header("{" T1 "," T1 "}", 8, MQ_ERR_FORMAT, "duplicate tensor name 'a'");
    bad_header("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
               MQ_ERR_FORMAT, "tensor name contains a NUL character");
}

TEST(reject_layout) {
#define E(name, b, e) "\"" name "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" #b "," #e "]}"
    bad_header("{" E("a", 0, 4) "," E("b", 8, 12) "}", 12, MQ_ERR_FORMAT,
               "tensor 'b': data_offsets [8, 12] leave a gap: data bytes [4, 8) belong to no "
               "tensor");
    bad_header("{" E("a", 4, 8) "}", 8, MQ_ERR_FORMAT, "data bytes [0, 4) belong to no tensor");
    bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}," E("b", 4, 8) "}",
               8, MQ_ERR_FORMAT, "overlap tensor 'a' (which ends at 8)");
    bad_header("{" E("a", 0, 4) "," E("b", 0, 4) "}", 4, MQ_ERR_FORMAT, "overlap tensor");
    bad_header("{" E("a", 0, 4) "}", 5, MQ_ERR_FORMAT, "1 trailing bytes after the last tensor");
    bad_header("{}", 3, MQ_ERR_FORMAT, "3 trailing bytes");
    bad_header("{" E("a", 0, 4) "," E("b", 4, 8) "}", 6, MQ_ERR_FORMAT,
               "the tensors need 8 data bytes but the file holds 6 (truncated?)");
    bad_header("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[18446744073709551615,"
               "18446744073709551615]}}", 0, MQ_ERR_FORMAT, "leave a gap");
#undef E
}

TEST(reject_metadata) {
    bad_header("{\"__metadata__\":[],\"a\":1}", 0, MQ_ERR_FORMAT,
               "__metadata__ must be an object of strings");
    bad_header("{\"__metadata__\":{\"k\":1}}", 0, MQ_ERR_FORMAT,
               "__metadata__ value of 'k' must be a string");
    bad_header("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, MQ_ERR_FORMAT,
               "duplicate __metadata__ key 'k'");
    bad_header("{\"__metadata__\":{},\"__metadata__\":{}}", 0, MQ_ERR_FORMAT,
               "duplicate __metadata__");
    bad_header("{\"__metadata__\":{\"k\":\"a\\u0000\"}}", 0, MQ_ERR_FORMAT,
               "value of 'k' contains a NUL character");
    bad_header("{\"__metadata__\":{\"k\\u0000\":\"a\"}}", 0, MQ_ERR_FORMAT,
               "key contains a NUL character");
}

/* ---- writing --------------------------------------------------------------------------- */

static size_t read_file(const char *path, uint8_t **out) {
    FILE *f = fopen(path, "rb");
    *out = NULL;
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *out = (uint8_t *)malloc(n > 0 ? (size_t)n : 1);
    size_t got = fread(*out, 1, (size_t)n, f);
    fclose(f);
    return got;
}

static bool files_equal(const char *a, const char *b) {
    uint8_t *x, *y;
    size_t nx = read_file(a, &x), ny = read_file(b, &y);
    bool eq = x && y && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return eq;
}

/* Number of leftover temporary files in the scratch folder. */
static int temp_files(void) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (!strncmp(e->d_name, ".monoquant-", 11)) n++; /* the temporary-name pattern */
    if (d) closedir(d);
    return n;
}

static bool exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Writes every tensor of m (same order, metadata) to path. */
static mq_status write_model(const mq_model *m, const char *path) {
    size_t n = mq_model_tensor_count(m), nm = mq_model_metadata_count(m);
    mq_tensor_desc *d = (mq_tensor_desc *)calloc(n + 1, sizeof *d);
    mq_kv *kv = (mq_kv *)calloc(nm + 1, sizeof *kv);
    for (size_t i = 0; i < n; i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        d[i].name = t->name;
        d[i].dtype = t->dtype;
        d[i].ndim = t->ndim;
        memcpy(d[i].shape, t->shape, sizeof t->shape);
    }
    for (size_t i = 0; i < nm; i++)
        kv[i] = (mq_kv){mq_model_metadata_key(m, i), mq_model_metadata_value(m, i)};
    mq_writer *w = NULL;
    mq_status st = mq_writer_open(g_ctx, path, MQ_FORMAT_AUTO, d, n, kv, nm, &w);
    for (size_t i = 0; st == MQ_OK && i < n; i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        /* uneven chunks, to exercise the accounting */
        size_t half = (size_t)t->nbytes / 3;
        st = mq_writer_write(w, t->data, half);
        if (st == MQ_OK) st = mq_writer_write(w, (const uint8_t *)t->data + half, t->nbytes - half);
    }
    if (st == MQ_OK) st = mq_writer_commit(w);
    mq_writer_free(w);
    free(d);
    free(kv);
    return st;
}

/* Same tensors (names, dtypes, shapes, bytes) in the same order. */
static void check_same_tensors(const mq_model *a, const mq_model *b) {
    CHECK_EQ_INT(mq_model_tensor_count(a), mq_model_tensor_count(b));
    for (size_t i = 0; i < mq_model_tensor_count(a) && i < mq_model_tensor_count(b); i++) {
        const mq_tensor *x = mq_model_tensor(a, i), *y = mq_model_tensor(b, i);
        CHECK_EQ_STR(x->name, y->name);
        CHECK_EQ_INT(x->dtype, y->dtype);
        CHECK_EQ_INT(x->ndim, y->ndim);
        CHECK(!memcmp(x->shape, y->shape, sizeof x->shape));
        CHECK_EQ_INT(x->nbytes, y->nbytes);
        CHECK(x->nbytes == 0 || !memcmp(x->data, y->data, x->nbytes));
    }
}

TEST(write_layout_and_round_trip) {
    float w[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h = 0x3c00;
    mq_tensor_desc d[4] = {
        {.name = "layer.weight", .dtype = MQ_F32, .ndim = 2, .shape = {2, 3}},
        {.name = "empty", .dtype = MQ_F64, .ndim = 2, .shape = {0, 4}},
        {.name = "scalar \"q\"\n\xc3\xa9", .dtype = MQ_F16, .ndim = 0},
        {.name = "last", .dtype = MQ_U8, .ndim = 1, .shape = {0}},
    };
    mq_kv meta[] = {{"quant", "{\"bits\": 8}"}, {"tool", "monoquant"}};
    const char *p1 = tmp_path("w1.safetensors");
    mq_writer *wr = NULL;
    CHECK_EQ_INT(mq_writer_open(g_ctx, p1, MQ_FORMAT_SAFETENSORS, d, 4, meta, 2, &wr), MQ_OK);
    CHECK(!exists(p1)); /* nothing at the destination before the commit */
    CHECK_EQ_INT(mq_writer_write(wr, w, 10), MQ_OK);
    CHECK_EQ_INT(mq_writer_write(wr, (const uint8_t *)w + 10, 14), MQ_OK);
    CHECK_EQ_INT(mq_writer_write(wr, &h, 2), MQ_OK);
    CHECK_EQ_INT(mq_writer_commit(wr), MQ_OK);
    mq_writer_free(wr);
    CHECK_EQ_INT(temp_files(), 0);

    uint8_t *bytes;
    size_t n = read_file(p1, &bytes);
    CHECK(n > 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | bytes[i];
    CHECK_EQ_INT(hl % 8, 0);
    CHECK_EQ_INT(n, 8 + hl + 26);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\",\"quant\":\"{\\\"bits\\\": 8}\","
                       "\"tool\":\"monoquant\"},\"layer.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                       "\"data_offsets\":[0,24]},\"empty\":{\"dtype\":\"F64\",\"shape\":[0,4],"
                       "\"data_offsets\":[24,24]},\"scalar \\\"q\\\"\\n\xc3\xa9\":{\"dtype\":\"F16\","
                       "\"shape\":[],\"data_offsets\":[24,26]},\"last\":{\"dtype\":\"U8\","
                       "\"shape\":[0],\"data_offsets\":[26,26]}}";
    CHECK(hl >= strlen(want) && !memcmp(bytes + 8, want, strlen(want)));
    for (size_t i = 8 + strlen(want); i < 8 + hl; i++) CHECK(bytes[i] == ' ');
    free(bytes);

    mq_model *m = open_ok(p1);
    if (!m) return;
    CHECK_EQ_INT(mq_model_tensor_count(m), 4);
    CHECK_EQ_STR(mq_model_tensor(m, 2)->name, "scalar \"q\"\n\xc3\xa9");
    CHECK(!memcmp(mq_model_tensor(m, 0)->data, w, 24));
    CHECK_EQ_STR(mq_model_metadata_key(m, 0), "format");
    CHECK_EQ_STR(meta_get(m, "format"), "pt");
    CHECK_EQ_STR(meta_get(m, "quant"), "{\"bits\": 8}");
    /* read -> write gives the same bytes for files this writer made */
    const char *p2 = tmp_path("w2.safetensors");
    CHECK_EQ_INT(write_model(m, p2), MQ_OK);
    CHECK(files_equal(p1, p2));
    mq_model_free(m);
}

TEST(write_format_override) {
    mq_tensor_desc d = {.name = "x", .dtype = MQ_I8, .ndim = 1, .shape = {3}};
    mq_kv meta[] = {{"a", "1"}, {"format", "np"}};
    const char *p = tmp_path("fmt.safetensors");
    mq_writer *w = NULL;
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, &d, 1, meta, 2, &w), MQ_OK);
    CHECK_EQ_INT(mq_writer_write(w, "abc", 3), MQ_OK);
    CHECK_EQ_INT(mq_writer_commit(w), MQ_OK);
    mq_writer_free(w);
    mq_model *m = open_ok(p);
    if (!m) return;
    CHECK_EQ_INT(mq_model_metadata_count(m), 2);
    CHECK_EQ_STR(mq_model_metadata_key(m, 0), "format");
    CHECK_EQ_STR(mq_model_metadata_value(m, 0), "np");
    CHECK_EQ_STR(mq_model_metadata_key(m, 1), "a");
    mq_model_free(m);
}

TEST(write_rejects_bad_input) {
    mq_writer *w = NULL;
    const char *p = tmp_path("bad-out.safetensors");
    mq_tensor_desc two[2] = {{.name = "x", .dtype = MQ_F32, .ndim = 1, .shape = {1}},
                             {.name = "x", .dtype = MQ_F32, .ndim = 1, .shape = {1}}};
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, two, 2, NULL, 0, &w), MQ_ERR_INVALID);
    CHECK_MSG_HAS(g_ctx, "duplicate tensor name 'x'");
    two[1].name = "__metadata__";
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, two, 2, NULL, 0, &w), MQ_ERR_INVALID);
    CHECK_MSG_HAS(g_ctx, "'__metadata__' is reserved");
    two[1].name = "bad\xff";
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, two, 2, NULL, 0, &w), MQ_ERR_INVALID);
    CHECK_MSG_HAS(g_ctx, "name is not valid UTF-8");
    mq_kv meta[2] = {{"k", "1"}, {"k", "2"}};
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, two, 1, meta, 2, &w), MQ_ERR_INVALID);
    CHECK_MSG_HAS(g_ctx, "duplicate metadata key 'k'");
    meta[1] = (mq_kv){"v", "\xc0\x80"};
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, two, 1, meta, 2, &w), MQ_ERR_INVALID);
    CHECK_MSG_HAS(g_ctx, "metadata entry 'v' is not valid UTF-8");
    two[0].shape[0] = -1;
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, two, 1, NULL, 0, &w), MQ_ERR_INVALID);
    CHECK_MSG_HAS(g_ctx, "invalid shape");
    CHECK(w == NULL);
    CHECK(!exists(p));
    CHECK_EQ_INT(temp_files(), 0);
}

TEST(write_failures_leave_nothing) {
    mq_tensor_desc d[2] = {{.name = "a", .dtype = MQ_F32, .ndim = 1, .shape = {4}},
                           {.name = "b", .dtype = MQ_U8, .ndim = 1, .shape = {3}}};
    const char *p = tmp_path("fail.safetensors");
    uint8_t data[32] = {0};
    mq_writer *w = NULL;
    /* too few bytes, then free */
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, d, 2, NULL, 0, &w), MQ_OK);
    CHECK_EQ_INT(temp_files(), 1);
    CHECK_EQ_INT(mq_writer_write(w, data, 5), MQ_OK);
    mq_writer_free(w);
    CHECK(!exists(p));
    CHECK_EQ_INT(temp_files(), 0);
    /* commit with bytes missing */
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, d, 2, NULL, 0, &w), MQ_OK);
    CHECK_EQ_INT(mq_writer_write(w, data, 17), MQ_OK);
    CHECK_EQ_INT(mq_writer_commit(w), MQ_ERR_INVALID);
    CHECK_MSG_HAS(g_ctx, "tensor 'b' is incomplete: 1 of 3 bytes written");
    CHECK_EQ_INT(mq_writer_commit(w), MQ_ERR_INVALID);
    mq_writer_free(w);
    CHECK(!exists(p));
    CHECK_EQ_INT(temp_files(), 0);
    /* too many bytes; an existing destination stays as it was */
    write_bytes(p, "old", 3);
    CHECK_EQ_INT(mq_writer_open(g_ctx, p, MQ_FORMAT_AUTO, d, 2, NULL, 0, &w), MQ_OK);
    CHECK_EQ_INT(mq_writer_write(w, data, 20), MQ_ERR_INVALID);
    CHECK_MSG_HAS(g_ctx, "1 bytes written beyond the last tensor");
    CHECK_EQ_INT(mq_writer_write(w, data, 1), MQ_ERR_INVALID);
    CHECK_MSG_HAS(g_ctx, "writer already failed");
    CHECK_EQ_INT(mq_writer_commit(w), MQ_ERR_INVALID);
    mq_writer_free(w);
    uint8_t *old;
    CHECK_EQ_INT(read_file(p, &old), 3);
    CHECK(old && !memcmp(old, "old", 3));
    free(old);
    CHECK_EQ_INT(temp_files(), 0);
    /* a folder that does not exist, and a "folder" that is a file */
    CHECK_EQ_INT(mq_writer_open(g_ctx, tmp_path("no/such/dir/x.safetensors"), MQ_FORMAT_AUTO, d,
                                2, NULL, 0, &w), MQ_ERR_IO);
    CHECK_MSG_HAS(g_ctx, "cannot create a temporary file");
    CHECK(w == NULL);
    char inside_file[1100];
    snprintf(inside_file, sizeof inside_file, "%s/x.safetensors", p);
    CHECK_EQ_INT(mq_writer_open(g_ctx, inside_file, MQ_FORMAT_AUTO, d, 2, NULL, 0, &w), MQ_ERR_IO);
    CHECK_EQ_INT(temp_files(), 0);
    mq_writer_free(NULL);
}

/* ---- shared fixtures ------------------------------------------------------------------- */

static char *fixture(const char *rel) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/%s", test_fixtures(), rel);
    return buf;
}

static void check_lm(const mq_model *m, mq_dtype dt) {
    CHECK_EQ_INT(mq_model_tensor_count(m), 53);
    uint64_t params = 0;
    for (size_t i = 0; i < mq_model_tensor_count(m); i++) {
        CHECK_EQ_INT(mq_model_tensor(m, i)->dtype, dt);
        params += mq_model_tensor(m, i)->numel;
    }
    CHECK_EQ_INT(params, 3323392);
    static const struct { size_t i; const char *name; int nd; int64_t d0, d1; } want[] = {
        {0, "tok_emb.weight", 2, 256, 256},        {1, "pos_emb.weight", 2, 128, 256},
        {2, "blocks.0.ln1.weight", 1, 256, 0},     {4, "blocks.0.attn.qkv.weight", 2, 768, 256},
        {5, "blocks.0.attn.qkv.bias", 1, 768, 0},  {12, "blocks.0.mlp.proj.weight", 2, 256, 1024},
        {49, "blocks.3.mlp.proj.bias", 1, 256, 0}, {50, "ln_f.weight", 1, 256, 0},
        {52, "lm_head.weight", 2, 256, 256},
    };
    for (size_t k = 0; k < sizeof want / sizeof *want; k++) {
        const mq_tensor *t = mq_model_tensor(m, want[k].i);
        if (!t) continue;
        CHECK_EQ_STR(t->name, want[k].name);
        CHECK_EQ_INT(t->ndim, want[k].nd);
        CHECK_EQ_INT(t->shape[0], want[k].d0);
        if (want[k].nd == 2) CHECK_EQ_INT(t->shape[1], want[k].d1);
    }
    CHECK_EQ_INT(mq_model_metadata_count(m), 6);
    CHECK_EQ_STR(meta_get(m, "model"), "lm_fortunes");
    CHECK_EQ_STR(meta_get(m, "steps"), "881");
}

static void check_cnn(const mq_model *m, mq_dtype dt) {
    static const struct { const char *name; int nd; int64_t s[4]; } want[] = {
        {"conv1.weight", 4, {32, 1, 3, 3}}, {"conv1.bias", 1, {32}},
        {"conv2.weight", 4, {64, 32, 3, 3}}, {"conv2.bias", 1, {64}},
        {"fc1.weight", 2, {128, 1024}},     {"fc1.bias", 1, {128}},
        {"fc2.weight", 2, {10, 128}},       {"fc2.bias", 1, {10}},
    };
    CHECK_EQ_INT(mq_model_tensor_count(m), 8);
    for (size_t i = 0; i < 8 && i < mq_model_tensor_count(m); i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        CHECK_EQ_STR(t->name, want[i].name);
        CHECK_EQ_INT(t->dtype, dt);
        CHECK_EQ_INT(t->ndim, want[i].nd);
        for (int d = 0; d < t->ndim; d++) CHECK_EQ_INT(t->shape[d], want[i].s[d]);
    }
    CHECK_EQ_STR(meta_get(m, "model"), "cnn_digits");
    CHECK_EQ_STR(meta_get(m, "epochs"), "30");
}

/* read -> write -> read keeps every tensor and metadata entry ("format" is added). */
static void fixture_round_trip(const mq_model *m, const char *out) {
    CHECK_EQ_INT(write_model(m, out), MQ_OK);
    mq_model *b = open_ok(out);
    if (!b) return;
    check_same_tensors(m, b);
    CHECK_EQ_INT(mq_model_metadata_count(b), mq_model_metadata_count(m) + 1);
    CHECK_EQ_STR(meta_get(b, "format"), "pt");
    for (size_t i = 0; i < mq_model_metadata_count(m); i++)
        CHECK_EQ_STR(meta_get(b, mq_model_metadata_key(m, i)),
                     mq_model_metadata_value(m, i));
    /* and from our own output on, the bytes are stable */
    CHECK_EQ_INT(write_model(b, tmp_path("again.safetensors")), MQ_OK);
    CHECK(files_equal(out, tmp_path("again.safetensors")));
    mq_model_free(b);
}

TEST(fixtures_lm) {
    mq_model *m = open_ok(fixture("lm/lm_fortunes.safetensors"));
    if (m) {
        check_lm(m, MQ_F32);
        float emb0;
        memcpy(&emb0, mq_model_tensor(m, 0)->data, sizeof emb0);
        CHECK(emb0 == emb0 && emb0 != 0.0f); /* real numbers in the mapping */
        fixture_round_trip(m, tmp_path("lm_rt.safetensors"));
    }
    mq_model_free(m);
    m = open_ok(fixture("lm/lm_fortunes.bf16.safetensors"));
    if (m) {
        check_lm(m, MQ_BF16);
        fixture_round_trip(m, tmp_path("lm16_rt.safetensors"));
    }
    mq_model_free(m);
}

TEST(fixtures_cnn) {
    mq_model *m = open_ok(fixture("cnn/cnn_digits.safetensors"));
    if (m) {
        check_cnn(m, MQ_F32);
        fixture_round_trip(m, tmp_path("cnn_rt.safetensors"));
    }
    mq_model_free(m);
    m = open_ok(fixture("cnn/cnn_digits.bf16.safetensors"));
    if (m) {
        check_cnn(m, MQ_BF16);
        fixture_round_trip(m, tmp_path("cnn16_rt.safetensors"));
    }
    mq_model_free(m);
}

/* ---- sharded checkpoints and folders --------------------------------------------------- */

static const char *sub(const char *dir, const char *name) {
    static char buf[4][1200];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

/* Writes a one-tensor-per-name U8 safetensors file: each tensor is [len(name)] bytes. */
static void write_shard(const char *path, const char *const *names, size_t n) {
    mq_tensor_desc d[8];
    for (size_t i = 0; i < n; i++)
        d[i] = (mq_tensor_desc){.name = names[i], .dtype = MQ_U8, .ndim = 1,
                                .shape = {(int64_t)strlen(names[i])}};
    mq_writer *w = NULL;
    mq_status st = mq_writer_open(g_ctx, path, MQ_FORMAT_SAFETENSORS, d, n, NULL, 0, &w);
    for (size_t i = 0; st == MQ_OK && i < n; i++) st = mq_writer_write(w, names[i], strlen(names[i]));
    if (st == MQ_OK) st = mq_writer_commit(w);
    CHECK_MSG(st == MQ_OK, "shard %s: %s", path, mq_ctx_message(g_ctx));
    mq_writer_free(w);
}

static const char *make_dir(const char *name) {
    const char *d = tmp_path(name);
    mkdir(d, 0755);
    return d;
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

TEST(sharded_index) {
    const char *dir = make_dir("sharded");
    static const char *const s1[] = {"emb", "l0.w"}, *const s2[] = {"l1.w", "head"};
    write_shard(sub(dir, "model-00001-of-00002.safetensors"), s1, 2);
    write_shard(sub(dir, "model-00002-of-00002.safetensors"), s2, 2);
    const char *idx = sub(dir, "model.safetensors.index.json");
    /* weight_map in name order, shard 2 first: the model still follows shard order */
    write_text(idx, "{\"metadata\": {\"total_size\": 13, \"note\": \"x\", \"ok\": true, "
                    "\"nested\": {\"a\": [1]}},\n \"weight_map\": {"
                    "\"head\": \"model-00002-of-00002.safetensors\","
                    "\"emb\": \"model-00001-of-00002.safetensors\","
                    "\"l0.w\": \"model-00001-of-00002.safetensors\","
                    "\"l1.w\": \"model-00002-of-00002.safetensors\"}}");
    for (int pass = 0; pass < 2; pass++) {
        mq_model *m = open_ok(pass ? dir : idx); /* the index, then its folder */
        if (!m) continue;
        CHECK_EQ_INT(mq_model_format(m), MQ_FORMAT_SAFETENSORS);
        CHECK_EQ_INT(mq_model_file_count(m), 2);
        CHECK_EQ_INT(mq_model_tensor_count(m), 4);
        static const char *const order[] = {"emb", "l0.w", "l1.w", "head"};
        for (size_t i = 0; i < 4 && i < mq_model_tensor_count(m); i++) {
            const mq_tensor *t = mq_model_tensor(m, i);
            CHECK_EQ_STR(t->name, order[i]);
            CHECK(!memcmp(t->data, order[i], strlen(order[i])));
        }
        CHECK_EQ_STR(meta_get(m, "total_size"), "13");
        CHECK_EQ_STR(meta_get(m, "note"), "x");
        CHECK_EQ_STR(meta_get(m, "ok"), "true");
        CHECK(meta_get(m, "nested") == NULL);
        CHECK_EQ_STR(meta_get(m, "format"), "pt");
        CHECK_EQ_INT(mq_model_find(m, "head"), 3);
        mq_model_free(m);
    }
}

/* A folder with shard A = {a, b}, B = {c} and the given index text. */
static const char *index_case(const char *name, const char *index) {
    const char *dir = make_dir(name);
    static const char *const a[] = {"a", "b"}, *const c[] = {"c"};
    write_shard(sub(dir, "A.safetensors"), a, 2);
    write_shard(sub(dir, "B.safetensors"), c, 1);
    const char *idx = sub(dir, "model.safetensors.index.json");
    write_text(idx, index);
    return idx;
}

TEST(sharded_rejections) {
    expect_fail(index_case("ix1", "{\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"A.safetensors\","
                                  "\"c\":\"B.safetensors\",\"d\":\"B.safetensors\"}}"),
                MQ_ERR_FORMAT, "tensor 'd' is listed in weight_map but missing from shard "
                               "'B.safetensors'");
    expect_fail(index_case("ix2", "{\"weight_map\":{\"a\":\"A.safetensors\","
                                  "\"c\":\"B.safetensors\"}}"),
                MQ_ERR_FORMAT, "tensor 'b' of shard 'A.safetensors' is not listed in weight_map");
    expect_fail(index_case("ix3", "{\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"B.safetensors\","
                                  "\"c\":\"B.safetensors\"}}"),
                MQ_ERR_FORMAT, "tensor 'b' is in shard 'A.safetensors' but weight_map puts it in "
                               "'B.safetensors'");
    expect_fail(index_case("ix4", "{\"weight_map\":{\"a\":\"A.safetensors\",\"a\":\"A.safetensors\"}}"),
                MQ_ERR_FORMAT, "duplicate weight_map entry 'a'");
    expect_fail(index_case("ix5", "{\"weight_map\":{\"a\":\"../A.safetensors\"}}"), MQ_ERR_FORMAT,
                "shard '../A.safetensors' has a '..' component");
    expect_fail(index_case("ix6", "{\"weight_map\":{\"a\":\"sub/../../A.safetensors\"}}"),
                MQ_ERR_FORMAT, "has a '..' component");
    expect_fail(index_case("ix7", "{\"weight_map\":{\"a\":\"/etc/passwd\"}}"), MQ_ERR_FORMAT,
                "shard '/etc/passwd' is an absolute path");
    expect_fail(index_case("ix8", "{\"weight_map\":{\"a\":\"\"}}"), MQ_ERR_FORMAT,
                "empty shard file name");
    expect_fail(index_case("ix9", "{\"weight_map\":{\"a\":\"C.safetensors\"}}"), MQ_ERR_IO,
                "shard 'C.safetensors': cannot open");
    expect_fail(index_case("ix10", "{\"metadata\":{}}"), MQ_ERR_FORMAT, "no \"weight_map\"");
    expect_fail(index_case("ix11", "{\"weight_map\":{\"a\":1}}"), MQ_ERR_FORMAT,
                "weight_map value of 'a' must be a file name");
    expect_fail(index_case("ix12", "{\"weight_map\":[]}"), MQ_ERR_FORMAT,
                "weight_map must be an object");
    expect_fail(index_case("ix13", "{\"weight_map\":{\"a\":\"A.safetensors\"}"), MQ_ERR_FORMAT,
                "invalid JSON");
    expect_fail(index_case("ix14", "{\"weight_map\":{},\"weight_map\":{}}"), MQ_ERR_FORMAT,
                "duplicate weight_map");
    /* a symbolic link inside the folder that points outside it */
    const char *idx = index_case("ix15", "{\"weight_map\":{\"a\":\"link.safetensors\"}}");
    const char *outside = tmp_path("outside.safetensors");
    static const char *const a[] = {"a"};
    write_shard(outside, a, 1);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", idx);
    *strrchr(dir, '/') = 0;
    CHECK_EQ_INT(symlink(outside, sub(dir, "link.safetensors")), 0);
    expect_fail(idx, MQ_ERR_FORMAT, "shard 'link.safetensors' resolves outside the index's folder");
    /* ... while a link that stays inside is fine */
    idx = index_case("ix16", "{\"weight_map\":{\"a\":\"in.safetensors\",\"b\":\"in.safetensors\","
                             "\"c\":\"B.safetensors\"}}");
    snprintf(dir, sizeof dir, "%s", idx);
    *strrchr(dir, '/') = 0;
    CHECK_EQ_INT(symlink("A.safetensors", sub(dir, "in.safetensors")), 0);
    mq_model *m = open_ok(idx);
    if (m) CHECK_EQ_INT(mq_model_tensor_count(m), 3);
    mq_model_free(m);
    /* a shard that is a PyTorch zip after safetensors shards */
    idx = index_case("ix17", "{\"weight_map\":{\"a\":\"A.safetensors\",\"b\":\"A.safetensors\","
                             "\"z\":\"Z.bin\"}}");
    snprintf(dir, sizeof dir, "%s", idx);
    *strrchr(dir, '/') = 0;
    write_bytes(sub(dir, "Z.bin"), "PK\3\4 not really", 15);
    expect_fail(idx, MQ_ERR_FORMAT, "shard 'Z.bin' is pytorch but earlier shards are safetensors");
}

TEST(folders) {
    char *path = NULL;
    mq_format fmt = MQ_FORMAT_AUTO;
    const char *d = make_dir("f_empty");
    CHECK_EQ_INT(mq__resolve_dir(g_ctx, d, &path, &fmt), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(g_ctx, "no checkpoint in this folder");
    CHECK_MSG_HAS(g_ctx, "found: nothing");
    write_text(sub(d, "README.txt"), "hi");
    write_text(sub(d, "config.json"), "{}");
    expect_fail(d, MQ_ERR_FORMAT, "found: README.txt, config.json");

    d = make_dir("f_one");
    static const char *const a[] = {"a"};
    write_shard(sub(d, "weights.safetensors"), a, 1);
    write_text(sub(d, "config.json"), "{}");
    mq_model *m = open_ok(d);
    if (m) CHECK_EQ_STR(mq_model_tensor(m, 0)->name, "a");
    mq_model_free(m);

    write_shard(sub(d, "other.safetensors"), a, 1);
    expect_fail(d, MQ_ERR_FORMAT, "several candidate checkpoints and no "
                                  "model.safetensors.index.json to choose: other.safetensors, "
                                  "weights.safetensors");

    d = make_dir("f_pt");
    write_bytes(sub(d, "model.pt"), "PK\3\4", 4);
    write_text(sub(d, "notes.md"), "x");
    CHECK_EQ_INT(mq__resolve_dir(g_ctx, d, &path, &fmt), MQ_OK);
    CHECK_EQ_INT(fmt, MQ_FORMAT_PYTORCH);
    CHECK(path && !strcmp(path, sub(d, "model.pt")));
    mq__free(g_ctx, path);
    write_bytes(sub(d, "other.bin"), "PK\3\4", 4);
    CHECK_EQ_INT(mq__resolve_dir(g_ctx, d, &path, &fmt), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(g_ctx, "model.pt, other.bin");

    /* both index kinds: the safetensors one wins; a lone other index is taken */
    d = make_dir("f_idx");
    write_text(sub(d, "pytorch_model.bin.index.json"), "{}");
    write_text(sub(d, "model.safetensors.index.json"), "{}");
    write_shard(sub(d, "x.safetensors"), a, 1);
    CHECK_EQ_INT(mq__resolve_dir(g_ctx, d, &path, &fmt), MQ_OK);
    CHECK(path && !strcmp(path, sub(d, "model.safetensors.index.json")));
    mq__free(g_ctx, path);
    d = make_dir("f_idx2");
    write_text(sub(d, "pytorch_model.bin.index.json"), "{}");
    CHECK_EQ_INT(mq__resolve_dir(g_ctx, d, &path, &fmt), MQ_OK);
    CHECK(path && !strcmp(path, sub(d, "pytorch_model.bin.index.json")));
    mq__free(g_ctx, path);
    d = make_dir("f_idx3");
    write_text(sub(d, "a.safetensors.index.json"), "{}");
    write_text(sub(d, "b.safetensors.index.json"), "{}");
    CHECK_EQ_INT(mq__resolve_dir(g_ctx, d, &path, &fmt), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(g_ctx, "a.safetensors.index.json, b.safetensors.index.json");
}

/* ---- allocation failures --------------------------------------------------------------- */

TEST(allocation_failures) {
    /* every allocation of an open (file and sharded) fails cleanly in turn */
    const char *paths[2] = {fixture("cnn/cnn_digits.safetensors"),
                            sub(tmp_path("sharded"), "model.safetensors.index.json")};
    for (int p = 0; p < 2; p++) {
        bool opened = false;
        for (long n = 0; n < 500 && !opened; n++) {
            test_allocs_left = 1000000;
            mq_allocator al = {test_failing_alloc, test_plain_free, NULL};
            mq_ctx *ctx = mq_ctx_create_with_allocator(&al);
            test_allocs_left = n;
            mq_model *m = NULL;
            mq_status st = mq_model_open(ctx, paths[p], NULL, &m);
            if (st == MQ_OK) opened = true;
            else {
                CHECK_EQ_INT(st, MQ_ERR_NOMEM);
                CHECK(m == NULL);
            }
            mq_model_free(m);
            test_allocs_left = 1000000;
            mq_ctx_free(ctx);
        }
        CHECK(opened);
    }
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1200];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) remove_tree(p);
        else unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

int main(void) {
    g_ctx = mq_ctx_create();
    mq_ctx_set_overwrite(g_ctx, 1); /* the writer cases rewrite their files; the policy itself: test_dest */
    snprintf(g_dir, sizeof g_dir, "%s/test_safetensors.%ld", test_tmpdir(), (long)getpid());
    mkdir(g_dir, 0755);
    RUN(read_basic);
    RUN(read_lenient_where_reference_is);
    RUN(read_file_order);
    RUN(read_zero_size_tensors);
    RUN(reject_framing);
    RUN(reject_header_text);
    RUN(reject_entries);
    RUN(reject_layout);
    RUN(reject_metadata);
    RUN(write_layout_and_round_trip);
    RUN(write_format_override);
    RUN(write_rejects_bad_input);
    RUN(write_failures_leave_nothing);
    RUN(fixtures_lm);
    RUN(fixtures_cnn);
    RUN(sharded_index);
    RUN(sharded_rejections);
    RUN(folders);
    RUN(allocation_failures);
    remove_tree(g_dir);
    mq_ctx_free(g_ctx);
    return test_summary();
}
