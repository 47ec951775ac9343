/* monoquant compare: two checkpoints tensor by tensor (plain or quantized, matched by the
 * original names). */
#include "cli.h"

#include <math.h>
#include <string.h>

typedef struct cmp_state {
    const char *key, *key_a, *key_b;
} cmp_state;

static const cli_option options[] = {
    OPT_STR("key", cmp_state, key, "K", "PyTorch inputs: the entry holding the tensors ('.' the "
            "top level)"),
    OPT_STR("key-a", cmp_state, key_a, "K", "--key for A alone"),
    OPT_STR("key-b", cmp_state, key_b, "K", "--key for B alone"),
    OPT_END,
};

static const cli_command command = {
    "compare", "A B [--json] [--key K] [--key-a K] [--key-b K]",
    "Sizes, compression ratio and per-tensor differences of B against A. Quantized\n"
    "tensors are dequantized; names match across plain and quantized layouts.",
    options, NULL};

int cmd_compare(int argc, char **argv) {
    cmp_state o = {NULL, NULL, NULL};
    cli_args args;
    int prc = cli_parse(&command, &o, argc, argv, &args);
    if (prc) return prc < 0 ? EXIT_OK : prc;
    if (args.npos != 2) return cli_usage_error("compare", "needs two checkpoints");
    const char *pa = args.pos[0], *pb = args.pos[1];
    bool json = g_cli.json;
    mq_open_options oa;
    mq_open_options_default(&oa);
    oa.key = o.key_a ? o.key_a : o.key;
    mq_open_options ob;
    mq_open_options_default(&ob);
    ob.key = o.key_b ? o.key_b : o.key;
    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return EXIT_GENERAL;
    mq_ctx_set_threads(ctx, (int)g_cli.threads);
    mq_qmodel *a = NULL, *b = NULL;
    mq_status st = mq_qmodel_open_with_options(ctx, pa, &oa, &a);
    if (st == MQ_OK) st = mq_qmodel_open_with_options(ctx, pb, &ob, &b);
    int rc = EXIT_OK;
    if (st != MQ_OK) {
        rc = cli_fail(ctx, st);
        goto done;
    }
    uint64_t bytes_a = 0, bytes_b = 0;
    size_t only_a = 0, only_b = 0, differ = 0;
    if (json) {
        printf("{\"a\": ");
        cli_json_string(stdout, pa);
        printf(", \"b\": ");
        cli_json_string(stdout, pb);
        printf(", \"tensors\": [");
    }
    else fprintf(stdout, "%-40s %-10s %-10s %9s %9s %10s\n", "tensor", "A", "B", "SQNR dB",
                 "rel.err", "max abs");
    size_t shown = 0;
    for (size_t i = 0; i < mq_qmodel_count(a); i++) bytes_a += mq_qmodel_tensor(a, i)->stored_bytes;
    for (size_t j = 0; j < mq_qmodel_count(b); j++) {
        const mq_qtensor *tb = mq_qmodel_tensor(b, j);
        bytes_b += tb->stored_bytes;
        long i = mq_qmodel_find(a, tb->name);
        if (i < 0) {
            only_b++;
            continue;
        }
        const mq_qtensor *ta = mq_qmodel_tensor(a, (size_t)i);
        char sa[48], sb[48];
        if (ta->spec.type == MQ_Q_NONE) snprintf(sa, sizeof sa, "%s", mq_dtype_name(ta->data->dtype));
        else cli_qspec_name(&ta->spec, sa, sizeof sa);
        if (tb->spec.type == MQ_Q_NONE) snprintf(sb, sizeof sb, "%s", mq_dtype_name(tb->data->dtype));
        else cli_qspec_name(&tb->spec, sb, sizeof sb);
        mq_error_stats es;
        bool floats = (ta->spec.type != MQ_Q_NONE || mq_dtype_is_float(ta->data->dtype)) &&
                      (tb->spec.type != MQ_Q_NONE || mq_dtype_is_float(tb->data->dtype));
        bool same_bytes = ta->spec.type == MQ_Q_NONE && tb->spec.type == MQ_Q_NONE &&
                          ta->data->dtype == tb->data->dtype && ta->data->nbytes == tb->data->nbytes &&
                          !memcmp(ta->data->data, tb->data->data, (size_t)ta->data->nbytes);
        const char *note = NULL;
        if (ta->numel != tb->numel || ta->ndim != tb->ndim) note = "shapes differ";
        else if (same_bytes) {
            es = (mq_error_stats){INFINITY, 0, 0, 0, 1};
        } else if (!floats) note = "integer tensors differ";
        else if (mq_qmodel_error(a, (size_t)i, b, j, &es) != MQ_OK) note = mq_ctx_message(ctx);
        bool diff = note || es.max_abs != 0;
        differ += diff;
        if (json) {
            printf("%s\n  {\"name\": ", shown++ ? "," : "");
            cli_json_string(stdout, tb->name);
            printf(", \"a\": \"%s\", \"b\": \"%s\", \"bytes_a\": %llu, \"bytes_b\": %llu", sa, sb,
                   (unsigned long long)ta->stored_bytes, (unsigned long long)tb->stored_bytes);
            if (note) {
                printf(", \"note\": ");
                cli_json_string(stdout, note);
            } else {
                cli_json_error_stats(stdout, &es);
            }
            printf("}");
        } else if (diff || g_cli.verbose) {
            printf("%-40s %-10s %-10s", tb->name, sa, sb);
            if (note) printf(" %s\n", note);
            else printf(" %9.2f %9.5f %10.3g\n", es.sqnr_db, es.rel_fro, es.max_abs);
        }
    }
    for (size_t i = 0; i < mq_qmodel_count(a); i++)
        if (mq_qmodel_find(b, mq_qmodel_tensor(a, i)->name) < 0) only_a++;
    char b1[32], b2[32];
    double ratio = bytes_b ? (double)bytes_a / (double)bytes_b : 0;
    if (json)
        printf("],\n \"bytes_a\": %llu, \"bytes_b\": %llu, \"ratio\": %.4f, \"differ\": %zu, "
               "\"only_a\": %zu, \"only_b\": %zu}\n", (unsigned long long)bytes_a,
               (unsigned long long)bytes_b, ratio, differ, only_a, only_b);
    else
        printf("A %s, B %s: B is %.2fx smaller; %zu tensors differ, %zu only in A, %zu only in B\n",
               cli_bytes(bytes_a, b1, sizeof b1), cli_bytes(bytes_b, b2, sizeof b2), ratio, differ,
               only_a, only_b);
done:
    mq_qmodel_free(a);
    mq_qmodel_free(b);
    mq_ctx_free(ctx);
    return rc;
}
