/* Error figures of an approximation, accumulated in double. */
#include "quant/quant_internal.h"

#include <math.h>

void mq_error_stats_compute(const float *a, const float *b, size_t n, mq_error_stats *out) {
    if (!out) return;
    double saa = 0, sbb = 0, sab = 0, see = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double x = a[i], y = b[i], d = x - y;
        saa += x * x;
        sbb += y * y;
        sab += x * y;
        see += d * d;
        double ad = fabs(d);
        if (ad > mx || ad != ad) mx = ad; /* a NaN difference shows as NaN */
    }
    out->max_abs = mx;
    out->mse = n ? see / (double)n : 0.0;
    out->sqnr_db = see == 0 ? INFINITY : saa == 0 ? -INFINITY : 10.0 * log10(saa / see);
    out->rel_fro = see == 0 ? 0.0 : saa == 0 ? INFINITY : sqrt(see / saa);
    if (saa == 0 && sbb == 0) out->cosine = 1.0;
    else if (saa == 0 || sbb == 0) out->cosine = 0.0;
    else out->cosine = sab / (sqrt(saa) * sqrt(sbb));
}
