/* End-to-end quantize throughput and peak memory: `monoquant quantize` on a generated model
 * (BF16 and F32 input; INT8 and INT4 output) against `cp` of the same file, both with the
 * input in the page cache. monoquant fsyncs its output before renaming it into place, so
 * the baseline is `cp` followed by `sync` of the copy (plain `cp` is shown too). Prints time
 * ratios (goal: <= 2x) and the child's peak RSS (goal: <= 100 MB, independent of the model
 * size). BENCH_MB sets the model size (1024), BENCH_TMPDIR the scratch folder (/tmp). */
#include "bench_util.h"
#include "monoquant.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs argv, returns wall seconds and the child's peak RSS in MB. */
static int run(char *const argv[], double *secs, double *rss_mb) {
    double t0 = bench_now();
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) != pid) return 0;
    *secs = bench_now() - t0;
    *rss_mb = (double)ru.ru_maxrss / 1024.0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* A model of `mb` MB: [rows, 4096] weights of `dtype` plus a bias each. */
static int generate(const char *path, mq_dtype dtype, size_t mb) {
    const int64_t cols = 4096, rows = 2048;
    size_t es = mq_dtype_size(dtype);
    size_t per = (size_t)(rows * cols) * es;
    size_t n = mb * 1000000 / per;
    if (n < 1) n = 1;
    mq_tensor_desc *d = calloc(2 * n, sizeof *d);
    char (*names)[48] = calloc(2 * n, sizeof *names);
    if (!d || !names) return 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(names[2 * i], 48, "layers.%zu.mlp.weight", i);
        snprintf(names[2 * i + 1], 48, "layers.%zu.mlp.bias", i);
        d[2 * i] = (mq_tensor_desc){names[2 * i], dtype, 2, {rows, cols}};
        d[2 * i + 1] = (mq_tensor_desc){names[2 * i + 1], dtype, 1, {rows}};
    }
    mq_ctx *ctx = mq_ctx_create();
    mq_writer *w = NULL;
    float *f = malloc((size_t)cols * 4);
    uint8_t *buf = malloc((size_t)cols * 4);
    int ok = f && buf && mq_writer_open(ctx, path, MQ_FORMAT_SAFETENSORS, d, 2 * n, NULL, 0, &w) == MQ_OK;
    uint32_t seed = 12345;
    for (size_t t = 0; ok && t < 2 * n; t++) {
        int64_t r = d[t].ndim == 2 ? rows : 1, c = d[t].ndim == 2 ? cols : rows;
        for (int64_t i = 0; ok && i < r; i++) {
            for (int64_t j = 0; j < c; j++) {
                seed = seed * 1664525u + 1013904223u;
                f[j] = ((float)(seed >> 9) / 8388608.0f - 1.0f) * 0.05f;
            }
            ok = mq_convert(ctx, dtype, buf, MQ_F32, f, (size_t)c) == MQ_OK &&
                 mq_writer_write(w, buf, (size_t)c * es) == MQ_OK;
        }
    }
    ok = ok && mq_writer_commit(w) == MQ_OK;
    mq_writer_free(w);
    mq_ctx_free(ctx);
    free(f);
    free(buf);
    free(d);
    free(names);
    return ok;
}

/* Reads the file once so that it sits in the page cache. */
static void warm(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    static char buf[1 << 20];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    close(fd);
}

int main(int argc, char **argv) {
    (void)argc;
    const char *env = getenv("BENCH_MB");
    size_t mb = env ? (size_t)atol(env) : 1024;
    const char *dir = getenv("BENCH_TMPDIR") ? getenv("BENCH_TMPDIR") : "/tmp";
    char cli[1024];
    snprintf(cli, sizeof cli, "%s", argv[0]);
    char *slash = strrchr(cli, '/');
    if (slash) strcpy(slash, "/../monoquant");
    else strcpy(cli, "build/monoquant");
    printf("quantize end to end vs cp + sync (warm page cache), %zu MB models; "
           "ratio = time / (cp + sync) time; -E: --no-error-stats\n", mb);
    printf("%-16s %8s %9s %8s %11s\n", "input -> output", "seconds", "GB/s in", "vs cp",
           "peak RSS");
    static const struct { mq_dtype dt; const char *name; } inputs[] = {{MQ_BF16, "bf16"},
                                                                       {MQ_F32, "f32"}};
    int rc = 0;
    for (size_t k = 0; k < 2 && !rc; k++) {
        char in[600], out[600], cpy[600];
        snprintf(in, sizeof in, "%s/bench_pipeline_%d.%s.safetensors", dir, (int)getpid(), inputs[k].name);
        snprintf(out, sizeof out, "%s/bench_pipeline_%d.q.safetensors", dir, (int)getpid());
        snprintf(cpy, sizeof cpy, "%s/bench_pipeline_%d.cp.safetensors", dir, (int)getpid());
        if (!generate(in, inputs[k].dt, mb)) {
            fprintf(stderr, "cannot generate %s\n", in);
            return 1;
        }
        warm(in);
        double cp_s = 1e9, plain_s = 1e9, s, rss = 0, cp_rss = 0;
        for (int rep = 0; rep < 2; rep++) {
            char *cp_argv[] = {"cp", in, cpy, NULL};
            if (!run(cp_argv, &s, &rss)) rc = 1;
            if (s < plain_s) plain_s = s;
            unlink(cpy);
            char *cps_argv[] = {"sh", "-c", "cp \"$0\" \"$1\" && sync \"$1\"", in, cpy, NULL};
            if (!run(cps_argv, &s, &cp_rss)) rc = 1;
            if (s < cp_s) cp_s = s;
            unlink(cpy);
        }
        double gb = (double)mb / 1000.0;
        printf("%-16s %8.3f %9.2f %7.2fx %8.1f MB\n", k ? "f32 cp" : "bf16 cp", plain_s,
               gb / plain_s, plain_s / cp_s, rss);
        printf("%-16s %8.3f %9.2f %8s\n", k ? "f32 cp+sync" : "bf16 cp+sync", cp_s, gb / cp_s,
               "1.00x");
        /* 8 and 4 bits, then 8 bits without the error figures (one dequantization less) */
        for (int v = 0; v < 3 && !rc; v++) {
            int bits = v == 1 ? 4 : 8;
            char b[4];
            snprintf(b, sizeof b, "%d", bits);
            char *q_argv[] = {cli, "-q", "quantize", in, "--bits", b, "-o", out,
                              v == 2 ? "--no-error-stats" : NULL, NULL};
            double best = 1e9, best_rss = 0;
            for (int rep = 0; rep < 2; rep++) {
                if (!run(q_argv, &s, &rss)) {
                    fprintf(stderr, "%s quantize failed\n", cli);
                    rc = 1;
                    break;
                }
                if (s < best) best = s, best_rss = rss;
                unlink(out);
            }
            char label[40];
            snprintf(label, sizeof label, "%s -> int%d%s", inputs[k].name, bits,
                     v == 2 ? " -E" : "");
            printf("%-16s %8.3f %9.2f %7.2fx %8.1f MB\n", label, best, gb / best, best / cp_s,
                   best_rss);
        }
        unlink(in);
    }
    return rc;
}
