/* PyTorch checkpoint I/O throughput as ratios to memcpy bandwidth measured in the same run:
 * CRC-32 (what the writer adds per byte: the slice-by-8 reference and the picked path),
 * writing the same tensors through mq_writer as safetensors and as .pt (written, fsynced and
 * renamed: the .pt against the safetensors baseline), and opening the .pt again (zero-copy)
 * and reading every tensor byte.
 *   build/bench/bench_pytorch [MiB [tensors]]      (default 256 MiB in 16 tensors) */
#include "bench_util.h"
#include "io/zip.h"
#include "monoquant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 256, nt = argc > 2 ? (size_t)atol(argv[2]) : 16;
    if (!mib || !nt) return 2;
    size_t total = mib << 20, per = total / nt / 4 * 4;
    uint8_t *src = (uint8_t *)bench_xmalloc(per), *dst = (uint8_t *)bench_xmalloc(per);
    for (size_t i = 0; i < per; i++) src[i] = (uint8_t)(i * 2654435761u >> 13);
    double best_copy = bench_memcpy_bw(dst, src, per, 5);
    /* the slice-by-8 reference, then the path the library picks (MQ_ISA caps it) */
    mq_crc32 *c = (mq_crc32 *)malloc(2 * sizeof *c);
    mq_ctx *ctx = mq_ctx_create();
    if (!c || !ctx) return 1;
    mq__crc32_init(&c[0], NULL);
    mq__crc32_init(&c[1], ctx);
    double best_crc[2] = {0, 0};
    volatile uint32_t sink = 0;
    for (int r = 0; r < 5; r++)
        for (int k = 0; k < 2; k++) {
            double t = bench_now();
            sink ^= mq__crc32_update(&c[k], 0, src, per);
            t = bench_now() - t;
            if ((double)per / t > best_crc[k]) best_crc[k] = (double)per / t;
        }
    char path[256], st_path[256];
    snprintf(path, sizeof path, "%s/bench_pytorch_%ld.pt",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    snprintf(st_path, sizeof st_path, "%s/bench_pytorch_%ld.safetensors",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    mq_tensor_desc *d = (mq_tensor_desc *)calloc(nt, sizeof *d);
    char(*names)[48] = calloc(nt, 48);
    for (size_t i = 0; i < nt; i++) {
        snprintf(names[i], 48, "layers.%zu.weight", i);
        d[i] = (mq_tensor_desc){names[i], MQ_F32, 2, {(int64_t)(per / 4 / 1024), 1024}};
        if (per / 4 % 1024) d[i].shape[0] = (int64_t)(per / 4), d[i].ndim = 1;
    }
    mq_writer *w = NULL;
    /* the same tensors written as safetensors (the baseline) and as .pt, alternating */
    double best_write[2] = {0, 0}, best_read = 0, open_s = 1e9, t;
    mq_status st;
    for (int r = 0; r < 5; r++) {
        for (int f = 0; f < 2; f++) {
            const char *out = f ? path : st_path;
            t = bench_now();
            st = mq_writer_open(ctx, out, f ? MQ_FORMAT_PYTORCH : MQ_FORMAT_SAFETENSORS, d, nt,
                                NULL, 0, &w);
            for (size_t i = 0; st == MQ_OK && i < nt; i++) st = mq_writer_write(w, src, per);
            if (st == MQ_OK) st = mq_writer_commit(w);
            t = bench_now() - t;
            mq_writer_free(w);
            if (st != MQ_OK) {
                unlink(out);
                fprintf(stderr, "write: %s\n", mq_ctx_message(ctx));
                return 1;
            }
            if ((double)(per * nt) / t > best_write[f]) best_write[f] = (double)(per * nt) / t;
            if (!f) unlink(out);
        }
        mq_model *m = NULL;
        t = bench_now();
        st = mq_model_open(ctx, path, NULL, &m);
        double to = bench_now() - t;
        if (st != MQ_OK) {
            unlink(path);
            fprintf(stderr, "read: %s\n", mq_ctx_message(ctx));
            return 1;
        }
        if (to < open_s) open_s = to;
        uint64_t acc = 0;
        for (size_t i = 0; i < mq_model_tensor_count(m); i++) {
            const mq_tensor *tt = mq_model_tensor(m, i);
            const uint8_t *p = (const uint8_t *)tt->data;
            for (uint64_t j = 0; j < tt->nbytes; j += 64) acc += p[j];
        }
        t = bench_now() - t;
        sink ^= (uint32_t)acc;
        if ((double)(per * nt) / t > best_read) best_read = (double)(per * nt) / t;
        mq_model_free(m);
        unlink(path); /* each repetition writes a new file: the output policy never replaces one */
    }
    printf("pytorch I/O, %zu MiB in %zu tensors (best of 5; memcpy of %zu MiB warmed: %.2f GB/s)\n",
           (per * nt) >> 20, nt, per >> 20, best_copy / 1e9);
    printf("  crc32 (slice-by-8)     %6.2f GB/s  %5.2fx memcpy\n", best_crc[0] / 1e9,
           best_crc[0] / best_copy);
    printf("  crc32 (%-6s)         %6.2f GB/s  %5.2fx memcpy\n", mq_isa_name(mq_ctx_isa(ctx)),
           best_crc[1] / 1e9, best_crc[1] / best_copy);
    printf("  write .safetensors     %6.2f GB/s  %5.2fx memcpy  (file written and fsynced)\n",
           best_write[0] / 1e9, best_write[0] / best_copy);
    printf("  write .pt              %6.2f GB/s  %5.2fx memcpy  %5.2fx safetensors\n",
           best_write[1] / 1e9, best_write[1] / best_copy, best_write[1] / best_write[0]);
    printf("  open + touch each page %6.2f GB/s  %5.2fx memcpy  (open alone %.2f ms)\n",
           best_read / 1e9, best_read / best_copy, open_s * 1e3);
    mq_ctx_free(ctx);
    free(c);
    free(d);
    free(names);
    free(src);
    free(dst);
    return (int)(sink & 0);
}
