/* The compressed-tensors layout (vLLM, transformers, llm-compressor; docs/FORMAT.md):
 *  - weight-only (W4A16, W8A16): "pack-quantized": <layer>.weight_packed I32
 *    [out, ceil(in * bits / 32)], values + 2^(bits-1), lowest bits first;
 *    <layer>.weight_scale [out, groups]; <layer>.weight_zero_point (asymmetric) packed the
 *    same way along the output dimension, I32 [ceil(out * bits / 32), groups];
 *    <layer>.weight_shape I64 [2];
 *  - 8-bit weights with 8-bit activations (W8A8): "int-quantized": <layer>.weight I8,
 *    <layer>.weight_scale [out, 1] or [1]; static activations add <layer>.input_scale [1] and,
 *    when asymmetric, <layer>.input_zero_point I8 [1].
 * Only Linear weights are quantized; signed types only (uint targets are mapped: the same
 * values shifted by a constant); symmetric schemes store no zero point. Scales are stored in
 * the layout's scale dtype. */
#include "pipeline/pipeline_internal.h"
#include "common/strbuf.h"

#include <stdio.h>
#include <string.h>

static int bits_of(mq_qtype t) { return t == MQ_Q_INT4 || t == MQ_Q_UINT4 ? 4 : 8; }

/* Fails naming the layer; the message says what to use instead. */
static mq_status refuse(mq__plan *p, const mq__plan_entry *e, const char *why, const char *fix) {
    size_t lp = mq__layer_prefix_len(e->src->name);
    return mq__fail(p->ctx, MQ_ERR_INVALID,
                    "layer '%.*s': %s, which compressed-tensors loaders (vLLM) cannot load; %s, "
                    "or --format native to write monoquant's own file anyway", (int)lp,
                    e->src->name, why, fix);
}

static mq_status ct_adapt(mq__plan *p, mq__plan_entry *e, const mq_quantize_options *o) {
    const mq_tensor *t = e->src;
    if (e->action != MQ_ACTION_QUANTIZE) return MQ_OK; /* casts stay dense layers */
    size_t lp = mq__layer_prefix_len(t->name);
    bool linear = e->kind == MQ_KIND_LINEAR && t->ndim == 2 && lp && !strcmp(t->name + lp, ".weight");
    if (!linear)
        return mq__plan_keep(p, e, "%s (compressed-tensors quantizes Linear weights only; "
                             "--format native quantizes it)", mq_layer_kind_name(e->kind));
    if (e->is_head && !e->by_rule && o->default_skip)
        return mq__plan_keep(p, e, "output head (engines keep it unquantized; listed in ignore; "
                             "--no-default-skip quantizes it)");
    /* no unsigned types: the signed type with the same scheme gives the same values */
    if (e->spec.type == MQ_Q_UINT8) e->spec.type = MQ_Q_INT8;
    else if (e->spec.type == MQ_Q_UINT4) e->spec.type = MQ_Q_INT4;
    const mq_qspec *s = &e->spec;
    bool asym = s->scheme == MQ_ASYMMETRIC, group = s->granularity == MQ_PER_GROUP;
    int bits = bits_of(s->type);
    if (o->activations == MQ_ACTIVATIONS_AUTO && e->act != MQ_ACTIVATIONS_NONE && (asym || group)) {
        e->act = MQ_ACTIVATIONS_NONE; /* what the engines run for these weights */
        e->has_input_params = 0;
    }
    char why[160];
    if (e->act != MQ_ACTIVATIONS_NONE) {
        if (bits == 4)
            return refuse(p, e, "4-bit weights with 8-bit activations", "use --activations none");
        if (asym)
            return refuse(p, e, "asymmetric 8-bit weights with 8-bit activations",
                          "use --scheme sym, or --activations none");
        if (group)
            return refuse(p, e, "per-group 8-bit weights with 8-bit activations",
                          "use --granularity channel, or --activations none");
    } else if (s->granularity == MQ_PER_TENSOR) {
        return refuse(p, e, "per-tensor weight-only quantization",
                      "use --granularity channel or group");
    }
    if (group && e->layout.cols % s->group_size != 0) {
        snprintf(why, sizeof why, "group size %d does not divide its %lld input features",
                 s->group_size, (long long)e->layout.cols);
        return refuse(p, e, why, "choose a --group-size that divides it, keep the layer with "
                      "--exclude, or use --granularity channel");
    }
    return MQ_OK;
}

static bool packed(const mq__plan_entry *e) { return e->act == MQ_ACTIVATIONS_NONE; }

static mq_status ct_outputs(mq__plan *p, mq__plan_entry *e) {
    const mq_tensor *t = e->src;
    const mq_qlayout *L = &e->layout;
    size_t nl = strlen(t->name);
    int bits = bits_of(e->spec.type);
    int64_t sshape[2] = {L->rows, L->groups_per_row};
    int sdims = 2;
    if (e->spec.granularity == MQ_PER_TENSOR) sshape[0] = 1, sdims = 1;
    if (packed(e)) {
        int64_t pshape[2] = {L->rows, (L->cols * bits + 31) / 32};
        MQ_TRY(mq__plan_add_out(p, t->name, nl, MQ__SUFFIX_PACKED, MQ_I32, 2, pshape));
        MQ_TRY(mq__plan_add_out(p, t->name, nl, MQ__SUFFIX_SCALE, L->scale_dtype, sdims, sshape));
        if (e->spec.scheme == MQ_ASYMMETRIC) {
            int64_t zshape[2] = {(L->rows * bits + 31) / 32, L->groups_per_row};
            MQ_TRY(mq__plan_add_out(p, t->name, nl, MQ__SUFFIX_ZERO, MQ_I32, 2, zshape));
        }
        int64_t nd = t->ndim;
        return mq__plan_add_out(p, t->name, nl, MQ__SUFFIX_SHAPE, MQ_I64, 1, &nd);
    }
    MQ_TRY(mq__plan_add_out(p, t->name, nl, "", MQ_I8, t->ndim, t->shape));
    MQ_TRY(mq__plan_add_out(p, t->name, nl, MQ__SUFFIX_SCALE, L->scale_dtype, sdims, sshape));
    if (e->has_input_params) {
        size_t lp = mq__layer_prefix_len(t->name);
        int64_t one = 1;
        MQ_TRY(mq__plan_add_out(p, t->name, lp, ".input_scale", L->scale_dtype, 1, &one));
        if (!e->input_symmetric)
            MQ_TRY(mq__plan_add_out(p, t->name, lp, ".input_zero_point", MQ_I8, 1, &one));
    }
    return MQ_OK;
}

static mq_status ct_rows(mq__emit *em, const mq__plan_entry *e, const uint8_t *data, int64_t rb,
                         int64_t re) {
    const mq_qlayout *L = &e->layout;
    size_t in_row = (size_t)L->row_bytes;
    if (!packed(e) || bits_of(e->spec.type) == 4) /* already the stored bytes */
        return mq__emit_write(em, data, (size_t)(re - rb) * in_row);
    /* 8-bit pack-quantized: q + 128 in bytes of little-endian words, rows padded with 0 */
    size_t out_row = (size_t)((L->cols + 3) / 4) * 4;
    uint8_t *buf = mq__emit_scratch(em, out_row);
    if (!buf) return MQ_ERR_NOMEM;
    for (int64_t r = 0; r < re - rb; r++) {
        const uint8_t *q = data + (size_t)r * in_row;
        for (size_t c = 0; c < (size_t)L->cols; c++) buf[c] = q[c] ^ 0x80;
        memset(buf + L->cols, 0, out_row - (size_t)L->cols);
        MQ_TRY(mq__emit_write(em, buf, out_row));
    }
    return MQ_OK;
}

/* Zero points [rows, groups] packed along the rows: word w of column g holds rows
 * w * 32/bits ..., each value + 2^(bits-1), lowest bits first. */
static mq_status write_packed_zp(mq__emit *em, const mq__plan_entry *e, const int8_t *zp) {
    const mq_qlayout *L = &e->layout;
    int bits = bits_of(e->spec.type);
    int64_t per = 32 / bits, g = L->groups_per_row, words = (L->rows + per - 1) / per;
    uint32_t mask = (1u << bits) - 1, off = 1u << (bits - 1);
    uint8_t *buf = mq__emit_scratch(em, (size_t)g * 4);
    if (!buf) return MQ_ERR_NOMEM;
    for (int64_t w = 0; w < words; w++) {
        for (int64_t c = 0; c < g; c++) {
            uint32_t v = 0;
            for (int64_t k = 0; k < per && w * per + k < L->rows; k++)
                v |= (((uint32_t)(zp[(w * per + k) * g + c] + (int32_t)off)) & mask)
                     << (unsigned)(k * bits);
            mq__store_le32(buf + 4 * c, v);
        }
        MQ_TRY(mq__emit_write(em, buf, (size_t)g * 4));
    }
    return MQ_OK;
}

static mq_status ct_companions(mq__emit *em, const mq__plan_entry *e, const float *scale,
                               const void *zp) {
    const mq_qlayout *L = &e->layout;
    MQ_TRY(mq__emit_floats(em, scale, (size_t)L->nscales, L->scale_dtype));
    if (packed(e)) {
        if (e->spec.scheme == MQ_ASYMMETRIC) MQ_TRY(write_packed_zp(em, e, (const int8_t *)zp));
        uint8_t dims[MQ_MAX_DIMS * 8];
        for (int d = 0; d < e->src->ndim; d++)
            mq__store_le64(dims + 8 * d, (uint64_t)e->src->shape[d]);
        return mq__emit_write(em, dims, (size_t)e->src->ndim * 8);
    }
    if (e->has_input_params) {
        MQ_TRY(mq__emit_floats(em, &e->input_scale, 1, L->scale_dtype));
        if (!e->input_symmetric) {
            /* an unsigned calibration zero point maps onto int8 like the codes do */
            int32_t z = e->input_zero_point - (e->input_zp_dtype == MQ_U8 ? 128 : 0);
            int8_t z8 = (int8_t)z;
            MQ_TRY(mq__emit_write(em, &z8, 1));
        }
    }
    return MQ_OK;
}

/* ---- quantization_config ---------------------------------------------------------------- */

/* What a config group shares: the weights' arguments, the activations, the format. */
typedef struct ct_sig {
    int bits, symmetric, group_size;
    mq_granularity gran;
    mq_scale_search search;
    mq_activations act;
    int input_symmetric;
    int actorder; /* act-order with static groups: "weight" (group strategy only) */
} ct_sig;

static ct_sig sig_of(const mq__plan_entry *e) {
    ct_sig s;
    memset(&s, 0, sizeof s);
    s.bits = bits_of(e->spec.type);
    s.symmetric = e->spec.scheme == MQ_SYMMETRIC;
    s.gran = e->spec.granularity;
    s.group_size = s.gran == MQ_PER_GROUP ? e->spec.group_size : 0;
    s.search = e->spec.search;
    s.act = e->act;
    s.input_symmetric = e->act == MQ_ACTIVATIONS_STATIC ? e->input_symmetric : 1;
    s.actorder = e->act_order && s.gran == MQ_PER_GROUP;
    return s;
}

static bool sig_eq(const ct_sig *a, const ct_sig *b) { return !memcmp(a, b, sizeof *a); }

static const char *sig_format(const ct_sig *s) {
    return s->act == MQ_ACTIVATIONS_NONE ? "pack-quantized" : "int-quantized";
}

static void json_str(mq_buf *b, const char *s) { mq__json_write_string(b, s, strlen(s)); }

static void layer_name(mq_buf *sb, const char *tensor) {
    size_t lp = mq__layer_prefix_len(tensor);
    char *n = mq__strndup(sb->ctx, tensor, lp);
    if (!n) {
        sb->failed = 1;
        return;
    }
    json_str(sb, n);
    mq__free(sb->ctx, n);
}

static void weight_args(mq_buf *sb, const ct_sig *s) {
    static const char *const strat[] = {"tensor", "channel", "group"};
    mq__buf_printf(sb, "{\"num_bits\": %d, \"type\": \"int\", \"symmetric\": %s, \"group_size\": ",
                s->bits, s->symmetric ? "true" : "false");
    if (s->gran == MQ_PER_GROUP) mq__buf_printf(sb, "%d", s->group_size);
    else mq__buf_add(sb, "null");
    /* act-order's groups stay in column order ("weight": no weight_g_idx); compressed-tensors
     * accepts an actorder for group strategies only (docs/FORMAT.md) */
    mq__buf_printf(sb, ", \"strategy\": \"%s\", \"block_structure\": null, \"dynamic\": false, "
                    "\"actorder\": %s, \"observer\": \"%s\", \"observer_kwargs\": {}}",
                strat[(unsigned)s->gran < 3 ? s->gran : 0],
                s->actorder ? "\"weight\"" : "null",
                s->search == MQ_SEARCH_MSE ? "mse" : "minmax");
}

static void input_args(mq_buf *sb, const ct_sig *s) {
    if (s->act == MQ_ACTIVATIONS_NONE) {
        mq__buf_add(sb, "null");
    } else if (s->act == MQ_ACTIVATIONS_DYNAMIC) {
        mq__buf_add(sb, "{\"num_bits\": 8, \"type\": \"int\", \"symmetric\": true, \"group_size\": "
                       "null, \"strategy\": \"token\", \"block_structure\": null, \"dynamic\": "
                       "true, \"actorder\": null, \"observer\": null, \"observer_kwargs\": {}}");
    } else {
        mq__buf_printf(sb, "{\"num_bits\": 8, \"type\": \"int\", \"symmetric\": %s, \"group_size\": "
                        "null, \"strategy\": \"tensor\", \"block_structure\": null, \"dynamic\": "
                        "false, \"actorder\": null, \"observer\": \"minmax\", "
                        "\"observer_kwargs\": {}}", s->input_symmetric ? "true" : "false");
    }
}

static bool is_linear_weight(const mq__plan_entry *e) {
    size_t lp = mq__layer_prefix_len(e->src->name);
    return e->kind == MQ_KIND_LINEAR && e->src->ndim == 2 && lp &&
           !strcmp(e->src->name + lp, ".weight");
}

static mq_status ct_hf_config(mq_ctx *ctx, const mq__plan *p, char **out) {
    *out = NULL;
    if (!p->nquantized) return MQ_OK;
    ct_sig *sigs = (ct_sig *)mq__calloc(ctx, p->nquantized, sizeof *sigs);
    int *group = (int *)mq__calloc(ctx, p->n ? p->n : 1, sizeof *group);
    if (!sigs || !group) {
        mq__free(ctx, sigs);
        mq__free(ctx, group);
        return MQ_ERR_NOMEM;
    }
    size_t ng = 0;
    for (size_t i = 0; i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        group[i] = -1;
        if (e->action != MQ_ACTION_QUANTIZE) continue;
        ct_sig s = sig_of(e);
        size_t g = 0;
        while (g < ng && !sig_eq(&sigs[g], &s)) g++;
        if (g == ng) sigs[ng++] = s;
        group[i] = (int)g;
    }
    bool mixed = false;
    for (size_t g = 1; g < ng; g++) mixed |= strcmp(sig_format(&sigs[g]), sig_format(&sigs[0])) != 0;
    mq_buf sb;
    mq__buf_init(&sb, ctx);
    mq__buf_add(&sb, "{\"quant_method\": \"compressed-tensors\", \"format\": ");
    json_str(&sb, mixed ? "mixed-precision" : sig_format(&sigs[0]));
    mq__buf_add(&sb, ", \"quantization_status\": \"compressed\", \"config_groups\": {");
    for (size_t g = 0; g < ng; g++) {
        mq__buf_printf(&sb, "%s\"group_%zu\": {\"targets\": [", g ? ", " : "", g);
        if (ng == 1) {
            mq__buf_add(&sb, "\"Linear\"");
        } else {
            int first = 1;
            for (size_t i = 0; i < p->n; i++) {
                if (group[i] != (int)g) continue;
                if (!first) mq__buf_add(&sb, ", ");
                first = 0;
                layer_name(&sb, p->entries[i].src->name);
            }
        }
        mq__buf_add(&sb, "], \"weights\": ");
        weight_args(&sb, &sigs[g]);
        mq__buf_add(&sb, ", \"input_activations\": ");
        input_args(&sb, &sigs[g]);
        mq__buf_add(&sb, ", \"output_activations\": null, \"format\": ");
        json_str(&sb, sig_format(&sigs[g]));
        mq__buf_add(&sb, "}");
    }
    mq__buf_add(&sb, "}, \"ignore\": [");
    int first = 1;
    for (size_t i = 0; i < p->n; i++) {
        const mq__plan_entry *e = &p->entries[i];
        if (e->action == MQ_ACTION_QUANTIZE || !is_linear_weight(e)) continue;
        if (!first) mq__buf_add(&sb, ", ");
        first = 0;
        layer_name(&sb, e->src->name);
    }
    mq__buf_add(&sb, "], \"kv_cache_scheme\": null}");
    mq__free(ctx, sigs);
    mq__free(ctx, group);
    if (sb.failed) {
        mq__buf_free(&sb);
        return mq__fail(ctx, MQ_ERR_NOMEM, "out of memory building the quantization_config");
    }
    *out = sb.data;
    return MQ_OK;
}

const mq__layout_ops mq__layout_ct = {
    "compressed-tensors", ct_adapt, ct_outputs, ct_rows, ct_companions, ct_hf_config,
};
