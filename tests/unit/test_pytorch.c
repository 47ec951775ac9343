/* PyTorch checkpoints: writer -> reader round trips, ZIP64, the pickle interpreter and the zip
 * reader on hand-made inputs, CRC-32, allocation failures. */
#include "harness.h"
#include "io/model_internal.h"
#include "io/pickle.h"
#include "io/pytorch_internal.h"
#include "io/writer_internal.h"
#include "io/zip.h"
#include "api_helpers.h"

#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static char tmpdir[512];

static const char *tmp_path(const char *name) {
    static char p[600];
    snprintf(p, sizeof p, "%s/%s", tmpdir, name);
    return p;
}

/* Writes tensors whose byte j is (seed + j) mod 251, in chunks of `chunk` bytes. */
static uint64_t zip64_limit = UINT64_MAX; /* test setting: force ZIP64 forms from here */

static mq_status write_file(mq_ctx *ctx, const char *path, const mq_tensor_desc *d, size_t n,
                            const mq_kv *meta, size_t nmeta, size_t chunk) {
    mq_writer *w = NULL;
    mq_status st = mq_writer_open(ctx, path, MQ_FORMAT_PYTORCH, d, n, meta, nmeta, &w);
    if (st == MQ_OK && zip64_limit != UINT64_MAX)
        mq__pytorch_writer_set_zip64_limit(w, zip64_limit);
    for (size_t i = 0; st == MQ_OK && i < n; i++) {
        size_t bytes = mq_dtype_size(d[i].dtype);
        for (int k = 0; k < d[i].ndim; k++) bytes *= (size_t)d[i].shape[k];
        uint8_t *buf = (uint8_t *)malloc(bytes + 1);
        for (size_t j = 0; j < bytes; j++) buf[j] = (uint8_t)((i * 7 + j) % 251);
        if (d[i].dtype == MQ_BOOL)
            for (size_t j = 0; j < bytes; j++) buf[j] &= 1;
        for (size_t off = 0; st == MQ_OK && off < bytes; off += chunk)
            st = mq_writer_write(w, buf + off, bytes - off < chunk ? bytes - off : chunk);
        free(buf);
    }
    if (st == MQ_OK) st = mq_writer_commit(w);
    mq_writer_free(w);
    return st;
}

static int data_matches(const mq_tensor *t, size_t i) {
    const uint8_t *p = (const uint8_t *)t->data;
    for (uint64_t j = 0; j < t->nbytes; j++) {
        uint8_t want = (uint8_t)((i * 7 + j) % 251);
        if (t->dtype == MQ_BOOL) want &= 1;
        if (p[j] != want) return 0;
    }
    return 1;
}

TEST(round_trip_every_dtype_with_metadata) {
    mq_ctx *ctx = mq_ctx_create();
    const mq_dtype dts[] = {MQ_F32, MQ_F16, MQ_BF16, MQ_F64,  MQ_I64, MQ_I32,
                            MQ_I16, MQ_I8,  MQ_U8,   MQ_BOOL, MQ_C64};
    enum { N = sizeof dts / sizeof *dts + 2 };
    mq_tensor_desc d[N];
    char names[N][32];
    for (size_t i = 0; i < N; i++) {
        memset(&d[i], 0, sizeof d[i]);
        snprintf(names[i], sizeof names[i], "layer.%zu.weight", i);
        d[i].name = names[i];
        d[i].dtype = i < N - 2 ? dts[i] : MQ_F32;
        d[i].ndim = 2;
        d[i].shape[0] = (int64_t)i + 1;
        d[i].shape[1] = 37;
    }
    d[N - 2].ndim = 0;     /* a scalar */
    d[N - 1].shape[0] = 0; /* an empty tensor */
    mq_kv meta[2] = {{"quantization", "{\"bits\": 8}"}, {"note", "x"}};
    const char *p = tmp_path("rt.pt");
    CHECK_EQ_INT(write_file(ctx, p, d, N, meta, 2, 5), MQ_OK);
    mq_model *m = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, p, NULL, &m), MQ_OK);
    if (!m) return;
    CHECK_EQ_INT(mq_model_format(m), MQ_FORMAT_PYTORCH);
    CHECK_EQ_INT(mq_model_tensor_count(m), N);
    for (size_t i = 0; i < N && i < mq_model_tensor_count(m); i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        CHECK_EQ_STR(t->name, names[i]);
        CHECK_EQ_INT(t->dtype, d[i].dtype);
        CHECK_EQ_INT(t->ndim, d[i].ndim);
        for (int k = 0; k < t->ndim; k++) CHECK_EQ_INT(t->shape[k], d[i].shape[k]);
        CHECK_MSG(data_matches(t, i), "tensor %zu data differs", i);
        if (t->nbytes) CHECK_MSG((uintptr_t)t->data % 64 == 0, "tensor %zu not 64-byte aligned", i);
    }
    CHECK_EQ_STR(meta_get(m, "quantization"), "{\"bits\": 8}");
    CHECK_EQ_STR(meta_get(m, "note"), "x");
    CHECK_EQ_INT(mq_model_find(m, "layer.3.weight"), 3);
    mq_model_free(m);
    mq_ctx_free(ctx);
}

TEST(zip64_many_entries) {
    /* more than 65535 records: the end of central directory needs ZIP64 */
    mq_ctx *ctx = mq_ctx_create();
    enum { N = 70000 };
    mq_tensor_desc *d = (mq_tensor_desc *)calloc(N, sizeof *d);
    char *names = (char *)malloc((size_t)N * 16);
    for (size_t i = 0; i < N; i++) {
        snprintf(names + i * 16, 16, "t%zu", i);
        d[i].name = names + i * 16;
        d[i].dtype = MQ_I8;
        d[i].ndim = 1;
        d[i].shape[0] = (int64_t)(i % 3);
    }
    const char *p = tmp_path("many.pt");
    CHECK_EQ_INT(write_file(ctx, p, d, N, NULL, 0, 1 << 20), MQ_OK);
    mq_model *m = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, p, NULL, &m), MQ_OK);
    if (m) {
        CHECK_EQ_INT(mq_model_tensor_count(m), N);
        const mq_tensor *t = mq_model_tensor(m, N - 1);
        CHECK_EQ_STR(t->name, "t69999");
        CHECK_EQ_INT(t->shape[0], (N - 1) % 3);
        CHECK(data_matches(t, N - 1));
    }
    /* the file really uses the ZIP64 end records */
    FILE *f = fopen(p, "rb");
    uint8_t tail[98];
    fseek(f, -98, SEEK_END);
    CHECK_EQ_INT(fread(tail, 1, 98, f), 98);
    fclose(f);
    CHECK_EQ_INT(mq__load_le32(tail), 0x06064b50u);
    CHECK_EQ_INT(mq__load_le32(tail + 56), 0x07064b50u);
    CHECK_EQ_INT(mq__load_le16(tail + 76 + 10), 0xFFFF);
    mq_model_free(m);
    free(d);
    free(names);
    mq_ctx_free(ctx);
}

/* The set of tensors the interop test checks against torch (byte j of tensor i is
 * (7 i + j) mod 251). */
static const mq_tensor_desc zip64_set[] = {
    {"a.weight", MQ_F32, 2, {3, 5}}, {"b", MQ_I64, 1, {2}},    {"c", MQ_BF16, 1, {4}},
    {"scalar", MQ_F32, 0, {0}},      {"empty", MQ_I8, 1, {0}},
};

static mq_status write_zip64_set(const char *path) {
    mq_ctx *ctx = mq_ctx_create();
    mq_kv meta = {"quantization", "{\"bits\": 4}"};
    zip64_limit = 0; /* every record after the pickle and byteorder */
    mq_status st = write_file(ctx, path, zip64_set, 5, &meta, 1, 3);
    zip64_limit = UINT64_MAX;
    mq_ctx_free(ctx);
    return st;
}

TEST(zip64_forms_of_sizes_and_offsets) {
    const char *p = tmp_path("z64.pt");
    CHECK_EQ_INT(write_zip64_set(p), MQ_OK);
    mq_ctx *ctx = mq_ctx_create();
    mq_model *m = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, p, NULL, &m), MQ_OK);
    if (m) {
        CHECK_EQ_INT(mq_model_tensor_count(m), 5);
        for (size_t i = 0; i < 5 && i < mq_model_tensor_count(m); i++) {
            CHECK_EQ_STR(mq_model_tensor(m, i)->name, zip64_set[i].name);
            CHECK(data_matches(mq_model_tensor(m, i), i));
        }
        CHECK_EQ_STR(meta_get(m, "quantization"), "{\"bits\": 4}");
    }
    mq_model_free(m);
    /* the central entries of the data records carry ZIP64 sizes and offsets */
    FILE *f = fopen(p, "rb");
    static uint8_t buf[8192];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    mq_zip z;
    CHECK_EQ_INT(mq__zip_open(ctx, "z64.pt", buf, n, &z), MQ_OK);
    int zip64_entries = 0;
    for (size_t off = 0; off + 46 < n; off++) {
        if (mq__load_le32(buf + off) != 0x02014b50u) continue;
        if (mq__load_le32(buf + off + 20) == 0xFFFFFFFFu &&
            mq__load_le32(buf + off + 42) == 0xFFFFFFFFu)
            zip64_entries++;
    }
    CHECK_EQ_INT(zip64_entries, 9); /* every central entry: the directory comes last */
    CHECK_EQ_INT(mq__load_le32(buf + n - 22 - 20 - 56), 0x06064b50u);
    mq__zip_close(ctx, &z);
    mq_ctx_free(ctx);
}

TEST(crc32_known_values) {
    mq_crc32 c;
    mq__crc32_init(&c, NULL);
    CHECK_EQ_INT(mq__crc32_update(&c, 0, "123456789", 9), 0xCBF43926u);
    CHECK_EQ_INT(mq__crc32_update(&c, 0, "", 0), 0);
    uint32_t part = mq__crc32_update(&c, 0, "12345", 5);
    CHECK_EQ_INT(mq__crc32_update(&c, part, "6789", 4), 0xCBF43926u);
}

TEST(crc32_combine_matches_one_pass) {
    mq_crc32 c;
    mq__crc32_init(&c, NULL);
    enum { N = 3000 };
    static uint8_t buf[N];
    for (size_t i = 0; i < N; i++) buf[i] = (uint8_t)(i * 131 + (i >> 5));
    uint32_t whole = mq__crc32_update(&c, 0, buf, N);
    for (size_t cut = 0; cut <= N; cut += 97) {
        uint32_t a = mq__crc32_update(&c, 0, buf, cut),
                 b = mq__crc32_update(&c, 0, buf + cut, N - cut);
        CHECK_EQ_INT(mq__crc32_combine(&c, a, b, N - cut), whole);
    }
}

/* A large tensor written in one chunk: the CRC is computed in pieces on several threads. */
TEST(parallel_crc_same_file_for_any_thread_count) {
    const size_t n = (5u << 20) + 3;
    uint8_t *data = (uint8_t *)malloc(n);
    for (size_t i = 0; i < n; i++) data[i] = (uint8_t)(i * 2654435761u >> 11);
    mq_tensor_desc d = {"big", MQ_U8, 1, {(int64_t)n}};
    mq_crc32 c;
    mq__crc32_init(&c, NULL);
    uint32_t want = mq__crc32_update(&c, 0, data, n);
    /* the scalar level checksums pieces on the threads; vector levels make one pass */
    for (int isa = 0; isa >= 0; isa = test_next_isa(isa)) {
        uint8_t *files[2] = {NULL, NULL};
        long sizes[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            mq_ctx *ctx = mq_ctx_create();
            mq_ctx_set_threads(ctx, k ? 3 : 1);
            CHECK_EQ_INT(mq_ctx_set_isa(ctx, (mq_isa)isa), MQ_OK);
            const char *p = tmp_path(k ? "crc3.pt" : "crc1.pt");
            mq_writer *w = NULL;
            CHECK_EQ_INT(mq_writer_open(ctx, p, MQ_FORMAT_PYTORCH, &d, 1, NULL, 0, &w), MQ_OK);
            CHECK_EQ_INT(mq_writer_write(w, data, n), MQ_OK);
            CHECK_EQ_INT(mq_writer_commit(w), MQ_OK);
            mq_writer_free(w);
            mq_ctx_free(ctx);
            FILE *f = fopen(p, "rb");
            fseek(f, 0, SEEK_END);
            sizes[k] = ftell(f);
            fseek(f, 0, SEEK_SET);
            files[k] = (uint8_t *)malloc((size_t)sizes[k]);
            CHECK_EQ_INT(fread(files[k], 1, (size_t)sizes[k], f), sizes[k]);
            fclose(f);
            remove(p);
        }
        CHECK(sizes[0] == sizes[1] && !memcmp(files[0], files[1], (size_t)sizes[0]));
        /* and the recorded CRC is the one-pass CRC */
        mq_ctx *ctx = mq_ctx_create();
        mq_zip z;
        CHECK_EQ_INT(mq__zip_open(ctx, "crc3.pt", files[1], (size_t)sizes[1], &z), MQ_OK);
        const mq_zip_entry *e = mq__zip_find(&z, "archive/data/0", 14);
        CHECK(e && e->crc == want);
        mq__zip_close(ctx, &z);
        mq_ctx_free(ctx);
        free(files[0]);
        free(files[1]);
    }
    free(data);
}

static mq_status pk(mq_ctx *ctx, const char *bytes, size_t n, mq_pk_arena **a,
                    const mq_pk_obj **root) {
    return mq__pk_load(ctx, "t.pkl", (const uint8_t *)bytes, n, a, root);
}

TEST(pickle_scalars) {
    mq_ctx *ctx = mq_ctx_create();
    mq_pk_arena *a = NULL;
    const mq_pk_obj *r = NULL;
    /* (BININT -2, LONG1 -300, LONG1 2^40, BININT2 65535, BINFLOAT 1.5, True, None, 'hé') */
    static const char p[] = "\x80\x02(J\xfe\xff\xff\xff\x8a\x02\xd4\xfe\x8a\x06\0\0\0\0\0\x01"
                            "M\xff\xffG\x3f\xf8\0\0\0\0\0\0\x88NX\x03\0\0\0h\xc3\xa9t.";
    CHECK_EQ_INT(pk(ctx, p, sizeof p - 1, &a, &r), MQ_OK);
    if (r) {
        CHECK_EQ_INT(r->kind, MQ_PK_TUPLE);
        CHECK_EQ_INT(r->u.seq.n, 8);
        CHECK_EQ_INT(r->u.seq.items[0]->u.i, -2);
        CHECK_EQ_INT(r->u.seq.items[1]->u.i, -300);
        CHECK_EQ_INT(r->u.seq.items[2]->u.i, 1LL << 40);
        CHECK_EQ_INT(r->u.seq.items[3]->u.i, 65535);
        CHECK(r->u.seq.items[4]->u.f == 1.5);
        CHECK_EQ_INT(r->u.seq.items[5]->kind, MQ_PK_BOOL);
        CHECK_EQ_INT(r->u.seq.items[6]->kind, MQ_PK_NONE);
        CHECK_EQ_INT(r->u.seq.items[7]->u.str.len, 3);
    }
    mq__pk_free(ctx, a);
    mq_ctx_free(ctx);
}

TEST(pickle_rejections_name_opcode_and_offset) {
    mq_ctx *ctx = mq_ctx_create();
    mq_pk_arena *a = NULL;
    const mq_pk_obj *r = NULL;
    CHECK_EQ_INT(pk(ctx,
                    "\x80\x02"
                    "cos\nsystem\n.",
                    14, &a, &r),
                 MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "global 'os.system' is not allowed");
    CHECK_MSG_HAS(ctx, "byte 2");
    CHECK_EQ_INT(pk(ctx, "\x80\x02NN\x94.", 6, &a, &r), MQ_ERR_FORMAT); /* MEMOIZE */
    CHECK_MSG_HAS(ctx, "opcode 0x94 at byte 4");
    CHECK_EQ_INT(pk(ctx, "\x80\x02N", 3, &a, &r), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "without STOP");
    CHECK_EQ_INT(pk(ctx, "\x80\x02t.", 4, &a, &r), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "no MARK");
    CHECK_EQ_INT(pk(ctx, "\x80\x02(N(s.", 7, &a, &r), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "underflow");
    CHECK_EQ_INT(pk(ctx, "\x80\x02]K\x01u.", 7, &a, &r), MQ_ERR_FORMAT);
    CHECK_EQ_INT(pk(ctx, "\x80\x09.", 3, &a, &r), MQ_ERR_FORMAT);
    CHECK_MSG_HAS(ctx, "protocol");
    CHECK_EQ_INT(pk(ctx,
                    "\x80\x02"
                    "ctorch._utils\n_rebuild_sparse_tensor\n)R.",
                    44, &a, &r),
                 MQ_ERR_UNSUPPORTED);
    CHECK(a == NULL && r == NULL);
    mq_ctx_free(ctx);
}

/* Builds a minimal stored zip with the given records. */
static size_t make_zip(uint8_t *out, const char *const *names, const char *const *datas,
                       const size_t *lens, size_t n) {
    mq_crc32 c;
    mq__crc32_init(&c, NULL);
    size_t pos = 0, offs[8];
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        uint32_t crc = mq__crc32_update(&c, 0, datas[i], lens[i]);
        offs[i] = pos;
        uint8_t *h = out + pos;
        memset(h, 0, 30);
        mq__store_le32(h, 0x04034b50u);
        mq__store_le32(h + 14, crc);
        mq__store_le32(h + 18, (uint32_t)lens[i]);
        mq__store_le32(h + 22, (uint32_t)lens[i]);
        mq__store_le16(h + 26, (uint16_t)nl);
        memcpy(h + 30, names[i], nl);
        memcpy(h + 30 + nl, datas[i], lens[i]);
        pos += 30 + nl + lens[i];
    }
    size_t cd = pos;
    for (size_t i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        uint8_t *h = out + pos;
        memset(h, 0, 46);
        mq__store_le32(h, 0x02014b50u);
        mq__store_le32(h + 16, mq__crc32_update(&c, 0, datas[i], lens[i]));
        mq__store_le32(h + 20, (uint32_t)lens[i]);
        mq__store_le32(h + 24, (uint32_t)lens[i]);
        mq__store_le16(h + 28, (uint16_t)nl);
        mq__store_le32(h + 42, (uint32_t)offs[i]);
        memcpy(h + 46, names[i], nl);
        pos += 46 + nl;
    }
    uint8_t *e = out + pos;
    memset(e, 0, 22);
    mq__store_le32(e, 0x06054b50u);
    mq__store_le16(e + 8, (uint16_t)n);
    mq__store_le16(e + 10, (uint16_t)n);
    mq__store_le32(e + 12, (uint32_t)(pos - cd));
    mq__store_le32(e + 16, (uint32_t)cd);
    return pos + 22;
}

TEST(zip_reader_basics) {
    mq_ctx *ctx = mq_ctx_create();
    uint8_t buf[1024];
    const char *names[] = {"a/x", "a/y"};
    const char *datas[] = {"hello", ""};
    size_t lens[] = {5, 0};
    size_t n = make_zip(buf, names, datas, lens, 2);
    mq_zip z;
    CHECK_EQ_INT(mq__zip_open(ctx, "t.zip", buf, n, &z), MQ_OK);
    CHECK_EQ_INT(z.n, 2);
    const mq_zip_entry *e = mq__zip_find(&z, "a/x", 3);
    CHECK(e && e->size == 5 && !memcmp(buf + e->data_off, "hello", 5));
    CHECK(mq__zip_find(&z, "a/y", 3) != NULL);
    CHECK(mq__zip_find(&z, "a/z", 3) == NULL);
    mq__zip_close(ctx, &z);
    /* every truncation fails cleanly */
    for (size_t k = 0; k < n; k++) CHECK(mq__zip_open(ctx, "t.zip", buf, k, &z) != MQ_OK);
    /* an empty archive is just an end record */
    CHECK_EQ_INT(make_zip(buf, names, datas, lens, 0), 22);
    CHECK_EQ_INT(mq__zip_open(ctx, "t.zip", buf, 22, &z), MQ_OK);
    CHECK_EQ_INT(z.n, 0);
    mq__zip_close(ctx, &z);
    mq_ctx_free(ctx);
}

TEST(reader_appends_and_key_option) {
    mq_ctx *ctx = mq_ctx_create();
    /* {"model": {"w": tensor}, "ema": {"w": tensor}} written by hand */
    static const char pkl[] =
        "\x80\x02}(X\x05\0\0\0model}X\x01\0\0\0wctorch._utils\n_rebuild_tensor_v2\n"
        "((X\x07\0\0\0storagectorch\nFloatStorage\nX\x01\0\0\x00"
        "0X\x03\0\0\0cpuK\x04tQ"
        "K\0K\x04\x85K\x01\x85\x89"
        "ccollections\nOrderedDict\n)RtRsX\x03\0\0\0ema}X\x01\0\0\0w"
        "ctorch._utils\n_rebuild_tensor_v2\n((X\x07\0\0\0storagectorch\nFloatStorage\n"
        "X\x01\0\0\x00"
        "0X\x03\0\0\0cpuK\x04tQK\x01K\x02\x85K\x01\x85\x89"
        "ccollections\nOrderedDict\n"
        ")RtRsu.";
    static uint8_t buf[2048];
    const char *names[] = {"r/data.pkl", "r/data/0"};
    const char *datas[] = {pkl, "0123456789abcdef"};
    size_t lens[] = {sizeof pkl - 1, 16};
    size_t n = make_zip(buf, names, datas, lens, 2);
    mq_model *m = (mq_model *)calloc(1, sizeof *m);
    m->ctx = ctx;
    CHECK_EQ_INT(mq__pytorch_read_mem(m, "h.pt", buf, n, NULL), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "'model', 'ema'");
    CHECK_EQ_INT(mq__pytorch_read_mem(m, "h.pt", buf, n, "model"), MQ_OK);
    CHECK_EQ_INT(mq__pytorch_read_mem(m, "h.pt", buf, n, "ema"), MQ_OK);
    CHECK_EQ_INT(m->ntensors, 2); /* appended */
    CHECK_EQ_INT(m->tensors[1].shape[0], 2);
    CHECK(!memcmp(m->tensors[1].data, "456789ab", 8));       /* storage offset 1 element */
    CHECK_EQ_INT(mq__model_index(m, "h.pt"), MQ_ERR_FORMAT); /* both are named "w" */
    CHECK_EQ_INT(mq__pytorch_read_mem(m, "h.pt", buf, n, "."), MQ_OK);
    CHECK_EQ_STR(m->tensors[2].name, "model.w");
    CHECK_EQ_STR(m->tensors[3].name, "ema.w");
    mq_model_free(m); /* the default allocator is malloc/free */
    mq_ctx_free(ctx);
}

TEST(allocation_failures_are_clean) {
    mq_ctx *ctx = mq_ctx_create();
    mq_tensor_desc d[2] = {{"a", MQ_F32, 2, {3, 4}}, {"b", MQ_I64, 0, {0}}};
    mq_kv meta = {"k", "v"};
    const char *p = tmp_path("af.pt");
    CHECK_EQ_INT(write_file(ctx, p, d, 2, &meta, 1, 7), MQ_OK);
    mq_ctx_free(ctx);
    mq_allocator al = {test_failing_alloc, test_plain_free, NULL};
    int succeeded = 0;
    for (long k = 2; k < 200 && !succeeded; k++) {
        test_allocs_left = 1000;
        mq_ctx *c = mq_ctx_create_with_allocator(&al);
        test_allocs_left = k;
        mq_model *m = NULL;
        mq_status st = mq_model_open(c, p, NULL, &m);
        if (st == MQ_OK) {
            succeeded = 1;
            CHECK_EQ_INT(mq_model_tensor_count(m), 2);
            CHECK_EQ_STR(meta_get(m, "k"), "v");
        } else {
            CHECK_EQ_INT(st, MQ_ERR_NOMEM);
            CHECK(m == NULL);
        }
        mq_model_free(m);
        test_allocs_left = 1000;
        mq_ctx_free(c);
    }
    CHECK(succeeded);
    /* the writer too: failures leave no file behind */
    for (long k = 2; k < 200; k++) {
        test_allocs_left = 1000;
        mq_ctx *c = mq_ctx_create_with_allocator(&al);
        test_allocs_left = k;
        const char *q = tmp_path("af2.pt");
        mq_status st = write_file(c, q, d, 2, &meta, 1, 7);
        test_allocs_left = 1000;
        mq_ctx_free(c);
        if (st == MQ_OK) break;
        CHECK_EQ_INT(st, MQ_ERR_NOMEM);
        if (access(q, F_OK) == 0) {
            /* only a failure after the rename (syncing the folder) may leave the file, and
             * then it is complete */
            mq_ctx *c2 = mq_ctx_create();
            mq_model *m = NULL;
            CHECK_EQ_INT(mq_model_open(c2, q, NULL, &m), MQ_OK);
            mq_model_free(m);
            mq_ctx_free(c2);
            unlink(q);
        }
    }
}

TEST(writer_refuses_what_torch_cannot_load) {
    mq_ctx *ctx = mq_ctx_create();
    mq_writer *w = NULL;
    mq_tensor_desc bad_dtype = {"u", MQ_U16, 1, {2}};
    CHECK_EQ_INT(
        mq_writer_open(ctx, tmp_path("bad.pt"), MQ_FORMAT_PYTORCH, &bad_dtype, 1, NULL, 0, &w),
        MQ_ERR_UNSUPPORTED);
    CHECK_MSG_HAS(ctx, "U16");
    static const char *const bad_names[] = {"\xff", "\xc0\x80", "\xe0\x80\x80", "\xf4\x90\x80\x80",
                                            "a\xc3"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        mq_tensor_desc d = {bad_names[i], MQ_F32, 1, {1}};
        CHECK_EQ_INT(mq_writer_open(ctx, tmp_path("bad.pt"), MQ_FORMAT_PYTORCH, &d, 1, NULL, 0, &w),
                     MQ_ERR_INVALID);
        CHECK_MSG_HAS(ctx, "UTF-8");
    }
    CHECK(access(tmp_path("bad.pt"), F_OK) != 0);
    mq_tensor_desc ok = {"caf\xc3\xa9.\xe2\x9c\x93", MQ_F32, 1, {1}};
    CHECK_EQ_INT(mq_writer_open(ctx, tmp_path("ok.pt"), MQ_FORMAT_PYTORCH, &ok, 1, NULL, 0, &w),
                 MQ_OK);
    mq_writer_free(w);
    mq_ctx_free(ctx);
}

/* .pt metadata is written at commit: values set after the data land in the file. */
TEST(metadata_set_before_commit) {
    mq_ctx *ctx = mq_ctx_create();
    mq_tensor_desc d = {"w", MQ_F32, 2, {2, 3}};
    mq_kv meta[] = {{"config", "draft   "}, {"model", "m"}};
    float v[6] = {1, 2, 3, 4, 5, 6};
    mq_writer *w = NULL;
    CHECK_EQ_INT(mq_writer_open(ctx, tmp_path("meta.pt"), MQ_FORMAT_PYTORCH, &d, 1, meta, 2, &w),
                 MQ_OK);
    CHECK_EQ_INT(mq_writer_write(w, v, sizeof v), MQ_OK);
    CHECK_EQ_INT(mq__writer_set_meta(w, "config", "{\"sqnr_db\": 41.5}"), MQ_OK);
    CHECK_EQ_INT(mq__writer_set_meta(w, "added", "late"), MQ_OK);
    CHECK_EQ_INT(mq_writer_commit(w), MQ_OK);
    CHECK_EQ_INT(mq__writer_set_meta(w, "config", "too late"), MQ_ERR_INTERNAL);
    mq_writer_free(w);
    mq_model *m = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, tmp_path("meta.pt"), NULL, &m), MQ_OK);
    if (m) {
        CHECK_EQ_INT(mq_model_metadata_count(m), 3);
        CHECK_EQ_STR(meta_get(m, "config"), "{\"sqnr_db\": 41.5}");
        CHECK_EQ_STR(meta_get(m, "model"), "m");
        CHECK_EQ_STR(meta_get(m, "added"), "late");
        CHECK_EQ_INT(mq_model_tensor_count(m), 1);
    }
    mq_model_free(m);
    /* safetensors writes its header first: a value changes in place, within the bytes its
     * first value took (here "draft" and its trailing spaces), padded with spaces */
    CHECK_EQ_INT(mq_writer_open(ctx, tmp_path("meta.safetensors"), MQ_FORMAT_SAFETENSORS, &d, 1,
                                meta, 2, &w),
                 MQ_OK);
    CHECK_EQ_INT(mq__writer_set_meta(w, "config", "much longer"), MQ_ERR_UNSUPPORTED);
    CHECK_MSG_HAS(ctx, "does not fit");
    CHECK_EQ_INT(mq__writer_set_meta(w, "added", "late"), MQ_ERR_INTERNAL);
    CHECK_MSG_HAS(ctx, "not in the file");
    CHECK_EQ_INT(mq_writer_write(w, v, sizeof v), MQ_OK);
    CHECK_EQ_INT(mq__writer_set_meta(w, "config", "final"), MQ_OK);
    CHECK_EQ_INT(mq_writer_commit(w), MQ_OK);
    mq_writer_free(w);
    CHECK_EQ_INT(mq_model_open(ctx, tmp_path("meta.safetensors"), NULL, &m), MQ_OK);
    if (m) {
        CHECK_EQ_STR(meta_get(m, "config"), "final   ");
        CHECK_EQ_STR(meta_get(m, "model"), "m");
    }
    mq_model_free(m);
    mq_ctx_free(ctx);
}

int main(int argc, char **argv) {
    /* `test_pytorch write-zip64 PATH` writes the ZIP64 sample tests/interop checks with torch */
    if (argc == 3 && !strcmp(argv[1], "write-zip64")) return write_zip64_set(argv[2]) != MQ_OK;
    const char *base = getenv("TEST_TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/pytorchXXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) return 1;
    RUN(round_trip_every_dtype_with_metadata);
    RUN(zip64_many_entries);
    RUN(zip64_forms_of_sizes_and_offsets);
    RUN(crc32_known_values);
    RUN(crc32_combine_matches_one_pass);
    RUN(parallel_crc_same_file_for_any_thread_count);
    RUN(pickle_scalars);
    RUN(pickle_rejections_name_opcode_and_offset);
    RUN(zip_reader_basics);
    RUN(reader_appends_and_key_option);
    RUN(allocation_failures_are_clean);
    RUN(writer_refuses_what_torch_cannot_load);
    RUN(metadata_set_before_commit);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
