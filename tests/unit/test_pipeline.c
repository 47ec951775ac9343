/* mq_quantize_file end to end on synthetic checkpoints: output identical for any thread
 * count, error figures that agree with the file read back, NaN handling, refusing the
 * input as output, allocation failures, failed input reads (read-ahead and not), and
 * mq_dequantize_file. */
#include "harness.h"
#include "monoquant.h"
#include "api_helpers.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char in_path[512], out1[512], out2[512], deq[512];

/* Two weights (F32 [96, 200] and BF16 [40, 130]) and a bias; `nan_at` >= 0 puts a NaN
 * into the first weight. */
static int write_model(const char *path, long nan_at) {
    mq_ctx *ctx = mq_ctx_create();
    mq_tensor_desc d[3] = {{"a.weight", MQ_F32, 2, {96, 200}}, {"a.bias", MQ_F32, 1, {96}},
                           {"b.weight", MQ_BF16, 2, {40, 130}}};
    mq_writer *w = NULL;
    int ok = mq_writer_open(ctx, path, MQ_FORMAT_AUTO, d, 3, NULL, 0, &w) == MQ_OK;
    uint32_t seed = 7;
    for (int t = 0; ok && t < 3; t++) {
        uint64_t n = (uint64_t)d[t].shape[0] * (d[t].ndim > 1 ? (uint64_t)d[t].shape[1] : 1);
        for (uint64_t j = 0; ok && j < n; j++) {
            seed = seed * 1664525u + 1013904223u;
            float v = ((float)(seed >> 8) / 16777216.0f - 0.5f) * (j % 17 == 0 ? 3.0f : 0.3f);
            if (t == 0 && (long)j == nan_at) v = NAN;
            if (d[t].dtype == MQ_BF16) {
                uint16_t h = mq_f32_to_bf16(v);
                ok = mq_writer_write(w, &h, 2) == MQ_OK;
            } else {
                ok = mq_writer_write(w, &v, 4) == MQ_OK;
            }
        }
    }
    ok = ok && mq_writer_commit(w) == MQ_OK;
    mq_writer_free(w);
    mq_ctx_free(ctx);
    return ok;
}

static void int4_options(mq_quantize_options *o) {
    mq_quantize_options_default(o);
    o->layout = MQ_LAYOUT_NATIVE; /* the native file's rules */
    mq_qspec_recommended(&o->spec, MQ_Q_INT4);
    o->default_skip = 0;
}

TEST(threads_identical_output) {
    mq_quantize_options o;
    int4_options(&o);
    for (int k = 0; k < 2; k++) {
        mq_ctx *ctx = mq_ctx_create();
        mq_ctx_set_overwrite(ctx, 1);
        mq_ctx_set_threads(ctx, k ? 3 : 1);
        mq_report *r = NULL;
        CHECK_EQ_INT(mq_quantize_file(ctx, in_path, k ? out2 : out1, &o, &r), MQ_OK);
        CHECK(r && mq_report_action_count(r, MQ_ACTION_QUANTIZE) == 2 &&
              mq_report_action_count(r, MQ_ACTION_KEEP) == 1);
        CHECK(r && mq_report_file_bytes_out(r) > 0 &&
              mq_report_bytes_out(r) < mq_report_bytes_in(r) / 3);
        mq_report_free(r);
        mq_ctx_free(ctx);
    }
    CHECK(test_same_files(out1, out2));
}

TEST(error_figures_match_file) {
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1);
    mq_quantize_options o;
    int4_options(&o);
    mq_report *r = NULL;
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, out1, &o, &r), MQ_OK);
    mq_qmodel *ref = NULL, *q = NULL;
    CHECK_EQ_INT(mq_qmodel_open(ctx, in_path, &ref), MQ_OK);
    CHECK_EQ_INT(mq_qmodel_open(ctx, out1, &q), MQ_OK);
    if (!r || !ref || !q) goto out;
    CHECK(mq_qmodel_is_quantized(q));
    CHECK(!mq_qmodel_is_quantized(ref));
    CHECK_EQ_INT(mq_qmodel_count(q), 3);
    for (size_t i = 0; i < mq_report_tensor_count(r); i++) {
        const tensor_view *t = tensor_view_at(r, i);
        long j = mq_qmodel_find(q, t->name);
        CHECK(j >= 0);
        if (j < 0) continue;
        const mq_qtensor *qt = mq_qmodel_tensor(q, (size_t)j);
        CHECK_EQ_INT(qt->ndim, t->ndim);
        CHECK_EQ_INT(qt->shape[0], t->shape[0]);
        CHECK_EQ_INT(qt->dtype, t->dtype);
        CHECK_EQ_INT(mq_qmodel_verify(q, (size_t)j), MQ_OK);
        if (t->action != MQ_ACTION_QUANTIZE) continue;
        CHECK_EQ_INT(qt->spec.type, MQ_Q_INT4);
        mq_error_stats es;
        CHECK_EQ_INT(mq_qmodel_error(ref, i, q, (size_t)j, &es), MQ_OK);
        CHECK_MSG(fabs(es.sqnr_db - t->error.sqnr_db) < 1e-9, "%s: %g vs %g", t->name, es.sqnr_db,
                  t->error.sqnr_db);
        CHECK(es.max_abs == t->error.max_abs);
        CHECK(t->error.sqnr_db > 3 && t->error.sqnr_db < 60);
        CHECK(t->error.cosine > 0.9);
    }
    /* the stored config carries the same figures */
    const char *cfg = meta_get(mq_qmodel_model(q), "quantization_config");
    CHECK(cfg && strstr(cfg, "\"sqnr_db\": "));
    CHECK(cfg && strstr(cfg, "\"a.bias\": \"bias (1-D)\""));
out:
    mq_qmodel_free(ref);
    mq_qmodel_free(q);
    mq_report_free(r);
    mq_ctx_free(ctx);
}

/* Rows of 3000 (parts of whole rows that do not fill 16384) and of 20000 elements (a row in
 * two parts), over several chunks of the pipeline, F32 and BF16, INT8 per channel and INT4
 * per group, plus an FP16 cast: the figures computed in the quantize pass equal what
 * mq_qmodel_error computes from the file, bit for bit, with 1 and 3 threads. */
TEST(error_figures_fused_match_file) {
    char path[600], q[600];
    snprintf(path, sizeof path, "%s.wide.safetensors", in_path);
    snprintf(q, sizeof q, "%s.wide.q.safetensors", in_path);
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1);
    mq_tensor_desc d[3] = {{"odd.weight", MQ_BF16, 2, {800, 3000}},
                           {"wide.weight", MQ_F32, 2, {70, 20000}},
                           {"cast.weight", MQ_F32, 2, {50, 3000}}};
    mq_writer *w = NULL;
    int ok = mq_writer_open(ctx, path, MQ_FORMAT_AUTO, d, 3, NULL, 0, &w) == MQ_OK;
    uint64_t seed = 99;
    for (int t = 0; ok && t < 3; t++)
        for (int64_t i = 0; ok && i < d[t].shape[0] * d[t].shape[1]; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            float v = ((float)(seed >> 40) / 16777216.0f - 0.5f) * (i % 29 == 0 ? 4.0f : 0.2f);
            uint16_t h = mq_f32_to_bf16(v);
            ok = d[t].dtype == MQ_BF16 ? mq_writer_write(w, &h, 2) == MQ_OK
                                       : mq_writer_write(w, &v, 4) == MQ_OK;
        }
    ok = ok && mq_writer_commit(w) == MQ_OK;
    mq_writer_free(w);
    CHECK(ok);
    for (int bits = 4; ok && bits <= 8; bits += 4) {
        mq_error_stats first[3];
        for (int k = 0; k < 2; k++) {
            CHECK_EQ_INT(mq_ctx_set_threads(ctx, k ? 3 : 1), MQ_OK);
            mq_quantize_options o;
            mq_quantize_options_default(&o);
            mq_qspec_recommended(&o.spec, bits == 8 ? MQ_Q_INT8 : MQ_Q_INT4);
            o.layout = MQ_LAYOUT_NATIVE; /* groups of 128 over 3000 columns: a shorter last */
            o.default_skip = 0;
            mq_layer_rule rule = {"cast.*", MQ_Q_FP16};
            o.rules = &rule;
            o.nrules = 1;
            mq_report *r = NULL;
            CHECK_EQ_INT(mq_quantize_file(ctx, path, q, &o, &r), MQ_OK);
            mq_qmodel *ref = NULL, *qm = NULL;
            CHECK_EQ_INT(mq_qmodel_open(ctx, path, &ref), MQ_OK);
            CHECK_EQ_INT(mq_qmodel_open(ctx, q, &qm), MQ_OK);
            for (size_t i = 0; r && ref && qm && i < 3; i++) {
                mq_error_stats es, from_file;
                CHECK(mq_report_tensor_error(r, i, &es));
                long j = mq_qmodel_find(qm, mq_report_tensor_name(r, i));
                CHECK(j >= 0);
                CHECK_EQ_INT(mq_qmodel_error(ref, i, qm, (size_t)(j < 0 ? 0 : j), &from_file),
                             MQ_OK);
                CHECK_MSG(es.sqnr_db == from_file.sqnr_db && es.max_abs == from_file.max_abs &&
                              es.rel_fro == from_file.rel_fro,
                          "int%d %s: %.17g vs %.17g", bits, mq_report_tensor_name(r, i),
                          es.sqnr_db, from_file.sqnr_db);
                CHECK(es.sqnr_db > 10 && es.sqnr_db < 80);
                if (!k) first[i] = es;
                else CHECK(!memcmp(&first[i], &es, sizeof es));
            }
            /* the phases: none negative; those of the calling thread fit in the wall time */
            double sum = 0;
            for (int ph = MQ_PHASE_OPEN; r && ph <= MQ_PHASE_BACKGROUND_WRITE; ph++) {
                double sec = mq_report_phase_seconds(r, (mq_phase)ph);
                mq_phase back;
                CHECK(sec >= 0);
                CHECK(mq_phase_from_name(mq_phase_name((mq_phase)ph), &back) && (int)back == ph);
                if (ph < MQ_PHASE_BACKGROUND_WRITE) sum += sec;
            }
            CHECK(r && sum <= mq_report_seconds(r) + 1e-6);
            CHECK(r && mq_report_phase_seconds(r, MQ_PHASE_QUANTIZE) > 0);
            CHECK(r && mq_report_phase_seconds(r, (mq_phase)99) == 0);
            mq_qmodel_free(ref);
            mq_qmodel_free(qm);
            mq_report_free(r);
        }
    }
    mq_ctx_free(ctx);
    remove(path);
    remove(q);
}

TEST(dequantize_file_roundtrip) {
    mq_ctx *ctx = mq_ctx_create();
    CHECK_EQ_INT(mq_dequantize_file(ctx, out1, deq, MQ_DTYPE_INVALID, MQ_FORMAT_AUTO), MQ_OK);
    mq_model *m = NULL, *orig = NULL;
    CHECK_EQ_INT(mq_model_open(ctx, deq, NULL, &m), MQ_OK);
    CHECK_EQ_INT(mq_model_open(ctx, in_path, NULL, &orig), MQ_OK);
    if (m && orig) {
        CHECK_EQ_INT(mq_model_tensor_count(m), 3);
        for (size_t i = 0; i < 3; i++) {
            const mq_tensor *a = mq_model_tensor(orig, i), *b = mq_model_tensor(m, i);
            CHECK_EQ_STR(a->name, b->name);
            CHECK_EQ_INT(a->dtype, b->dtype); /* original dtypes, BF16 included */
            CHECK_EQ_INT(a->numel, b->numel);
        }
        /* the bias is copied bit for bit */
        const mq_tensor *a = mq_model_tensor(orig, 1), *b = mq_model_tensor(m, 1);
        CHECK(!memcmp(a->data, b->data, (size_t)a->nbytes));
    }
    mq_model_free(m);
    mq_model_free(orig);
    CHECK_EQ_INT(mq_dequantize_file(ctx, out1, deq, MQ_I8, MQ_FORMAT_AUTO), MQ_ERR_INVALID);
    mq_ctx_free(ctx);
}

TEST(refuses_input_as_output) {
    mq_ctx *ctx = mq_ctx_create();
    mq_report *r = (mq_report *)1;
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, in_path, NULL, &r), MQ_ERR_INVALID);
    CHECK(r == NULL);
    CHECK_MSG_HAS(ctx, "the output is the input");
    /* every writing call, overwrite allowed or not */
    mq_ctx_set_overwrite(ctx, 1);
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, in_path, NULL, NULL), MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "the output is the input");
    CHECK_EQ_INT(mq_dequantize_file(ctx, out1, out1, MQ_DTYPE_INVALID, MQ_FORMAT_AUTO),
                 MQ_ERR_INVALID);
    CHECK_MSG_HAS(ctx, "the output is the input");
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, NULL, NULL, NULL), MQ_ERR_INVALID);
    mq_ctx_free(ctx);
}

TEST(nan_fails_or_is_skipped) {
    char nan_path[600], nan_out[600];
    snprintf(nan_path, sizeof nan_path, "%s/test_pipeline_nan.safetensors", test_tmpdir());
    snprintf(nan_out, sizeof nan_out, "%s/test_pipeline_nan.q.safetensors", test_tmpdir());
    CHECK(write_model(nan_path, 1234));
    mq_ctx *ctx = mq_ctx_create();
    mq_quantize_options o;
    mq_quantize_options_default(&o);
    o.layout = MQ_LAYOUT_NATIVE; /* the native file's rules */
    CHECK_EQ_INT(mq_quantize_file(ctx, nan_path, nan_out, &o, NULL), MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "a.weight");
    FILE *f = fopen(nan_out, "rb");
    CHECK(f == NULL); /* nothing left behind */
    if (f) fclose(f);
    o.skip_nonfinite = 1;
    mq_report *r = NULL;
    CHECK_EQ_INT(mq_quantize_file(ctx, nan_path, nan_out, &o, &r), MQ_OK);
    CHECK(r && tensor_view_at(r, 0)->action == MQ_ACTION_KEEP);
    CHECK(r && tensor_view_at(r, 0)->reason && strstr(tensor_view_at(r, 0)->reason, "NaN"));
    CHECK(r && tensor_view_at(r, 2)->action == MQ_ACTION_QUANTIZE);
    mq_report_free(r);
    mq_ctx_free(ctx);
    remove(nan_path);
    remove(nan_out);
}

/* Allocator failing the Nth allocation. */
typedef struct fail_alloc {
    long left;
    long live;
} fail_alloc;
static void *fa_alloc(void *ud, size_t n) {
    fail_alloc *f = (fail_alloc *)ud;
    if (f->left-- == 0) return NULL;
    void *p = malloc(n ? n : 1);
    if (p) f->live++;
    return p;
}
static void fa_free(void *ud, void *p) {
    if (p) ((fail_alloc *)ud)->live--, free(p);
}

TEST(allocation_failures_are_clean) {
    mq_quantize_options o;
    int4_options(&o);
    int succeeded = 0;
    for (long n = 0; n < 1000 && !succeeded; n++) { /* every allocation fails once */
        fail_alloc f = {n, 0};
        mq_allocator a = {fa_alloc, fa_free, &f};
        mq_ctx *ctx = mq_ctx_create_with_allocator(&a);
        if (!ctx) continue;
        mq_ctx_set_overwrite(ctx, 1);
        mq_ctx_set_threads(ctx, 1);
        mq_report *r = NULL;
        mq_status st = mq_quantize_file(ctx, in_path, out2, &o, &r);
        if (st == MQ_OK) succeeded = 1;
        else CHECK_MSG(st == MQ_ERR_NOMEM, "allocation %ld: status %d (%s)", n, st,
                       mq_ctx_message(ctx));
        mq_report_free(r);
        mq_ctx_free(ctx);
        CHECK_MSG(f.live == 0, "allocation %ld: %ld blocks leaked", n, f.live);
    }
    CHECK(succeeded);
    CHECK(test_same_files(out1, out2));
}

static int entries_in(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    /* every entry but . and ..: temporary files are hidden (.monoquant-*.tmp) */
    for (struct dirent *e; d && (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d) closedir(d);
    return n;
}

static int file_holds(const char *path, const char *text) {
    char buf[64] = {0};
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    return n == strlen(text) && !memcmp(buf, text, n);
}

/* Input reads come here (this definition replaces libc's in this program). A failing read
 * scribbles on the buffer first. Mode 1 fails the reads of other threads than the main one
 * (the read-ahead; the writer's block patches fall back on their own), mode 2 every read. */
static pthread_t main_thread;
static int pread_fail, pread_failed; /* set between calls; counted by any thread */

ssize_t pread(int fd, void *buf, size_t n, off_t off) {
    if (pread_fail == 2 || (pread_fail == 1 && !pthread_equal(pthread_self(), main_thread))) {
        memset(buf, 0x7f, n);
        __atomic_fetch_add(&pread_failed, 1, __ATOMIC_SEQ_CST);
        errno = EIO;
        return -1;
    }
    return (ssize_t)syscall(SYS_pread64, fd, buf, n, off);
}

/* A piece the read-ahead could not read is read again by the caller: the same output. When
 * that read fails too, the call fails as before, with nothing left behind. */
TEST(failed_reads) {
    char dir[600], dest[700];
    snprintf(dir, sizeof dir, "%s/readsXXXXXX", test_tmpdir());
    CHECK(mkdtemp(dir) != NULL);
    snprintf(dest, sizeof dest, "%s/out.safetensors", dir);
    mq_quantize_options o;
    int4_options(&o);
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1);
    mq_ctx_set_threads(ctx, 2);
    main_thread = pthread_self();
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, out1, &o, NULL), MQ_OK);
    pread_failed = 0;
    pread_fail = 1;
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, out2, &o, NULL), MQ_OK);
    pread_fail = 0;
    CHECK(pread_failed > 0); /* the read-ahead did read (and fail) */
    CHECK(test_same_files(out1, out2));
    pread_failed = 0;
    pread_fail = 2;
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, dest, &o, NULL), MQ_ERR_IO);
    pread_fail = 0;
    CHECK(pread_failed > 0);
    CHECK_MSG_HAS(ctx, "input changed while reading");
    CHECK_EQ_INT(entries_in(dir), 0);
    mq_ctx_free(ctx);
    rmdir(dir);
}

/* Strict mode decides before the commit: no output, no temporary file, an existing
 * destination untouched; for warnings of the plan and for those found while writing. */
TEST(strict_fails_before_commit) {
    char dir[600], dest[700], fresh[700];
    snprintf(dir, sizeof dir, "%s/strictXXXXXX", test_tmpdir());
    CHECK(mkdtemp(dir) != NULL);
    snprintf(dest, sizeof dest, "%s/out.safetensors", dir);
    snprintf(fresh, sizeof fresh, "%s/new.pt", dir);
    FILE *f = fopen(dest, "wb");
    CHECK(f != NULL);
    if (!f) return;
    fputs("old contents", f);
    fclose(f);
    mq_ctx *ctx = mq_ctx_create();
    mq_ctx_set_overwrite(ctx, 1);
    mq_quantize_options o;
    mq_quantize_options_default(&o); /* INT8: no warning in the plan */
    o.layout = MQ_LAYOUT_NATIVE; /* the native file's rules */
    o.strict = 1;
    o.sqnr_warn_db = 200; /* every quantized tensor warns, once its data is written */
    const char *outs[2] = {dest, fresh};
    for (int k = 0; k < 2; k++) {
        mq_report *r = (mq_report *)&o; /* must come back NULL */
        CHECK_EQ_INT(mq_quantize_file(ctx, in_path, outs[k], &o, &r), MQ_ERR_QUANT);
        CHECK(r == NULL);
        CHECK_MSG_HAS(ctx, "2 warnings under strict mode, nothing written");
        CHECK_MSG_HAS(ctx, "a.weight: SQNR");
        CHECK_MSG_HAS(ctx, "b.weight: SQNR");
        CHECK(file_holds(dest, "old contents"));
        CHECK(access(fresh, F_OK) != 0);
        CHECK_EQ_INT(entries_in(dir), 1);
    }
    /* warnings of the plan: 4-bit on an output head (b.weight, the last Linear), nothing
     * selected */
    int4_options(&o);
    o.strict = 1;
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, dest, &o, NULL), MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "1 warning under strict mode, nothing written: b.weight: 4-bit");
    CHECK(file_holds(dest, "old contents"));
    CHECK_EQ_INT(entries_in(dir), 1);
    o.kinds = MQ_KIND_BIT(MQ_KIND_EMBEDDING);
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, dest, &o, NULL), MQ_ERR_QUANT);
    CHECK_MSG_HAS(ctx, "1 warning under strict mode, nothing written: nothing is quantized");
    CHECK(file_holds(dest, "old contents"));
    CHECK_EQ_INT(entries_in(dir), 1);
    o.dry_run = 1;
    mq_report *r = NULL;
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, NULL, &o, &r), MQ_ERR_QUANT);
    CHECK(r == NULL);
    CHECK_MSG_HAS(ctx, "1 warning under strict mode: nothing is quantized");
    /* without strict mode the same run succeeds and reports the warning */
    o.dry_run = 0;
    o.strict = 0;
    CHECK_EQ_INT(mq_quantize_file(ctx, in_path, dest, &o, &r), MQ_OK);
    CHECK(r && mq_report_warning_count(r) == 1);
    CHECK(!file_holds(dest, "old contents"));
    mq_report_free(r);
    mq_ctx_free(ctx);
    remove(dest);
    rmdir(dir);
}

/* A model of many shards quantizes to the same bytes whether its files are read through kept
 * descriptors or through their mappings, and still opens when the process may hold fewer
 * descriptors than it has shards. */
enum { NSHARDS = 100 };

static int write_many_shards(const char *dir, char *index) {
    mkdir(dir, 0755);
    size_t cap = 64 + (size_t)NSHARDS * 64, len = 0;
    char *json = malloc(cap);
    if (!json) return 0;
    len += (size_t)snprintf(json + len, cap - len, "{\"weight_map\": {");
    int ok = 1;
    for (int i = 0; ok && i < NSHARDS; i++) {
        char name[32], file[64], path[640];
        snprintf(name, sizeof name, "l%03d.weight", i);
        snprintf(file, sizeof file, "s%03d.safetensors", i);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        len += (size_t)snprintf(json + len, cap - len, "%s\"%s\": \"%s\"", i ? ", " : "", name,
                                file);
        mq_ctx *ctx = mq_ctx_create();
        mq_tensor_desc d = {name, MQ_F32, 2, {16, 64}};
        mq_writer *w = NULL;
        ok = mq_writer_open(ctx, path, MQ_FORMAT_AUTO, &d, 1, NULL, 0, &w) == MQ_OK;
        for (int j = 0; ok && j < 16 * 64; j++) {
            float v = (float)((i * 37 + j * 11) % 101 - 50) / 64.0f;
            ok = mq_writer_write(w, &v, 4) == MQ_OK;
        }
        ok = ok && mq_writer_commit(w) == MQ_OK;
        mq_writer_free(w);
        mq_ctx_free(ctx);
    }
    snprintf(json + len, cap - len, "}}");
    snprintf(index, 640, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(index, "w");
    ok = ok && f && fputs(json, f) >= 0;
    if (f) ok = fclose(f) == 0 && ok;
    free(json);
    return ok;
}

TEST(many_shards_few_descriptors) {
    char dir[512], index[640];
    snprintf(dir, sizeof dir, "%s/test_pipeline_shards", test_tmpdir());
    CHECK(write_many_shards(dir, index));
    mq_quantize_options o;
    int4_options(&o);
    struct rlimit old;
    CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
    /* default limit; 40 descriptors (fewer than the shards); 40 with all but 4 taken, so that
     * the model runs out and gives back the ones it kept */
    for (int k = 0; k < 3; k++) {
        struct rlimit low = {40, old.rlim_max};
        if (k) CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
        int taken[40], ntaken = 0;
        while (k == 2 && ntaken < 40 && (taken[ntaken] = dup(2)) >= 0) ntaken++;
        for (int i = 0; i < 4 && ntaken > 0; i++) close(taken[--ntaken]);
        mq_ctx *ctx = mq_ctx_create();
        mq_ctx_set_overwrite(ctx, 1);
        mq_ctx_set_threads(ctx, 2);
        mq_report *r = NULL;
        mq_status st = mq_quantize_file(ctx, index, k ? out2 : out1, &o, &r);
        CHECK_MSG(st == MQ_OK, "case %d: %s", k, mq_ctx_message(ctx));
        CHECK(r && mq_report_action_count(r, MQ_ACTION_QUANTIZE) == NSHARDS);
        mq_report_free(r);
        mq_ctx_free(ctx);
        while (ntaken > 0) close(taken[--ntaken]);
        if (k) CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
        if (k) CHECK(test_same_files(out1, out2));
    }
    for (int i = 0; i < NSHARDS; i++) {
        char path[640];
        snprintf(path, sizeof path, "%s/s%03d.safetensors", dir, i);
        remove(path);
    }
    remove(index);
    rmdir(dir);
}

int main(void) {
    const char *d = test_tmpdir();
    snprintf(in_path, sizeof in_path, "%s/test_pipeline_in.safetensors", d);
    snprintf(out1, sizeof out1, "%s/test_pipeline_out1.safetensors", d);
    snprintf(out2, sizeof out2, "%s/test_pipeline_out2.safetensors", d);
    snprintf(deq, sizeof deq, "%s/test_pipeline_deq.safetensors", d);
    if (!write_model(in_path, -1)) {
        printf("not ok setup: cannot write %s\n", in_path);
        return 1;
    }
    RUN(threads_identical_output);
    RUN(error_figures_match_file);
    RUN(error_figures_fused_match_file);
    RUN(dequantize_file_roundtrip);
    RUN(refuses_input_as_output);
    RUN(nan_fails_or_is_skipped);
    RUN(allocation_failures_are_clean);
    RUN(strict_fails_before_commit);
    RUN(failed_reads);
    RUN(many_shards_few_descriptors);
    if (!getenv("KEEP")) remove(in_path);
    remove(out1);
    remove(out2);
    remove(deq);
    return test_summary();
}
