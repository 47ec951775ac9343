/* GPTQ's column loop vectorized across rows (quantize.c, gptq_rows): the same operations per
 * element as the row-by-row loop, so the same bytes. */
#ifndef MQ_QUANT_GPTQ_COLS_H
#define MQ_QUANT_GPTQ_COLS_H

#include "quant/quant_internal.h"

enum { MQ__GPTQ_LANES = 16 };

/* Columns [c0, c1) of a column block of nb columns, for nrow <= 16 rows held column by
 * column (w[16 c + r]). Column c of row r is rounded with that row's parameters (q[r]:
 * scale, inv, lo, hi; code offset add[r]) into codes[16 c + r]; its scaled error
 * e = (w - round(w) scale) / u[c][c] updates the later columns of the block,
 * w[c'] = fmaf(-e, u[c][c'], w[c']), and -e goes to et[c ldet + r]. u[c][c'] is
 * u[c ldu + c']. Returns the first column found not finite, or -1. */
typedef int64_t (*mq__gptq_cols_fn)(int64_t c0, int64_t c1, int64_t nb, float *w,
                                    const float *u, int64_t ldu, const mq_qround *q,
                                    const int32_t *add, uint8_t *codes, float *et,
                                    int64_t ldet, int nrow);

typedef struct mq__gptq_cols_fns {
    mq__gptq_cols_fn cols;
} mq__gptq_cols_fns;

/* NULL when the context's level has no such path (callers keep the row loop). */
MQ_HIDDEN mq__gptq_cols_fn mq__gptq_cols_pick(const mq_ctx *ctx);
MQ_HIDDEN extern const mq__gptq_cols_fns mq__gptq_cols_avx512;

#endif
