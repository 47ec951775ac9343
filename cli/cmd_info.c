/* monoquant info FILE|DIR [--json]: what a checkpoint holds. */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

typedef struct info_state {
    const char *key;
} info_state;

static const cli_option options[] = {
    OPT_STR("key", info_state, key, "K", "PyTorch: the entry holding the tensors (e.g. model,\n"
            "state_dict; '.' the top level); needed when several entries hold tensors"),
    OPT_END,
};

static const cli_command command = {
    "info", "[--json] [--key K] FILE|DIR",
    "Describes a checkpoint (.safetensors, a sharded *.index.json, a folder, or a\n"
    "PyTorch .pt/.pth/.bin): format, files, tensor and parameter counts, bytes per\n"
    "dtype, metadata, and one line per tensor (name, dtype, shape, bytes, layer kind).\n"
    "A quantized checkpoint (monoquant, compressed-tensors or GPTQ) is listed as its\n"
    "original tensors: scheme, logical shape, stored bytes (-v adds the stored ones).\n"
    "--json prints one JSON document on stdout instead of the text report.",
    options, "Exit codes: 0 ok, 2 usage, 5 the file cannot be read or is malformed.\n"};

/* 1234567 -> "1,234,567" */
static const char *grouped(uint64_t v, char *buf, size_t cap) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static void shape_text(const mq_tensor *t, char *buf, size_t cap) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%" PRId64, d ? ", " : "", t->shape[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

/* "int4 asymmetric group 128", "int8 symmetric channel", "fp16", "none". */
static void scheme_text(const mq_qtensor *q, char *buf, size_t cap) {
    const mq_qspec *s = &q->spec;
    if (s->type < MQ_Q_INT8 || s->type > MQ_Q_UINT4) {
        snprintf(buf, cap, "%s", mq_qtype_name(s->type));
        return;
    }
    const char *gran = s->granularity == MQ_PER_TENSOR ? "tensor"
                       : s->granularity == MQ_PER_CHANNEL ? "channel" : "group";
    int n = snprintf(buf, cap, "%s %s %s", mq_qtype_name(s->type),
                     s->scheme == MQ_ASYMMETRIC ? "asymmetric" : "symmetric", gran);
    if (s->granularity == MQ_PER_GROUP && n > 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " %d", s->group_size);
}

static void qshape_text(const mq_qtensor *q, char *buf, size_t cap) {
    mq_tensor t = {.ndim = q->ndim};
    memcpy(t.shape, q->shape, sizeof t.shape);
    shape_text(&t, buf, cap);
}

/* The checkpoint as its original tensors: quantized ones reassembled from their stored parts
 * (qm NULL: not available, e.g. a malformed quantized layout). */
typedef struct logical_totals {
    uint64_t tensors, params, quantized;
} logical_totals;

static logical_totals logical_count(const mq_qmodel *qm) {
    logical_totals t = {0, 0, 0};
    for (size_t i = 0; qm && i < mq_qmodel_count(qm); i++) {
        const mq_qtensor *q = mq_qmodel_tensor(qm, i);
        t.tensors++;
        t.params += q->numel;
        if (q->spec.type != MQ_Q_NONE) t.quantized++;
    }
    return t;
}

static void print_logical_text(const mq_qmodel *qm) {
    char a[64], shape[256], scheme[96];
    logical_totals lt = logical_count(qm);
    printf("logical:     %" PRIu64 " tensors, %s parameters, %" PRIu64 " quantized\n", lt.tensors,
           grouped(lt.params, a, sizeof a), lt.quantized);
    /* the distinct layouts, in order of first use */
    int nst = 0;
    for (size_t i = 0; i < mq_qmodel_count(qm); i++) {
        const char *st = mq_qmodel_tensor(qm, i)->storage;
        bool seen = !st;
        for (size_t k = 0; k < i && !seen; k++) {
            const char *o = mq_qmodel_tensor(qm, k)->storage;
            seen = o && !strcmp(o, st);
        }
        if (!seen) printf("%s%s", nst++ ? ", " : "storage:     ", st);
    }
    if (nst) printf("\n");
    int w = 4;
    for (size_t i = 0; i < mq_qmodel_count(qm); i++) {
        int k = (int)strlen(mq_qmodel_tensor(qm, i)->name);
        if (k > w) w = k;
    }
    if (w > 60) w = 60;
    printf("\n  %-*s  %-26s  %-7s  %-16s  %12s  %s\n", w, "name", "scheme", "dtype", "shape",
           "stored bytes", "kind");
    for (size_t i = 0; i < mq_qmodel_count(qm); i++) {
        const mq_qtensor *q = mq_qmodel_tensor(qm, i);
        scheme_text(q, scheme, sizeof scheme);
        qshape_text(q, shape, sizeof shape);
        printf("  %-*s  %-26s  %-7s  %-16s  %12s  %s\n", w, q->name, scheme,
               mq_dtype_name(q->dtype), shape, grouped(q->stored_bytes, a, sizeof a),
               mq_layer_kind_name(q->kind));
    }
}

static void print_logical_json(const mq_qmodel *qm) {
    logical_totals lt = logical_count(qm);
    printf(",\n \"logical\": {\"tensor_count\": %" PRIu64 ", \"parameter_count\": %" PRIu64
           ", \"quantized_tensor_count\": %" PRIu64 ", \"tensors\": [", lt.tensors, lt.params,
           lt.quantized);
    for (size_t i = 0; i < mq_qmodel_count(qm); i++) {
        const mq_qtensor *q = mq_qmodel_tensor(qm, i);
        char scheme[96];
        scheme_text(q, scheme, sizeof scheme);
        printf("%s\n  {\"name\": ", i ? "," : "");
        cli_json_string(stdout, q->name);
        printf(", \"scheme\": \"%s\", \"storage\": ", scheme);
        if (q->storage) cli_json_string(stdout, q->storage);
        else printf("null");
        printf(", \"dtype\": \"%s\", \"shape\": [", mq_dtype_name(q->dtype));
        for (int d = 0; d < q->ndim; d++) printf("%s%" PRId64, d ? ", " : "", q->shape[d]);
        printf("], \"stored_bytes\": %" PRIu64 ", \"kind\": \"%s\"}", q->stored_bytes,
               mq_layer_kind_name(q->kind));
    }
    printf("%s]}", mq_qmodel_count(qm) ? "\n " : "");
}

typedef struct dtype_totals {
    uint64_t tensors, params, bytes;
} dtype_totals;

static void print_text(const char *path, const mq_model *m, const mq_qmodel *qm,
                       const dtype_totals *by, uint64_t params, uint64_t bytes) {
    char a[64], b[64];
    size_t n = mq_model_tensor_count(m);
    printf("path:        %s\n", path);
    printf("format:      %s\n", mq_format_name(mq_model_format(m)));
    printf("files:       %zu\n", mq_model_file_count(m));
    printf("tensors:     %zu\n", n);
    printf("parameters:  %s\n", grouped(params, a, sizeof a));
    printf("data:        %s (%s bytes)\n", cli_bytes(bytes, b, sizeof b), grouped(bytes, a, sizeof a));
    printf("dtypes:\n");
    for (int d = 1; d < MQ_DTYPE_COUNT; d++) {
        if (!by[d].tensors) continue;
        char p[64];
        printf("  %-8s %6" PRIu64 " tensors %15s parameters %12s\n", mq_dtype_name((mq_dtype)d),
               by[d].tensors, grouped(by[d].params, p, sizeof p),
               cli_bytes(by[d].bytes, b, sizeof b));
    }
    size_t nm = mq_model_metadata_count(m);
    printf("metadata:    %zu entr%s\n", nm, nm == 1 ? "y" : "ies");
    for (size_t i = 0; i < nm; i++) {
        const char *v = mq_model_metadata_value(m, i);
        int len = (int)strlen(v);
        bool cut = !g_cli.verbose && len > 100;
        printf("  %s = %.*s%s\n", mq_model_metadata_key(m, i), cut ? 100 : len, v,
               cut ? " ... (-v shows all)" : "");
    }
    if (qm && mq_qmodel_is_quantized(qm)) {
        print_logical_text(qm);
        if (!g_cli.verbose) return;
        printf("\nstored tensors:\n");
    }
    int w = 4;
    for (size_t i = 0; i < n; i++) {
        int k = (int)strlen(mq_model_tensor(m, i)->name);
        if (k > w) w = k;
    }
    if (w > 60) w = 60;
    printf("\n  %-*s  %-7s  %-20s  %12s  %s\n", w, "name", "dtype", "shape", "bytes", "kind");
    for (size_t i = 0; i < n; i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        char shape[256];
        shape_text(t, shape, sizeof shape);
        printf("  %-*s  %-7s  %-20s  %12s  %s\n", w, t->name, mq_dtype_name(t->dtype), shape,
               grouped(t->nbytes, a, sizeof a), mq_layer_kind_name(mq_classify_tensor(t)));
    }
}

static void print_json(const char *path, const mq_model *m, const mq_qmodel *qm,
                       const dtype_totals *by, uint64_t params, uint64_t bytes) {
    size_t n = mq_model_tensor_count(m);
    printf("{\"path\": ");
    cli_json_string(stdout, path);
    printf(", \"format\": \"%s\", \"file_count\": %zu, \"tensor_count\": %zu, "
           "\"parameter_count\": %" PRIu64 ", \"total_bytes\": %" PRIu64 ",\n \"dtypes\": {",
           mq_format_name(mq_model_format(m)), mq_model_file_count(m), n, params, bytes);
    bool first = true;
    for (int d = 1; d < MQ_DTYPE_COUNT; d++) {
        if (!by[d].tensors) continue;
        printf("%s\"%s\": {\"tensors\": %" PRIu64 ", \"parameters\": %" PRIu64 ", \"bytes\": %"
               PRIu64 "}", first ? "" : ", ", mq_dtype_name((mq_dtype)d), by[d].tensors,
               by[d].params, by[d].bytes);
        first = false;
    }
    printf("},\n \"metadata\": {");
    for (size_t i = 0; i < mq_model_metadata_count(m); i++) {
        printf("%s", i ? ", " : "");
        cli_json_string(stdout, mq_model_metadata_key(m, i));
        printf(": ");
        cli_json_string(stdout, mq_model_metadata_value(m, i));
    }
    printf("},\n \"tensors\": [");
    for (size_t i = 0; i < n; i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        printf("%s\n  {\"name\": ", i ? "," : "");
        cli_json_string(stdout, t->name);
        printf(", \"dtype\": \"%s\", \"shape\": [", mq_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) printf("%s%" PRId64, d ? ", " : "", t->shape[d]);
        printf("], \"bytes\": %" PRIu64 ", \"kind\": \"%s\"}", t->nbytes,
               mq_layer_kind_name(mq_classify_tensor(t)));
    }
    printf("%s]", n ? "\n " : "");
    if (qm) print_logical_json(qm);
    printf("}\n");
}

int cmd_info(int argc, char **argv) {
    info_state st_opts = {NULL};
    cli_args args;
    int prc = cli_parse(&command, &st_opts, argc, argv, &args);
    if (prc) return prc < 0 ? EXIT_OK : prc;
    if (args.npos > 1)
        return cli_usage_error("info", "one checkpoint at a time (got '%s' and '%s')", args.pos[0],
                               args.pos[1]);
    if (!args.npos) return cli_usage_error("info", "missing the checkpoint to describe");
    const char *path = args.pos[0];
    bool json = g_cli.json;
    mq_open_options oo;
    mq_open_options_default(&oo);
    oo.key = st_opts.key;

    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) {
        fprintf(stderr, "monoquant: error: out of memory\n");
        return EXIT_GENERAL;
    }
    mq_model *m = NULL;
    mq_status st = mq_model_open(ctx, path, &oo, &m);
    if (st != MQ_OK) {
        int rc = cli_fail(ctx, st);
        mq_ctx_free(ctx);
        return rc;
    }
    dtype_totals by[MQ_DTYPE_COUNT];
    memset(by, 0, sizeof by);
    uint64_t params = 0, bytes = 0;
    for (size_t i = 0; i < mq_model_tensor_count(m); i++) {
        const mq_tensor *t = mq_model_tensor(m, i);
        int d = (int)t->dtype > 0 && t->dtype < MQ_DTYPE_COUNT ? (int)t->dtype : 0;
        by[d].tensors++;
        by[d].params += t->numel;
        by[d].bytes += t->nbytes;
        params += t->numel;
        bytes += t->nbytes;
    }
    /* the logical view: a layout it cannot reassemble is reported, not fatal (validate
     * judges checkpoints; info describes them) */
    mq_qmodel *qm = NULL;
    if (mq_qmodel_open_with_options(ctx, path, &oo, &qm) != MQ_OK) {
        cli_warn("no logical view: %s", mq_ctx_message(ctx));
        qm = NULL;
    }
    if (json) print_json(path, m, qm, by, params, bytes);
    else print_text(path, m, qm, by, params, bytes);
    mq_qmodel_free(qm);
    int rc = EXIT_OK;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "monoquant: error: cannot write to standard output\n");
        rc = EXIT_IO;
    }
    mq_model_free(m);
    mq_ctx_free(ctx);
    return rc;
}
