/* The 4-bit scale search without weights, errors in 16-bit fixed point (mq_qfix): the
 * specification that every table's search_fix reproduces. */
#include "quant/quant_internal.h"

bool mq__search_fix_applies(const mq_qformat *f, float mn, float mx) {
    float amax = -mn > mx ? -mn : mx;
    return f->bits == 4 && amax >= MQ_QFIX_AMIN && amax <= MQ_QFIX_AMAX;
}

/* The first candidate of least error; *err receives it. */
static int best_candidate_fix(const mq_qformat *f, const mq_qcand *cand, int nc, const float *x,
                              size_t n, float amax, mq__sqerr_fix_fn sqerr, mq_fix_err *err) {
    mq_qfix q[MQ_MAX_CANDIDATES];
    int64_t d[MQ_MAX_CANDIDATES];
    for (int c = 0; c < nc; c++) q[c] = mq__qfix_init(f, cand[c].p, amax);
    sqerr(x, n, MQ_QFIX_ONE / amax, q, nc, d);
    int best = 0;
    *err = (mq_fix_err){d[0], q[0].m};
    for (int c = 1; c < nc; c++) {
        mq_fix_err e = {d[c], q[c].m};
        if (mq__fix_less(e, *err)) {
            best = c;
            *err = e;
        }
    }
    return best;
}

mq_qparam mq__search_fix(const mq_qformat *f, mq_scheme scheme, const float *x, size_t n,
                         float mn, float mx, mq__sqerr_fix_fn sqerr) {
    mq_qcand cand[MQ_MAX_CANDIDATES];
    float amax = -mn > mx ? -mn : mx;
    int nc = mq__qcandidates(f, scheme, mn, mx, 0, 1.0f, cand);
    mq_fix_err e0, e1;
    mq_qcand win = cand[best_candidate_fix(f, cand, nc, x, n, amax, sqerr, &e0)];
    nc = mq__qcandidates(f, scheme, mn, mx, 1, win.ratio, cand);
    if (nc == 0) return win.p;
    int b = best_candidate_fix(f, cand, nc, x, n, amax, sqerr, &e1);
    return mq__fix_less(e1, e0) ? cand[b].p : win.p;
}
