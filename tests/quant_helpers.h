/* Test helpers shared by the quantization tests: quantize a whole tensor into freshly
 * allocated buffers, in several calls of consecutive rows, and compare two results. */
#ifndef MQ_TEST_QUANT_HELPERS_H
#define MQ_TEST_QUANT_HELPERS_H

#include "monoquant.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct qres {
    mq_status st;
    mq_qlayout L;
    uint8_t *data;
    float *scale;
    uint8_t *zp;
} qres;

static void qres_free(qres *r) {
    free(r->data);
    free(r->scale);
    free(r->zp);
    memset(r, 0, sizeof *r);
}

/* Quantizes the whole tensor in `nchunks` calls of consecutive rows, with calibration data
 * `calib` (may be NULL). */
static qres quantize_chunks_with(mq_ctx *ctx, const mq_qspec *spec, const mq_calib_data *calib,
                                 int ndim, const int64_t *shape, mq_dtype dt, const void *src,
                                 int nchunks) {
    qres r;
    memset(&r, 0, sizeof r);
    r.st = mq_qlayout_init(ctx, spec, ndim, shape, &r.L);
    if (r.st != MQ_OK) return r;
    r.data = calloc(1, r.L.data_bytes + 1);
    r.scale = calloc((size_t)r.L.nscales + 1, sizeof(float));
    r.zp = calloc((size_t)r.L.nscales + 1, 1);
    for (int c = 0; c < nchunks && r.st == MQ_OK; c++) {
        int64_t b = r.L.rows * c / nchunks, e = r.L.rows * (c + 1) / nchunks;
        if (b == e) continue;
        r.st = mq_quantize_rows(ctx, spec, &r.L, calib, dt, src, b, e,
                                r.data + b * r.L.row_bytes, r.scale,
                                r.L.has_zero_point ? r.zp : NULL);
    }
    return r;
}

static inline qres quantize_chunks(mq_ctx *ctx, const mq_qspec *spec, int ndim,
                                   const int64_t *shape, mq_dtype dt, const void *src,
                                   int nchunks) {
    return quantize_chunks_with(ctx, spec, NULL, ndim, shape, dt, src, nchunks);
}

static int same_result(const qres *a, const qres *b) {
    if (a->st != MQ_OK || b->st != MQ_OK) return 0;
    if (memcmp(a->data, b->data, a->L.data_bytes)) return 0;
    if (memcmp(a->scale, b->scale, (size_t)a->L.nscales * 4)) return 0;
    return !a->L.has_zero_point || !memcmp(a->zp, b->zp, (size_t)a->L.nscales);
}

#endif
