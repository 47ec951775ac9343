/* mq_quantize_file: plan -> header -> stream each tensor in row chunks through the
 * quantizer into the writer -> error figures -> commit. Buffers are allocated once at their
 * largest chunk size and reused; input pages already consumed are handed back to the kernel,
 * so memory stays bounded whatever the model size. */
#include "pipeline/pipeline_internal.h"
#include "pipeline/hf_folder.h"
#include "pipeline/readahead.h"
#include "io/io.h"
#include "quant/quant_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Elements per chunk: a few MB of F32 scratch, enough rows for every thread. */
#define CHUNK_ELEMS ((int64_t)1 << 20)
/* Bytes of an unconverted tensor passed to the writer at a time. */
#define COPY_SLICE ((uint64_t)8 << 20)

/* Rows per chunk of a tensor with rows of `cols`: about CHUNK_ELEMS elements, in whole parts
 * of the error figures (mq__err_rows_per_part), so that they are summed as
 * mq_qmodel_error sums them. */
static int64_t chunk_rows(int64_t cols) {
    int64_t r = CHUNK_ELEMS / (cols ? cols : 1), k = mq__err_rows_per_part(cols);
    return r < k ? k : r / k * k;
}

typedef struct stream {
    mq_ctx *ctx;
    const mq_model *model;
    const mq__plan *plan;
    mq__emit em;
    const mq_quantize_options *opts;
    uint8_t *out;        /* converted chunk */
    uint8_t *in;         /* a chunk of source rows read from the file */
    uint8_t *in_next;    /* the next piece, being read ahead (as large as `in`) */
    size_t in_cap;
    mq__readahead ra;
    const void *after;   /* the first piece the next tensor reads into `in` (after_n 0: none) */
    uint64_t after_n;
    float *deq;          /* F32 scratch: the dequantized chunk */
    size_t out_cap, f32_cap;
    float *scale;        /* whole-tensor scales */
    uint8_t *zp;
    size_t scale_cap, zp_cap;
    uint64_t done, total; /* input bytes, for progress */
    const uint8_t *rel_begin, *rel_end; /* consumed input not yet handed back */
    uint64_t ns[MQ_PHASE_BACKGROUND_WRITE + 1]; /* time per phase */
} stream;

/* Phase timing: t = lap(s, t, PHASE) charges the time since t to PHASE. */
static uint64_t lap(stream *s, uint64_t t, mq_phase phase) {
    uint64_t now = mq__now_ns();
    s->ns[phase] += now - t;
    return now;
}

/* Bytes to the output stream, timed as writing. */
static mq_status emit(stream *s, const void *p, size_t n) {
    uint64_t t = mq__now_ns();
    mq_status st = mq__emit_write(&s->em, p, n);
    lap(s, t, MQ_PHASE_WRITE);
    return st;
}

/* Input [p, p+n) is read next, [p+n, p+n+ahead) after it. */
static void will_read(stream *s, const void *p, uint64_t n, uint64_t ahead) {
    uint64_t t = mq__now_ns();
    mq__model_will_read(s->model, p, n, (const uint8_t *)p + n, ahead);
    lap(s, t, MQ_PHASE_READ);
}

/* Consumed input is handed back RELEASE_STEP at a time, ending on a huge-page boundary:
 * each call makes the kernel interrupt the other threads to flush their TLBs, and a range
 * that ends inside a huge page mapping splits it. */
#define RELEASE_STEP ((uint64_t)8 << 20)
#define HUGE_PAGE ((uintptr_t)2 << 20)

/* all: the whole pending range; else up to its last huge-page boundary. */
static void release_pending(stream *s, bool all) {
    const uint8_t *e = all ? s->rel_end
                           : (const uint8_t *)((uintptr_t)s->rel_end & ~(HUGE_PAGE - 1));
    if (e > s->rel_begin) {
        mq__model_release(s->model, s->rel_begin, (uint64_t)(e - s->rel_begin));
        s->rel_begin = e;
    }
    if (all) s->rel_begin = s->rel_end = NULL;
}

static void release(stream *s, const void *p, uint64_t n) {
    const uint8_t *b = (const uint8_t *)p;
    if (b != s->rel_end) {
        release_pending(s, true);
        s->rel_begin = b;
    }
    s->rel_end = b + n;
    if ((uint64_t)(s->rel_end - s->rel_begin) >= RELEASE_STEP) release_pending(s, false);
}

static mq_status ensure(mq_ctx *ctx, void **buf, size_t *cap, size_t need) {
    if (need <= *cap) return MQ_OK;
    mq__free(ctx, *buf);
    *cap = 0;
    *buf = mq__malloc(ctx, need);
    if (!*buf) return MQ_ERR_NOMEM;
    *cap = need;
    return MQ_OK;
}

/* Input [p, p+n) into s->in (*got), read ahead or now, then asks for [next, next+next_n)
 * in the spare buffer. *got false: not in a file mapping (read it there). */
static mq_status read_piece(stream *s, const void *p, uint64_t n, const void *next,
                            uint64_t next_n, bool *got) {
    uint64_t t = mq__now_ns();
    *got = mq__readahead_take(&s->ra, p, n, s->in_next);
    if (*got) {
        uint8_t *full = s->in_next;
        s->in_next = s->in;
        s->in = full;
    } else {
        mq_status st = mq__model_read(s->model, p, n, s->in, got);
        if (st != MQ_OK) return st;
    }
    if (*got && next_n <= s->in_cap) mq__readahead_ask(&s->ra, next, next_n, s->in_next);
    lap(s, t, MQ_PHASE_READ);
    return MQ_OK;
}

static mq_status progress(stream *s, const char *name, uint64_t add) {
    s->done += add;
    return mq__progress(s->ctx, name, s->done, s->total);
}

static mq_status copy_tensor(stream *s, const mq__plan_entry *e) {
    const mq_tensor *t = e->src;
    const uint8_t *p = (const uint8_t *)t->data;
    for (uint64_t off = 0; off < t->nbytes; off += COPY_SLICE) {
        uint64_t k = t->nbytes - off < COPY_SLICE ? t->nbytes - off : COPY_SLICE;
        uint64_t next = t->nbytes - off - k < COPY_SLICE ? t->nbytes - off - k : COPY_SLICE;
        /* through the buffer, as quantized rows are (size_buffers made it large enough) */
        bool got = false;
        if (k <= s->in_cap)
            MQ_TRY(read_piece(s, p + off, k, next ? p + off + k : s->after,
                              next ? next : s->after_n, &got));
        if (got) {
            MQ_TRY(emit(s, s->in, (size_t)k));
            MQ_TRY(progress(s, t->name, k));
            continue;
        }
        will_read(s, p + off, k, next);
        MQ_TRY(emit(s, p + off, (size_t)k));
        release(s, p + off, k);
        MQ_TRY(progress(s, t->name, k));
    }
    return MQ_OK;
}

static mq_status nonfinite_error(stream *s, const mq_tensor *t) {
    return mq__fail(s->ctx, MQ_ERR_QUANT,
                    "tensor '%s': contains NaN or Inf (--skip-nonfinite keeps such tensors "
                    "unconverted)", t->name);
}

/* Element i of a cast chunk is finite in the source: `f` holds the chunk as f32, exact for
 * every source but F64, which is read again. */
static bool src_finite(const mq_tensor *t, const uint8_t *src, const float *f, size_t i) {
    if (t->dtype != MQ_F64) return isfinite(f[i]);
    double d;
    memcpy(&d, src + 8 * i, 8);
    return isfinite(d);
}

/* Cast values that overflowed to Inf from a finite source: an error naming the tensor and
 * the element, or (opts.clamp_casts) saturated to the largest finite value and counted.
 * `f` holds the source chunk as f32. */
static mq_status cast_overflow(stream *s, const mq__plan_entry *e, uint64_t first, size_t n,
                               const float *f, uint64_t *clamped) {
    const mq_tensor *t = e->src;
    bool f16 = e->spec.type == MQ_Q_FP16;
    uint16_t inf = f16 ? 0x7c00 : 0x7f80, top = f16 ? 0x7bff : 0x7f7f;
    uint8_t *h = s->out;
    for (size_t i = 0; i < n; i++) {
        uint16_t v = mq__load_le16(h + 2 * i);
        if ((v & 0x7fff) != inf) continue;
        if (!s->opts->clamp_casts)
            return mq__fail(s->ctx, MQ_ERR_QUANT,
                            "tensor '%s': element %llu (%g) is beyond the %s range (largest "
                            "finite value %g); --clamp saturates such values",
                            t->name, (unsigned long long)(first + i), (double)f[i],
                            f16 ? "FP16" : "BF16", f16 ? 65504.0 : 3.3895313892515355e38);
        mq__store_le16(h + 2 * i, (uint16_t)((v & 0x8000) | top));
        (*clamped)++;
    }
    return MQ_OK;
}

/* Elements of a row of `t` (its first dimension is the rows), and per chunk of a cast: whole
 * rows, so that its error figures are summed as mq_qmodel_error sums them. */
static uint64_t row_elems(const mq_tensor *t) {
    return t->ndim && t->shape[0] ? t->numel / (uint64_t)t->shape[0] : t->numel;
}

static uint64_t cast_chunk(const mq_tensor *t) {
    uint64_t n = (uint64_t)chunk_rows((int64_t)row_elems(t)) * row_elems(t);
    return n < t->numel ? n : t->numel;
}

static mq_status cast_tensor(stream *s, const mq__plan_entry *e, mq__err_acc *acc,
                             uint64_t *clamped) {
    const mq_tensor *t = e->src;
    mq_dtype dt = e->spec.type == MQ_Q_FP16 ? MQ_F16 : MQ_BF16;
    size_t es = mq_dtype_size(t->dtype);
    uint64_t chunk = cast_chunk(t);
    for (uint64_t off = 0; off < t->numel; off += chunk) {
        size_t n = (size_t)(t->numel - off < chunk ? t->numel - off : chunk);
        const uint8_t *src = (const uint8_t *)t->data + off * es;
        uint64_t left = t->numel - off - n;
        will_read(s, src, n * es, (left < chunk ? left : chunk) * es);
        uint64_t tm = mq__now_ns();
        /* the source as f32 first: NaN/Inf in it, then values the cast turns into Inf */
        MQ_TRY(mq_convert(s->ctx, MQ_F32, s->deq, t->dtype, src, n));
        for (size_t i = 0; i < n; i++)
            if (!src_finite(t, src, s->deq, i)) return nonfinite_error(s, t);
        MQ_TRY(mq_convert(s->ctx, dt, s->out, t->dtype, src, n));
        MQ_TRY(cast_overflow(s, e, off, n, s->deq, clamped));
        lap(s, tm, MQ_PHASE_QUANTIZE);
        MQ_TRY(emit(s, s->out, n * 2));
        tm = mq__now_ns();
        MQ_TRY(mq_convert(s->ctx, MQ_F32, s->deq, dt, s->out, n));
        MQ_TRY(mq__err_acc_add(s->ctx, acc, t->dtype, src, s->deq, n, (size_t)row_elems(t)));
        lap(s, tm, MQ_PHASE_ERROR);
        release(s, src, n * es);
        MQ_TRY(progress(s, t->name, n * es));
    }
    return MQ_OK;
}

/* Bytes of input of the first chunk of rows of a quantized tensor. */
static uint64_t first_chunk_bytes(const mq__plan_entry *e) {
    const mq_qlayout *L = &e->layout;
    int64_t r = chunk_rows(L->cols);
    return (uint64_t)(r < L->rows ? r : L->rows) * (uint64_t)L->cols *
           mq_dtype_size(e->src->dtype);
}

/* Rows of the quantized tensor are read into the reused buffer rather than through the
 * mapping (mq__model_read), where each chunk needs only its own rows: not per-tensor
 * parameters or the Hessian (GPTQ needs one too). */
static bool reads_buffered(const stream *s, const mq__plan_entry *e) {
    return e->spec.granularity != MQ_PER_TENSOR && !e->hessian &&
           s->in_cap >= first_chunk_bytes(e);
}

/* The first piece entry `e` reads into the buffer, for the read-ahead (n 0: none). */
static void first_piece(const stream *s, const mq__plan_entry *e, const void **p,
                        uint64_t *n) {
    *p = e->src->data;
    *n = 0;
    if (e->action == MQ_ACTION_KEEP)
        *n = e->src->nbytes < COPY_SLICE ? e->src->nbytes : COPY_SLICE;
    else if (e->action == MQ_ACTION_QUANTIZE && reads_buffered(s, e))
        *n = first_chunk_bytes(e);
    if (*n > s->in_cap) *n = 0;
}

static mq_status quantize_chunks(stream *s, const mq__plan_entry *e, mq__err_acc *acc,
                                 const float *factor) {
    mq_ctx *ctx = s->ctx;
    const mq_tensor *t = e->src;
    const mq_qlayout *L = &e->layout;
    mq_qspec spec = e->spec;
    mq_calib_data calib;
    mq_calib_data_init(&calib);
    calib.importance = e->importance;
    calib.hessian = e->hessian;
    calib.act_order = e->act_order;
    int64_t rows_per_chunk = chunk_rows(L->cols);
    size_t zsz = L->has_zero_point ? mq_dtype_size(L->zero_point_dtype) : 0;
    MQ_TRY(ensure(ctx, (void **)&s->scale, &s->scale_cap, (size_t)L->nscales * sizeof(float)));
    if (zsz) MQ_TRY(ensure(ctx, (void **)&s->zp, &s->zp_cap, (size_t)L->nscales * zsz));
    size_t es = mq_dtype_size(t->dtype);
    uint64_t row_in = (uint64_t)L->cols * es;
    int64_t scales_per_row = spec.granularity == MQ_PER_TENSOR ? 0 : L->groups_per_row;
    /* error figures in the quantize pass where it can; the Hessian's output error needs the
     * dequantized rows, so it keeps its own pass */
    bool fused = s->opts->error_stats && !e->hessian && mq__quantize_fuses_error(&spec, t->dtype);
    bool buffered = !factor && reads_buffered(s, e);
    for (int64_t rb = 0; rb < L->rows; rb += rows_per_chunk) {
        int64_t re = rb + rows_per_chunk < L->rows ? rb + rows_per_chunk : L->rows;
        int64_t nr = re - rb;
        const uint8_t *src = (const uint8_t *)t->data + (uint64_t)rb * row_in;
        const void *rows = t->data; /* where row 0 is: the quantizer takes absolute rows */
        bool got = false;
        if (buffered) {
            int64_t ahead = L->rows - re < rows_per_chunk ? L->rows - re : rows_per_chunk;
            MQ_TRY(read_piece(s, src, (uint64_t)nr * row_in,
                              ahead ? src + (uint64_t)nr * row_in : s->after,
                              ahead ? (uint64_t)ahead * row_in : s->after_n, &got));
        }
        if (got) {
            src = s->in;
            rows = (const void *)((uintptr_t)s->in - (uintptr_t)((uint64_t)rb * row_in));
        } else {
            int64_t ahead = L->rows - re < rows_per_chunk ? L->rows - re : rows_per_chunk;
            will_read(s, src, (uint64_t)nr * row_in, (uint64_t)ahead * row_in);
        }
        uint64_t tm = mq__now_ns();
        bool err_done = false;
        mq_status st = mq__quantize_rows_factored(ctx, &spec, L, &calib, t->dtype, rows,
                                                  rb, re, s->out, s->scale,
                                                  zsz ? s->zp : NULL, factor,
                                                  fused ? acc : NULL, &err_done);
        tm = lap(s, tm, MQ_PHASE_QUANTIZE);
        if (st == MQ_ERR_QUANT && !strstr(mq_ctx_message(ctx), t->name))
            return mq__fail_prefix(ctx, "tensor '%s'", t->name);
        if (st != MQ_OK) return st;
        MQ_TRY(s->plan->ops->rows(&s->em, e, s->out, rb, re));
        tm = lap(s, tm, MQ_PHASE_WRITE);
        if (s->opts->error_stats && !err_done) {
            int64_t shape[MQ_MAX_DIMS];
            memcpy(shape, t->shape, sizeof shape);
            shape[0] = nr;
            mq_qlayout cl;
            MQ_TRY(mq_qlayout_init(ctx, &spec, t->ndim, shape, &cl));
            size_t sofs = (size_t)(rb * scales_per_row);
            MQ_TRY(mq_dequantize_rows(ctx, &spec, &cl, s->out, s->scale + sofs,
                                      zsz ? s->zp + sofs * zsz : NULL, 0, nr, s->deq));
            size_t n = (size_t)((uint64_t)nr * (uint64_t)L->cols);
            MQ_TRY(mq__err_acc_add(ctx, acc, t->dtype, src, s->deq, n, (size_t)L->cols));
            if (e->hessian && t->ndim == 2) {
                double qa = 0, qd = 0;
                MQ_TRY(mq__output_error(ctx, e->hessian, L->cols, t->dtype, src, s->deq, nr,
                                        &qa, &qd));
                acc->out_a += qa;
                acc->out_d += qd;
                acc->has_out = 1;
            }
            lap(s, tm, MQ_PHASE_ERROR);
        }
        /* per-tensor parameters need every row on the first call: keep the pages until then */
        if (spec.granularity != MQ_PER_TENSOR && !got)
            release(s, src, (uint64_t)nr * row_in);
        MQ_TRY(progress(s, t->name, (uint64_t)nr * row_in));
    }
    if (spec.granularity == MQ_PER_TENSOR) release(s, t->data, t->nbytes);
    uint64_t tm = mq__now_ns();
    mq_status st = s->plan->ops->companions(&s->em, e, s->scale, zsz ? s->zp : NULL);
    lap(s, tm, MQ_PHASE_WRITE);
    return st;
}

/* GPTQ: the Hessian is factorized once per tensor, not once per chunk of rows. */
static mq_status quantize_tensor(stream *s, const mq__plan_entry *e, mq__err_acc *acc) {
    float *factor = NULL;
    if (e->spec.search == MQ_SEARCH_GPTQ && e->hessian && e->spec.type != MQ_Q_FP16 &&
        e->spec.type != MQ_Q_BF16) {
        int32_t *perm = NULL;
        mq_status st = e->act_order
                           ? mq__gptq_order(s->ctx, e->hessian, e->layout.cols, &perm) : MQ_OK;
        if (st == MQ_OK) st = mq__gptq_factor(s->ctx, e->hessian, e->layout.cols, perm, &factor);
        mq__free(s->ctx, perm);
        if (st != MQ_OK) return mq__fail_prefix(s->ctx, "tensor '%s'", e->src->name);
    }
    mq_status st = quantize_chunks(s, e, acc, factor);
    mq__free(s->ctx, factor);
    return st;
}

/* Sizes the scratch buffers for the largest chunk of the plan. */
static mq_status size_buffers(stream *s, const mq__plan *p) {
    size_t out_need = 1, f32_need = 1, in_need = 0;
    for (size_t i = 0; i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        if (e->action == MQ_ACTION_KEEP) {
            uint64_t k = e->src->nbytes < COPY_SLICE ? e->src->nbytes : COPY_SLICE;
            if (k > in_need) in_need = (size_t)k;
        } else if (e->action == MQ_ACTION_CAST) {
            uint64_t n = cast_chunk(e->src);
            if (n * 2 > out_need) out_need = (size_t)n * 2;
            if (n * 4 > f32_need) f32_need = (size_t)n * 4;
        } else if (e->action == MQ_ACTION_QUANTIZE) {
            const mq_qlayout *L = &e->layout;
            int64_t r = chunk_rows(L->cols);
            if (r > L->rows) r = L->rows;
            uint64_t ob = (uint64_t)r * L->row_bytes, fb = (uint64_t)r * (uint64_t)L->cols * 4;
            uint64_t ib = (uint64_t)r * (uint64_t)L->cols * mq_dtype_size(e->src->dtype);
            if (ib > in_need) in_need = (size_t)ib;
            if (ob > out_need) out_need = (size_t)ob;
            if (fb > f32_need) f32_need = (size_t)fb;
        }
    }
    MQ_TRY(ensure(s->ctx, (void **)&s->out, &s->out_cap, out_need));
    if (in_need) MQ_TRY(ensure(s->ctx, (void **)&s->in, &s->in_cap, in_need));
    /* read-ahead for input in files: a second buffer and its thread */
    if (in_need && mq__model_mapped_bytes(s->model)) {
        s->in_next = (uint8_t *)mq__malloc(s->ctx, in_need);
        if (!s->in_next) return MQ_ERR_NOMEM;
        mq__readahead_start(&s->ra, s->model);
    }
    return ensure(s->ctx, (void **)&s->deq, &s->f32_cap, f32_need);
}

static void free_stream(stream *s) {
    mq__readahead_stop(&s->ra); /* before its buffer goes */
    mq__free(s->ctx, s->out);
    mq__free(s->ctx, s->in);
    mq__free(s->ctx, s->in_next);
    mq__free(s->ctx, s->deq);
    mq__free(s->ctx, s->scale);
    mq__free(s->ctx, s->zp);
}

/* ---- metadata ------------------------------------------------------------------------- */

typedef struct meta_list {
    mq_kv *kv;
    char **owned;
    size_t n, cap, nowned, cap_owned;
} meta_list;

static mq_status meta_put(mq_ctx *ctx, meta_list *ml, const char *key, const char *value,
                          bool own_key, bool own_value) {
    mq_status st = mq__grow(ctx, (void **)&ml->kv, &ml->cap, ml->n + 1, sizeof *ml->kv);
    if (st == MQ_OK)
        st = mq__grow(ctx, (void **)&ml->owned, &ml->cap_owned, ml->nowned + 2, sizeof *ml->owned);
    if (st != MQ_OK || !key || !value) {
        if (own_key) mq__free(ctx, (void *)key);
        if (own_value) mq__free(ctx, (void *)value);
        return st != MQ_OK ? st : MQ_ERR_NOMEM;
    }
    if (own_key) ml->owned[ml->nowned++] = (char *)key;
    if (own_value) ml->owned[ml->nowned++] = (char *)value;
    for (size_t i = 0; i < ml->n; i++)
        if (!strcmp(ml->kv[i].key, key)) {
            ml->kv[i].value = value;
            return MQ_OK;
        }
    ml->kv[ml->n++] = (mq_kv){key, value};
    return MQ_OK;
}

static void meta_free(mq_ctx *ctx, meta_list *ml) {
    for (size_t i = 0; i < ml->nowned; i++) mq__free(ctx, ml->owned[i]);
    mq__free(ctx, ml->owned);
    mq__free(ctx, ml->kv);
}

/* Room reserved in the stored config for the error figures, filled in after the data. */
static size_t error_room(const mq__plan *p) { return (p->nquantized + p->ncast) * 120 + 16; }

/* Our own configuration's key: quantization_config unless the layout has its own. */
static const char *own_config_key(const char *hf_cfg) {
    return hf_cfg ? MQ__META_OWN_CONFIG : MQ__META_CONFIG;
}

static mq_status build_meta(mq_ctx *ctx, const mq_model *m, const mq__plan *p,
                            const mq_quantize_options *o, const char *hf_cfg, meta_list *ml) {
    for (size_t i = 0; i < mq_model_metadata_count(m); i++) {
        const char *k = mq_model_metadata_key(m, i);
        if (!strcmp(k, "format") || !strncmp(k, MQ__META_TENSOR_PREFIX,
                                             strlen(MQ__META_TENSOR_PREFIX)))
            continue;
        MQ_TRY(meta_put(ctx, ml, k, mq_model_metadata_value(m, i), false, false));
    }
    char *cfg = NULL;
    MQ_TRY(mq__config_json(ctx, p, o, NULL, &cfg));
    size_t len = strlen(cfg), room = error_room(p);
    char *padded = (char *)mq__realloc(ctx, cfg, len + 1, len + room + 1);
    if (!padded) {
        mq__free(ctx, cfg);
        return MQ_ERR_NOMEM;
    }
    memset(padded + len, ' ', room);
    padded[len + room] = 0;
    MQ_TRY(meta_put(ctx, ml, own_config_key(hf_cfg), padded, false, true));
    if (hf_cfg) MQ_TRY(meta_put(ctx, ml, MQ__META_CONFIG, hf_cfg, false, false));
    char scheme[64];
    mq_qspec_format(&o->spec, scheme, sizeof scheme);
    MQ_TRY(meta_put(ctx, ml, MQ__META_SCHEME, mq__strdup(ctx, scheme), false, true));
    MQ_TRY(meta_put(ctx, ml, MQ__META_FORMAT, MQ__FORMAT_VERSION, false, false));
    MQ_TRY(meta_put(ctx, ml, MQ__META_LAYOUT, p->ops->name, false, false));
    for (size_t i = 0; i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        if (e->action == MQ_ACTION_KEEP) continue;
        size_t k = strlen(MQ__META_TENSOR_PREFIX) + strlen(e->src->name) + 1;
        char *key = (char *)mq__malloc(ctx, k);
        char val[160];
        if (key) snprintf(key, k, "%s%s", MQ__META_TENSOR_PREFIX, e->src->name);
        mq__spec_to_meta(&e->spec, e->src->dtype, val, sizeof val);
        MQ_TRY(meta_put(ctx, ml, key, mq__strdup(ctx, val), true, true));
    }
    return MQ_OK;
}

/* ---- the call ------------------------------------------------------------------------- */

/* Strict mode: any warning fails the call, listing the warnings. `path` names the output
 * (`written`: one was to be written) or, for a dry run, the input. */
static mq_status strict_check(mq_ctx *ctx, const mq__plan *p, const mq_quantize_options *o,
                              const char *path, bool written) {
    if (!o->strict || !p->nwarnings) return MQ_OK;
    char list[MQ_MSG_MAX];
    size_t len = 0;
    list[0] = 0;
    for (size_t i = 0; i < p->nwarnings && len + 1 < sizeof list; i++) {
        int k = snprintf(list + len, sizeof list - len, "%s%s", i ? "; " : "", p->warnings[i]);
        if (k < 0) break;
        len += (size_t)k;
    }
    return mq__fail(ctx, MQ_ERR_QUANT, "%s: %zu warning%s under strict mode%s: %s", path,
                    p->nwarnings, p->nwarnings == 1 ? "" : "s", written ? ", nothing written" : "",
                    list);
}

/* The report's phases; `before`: the writers' times before the commit, which took
 * commit_ns; `after`: after it. */
static void set_phases(const stream *s, mq_report *rep, uint64_t open_ns,
                       const mq__write_times *before, const mq__write_times *after,
                       uint64_t commit_ns) {
    uint64_t ns[MQ_PHASE_BACKGROUND_WRITE + 1];
    memcpy(ns, s->ns, sizeof ns);
    ns[MQ_PHASE_OPEN] = open_ns;
    /* writing as timed by the caller holds the waits and the shards' commits */
    uint64_t inside = before->wait_ns + before->sync_ns;
    ns[MQ_PHASE_WRITE] = ns[MQ_PHASE_WRITE] > inside ? ns[MQ_PHASE_WRITE] - inside : 0;
    ns[MQ_PHASE_WRITE_WAIT] = before->wait_ns;
    ns[MQ_PHASE_SYNC] = before->sync_ns + commit_ns;
    ns[MQ_PHASE_BACKGROUND_WRITE] = after->write_ns;
    for (int i = 0; i <= MQ_PHASE_BACKGROUND_WRITE; i++) rep->phase_s[i] = (double)ns[i] / 1e9;
}

static mq_status run(mq_ctx *ctx, const mq_model *m, mq__plan *p, const char *in,
                     const char *out, const mq_quantize_options *o, mq_report *rep,
                     uint64_t t0) {
    meta_list ml = {0};
    stream s = {.ctx = ctx, .model = m, .plan = p, .opts = o, .total = p->bytes_in};
    mq__outputs files = {0};
    char *cfg_final = NULL, *hf_cfg = NULL;
    /* warnings of the plan are known before anything is written */
    mq_status st = strict_check(ctx, p, o, out, true);
    if (st == MQ_OK) st = p->ops->hf_config(ctx, p, &hf_cfg);
    if (st == MQ_OK) st = build_meta(ctx, m, p, o, hf_cfg, &ml);
    if (st == MQ_OK) st = mq__outputs_open(ctx, out, p, o, ml.kv, ml.n, &files, &s.em);
    if (st == MQ_OK) st = size_buffers(&s, p);
    uint64_t open_ns = mq__now_ns() - t0;
    for (size_t i = 0; st == MQ_OK && i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        mq__err_acc acc = {0};
        mq__tensor_report *tr = &rep->tensors[i];
        s.after_n = 0;
        if (i + 1 < p->n) first_piece(&s, &p->entries[i + 1], &s.after, &s.after_n);
        if (e->action == MQ_ACTION_KEEP) st = copy_tensor(&s, e);
        else if (e->action == MQ_ACTION_CAST) st = cast_tensor(&s, e, &acc, &tr->clamped);
        else st = quantize_tensor(&s, e, &acc);
        if (st != MQ_OK || e->action == MQ_ACTION_KEEP) continue;
        if (e->action == MQ_ACTION_CAST || o->error_stats) {
            tr->has_error = 1;
            mq__err_acc_finish(&acc, &tr->error);
            if (acc.has_out) {
                tr->has_output_error = 1;
                tr->output_sqnr_db = acc.out_d > 0 ? 10 * log10(acc.out_a / acc.out_d) : INFINITY;
            }
            /* +inf means exact; NaN (or an infinite error) means the figures are unusable,
             * and a gate must never pass on them */
            if (isnan(tr->error.sqnr_db) || isnan(tr->error.max_abs) ||
                isinf(tr->error.max_abs) || (tr->has_output_error && isnan(tr->output_sqnr_db)))
                st = mq__fail(ctx, MQ_ERR_QUANT, "tensor '%s': the error figures are not "
                              "finite (SQNR %g dB, max abs error %g): values too close to the "
                              "float32 limits", e->src->name, tr->error.sqnr_db,
                              tr->error.max_abs);
            else if (o->sqnr_warn_db > 0 && tr->error.sqnr_db < o->sqnr_warn_db)
                st = mq__plan_warn(p, "%s: SQNR %.1f dB is below the floor of %.1f dB", e->src->name,
                                   tr->error.sqnr_db, o->sqnr_warn_db);
        }
    }
    release_pending(&s, true);
    /* strict: decided before the commit, so the destination stays untouched */
    if (st == MQ_OK) st = strict_check(ctx, p, o, out, true);
    if (st == MQ_OK) st = mq__config_json(ctx, p, o, rep, &cfg_final);
    mq_writer *first = NULL;
    const char *key = own_config_key(hf_cfg);
    uint64_t tw = mq__now_ns();
    if (st == MQ_OK) st = mq__outputs_meta_writer(&files, &s.em, &first);
    if (st == MQ_OK) {
        /* into the room reserved after the first config (build_meta); without room left the
         * stored config keeps no error figures */
        st = mq__writer_set_meta(first, key, cfg_final);
        if (st == MQ_ERR_UNSUPPORTED) {
            mq_ctx_clear_error(ctx);
            st = MQ_OK;
        }
    }
    lap(&s, tw, MQ_PHASE_WRITE);
    mq__write_times before = {0}, after = {0};
    mq__outputs_times(&s.em, &before);
    uint64_t tc = mq__now_ns();
    /* an in-memory model's folder, when it was given one, is its input folder */
    if (st == MQ_OK)
        st = mq__outputs_commit(ctx, &files, &s.em, p, in ? in : mq__model_source_dir(m),
                                hf_cfg);
    uint64_t commit_ns = mq__now_ns() - tc;
    mq__outputs_times(&s.em, &after);
    if (st == MQ_OK) set_phases(&s, rep, open_ns, &before, &after, commit_ns);
    if (st == MQ_OK) {
        rep->config_json = cfg_final;
        cfg_final = NULL;
        rep->file_bytes_out = files.bytes_out;
    }
    mq__free(ctx, cfg_final);
    mq__free(ctx, hf_cfg);
    mq__outputs_free(ctx, &files, &s.em);
    free_stream(&s);
    meta_free(ctx, &ml);
    return st;
}

/* 1 when `name` is `suffix` or ends with '.' followed by it. */
static bool ends_with_part(const char *name, const char *suffix) {
    size_t n = strlen(name), k = strlen(suffix);
    if (n < k || strcmp(name + n - k, suffix)) return false;
    return n == k || name[n - k - 1] == '.';
}

/* Already-quantized checkpoints: quantizing them again would treat scales, zero points and
 * packed words as weights (an unreadable output) or drop the metadata that makes them
 * readable. Recognised by our metadata, compressed-tensors' companion names and GPTQ/AWQ
 * names. */
static mq_status refuse_quantized(mq_ctx *ctx, const mq_model *m, const char *in) {
    static const char *const ct[] = {"weight_packed", "weight_scale", "weight_zero_point",
                                     "weight_shape", "weight_g_idx"};
    static const char *const gptq[] = {"qweight", "qzeros", "scales", "g_idx"};
    const char *hint = "dequantize it first (monoquant dequantize), then quantize the plain "
                       "checkpoint";
    if (mq_model_metadata_find(m, MQ__META_FORMAT) >= 0)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: already quantized by monoquant (metadata "
                        "'%s'); %s", in, MQ__META_FORMAT, hint);
    for (size_t i = 0; i < mq_model_tensor_count(m); i++) {
        const char *name = mq_model_tensor(m, i)->name;
        for (size_t k = 0; k < sizeof ct / sizeof *ct; k++)
            if (ends_with_part(name, ct[k]))
                return mq__fail(ctx, MQ_ERR_INVALID, "%s: already quantized (tensor '%s': the "
                                "compressed-tensors layout); %s", in, name, hint);
        for (size_t k = 0; k < sizeof gptq / sizeof *gptq; k++)
            if (ends_with_part(name, gptq[k]))
                return mq__fail(ctx, MQ_ERR_INVALID, "%s: already quantized (tensor '%s': a "
                                "GPTQ/AWQ layout); %s", in, name, hint);
    }
    if (mq_model_metadata_find(m, MQ__META_CONFIG) >= 0)
        return mq__fail(ctx, MQ_ERR_INVALID, "%s: already quantized (metadata '%s'); %s", in,
                        MQ__META_CONFIG, hint);
    return MQ_OK;
}

static uint64_t input_file_bytes(const mq_model *m, const char *in) {
    uint64_t n = mq__model_mapped_bytes(m);
    struct stat si;
    if (!n && stat(in, &si) == 0 && S_ISREG(si.st_mode)) n = (uint64_t)si.st_size;
    return n;
}

/* The whole job on an open model; `in` names the input in messages (NULL: in memory). */
static mq_status quantize_open_model(mq_ctx *ctx, mq_model *m, const char *in, const char *out,
                                     const mq_quantize_options *opts, mq_report **report,
                                     uint64_t t0) {
    const char *where = in ? in : "<memory>";
    mq__plan plan = {0};
    mq_report *rep = NULL;
    mq_calib_stats *stats = NULL;
    mq_status st = MQ_OK;
    if (out && !strcmp(out, "-"))
        st = mq__fail(ctx, MQ_ERR_UNSUPPORTED, "standard output: a quantized checkpoint cannot "
                      "be streamed (its header is completed at the end); write to a file");
    if (st == MQ_OK && out && !opts->output_folder) st = mq_output_check(ctx, out, m);
    if (st == MQ_OK && out && opts->output_folder) st = mq__folder_check(ctx, out, m);
    if (st == MQ_OK) st = refuse_quantized(ctx, m, where);
    if (st == MQ_OK && opts->calibration) st = mq_calib_stats_open(ctx, opts->calibration, &stats);
    if (st == MQ_OK) st = mq__plan_build(ctx, m, opts, stats, &plan);
    if (st == MQ_OK) st = mq__report_from_plan(ctx, &plan, &rep);
    if (st == MQ_OK && in) rep->file_bytes_in = input_file_bytes(m, in);
    if (st == MQ_OK && !opts->dry_run) st = run(ctx, m, &plan, in, out, opts, rep, t0);
    if (st == MQ_OK && opts->dry_run) st = strict_check(ctx, &plan, opts, where, false);
    if (st == MQ_OK && opts->dry_run) st = mq__config_json(ctx, &plan, opts, rep, &rep->config_json);
    if (st == MQ_OK) {
        mq__report_take_warnings(rep, &plan);
        rep->seconds = (double)(mq__now_ns() - t0) / 1e9;
    }
    mq__plan_free(&plan);
    mq_calib_stats_free(stats);
    if (st != MQ_OK || !report) {
        mq_report_free(rep);
        return st;
    }
    *report = rep;
    return MQ_OK;
}

/* The caller's options read within their struct_size (defaults for the rest), checked. */
static mq_status check_args(mq_ctx *ctx, const char *what, const void *in, const char *out,
                            const mq_quantize_options *caller_opts, mq_quantize_options *full,
                            mq_report **report) {
    if (report) *report = NULL;
    if (!ctx || !in) return mq__fail(ctx, MQ_ERR_INVALID, "%s: NULL argument", what);
    mq_quantize_options_default(full);
    if (caller_opts)
        MQ_TRY(mq__struct_read(ctx, "mq_quantize_options", caller_opts, full, sizeof *full,
                               MQ__LAYOUT_END(mq_quantize_options, strict)));
    if (!out && !full->dry_run) return mq__fail(ctx, MQ_ERR_INVALID, "%s: no output path", what);
    if (full->sqnr_warn_db > 0 && !full->error_stats)
        return mq__fail(ctx, MQ_ERR_INVALID, "an SQNR floor (--min-sqnr) needs the error "
                        "figures, which are turned off (--no-error-stats): the gate would never "
                        "run");
    return MQ_OK;
}

mq_status mq_quantize_file(mq_ctx *ctx, const char *in, const char *out,
                           const mq_quantize_options *caller_opts, mq_report **report) {
    uint64_t t0 = mq__now_ns();
    mq_quantize_options opts;
    MQ_TRY(check_args(ctx, "mq_quantize_file", in, out, caller_opts, &opts, report));
    mq_model *m = NULL;
    mq_open_options oo;
    mq_open_options_default(&oo);
    oo.key = opts.key;
    mq_status st = mq_model_open(ctx, in, &oo, &m);
    if (st == MQ_OK) st = quantize_open_model(ctx, m, in, out, &opts, report, t0);
    mq_model_free(m);
    return st;
}

mq_status mq_quantize_model(mq_ctx *ctx, mq_model *model, const char *out,
                            const mq_quantize_options *caller_opts, mq_report **report) {
    mq_quantize_options opts;
    MQ_TRY(check_args(ctx, "mq_quantize_model", model, out, caller_opts, &opts, report));
    MQ_TRY(mq__model_ensure_index(model, "<memory>"));
    /* a model opened from a file keeps its path: the output may not replace it */
    return quantize_open_model(ctx, model, mq__model_path(model), out, &opts, report,
                               mq__now_ns());
}
