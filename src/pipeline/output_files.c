/* The files a run writes: one checkpoint file, or a Hugging Face model folder whose weights
 * are split into shards. Every file is written through its own mq_writer; the stream of
 * output tensors (mq__emit) is routed to the file each tensor belongs to. A shard's writer
 * opens when the stream reaches it and is committed (inside the temporary folder) when the
 * stream leaves it, so at most two are open; the metadata, whose error figures are known
 * last, goes into the last file. */
#include "pipeline/pipeline_internal.h"
#include "pipeline/hf_folder.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Hugging Face's default "5GB". */
#define DEFAULT_MAX_SHARD ((uint64_t)5000000000ull)

static uint64_t desc_bytes(const mq_tensor_desc *d) {
    uint64_t b = mq_dtype_size(d->dtype);
    for (int i = 0; i < d->ndim; i++) b *= (uint64_t)d->shape[i];
    return b;
}

/* Shards of whole entries (a layer's tensors stay together), in plan order. */
static size_t assign_shards(mq__plan *p, uint64_t max) {
    size_t cur = 0;
    uint64_t size = 0;
    for (size_t i = 0; i < p->n; i++) {
        mq__plan_entry *e = &p->entries[i];
        if (size && size + e->bytes_out > max) cur++, size = 0;
        e->shard = (int)cur;
        size += e->bytes_out;
    }
    return cur + 1;
}

static mq_status open_file(mq__outputs *f, mq__emit *em, size_t i) {
    mq_ctx *ctx = em->ctx;
    const mq__plan *p = f->plan;
    size_t first = f->first_out[i], end = i + 1 < f->nfiles ? f->first_out[i + 1] : p->nouts;
    char *path = f->folder ? mq__folder_path(f->folder, f->files[i]) : mq__strdup(ctx, f->files[i]);
    if (!path) return MQ_ERR_NOMEM;
    bool meta = i == f->meta_file;
    mq_status st = mq_writer_open(ctx, path, f->format, p->outs + first, end - first,
                                  meta ? f->meta : NULL, meta ? f->nmeta : 0, &em->w[i]);
    mq__free(ctx, path);
    return st;
}

/* A shard the stream has left: committed inside the temporary folder. */
static mq_status close_file(mq__outputs *f, mq__emit *em, size_t i) {
    if (!em->w[i] || i == f->meta_file) return MQ_OK;
    MQ_TRY(mq_writer_commit(em->w[i]));
    mq__writer_add_times(em->w[i], &em->closed);
    mq_writer_free(em->w[i]);
    em->w[i] = NULL;
    return mq__folder_add(f->folder, f->files[i]);
}

mq_status mq__emit_write(mq__emit *em, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    while (n) {
        while (em->cur < em->nw && em->done == em->file_bytes[em->cur]) {
            if (!em->w[em->cur]) MQ_TRY(open_file(em->files, em, em->cur));
            MQ_TRY(close_file(em->files, em, em->cur));
            em->cur++;
            em->done = 0;
        }
        if (em->cur >= em->nw)
            return mq__fail(em->ctx, MQ_ERR_INTERNAL, "quantize: %zu bytes beyond the last "
                            "output tensor", n);
        if (!em->w[em->cur]) MQ_TRY(open_file(em->files, em, em->cur));
        uint64_t left = em->file_bytes[em->cur] - em->done;
        size_t k = n < left ? n : (size_t)left;
        MQ_TRY(mq_writer_write(em->w[em->cur], p, k));
        em->done += k;
        p += k;
        n -= k;
    }
    return MQ_OK;
}

mq_status mq__emit_hold(mq__emit *em, size_t n) {
    if (n <= em->held_cap) return MQ_OK;
    mq__free(em->ctx, em->held);
    em->held_cap = 0;
    em->held = (uint8_t *)mq__malloc(em->ctx, n ? n : 1);
    if (!em->held) return MQ_ERR_NOMEM;
    em->held_cap = n ? n : 1;
    return MQ_OK;
}

uint8_t *mq__emit_scratch(mq__emit *em, size_t n) {
    if (n <= em->scratch_cap) return em->scratch;
    mq__free(em->ctx, em->scratch);
    em->scratch_cap = 0;
    em->scratch = (uint8_t *)mq__malloc(em->ctx, n ? n : 1);
    if (em->scratch) em->scratch_cap = n ? n : 1;
    return em->scratch;
}

mq_status mq__emit_floats(mq__emit *em, const float *v, size_t n, mq_dtype dtype) {
    size_t es = mq_dtype_size(dtype);
    for (size_t off = 0; off < n;) {
        size_t k = n - off < 65536 ? n - off : 65536;
        uint8_t *buf = mq__emit_scratch(em, k * es);
        if (!buf) return MQ_ERR_NOMEM;
        if (dtype == MQ_F32) {
            for (size_t i = 0; i < k; i++) {
                uint32_t b;
                memcpy(&b, v + off + i, 4);
                mq__store_le32(buf + 4 * i, b);
            }
        } else {
            MQ_TRY(mq_convert(em->ctx, dtype, buf, MQ_F32, v + off, k));
        }
        MQ_TRY(mq__emit_write(em, buf, k * es));
        off += k;
    }
    return MQ_OK;
}

mq_status mq__outputs_open(mq_ctx *ctx, const char *out, mq__plan *p,
                           const mq_quantize_options *o, const mq_kv *meta, size_t nmeta,
                           mq__outputs *f, mq__emit *em) {
    memset(f, 0, sizeof *f);
    em->ctx = ctx;
    em->files = f;
    f->plan = p;
    f->meta = meta;
    f->nmeta = nmeta;
    f->format = o->out_format;
    size_t nfiles = 1;
    if (o->output_folder) {
        if (o->out_format == MQ_FORMAT_PYTORCH)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: a model folder holds safetensors files "
                            "(no PyTorch output format for folders)", out);
        f->format = MQ_FORMAT_SAFETENSORS;
        nfiles = assign_shards(p, o->max_shard_size ? o->max_shard_size : DEFAULT_MAX_SHARD);
    } else {
        for (size_t i = 0; i < p->n; i++) p->entries[i].shard = 0;
    }
    f->files = (char **)mq__calloc(ctx, nfiles, sizeof *f->files);
    f->first_out = (size_t *)mq__calloc(ctx, nfiles, sizeof *f->first_out);
    f->file_of = (int *)mq__calloc(ctx, p->nouts ? p->nouts : 1, sizeof *f->file_of);
    em->w = (mq_writer **)mq__calloc(ctx, nfiles, sizeof *em->w);
    em->file_bytes = (uint64_t *)mq__calloc(ctx, nfiles, sizeof *em->file_bytes);
    if (!f->files || !f->first_out || !f->file_of || !em->w || !em->file_bytes) return MQ_ERR_NOMEM;
    f->nfiles = em->nw = nfiles;
    f->meta_file = nfiles - 1;
    for (size_t i = 0; i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        for (size_t k = e->first_out; k < e->first_out + e->nout; k++) f->file_of[k] = e->shard;
    }
    for (size_t k = p->nouts; k-- > 0;) f->first_out[f->file_of[k]] = k;
    for (size_t k = 0; k < p->nouts; k++) em->file_bytes[f->file_of[k]] += desc_bytes(&p->outs[k]);
    for (size_t fi = 0; fi < nfiles; fi++) {
        char name[64];
        if (nfiles == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", fi + 1, nfiles);
        f->files[fi] = mq__strdup(ctx, o->output_folder ? name : out);
        if (!f->files[fi]) return MQ_ERR_NOMEM;
    }
    if (o->output_folder) return mq__folder_begin(ctx, out, &f->folder);
    return open_file(f, em, 0);
}

mq_status mq__outputs_meta_writer(mq__outputs *f, mq__emit *em, mq_writer **w) {
    for (size_t i = em->cur; i < f->nfiles; i++) {
        if (!em->w[i]) MQ_TRY(open_file(f, em, i));
        MQ_TRY(close_file(f, em, i));
    }
    em->cur = f->nfiles;
    *w = em->w[f->meta_file];
    return MQ_OK;
}

static uint64_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

mq_status mq__outputs_commit(mq_ctx *ctx, mq__outputs *f, mq__emit *em, const mq__plan *p,
                             const char *in, const char *hf_config) {
    mq_writer *w;
    MQ_TRY(mq__outputs_meta_writer(f, em, &w));
    MQ_TRY(mq_writer_commit(w));
    if (!f->folder) {
        f->bytes_out = file_size(f->files[0]);
        return MQ_OK;
    }
    MQ_TRY(mq__folder_add(f->folder, f->files[f->meta_file]));
    uint64_t total = 0, bytes = 0;
    for (size_t i = 0; i < p->nouts; i++) total += desc_bytes(&p->outs[i]);
    if (f->nfiles > 1)
        MQ_TRY(mq__hf_write_index(ctx, f->folder, p->outs, f->file_of, p->nouts, f->files, total));
    char *dir = NULL;
    if (in) MQ_TRY(mq__hf_input_dir(ctx, in, &dir)); /* a model given in memory has no folder */
    mq_status st = dir ? mq__hf_copy_files(ctx, dir, f->folder, hf_config) : MQ_OK;
    mq__free(ctx, dir);
    /* GPTQ loaders (AutoGPTQ, GPTQModel, vLLM) also read quantize_config.json */
    if (st == MQ_OK && p->ops == &mq__layout_gptq && hf_config)
        st = mq__folder_write_file(f->folder, "quantize_config.json", hf_config,
                                   strlen(hf_config));
    for (size_t i = 0; st == MQ_OK && i < f->nfiles; i++) {
        char *path = mq__folder_path(f->folder, f->files[i]);
        if (!path) st = MQ_ERR_NOMEM;
        else bytes += file_size(path);
        mq__free(ctx, path);
    }
    if (st == MQ_OK) st = mq__folder_commit(f->folder);
    if (st == MQ_OK) f->bytes_out = bytes;
    return st;
}

void mq__outputs_times(const mq__emit *em, mq__write_times *t) {
    t->write_ns += em->closed.write_ns;
    t->wait_ns += em->closed.wait_ns;
    t->sync_ns += em->closed.sync_ns;
    for (size_t i = 0; i < em->nw; i++)
        if (em->w[i]) mq__writer_add_times(em->w[i], t);
}

void mq__outputs_free(mq_ctx *ctx, mq__outputs *f, mq__emit *em) {
    for (size_t i = 0; i < em->nw; i++) mq_writer_free(em->w[i]);
    mq__free(ctx, em->w);
    mq__free(ctx, em->file_bytes);
    mq__free(ctx, em->scratch);
    mq__free(ctx, em->held);
    memset(em, 0, sizeof *em);
    for (size_t i = 0; i < f->nfiles; i++) mq__free(ctx, f->files[i]);
    mq__free(ctx, f->files);
    mq__free(ctx, f->file_of);
    mq__free(ctx, f->first_out);
    mq__folder_free(f->folder); /* removes it unless committed */
    memset(f, 0, sizeof *f);
}
