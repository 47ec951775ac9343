/* The files a run writes: one checkpoint file, or a Hugging Face model folder whose weights
 * are split into shards. Every file is written through its own mq_writer; the stream of
 * output tensors (mq__emit) is routed to the file each tensor belongs to. */
#include "model/pipeline_internal.h"
#include "model/hf_folder.h"

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

mq_status mq__outputs_open(mq_ctx *ctx, const char *out, mq__plan *p,
                           const mq_quantize_options *o, const mq_kv *meta, size_t nmeta,
                           mq__outputs *f, mq__emit *em) {
    memset(f, 0, sizeof *f);
    size_t nfiles = 1;
    if (o->output_folder) {
        if (o->out_format == MQ_FORMAT_PYTORCH)
            return mq__fail(ctx, MQ_ERR_INVALID, "%s: a model folder holds safetensors files "
                            "(no PyTorch output format for folders)", out);
        nfiles = assign_shards(p, o->max_shard_size ? o->max_shard_size : DEFAULT_MAX_SHARD);
        MQ_TRY(mq__folder_begin(ctx, out, &f->folder));
    } else {
        for (size_t i = 0; i < p->n; i++) p->entries[i].shard = 0;
    }
    f->files = (char **)mq__calloc(ctx, nfiles, sizeof *f->files);
    f->file_of = (int *)mq__calloc(ctx, p->nouts ? p->nouts : 1, sizeof *f->file_of);
    em->w = (mq_writer **)mq__calloc(ctx, nfiles, sizeof *em->w);
    em->file_bytes = (uint64_t *)mq__calloc(ctx, nfiles, sizeof *em->file_bytes);
    if (!f->files || !f->file_of || !em->w || !em->file_bytes) return MQ_ERR_NOMEM;
    f->nfiles = nfiles;
    em->nw = nfiles;
    for (size_t i = 0; i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        for (size_t k = e->first_out; k < e->first_out + e->nout; k++) f->file_of[k] = e->shard;
    }
    size_t first = 0;
    for (size_t fi = 0; fi < nfiles; fi++) {
        char name[64];
        if (nfiles == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", fi + 1, nfiles);
        f->files[fi] = f->folder ? mq__strdup(ctx, name) : mq__strdup(ctx, out);
        if (!f->files[fi]) return MQ_ERR_NOMEM;
        size_t end = first;
        while (end < p->nouts && f->file_of[end] == (int)fi) em->file_bytes[fi] += desc_bytes(&p->outs[end++]);
        char *path = f->folder ? mq__folder_path(f->folder, name) : mq__strdup(ctx, out);
        if (!path) return MQ_ERR_NOMEM;
        mq_status st = mq_writer_open(ctx, path, f->folder ? MQ_FORMAT_SAFETENSORS : o->out_format,
                                      p->outs + first, end - first, fi ? NULL : meta,
                                      fi ? 0 : nmeta, &em->w[fi]);
        mq__free(ctx, path);
        MQ_TRY(st);
        first = end;
    }
    return MQ_OK;
}

static uint64_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

mq_status mq__outputs_commit(mq_ctx *ctx, mq__outputs *f, mq__emit *em, const mq__plan *p,
                             const char *in, const char *hf_config) {
    for (size_t i = 0; i < em->nw; i++) MQ_TRY(mq_writer_commit(em->w[i]));
    if (!f->folder) {
        f->bytes_out = file_size(f->files[0]);
        return MQ_OK;
    }
    uint64_t total = 0, bytes = 0;
    for (size_t i = 0; i < p->nouts; i++) total += desc_bytes(&p->outs[i]);
    if (f->nfiles > 1)
        MQ_TRY(mq__hf_write_index(ctx, f->folder, p->outs, f->file_of, p->nouts, f->files, total));
    char *dir = NULL;
    MQ_TRY(mq__hf_input_dir(ctx, in, &dir));
    mq_status st = dir ? mq__hf_copy_files(ctx, dir, f->folder, hf_config) : MQ_OK;
    mq__free(ctx, dir);
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

void mq__outputs_free(mq_ctx *ctx, mq__outputs *f, mq__emit *em) {
    for (size_t i = 0; i < em->nw; i++) mq_writer_free(em->w[i]);
    mq__free(ctx, em->w);
    mq__free(ctx, em->file_bytes);
    em->w = NULL;
    em->nw = 0;
    for (size_t i = 0; i < f->nfiles; i++) mq__free(ctx, f->files[i]);
    mq__free(ctx, f->files);
    mq__free(ctx, f->file_of);
    mq__folder_free(f->folder); /* removes it unless committed */
    memset(f, 0, sizeof *f);
}
