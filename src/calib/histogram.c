/* Histogram re-binning: growing a histogram's range as new batches arrive (PyTorch's
 * HistogramObserver scheme) and adding histograms over different ranges. */
#include "calib/calib_internal.h"

#include <math.h>
#include <stdint.h>

void mq__hist_adjust(float lo, float hi, float lo2, float hi2, int bins, int upsample,
                     float *new_lo, float *new_hi, int64_t *down, int64_t *start) {
    /* float32 throughout, in PyTorch's order of operations, so the grids agree */
    float cmin = lo < lo2 ? lo : lo2, cmax = hi > hi2 ? hi : hi2;
    float cell = (hi - lo) / (float)((int64_t)bins * upsample);
    float span = (float)bins * cell;
    float ratio = ceilf((cmax - cmin) / span);
    float off = nearbyintf((lo - cmin) / cell);
    /* a ratio or offset beyond int64 (or not finite: ranges near FLT_MAX) has no aligned
     * grid; down = INT64_MAX tells the caller to re-bin in general */
    const float lim = 0x1p62f;
    if (!(ratio < lim) || !(off < lim) || !(off >= 0)) {
        *new_lo = cmin;
        *new_hi = cmax;
        *down = INT64_MAX;
        *start = 0;
        return;
    }
    int64_t d = ratio < 1 ? 1 : (int64_t)ratio;
    float e = (float)d * span - (cmax - cmin);
    *new_lo = cmin;
    *new_hi = cmax + e;
    *down = d;
    *start = (int64_t)off;
}

void mq__hist_rebin_aligned(const double *src, int bins, int upsample, int64_t down,
                            int64_t start, double *dst) {
    int64_t last = bins - 1;
    for (int64_t i = 0; i < bins; i++) {
        double h = src[i];
        if (h == 0) continue;
        int64_t f0 = start + i * upsample, f1 = f0 + upsample; /* cells [f0, f1) */
        for (int64_t j = f0 / down; j * down < f1; j++) {
            int64_t a = j * down > f0 ? j * down : f0;
            int64_t b = (j + 1) * down < f1 ? (j + 1) * down : f1;
            dst[j < last ? j : last] += h * (double)(b - a) / (double)upsample;
        }
    }
}

void mq__hist_rebin_general(const double *src, float lo, float hi, int bins, double *dst,
                            float dlo, float dhi) {
    if (!(dhi > dlo)) {
        for (int i = 0; i < bins; i++) dst[0] += src[i];
        return;
    }
    double dw = ((double)dhi - dlo) / bins;
    if (!(hi > lo)) {
        double tot = 0;
        for (int i = 0; i < bins; i++) tot += src[i];
        int64_t j = (int64_t)floor(((double)lo - dlo) / dw);
        dst[j < 0 ? 0 : j >= bins ? bins - 1 : j] += tot;
        return;
    }
    double w = ((double)hi - lo) / bins;
    for (int i = 0; i < bins; i++) {
        double h = src[i];
        if (h == 0) continue;
        double a = (double)lo + i * w - dlo, b = a + w;
        int64_t ja = (int64_t)floor(a / dw), jb = (int64_t)floor(b / dw);
        if (ja < 0) ja = 0;
        if (ja > bins - 1) ja = bins - 1;
        if (jb < 0) jb = 0;
        if (jb > bins - 1) jb = bins - 1;
        if (ja == jb) {
            dst[ja] += h;
            continue;
        }
        /* the edge bins take whatever lies beyond them, so nothing is lost */
        for (int64_t j = ja; j <= jb; j++) {
            double l = j == ja ? a : j * dw, r = j == jb ? b : (j + 1) * dw;
            if (r > l) dst[j] += h * (r - l) / w;
        }
    }
}
