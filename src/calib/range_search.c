/* Range searches over a channel's histogram: PyTorch's L2 search (HistogramObserver), KL
 * divergence (entropy), percentile and MSE-optimal clipping; and the range -> qparams rule. */
#include "calib/calib_internal.h"
#include "quant/quant_internal.h"

#include <float.h>
#include <math.h>
#include <string.h>

bool mq__obs_qrange(mq_qtype t, int *qmin, int *qmax) {
    mq_qformat f;
    if (!mq__qformat(t, &f)) return false;
    *qmin = f.qmin;
    *qmax = f.qmax;
    return true;
}

void mq__obs_range_qparams(float lo, float hi, mq_qtype type, mq_scheme scheme, int qmin,
                           int qmax, float *scale, int32_t *zero_point) {
    (void)type; /* the range says it all: signed types have qmin < 0 */
    mq_qformat f;
    memset(&f, 0, sizeof f);
    f.qmin = qmin;
    f.qmax = qmax;
    mq_qparam p = mq__qparam_minmax(&f, scheme, lo, hi);
    *scale = p.scale;
    *zero_point = p.zp;
}

/* ---- L2 search: PyTorch's HistogramObserver._non_linear_param_search, float32 where
 * PyTorch computes in float32 tensors and double where it uses Python floats ---- */

/* torch.div(a, b, rounding_mode='floor') for floats (Python's floor division). */
static float floor_div(float a, float b) {
    float mod = fmodf(a, b);
    float div = (a - mod) / b;
    if (mod != 0 && ((b < 0) != (mod < 0))) div -= 1.0f;
    float fl;
    if (div != 0) {
        fl = floorf(div);
        if (div - fl > 0.5f) fl += 1.0f;
    } else {
        fl = copysignf(0.0f, a / b);
    }
    return fl;
}

static float l2_norm(float db, float de, float density) {
    return density * ((de * de * de - db * db * db) / 3.0f);
}

static double l2_error(const float *h, int bins, float min_val, float max_val, int dst_nbins,
                       int64_t start_bin, int64_t end_bin) {
    double bin_width = ((double)max_val - (double)min_val) / bins;
    double dst_w = bin_width * (double)(end_bin - start_bin + 1) / dst_nbins;
    if (dst_w == 0.0) return 0.0;
    float bw = (float)bin_width, dw = (float)dst_w, half = (float)(dst_w / 2);
    float top = (float)(dst_nbins - 1);
    float mid = l2_norm((float)(-dst_w / 2), half, 1.0f);
    double sum = 0;
    for (int64_t i = 0; i < bins; i++) {
        if (h[i] == 0) continue;
        float begin = (float)(i - start_bin) * bw;
        float end = begin + bw;
        float b0 = floor_div(begin, dw);
        b0 = b0 < 0 ? 0 : b0 > top ? top : b0;
        float b0c = (b0 + 0.5f) * dw;
        float e0 = floor_div(end, dw);
        e0 = e0 < 0 ? 0 : e0 > top ? top : e0;
        float density = h[i] / bw;
        float norm = l2_norm(begin - b0c, half, density);
        norm += (e0 - b0 - 1.0f) * (density * mid);
        float e0c = e0 * dw + half;
        norm += l2_norm((float)(-dst_w / 2), end - e0c, density);
        sum += norm;
    }
    return (double)(float)sum;
}

void mq__search_l2(const double *hist, int bins, float min_val, float max_val, int dst_nbins,
                   mq_search_scratch *s, float *lo, float *hi) {
    float *h = s->f, *csum = s->f + bins;
    double total_d = 0;
    float run = 0;
    for (int i = 0; i < bins; i++) {
        h[i] = (float)hist[i];
        total_d += h[i];
        run += h[i];
        csum[i] = run;
    }
    double total = (double)(float)total_d;
    float bin_width = (max_val - min_val) / (float)bins;
    double alpha = 0.0, beta = 1.0, norm_min = INFINITY;
    int64_t start = 0, end = bins - 1;
    while (alpha < beta) {
        double na = alpha + 1e-5, nb = beta - 1e-5;
        float ta = (float)(na * total), tb = (float)(nb * total);
        int64_t l = start, r = end;
        while (l < end && csum[l] < ta) l++;
        while (r > start && csum[r] > tb) r--;
        int64_t ns = start, ne = end;
        if (l - start > end - r) {
            ns = l;
            alpha = na;
        } else {
            ne = r;
            beta = nb;
        }
        if (ns == start && ne == end) continue;
        double norm = l2_error(h, bins, min_val, max_val, dst_nbins, ns, ne);
        if (norm > norm_min) break;
        norm_min = norm;
        start = ns;
        end = ne;
    }
    *lo = min_val + bin_width * (float)start;
    *hi = min_val + bin_width * (float)(end + 1);
}

/* Folds a histogram over [min_val, max_val] into one of |x| over [0, amax] (same number of
 * bins), spreading each bin uniformly over the part of [0, amax] it covers. */
static double fold_abs(const double *hist, int bins, float min_val, float max_val, double *out) {
    double amax = fmax(fabs((double)min_val), fabs((double)max_val));
    for (int i = 0; i < bins; i++) out[i] = 0;
    if (amax == 0) {
        for (int i = 0; i < bins; i++) out[0] += hist[i];
        return 0;
    }
    double w = ((double)max_val - min_val) / bins, aw = amax / bins;
    for (int i = 0; i < bins; i++) {
        double h = hist[i];
        if (h == 0) continue;
        double a = (double)min_val + i * w, b = a + w;
        if (w == 0) {
            int64_t j = (int64_t)(fabs(a) / aw);
            out[j < bins ? j : bins - 1] += h;
            continue;
        }
        /* the pieces [a, b] ∩ (-inf, 0] and [a, b] ∩ [0, inf) as |x| intervals */
        double pieces[2][2] = {{-fmin(b, 0), -fmin(a, 0)}, {fmax(a, 0), fmax(b, 0)}};
        for (int p = 0; p < 2; p++) {
            double l = pieces[p][0], r = pieces[p][1];
            if (r <= l) continue;
            double mass = h * (r - l) / w;
            int64_t jl = (int64_t)(l / aw), jr = (int64_t)(r / aw);
            if (jl >= bins) jl = bins - 1;
            if (jr >= bins) jr = bins - 1;
            for (int64_t j = jl; j <= jr; j++) {
                double cl = j == jl ? l : j * aw, cr = j == jr ? r : (j + 1) * aw;
                if (cr > cl) out[j] += mass * (cr - cl) / (r - l);
            }
        }
    }
    return amax;
}

static void clip_range(float min_val, float max_val, double t, float *lo, float *hi) {
    float ft = (float)t;
    *lo = min_val < -ft ? -ft : min_val;
    *hi = max_val > ft ? ft : max_val;
}

void mq__search_entropy(const double *hist, int bins, float min_val, float max_val,
                        int levels, mq_search_scratch *s, float *lo,
                        float *hi) {
    double *ah = s->a, *q = s->b;
    double amax = fold_abs(hist, bins, min_val, max_val, ah);
    if (amax == 0 || bins <= levels) {
        *lo = min_val, *hi = max_val;
        return;
    }
    double total = 0, *beyond_at = s->c; /* beyond_at[i] = sum of ah[i..bins) */
    beyond_at[bins] = 0;
    for (int i = bins - 1; i >= 0; i--) beyond_at[i] = beyond_at[i + 1] + ah[i];
    total = beyond_at[0];
    double best = INFINITY;
    int best_i = bins;
    for (int i = levels; i <= bins; i++) {
        /* P: ah[0, i) with everything beyond folded into its last bin */
        double beyond = beyond_at[i];
        /* Q: ah[0, i) merged into `levels` groups, each spread over its nonzero bins */
        double qtot = 0;
        for (int g = 0; g < levels; g++) {
            int64_t a = (int64_t)g * i / levels, b = (int64_t)(g + 1) * i / levels;
            double sum = 0;
            int nz = 0;
            for (int64_t k = a; k < b; k++) {
                double pk = ah[k] + (k == i - 1 ? beyond : 0);
                sum += ah[k];
                nz += pk != 0;
            }
            for (int64_t k = a; k < b; k++) {
                double pk = ah[k] + (k == i - 1 ? beyond : 0);
                q[k] = pk != 0 && nz ? sum / nz : 0;
            }
            qtot += sum;
        }
        if (qtot <= 0) continue;
        double kl = 0;
        for (int k = 0; k < i; k++) {
            double pk = ah[k] + (k == i - 1 ? beyond : 0);
            if (pk == 0) continue;
            double pp = pk / total;
            double qq = q[k] > 0 ? q[k] / qtot : 1e-12;
            kl += pp * log(pp / qq);
        }
        if (kl < best) {
            best = kl;
            best_i = i;
        }
    }
    double t = amax * best_i / bins;
    clip_range(min_val, max_val, t, lo, hi);
}

/* Position below which a fraction `f` of the mass of `h` (over [a, a + bins*w]) lies. */
static double quantile(const double *h, int bins, double a, double w, double total, double f) {
    double target = f * total, cum = 0;
    for (int i = 0; i < bins; i++) {
        if (h[i] > 0 && cum + h[i] >= target) {
            double frac = (target - cum) / h[i];
            return a + w * (i + (frac < 0 ? 0 : frac > 1 ? 1 : frac));
        }
        cum += h[i];
    }
    return a + w * bins;
}

void mq__search_percentile(const double *hist, int bins, float min_val, float max_val,
                           double percentile, bool symmetric, mq_search_scratch *s, float *lo,
                           float *hi) {
    double total = 0;
    for (int i = 0; i < bins; i++) total += hist[i];
    if (total <= 0 || !(max_val > min_val)) {
        *lo = min_val, *hi = max_val;
        return;
    }
    double f = percentile / 100.0;
    if (symmetric) {
        double amax = fold_abs(hist, bins, min_val, max_val, s->a);
        double t = quantile(s->a, bins, 0, amax / bins, total, f);
        clip_range(min_val, max_val, t, lo, hi);
        return;
    }
    double w = ((double)max_val - min_val) / bins;
    double l = quantile(hist, bins, min_val, w, total, 1.0 - f);
    double h = quantile(hist, bins, min_val, w, total, f);
    *lo = (float)l < min_val ? min_val : (float)l;
    *hi = (float)h > max_val ? max_val : (float)h;
    if (*hi < *lo) *hi = *lo;
}

/* MSE clipping. Values inside the range cost scale^2/12 each (uniform rounding noise),
 * values outside cost their squared distance to the range edge. Prefix sums of n, n*c and
 * n*c^2 over bin centres c give the cost of any range whose ends are bin edges in O(1). */
typedef struct mse_sums {
    const double *n, *s1, *s2; /* prefix sums: [0, k) for k in 0..bins */
    double origin, w;          /* edge k is at origin + k * w */
    int qspan;
} mse_sums;

static double mse_cost(const mse_sums *m, int64_t ia, int64_t ib, double lo, double hi,
                       int bins) {
    double scale = (hi - lo) / m->qspan;
    double in = m->n[ib] - m->n[ia];
    double cost = in * scale * scale / 12.0;
    /* below: sum n (c - lo)^2 over [0, ia) */
    cost += m->s2[ia] - 2 * lo * m->s1[ia] + lo * lo * m->n[ia];
    double n_hi = m->n[bins] - m->n[ib], s1_hi = m->s1[bins] - m->s1[ib],
           s2_hi = m->s2[bins] - m->s2[ib];
    cost += s2_hi - 2 * hi * s1_hi + hi * hi * n_hi;
    return cost;
}

void mq__search_mse(const double *hist, int bins, float min_val, float max_val, int qmin,
                    int qmax, bool symmetric, mq_search_scratch *s, float *lo, float *hi) {
    if (!(max_val > min_val)) {
        *lo = min_val, *hi = max_val;
        return;
    }
    const double *h = hist;
    double origin = min_val, w = ((double)max_val - min_val) / bins;
    if (symmetric) {
        double amax = fold_abs(hist, bins, min_val, max_val, s->c);
        h = s->c;
        origin = 0;
        w = amax / bins;
    }
    double *n = s->a, *s1 = s->b, *s2 = s->b + 2 * bins + 2;
    n[0] = s1[0] = s2[0] = 0;
    for (int k = 0; k < bins; k++) {
        double c = origin + (k + 0.5) * w;
        n[k + 1] = n[k] + h[k];
        s1[k + 1] = s1[k] + h[k] * c;
        s2[k + 1] = s2[k] + h[k] * c * c;
    }
    mse_sums m = {n, s1, s2, origin, w, qmax - qmin};
    if (symmetric) {
        /* range [-t, t] with t at a bin edge of the |x| histogram */
        double best = INFINITY, bt = w * bins;
        for (int64_t k = 1; k <= bins; k++) {
            double t = k * w;
            double scale = 2 * t / m.qspan;
            double cost = n[k] * scale * scale / 12.0 +
                          (s2[bins] - s2[k]) - 2 * t * (s1[bins] - s1[k]) +
                          t * t * (n[bins] - n[k]);
            if (cost < best) best = cost, bt = t;
        }
        clip_range(min_val, max_val, bt, lo, hi);
        return;
    }
    /* asymmetric: ends at bin edges on either side of 0 (the range always holds 0), found by
     * alternating one-dimensional searches from the full range */
    int64_t zero = (int64_t)floor((0 - origin) / w); /* bin holding 0, may be outside */
    int64_t ia_max = zero < 0 ? 0 : zero > bins ? bins : zero;
    int64_t ib_min = zero + 1 < 0 ? 0 : zero + 1 > bins ? bins : zero + 1;
    int64_t ia = 0, ib = bins;
#define EDGE_LO(k) (fmin(origin + (k) * w, 0.0))
#define EDGE_HI(k) (fmax(origin + (k) * w, 0.0))
    double best = mse_cost(&m, ia, ib, EDGE_LO(ia), EDGE_HI(ib), bins);
    for (int it = 0; it < 8; it++) {
        int64_t pa = ia, pb = ib;
        for (int64_t k = 0; k <= ia_max; k++) {
            double c = mse_cost(&m, k, ib, EDGE_LO(k), EDGE_HI(ib), bins);
            if (c < best) best = c, ia = k;
        }
        for (int64_t k = ib_min; k <= bins; k++) {
            double c = mse_cost(&m, ia, k, EDGE_LO(ia), EDGE_HI(k), bins);
            if (c < best) best = c, ib = k;
        }
        if (pa == ia && pb == ib) break;
    }
    *lo = (float)EDGE_LO(ia);
    *hi = (float)EDGE_HI(ib);
    if (*lo < min_val) *lo = min_val;
    if (*hi > max_val) *hi = max_val;
#undef EDGE_LO
#undef EDGE_HI
}
