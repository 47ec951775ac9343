/* End-to-end quantize time against `cp` and `cp` + `sync` of the same file, input in the
 * page cache. monoquant fsyncs its output before renaming it into place, so `cp` + `sync`
 * of the copy is the fair baseline; plain `cp` is shown too. The runs alternate (cp,
 * cp+sync, INT8, INT4, INT8 without error figures, INT8 written as a PyTorch .pt, then
 * again), each rep gives a ratio per pair, and the medians are printed, which is steadier
 * than best-of on a shared machine.
 * monoquant's own share in fsync + rename comes from its JSON report ("phases"); cp+sync's
 * is (cp+sync - cp) / (cp+sync). Also prints the child's peak RSS (goal: bounded,
 * independent of the model size).
 * BENCH_MB: model size (1270), BENCH_REPS: pairs (5), BENCH_THREADS (2), BENCH_TMPDIR (/tmp),
 * BENCH_CLI: the monoquant binary to time (default: the one beside this program). */
#include "bench_util.h"
#include "monoquant.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_REPS 32

/* Runs argv with stdout to `out` (NULL: /dev/null); wall seconds and the child's peak RSS. */
static int run(char *const argv[], const char *out, double *secs, double *rss_mb) {
    double t0 = bench_now();
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        int fd = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 1);
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

/* A bf16 model of about `mb` MB: [2048, 4096] weights plus a bias each, written through the
 * library's writer with one reused row buffer. */
static int generate(const char *path, size_t mb) {
    const int64_t cols = 4096, rows = 2048;
    size_t per = (size_t)(rows * cols) * 2;
    size_t n = mb * 1000000 / per;
    if (n < 1) n = 1;
    mq_tensor_desc *d = calloc(2 * n, sizeof *d);
    char (*names)[48] = calloc(2 * n, sizeof *names);
    if (!d || !names) return 0;
    for (size_t i = 0; i < n; i++) {
        snprintf(names[2 * i], 48, "layers.%zu.mlp.weight", i);
        snprintf(names[2 * i + 1], 48, "layers.%zu.mlp.bias", i);
        d[2 * i] = (mq_tensor_desc){names[2 * i], MQ_BF16, 2, {rows, cols}};
        d[2 * i + 1] = (mq_tensor_desc){names[2 * i + 1], MQ_BF16, 1, {rows}};
    }
    mq_ctx *ctx = mq_ctx_create();
    mq_writer *w = NULL;
    float *f = malloc((size_t)cols * 4);
    uint8_t *buf = malloc((size_t)cols * 2);
    int ok = ctx && f && buf &&
             mq_writer_open(ctx, path, MQ_FORMAT_SAFETENSORS, d, 2 * n, NULL, 0, &w) == MQ_OK;
    uint64_t seed = 12345;
    for (size_t t = 0; ok && t < 2 * n; t++) {
        int64_t r = d[t].ndim == 2 ? rows : 1, c = d[t].ndim == 2 ? cols : rows;
        for (int64_t i = 0; ok && i < r; i++) {
            for (int64_t j = 0; j < c; j++)
                f[j] = ((float)(bench_xorshift64(&seed) >> 40) / 8388608.0f - 1.0f) * 0.05f;
            ok = mq_convert(ctx, MQ_BF16, buf, MQ_F32, f, (size_t)c) == MQ_OK &&
                 mq_writer_write(w, buf, (size_t)c * 2) == MQ_OK;
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

/* `"key": number` from a JSON file (the first one), or -1. */
static double json_number(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(text, pat);
    return p ? atof(p + strlen(pat)) : -1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n) {
    double s[MAX_REPS];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

enum { V_CP, V_CPS, V_Q8, V_Q4, V_Q8E, V_Q8PT, NV };

int main(int argc, char **argv) {
    (void)argc;
    size_t mb = getenv("BENCH_MB") ? (size_t)atol(getenv("BENCH_MB")) : 1270;
    int reps = getenv("BENCH_REPS") ? atoi(getenv("BENCH_REPS")) : 5;
    if (reps < 1) reps = 1;
    if (reps > MAX_REPS) reps = MAX_REPS;
    const char *threads = getenv("BENCH_THREADS") ? getenv("BENCH_THREADS") : "2";
    const char *dir = getenv("BENCH_TMPDIR") ? getenv("BENCH_TMPDIR") : "/tmp";
    char cli[1024];
    if (getenv("BENCH_CLI")) {
        snprintf(cli, sizeof cli, "%s", getenv("BENCH_CLI"));
    } else {
        snprintf(cli, sizeof cli, "%s", argv[0]);
        char *slash = strrchr(cli, '/');
        if (slash) snprintf(slash, sizeof cli - (size_t)(slash - cli), "/../monoquant");
        else snprintf(cli, sizeof cli, "build/monoquant");
    }
    char in[600], out[600], out_pt[600], cpy[600], js[600];
    int pid = (int)getpid();
    snprintf(in, sizeof in, "%s/bench_pipeline_%d.bf16.safetensors", dir, pid);
    snprintf(out, sizeof out, "%s/bench_pipeline_%d.q.safetensors", dir, pid);
    snprintf(out_pt, sizeof out_pt, "%s/bench_pipeline_%d.q.pt", dir, pid);
    snprintf(cpy, sizeof cpy, "%s/bench_pipeline_%d.cp.safetensors", dir, pid);
    snprintf(js, sizeof js, "%s/bench_pipeline_%d.json", dir, pid);
    if (!generate(in, mb)) {
        fprintf(stderr, "cannot generate %s\n", in);
        return 1;
    }
    warm(in);
    double t[NV][MAX_REPS], rss[NV] = {0}, sync_share[NV][MAX_REPS];
    static const char *const label[NV] = {"cp", "cp+sync", "bf16 -> int8", "bf16 -> int4",
                                          "bf16 -> int8 -E", "bf16 -> int8 .pt"};
    int rc = 0;
    for (int r = 0; r < reps && !rc; r++) {
        for (int v = 0; v < NV && !rc; v++) {
            char *cp_argv[] = {"cp", in, cpy, NULL};
            char *cps_argv[] = {"sh", "-c", "cp \"$0\" \"$1\" && sync \"$1\"", in, cpy, NULL};
            const char *o = v == V_Q8PT ? out_pt : out;
            char *q_argv[] = {cli, "--json", "--threads", (char *)threads, "quantize", in,
                              "--bits", v == V_Q4 ? "4" : "8", "-o", (char *)o,
                              v == V_Q8E ? "--no-error-stats" : NULL, NULL};
            char *const *a = v == V_CP ? cp_argv : v == V_CPS ? cps_argv : q_argv;
            double m = 0;
            if (!run(a, v >= V_Q8 ? js : NULL, &t[v][r], &m)) {
                fprintf(stderr, "%s failed\n", a[0]);
                rc = 1;
            }
            if (m > rss[v]) rss[v] = m;
            if (v >= V_Q8) {
                double s = json_number(js, "sync"), w = json_number(js, "seconds");
                sync_share[v][r] = s >= 0 && w > 0 ? s / w : -1;
            }
            unlink(v == V_Q8PT ? out_pt : v >= V_Q8 ? out : cpy);
        }
    }
    unlink(in);
    unlink(js);
    if (rc) return rc;
    printf("quantize end to end, %zu MB bf16 model in the page cache, %s threads, medians of "
           "%d alternating reps; -E: --no-error-stats\n", mb, threads, reps);
    printf("%-16s %8s %8s %9s %8s %10s\n", "", "seconds", "vs cp", "vs cp+sync", "fsync %",
           "peak RSS");
    for (int v = 0; v < NV; v++) {
        double rcp[MAX_REPS], rcs[MAX_REPS], sh[MAX_REPS];
        for (int r = 0; r < reps; r++) {
            rcp[r] = t[v][r] / t[V_CP][r];
            rcs[r] = t[v][r] / t[V_CPS][r];
            sh[r] = v == V_CPS ? (t[V_CPS][r] - t[V_CP][r]) / t[V_CPS][r]
                  : v >= V_Q8  ? sync_share[v][r] : 0;
        }
        printf("%-16s %8.3f %7.2fx %9.2fx ", label[v], median(t[v], reps), median(rcp, reps),
               median(rcs, reps));
        if (v == V_CP) printf("%8s", "-");
        else printf("%7.1f%%", 100 * median(sh, reps));
        printf(" %7.1f MB\n", rss[v]);
    }
    return 0;
}
