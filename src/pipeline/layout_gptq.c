/* The GPTQ layout (AutoGPTQ / GPTQModel / optimum, transformers, vLLM's gptq and gptq_marlin;
 * docs/FORMAT.md, "GPTQ output"): Linear weights only, one bit width / group size / scheme
 * for the whole model, F16 scales; symmetric schemes as v1, asymmetric ones as gptq_v2
 * (gptq_export.h). The tensor is packed along its input dim, so its rows are held until the
 * last one arrives (one tensor's packed size). */
#include "pipeline/gptq_export.h"
#include "pipeline/pipeline_internal.h"

#include <stdio.h>
#include <string.h>

static mq_status refuse(mq__plan *p, const mq__plan_entry *e, const char *why) {
    size_t lp = mq__layer_prefix_len(e->src->name);
    return mq__fail(p->ctx, MQ_ERR_INVALID, "layer '%.*s': %s; keep the layer with --exclude, "
                    "or use --format compressed-tensors or native", (int)lp, e->src->name, why);
}

static const mq__plan_entry *first_quantized(const mq__plan *p, const mq__plan_entry *before) {
    for (const mq__plan_entry *x = p->entries; x < before; x++)
        if (x->action == MQ_ACTION_QUANTIZE) return x;
    return NULL;
}

static mq_status gptq_adapt(mq__plan *p, mq__plan_entry *e, const mq_quantize_options *o) {
    const mq_tensor *t = e->src;
    if (e->action != MQ_ACTION_QUANTIZE) return MQ_OK;
    size_t lp = mq__layer_prefix_len(t->name);
    bool linear = e->kind == MQ_KIND_LINEAR && t->ndim == 2 && lp && !strcmp(t->name + lp, ".weight");
    if (!linear)
        return mq__plan_keep(p, e, "%s (GPTQ quantizes Linear weights only; --format native "
                             "quantizes it)", mq_layer_kind_name(e->kind));
    if (e->is_head && !e->by_rule)
        return mq__plan_keep(p, e, "output head (GPTQ loaders keep it unquantized)");
    if (o->activations == MQ_ACTIVATIONS_DYNAMIC || o->activations == MQ_ACTIVATIONS_STATIC)
        return refuse(p, e, "GPTQ checkpoints are weight-only (use --activations none)");
    e->act = MQ_ACTIVATIONS_NONE;
    e->has_input_params = 0;
    mq__gptq_shape g;
    mq_status st = mq__gptq_shape_of(p->ctx, t->name, &e->spec, t->ndim, t->shape, &g);
    if (st != MQ_OK) return refuse(p, e, mq_ctx_message(p->ctx));
    const mq__plan_entry *f = first_quantized(p, e);
    if (f) {
        mq__gptq_shape g0;
        MQ_TRY(mq__gptq_shape_of(p->ctx, f->src->name, &f->spec, 2, f->src->shape, &g0));
        if (g0.bits != g.bits || g0.sym != g.sym ||
            (g0.groups == 1) != (g.groups == 1) || (g.groups > 1 && g0.group_size != g.group_size)) {
            char why[400];
            snprintf(why, sizeof why, "GPTQ describes the whole model with one bit width, group "
                     "size and scheme, and '%s' has another", f->src->name);
            return refuse(p, e, why);
        }
    }
    return MQ_OK;
}

static mq_status gptq_outputs(mq__plan *p, mq__plan_entry *e) {
    const mq_tensor *t = e->src;
    mq__gptq_shape g;
    MQ_TRY(mq__gptq_shape_of(p->ctx, t->name, &e->spec, t->ndim, t->shape, &g));
    size_t lp = mq__layer_prefix_len(t->name);
    int64_t pf = 32 / g.bits;
    int64_t qw[2] = {g.k / pf, g.n}, qz[2] = {g.groups, g.n / pf}, sc[2] = {g.groups, g.n};
    MQ_TRY(mq__plan_add_out(p, t->name, lp, ".qweight", MQ_I32, 2, qw));
    MQ_TRY(mq__plan_add_out(p, t->name, lp, ".qzeros", MQ_I32, 2, qz));
    MQ_TRY(mq__plan_add_out(p, t->name, lp, ".scales", MQ_F16, 2, sc));
    return mq__plan_add_out(p, t->name, lp, ".g_idx", MQ_I32, 1, &g.k);
}

static mq_status gptq_rows(mq__emit *em, const mq__plan_entry *e, const uint8_t *data,
                           int64_t rb, int64_t re) {
    const mq_qlayout *L = &e->layout;
    if (rb == 0) MQ_TRY(mq__emit_hold(em, (size_t)L->data_bytes));
    memcpy(em->held + (size_t)rb * L->row_bytes, data, (size_t)(re - rb) * L->row_bytes);
    return MQ_OK;
}

static mq_status gptq_companions(mq__emit *em, const mq__plan_entry *e, const float *scale,
                                 const void *zp) {
    const mq_tensor *t = e->src;
    mq__gptq_shape g;
    MQ_TRY(mq__gptq_shape_of(em->ctx, t->name, &e->spec, t->ndim, t->shape, &g));
    uint64_t sz[4];
    mq__gptq_sizes(&g, sz);
    uint8_t *buf = mq__emit_scratch(em, (size_t)(sz[0] + sz[1] + sz[2] + sz[3]));
    if (!buf) return MQ_ERR_NOMEM;
    uint8_t *qw = buf, *qz = qw + sz[0], *sc = qz + sz[1], *gi = sc + sz[2];
    MQ_TRY(mq__gptq_pack_rows(em->ctx, t->name, &e->spec, &e->layout, &g, em->held, scale,
                              e->layout.has_zero_point ? zp : NULL, 0, g.n, qw, qz, sc, gi));
    return mq__emit_write(em, buf, (size_t)(sz[0] + sz[1] + sz[2] + sz[3]));
}

static mq_status gptq_hf_config(mq_ctx *ctx, const mq__plan *p, char **out) {
    *out = NULL;
    const mq__plan_entry *f = first_quantized(p, p->entries + p->n);
    if (!f) return MQ_OK;
    mq__gptq_shape g;
    MQ_TRY(mq__gptq_shape_of(ctx, f->src->name, &f->spec, 2, f->src->shape, &g));
    int static_groups = 0;
    for (size_t i = 0; i < p->n; i++) static_groups |= p->entries[i].act_order;
    *out = mq__gptq_config_json(ctx, &g, static_groups);
    return *out ? MQ_OK : MQ_ERR_NOMEM;
}

const mq__layout_ops mq__layout_gptq = {
    "gptq", gptq_adapt, gptq_outputs, gptq_rows, gptq_companions, gptq_hf_config,
};
