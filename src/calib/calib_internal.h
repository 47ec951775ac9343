/* Calibration internals: the observer object, batch iteration over strided views, histogram
 * re-binning and the range searches. */
#ifndef MQ_CALIB_INTERNAL_H
#define MQ_CALIB_INTERNAL_H

#include "common/internal.h"

/* ---- batches: a strided view of F32/F16/BF16/F64 values, walked in row-major order ---- */

typedef struct mq_batch_view {
    const uint8_t *base;
    mq_dtype dtype;
    int ndim;                    /* after coalescing; >= 1 */
    int64_t shape[MQ_MAX_DIMS];
    int64_t stride[MQ_MAX_DIMS]; /* elements */
    int axis;                    /* channel dimension after coalescing, -1 per tensor */
    uint64_t numel;
    int orig_ndim;               /* for messages */
    int64_t orig_shape[MQ_MAX_DIMS];
} mq_batch_view;

/* Validates and coalesces a view. `what` names the caller in messages. axis < 0 counts from
 * the end; per_tensor ignores it. channels > 0: shape[axis] must equal it. */
MQ_HIDDEN mq_status mq__batch_view_init(mq_ctx *ctx, const char *what, mq_dtype dtype,
                                        const void *x, int ndim, const int64_t *shape,
                                        const int64_t *strides, int axis, bool per_tensor,
                                        int64_t channels, mq_batch_view *out);

/* Receives a chunk of values converted to float: element i belongs to channel
 * ch + i * ch_step (ch_step 0 or 1). `first` is the row-major index of v[0] in the batch.
 * Returns false to stop (after recording why in the argument). */
typedef bool (*mq_chunk_fn)(void *arg, const float *v, int64_t n, int64_t ch, int ch_step,
                            uint64_t first);
/* Walks the view in chunks. Returns false when fn stopped it. */
MQ_HIDDEN bool mq__batch_view_walk(const mq_batch_view *view, mq_chunk_fn fn, void *arg);
/* Formats the row-major index `flat` of the original shape as "[i, j, ...]". */
MQ_HIDDEN void mq__batch_view_index(const mq_batch_view *view, uint64_t flat, char *buf,
                                    size_t cap);

/* ---- the observer ---- */

struct mq_observer {
    mq_ctx *ctx;
    mq_observer_options opts;
    int64_t np;           /* parameter pairs */
    int qmin, qmax;
    float *min_val, *max_val;  /* [np]; +inf / -inf while empty */
    double *hist;              /* [np * bins], histogram kinds */
    int64_t count, batches;
    /* scratch, kept between batches (fresh pages are slow) */
    float *bmin, *bmax;        /* [np] batch range */
    float *nlo, *nhi;          /* [np] new histogram range */
    double *hist_next;         /* [np * bins] */
    mq_tensor state[5];
};

static inline bool mq__obs_has_hist(mq_observer_kind k) {
    return k == MQ_OBS_HISTOGRAM || k == MQ_OBS_ENTROPY || k == MQ_OBS_PERCENTILE ||
           k == MQ_OBS_MSE;
}

/* The caller's options (NULL: MQ_OBS_MINMAX) read as a full struct (ABI policy). */
MQ_HIDDEN mq_status mq__observer_options_read(mq_ctx *ctx, const mq_observer_options *opts,
                                              mq_observer_options *out);
/* Quantized range of a type: [qmin, qmax] (the format table). False for a type observers do
 * not support. */
MQ_HIDDEN bool mq__obs_qrange(mq_qtype t, int *qmin, int *qmax);

/* Scale and zero point of the range [lo, hi]: the min/max rule of src/quant/qparams.c
 * (PyTorch's _calculate_qparams). */
MQ_HIDDEN void mq__obs_range_qparams(float lo, float hi, mq_qtype type, mq_scheme scheme,
                                     int qmin, int qmax, float *scale, int32_t *zero_point);

/* ---- histograms (histogram.c) ---- */

/* Bin of x in [lo, hi] with `bins` bins (torch.histc): the last bin includes hi. */
static inline int64_t mq__hist_bin(float x, float lo, float hi, int bins) {
    if (!(hi > lo)) return 0;
    float f = ((x - lo) * (float)bins) / (hi - lo);
    /* clamp before converting: a range that overflows float32 makes f NaN or Inf */
    if (!(f >= 0.0f)) return 0;
    if (f >= (float)bins) return bins - 1;
    return (int64_t)f;
}

/* Range that a histogram over [lo, hi] grows to so that it covers [lo2, hi2] on a grid
 * aligned with its own (PyTorch's _adjust_min_max): *down is the downsampling rate and
 * *start the offset of lo in upsampled cells. *down = INT64_MAX: no aligned grid (a range
 * too wide for one, e.g. near FLT_MAX); re-bin with mq__hist_rebin_general. */
MQ_HIDDEN void mq__hist_adjust(float lo, float hi, float lo2, float hi2, int bins, int upsample,
                               float *new_lo, float *new_hi, int64_t *down, int64_t *start);
/* Adds `src` (over [lo, hi]) to `dst` (over [new_lo, new_hi] from mq__hist_adjust): every
 * source bin is spread uniformly over `upsample` cells and the cells summed by `down`. */
MQ_HIDDEN void mq__hist_rebin_aligned(const double *src, int bins, int upsample, int64_t down,
                                      int64_t start, double *dst);
/* Adds `src` (over [lo, hi]) to `dst` (over [dlo, dhi] ⊇ [lo, hi]) in proportion to overlap.
 * A degenerate source range (lo == hi) puts everything into the bin holding lo. */
MQ_HIDDEN void mq__hist_rebin_general(const double *src, float lo, float hi, int bins,
                                      double *dst, float dlo, float dhi);

/* ---- range searches (range_search.c): each picks [lo, hi] for one channel ---- */

typedef struct mq_search_scratch {
    double *a, *b, *c; /* each >= 4 * bins */
    float *f;          /* >= 2 * bins */
} mq_search_scratch;

MQ_HIDDEN void mq__search_l2(const double *hist, int bins, float min_val, float max_val,
                             int dst_nbins, mq_search_scratch *s, float *lo, float *hi);
MQ_HIDDEN void mq__search_entropy(const double *hist, int bins, float min_val, float max_val,
                                  int levels, mq_search_scratch *s, float *lo,
                                  float *hi);
MQ_HIDDEN void mq__search_percentile(const double *hist, int bins, float min_val,
                                     float max_val, double percentile, bool symmetric,
                                     mq_search_scratch *s, float *lo, float *hi);
MQ_HIDDEN void mq__search_mse(const double *hist, int bins, float min_val, float max_val,
                              int qmin, int qmax, bool symmetric, mq_search_scratch *s,
                              float *lo, float *hi);

/* A calibrator and its layers (calibrator.c; read back from a file by calibrator_open.c). */
typedef struct cal_layer {
    char *name;
    int64_t channels;
    mq_observer *obs;
    double *sum_sq;  /* [channels] */
    float *max_abs;  /* [channels] */
    uint64_t rows;
    double *xtx;     /* --hessian: [channels, channels] sum of x x^T (lower triangle) */
    bool no_hessian; /* an input was not [..., channels] (Conv): the Hessian is dropped */
} cal_layer;

struct mq_calibrator {
    mq_ctx *ctx;
    mq_observer_options opts;
    cal_layer *layers;
    size_t n, cap;
    bool hessian;
    float *hbuf;     /* a batch as f32 column blocks (calibrator.c), reused */
    size_t hbuf_cap;
    float *tiles;    /* per thread: HT_M x HT_N f32 partial sums, and a gemm workspace */
    int ntiles;
};

#endif
