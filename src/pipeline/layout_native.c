/* The native layout (monoquant 0.1's file, docs/FORMAT.md): any layer kind and type, data as
 * mq_quantize_rows stores it, F32 scales, unpacked zero points. */
#include "pipeline/pipeline_internal.h"

#include <string.h>

static bool is_4bit(mq_qtype t) { return t == MQ_Q_INT4 || t == MQ_Q_UINT4; }

static mq_status native_adapt(mq__plan *p, mq__plan_entry *e, const mq_quantize_options *o) {
    (void)p, (void)e, (void)o;
    return MQ_OK;
}

static mq_status native_outputs(mq__plan *p, mq__plan_entry *e) {
    const mq_tensor *t = e->src;
    const mq_qlayout *L = &e->layout;
    size_t nl = strlen(t->name);
    int64_t sshape[2] = {L->rows, L->groups_per_row};
    int sdims = 2;
    if (e->spec.granularity == MQ_PER_TENSOR) sshape[0] = 1, sdims = 1;
    if (is_4bit(e->spec.type))
        MQ_TRY(mq__plan_add_out(p, t->name, nl, MQ__SUFFIX_PACKED, L->data_dtype,
                                L->ndata_dims, L->data_shape));
    else
        MQ_TRY(mq__plan_add_out(p, t->name, nl, "", L->data_dtype, L->ndata_dims, L->data_shape));
    MQ_TRY(mq__plan_add_out(p, t->name, nl, MQ__SUFFIX_SCALE, MQ_F32, sdims, sshape));
    if (L->has_zero_point)
        MQ_TRY(mq__plan_add_out(p, t->name, nl, MQ__SUFFIX_ZERO, L->zero_point_dtype, sdims,
                                sshape));
    if (is_4bit(e->spec.type)) {
        int64_t nd = t->ndim;
        MQ_TRY(mq__plan_add_out(p, t->name, nl, MQ__SUFFIX_SHAPE, MQ_I64, 1, &nd));
    }
    if (e->has_input_params) {
        size_t lp = mq__layer_prefix_len(t->name);
        int64_t one = 1;
        MQ_TRY(mq__plan_add_out(p, t->name, lp, ".input_scale", MQ_F32, 1, &one));
        MQ_TRY(mq__plan_add_out(p, t->name, lp, ".input_zero_point", e->input_zp_dtype, 1, &one));
    }
    return MQ_OK;
}

static mq_status native_rows(mq__emit *em, const mq__plan_entry *e, const uint8_t *data,
                             int64_t rb, int64_t re) {
    return mq__emit_write(em, data, (size_t)((uint64_t)(re - rb) * e->layout.row_bytes));
}

static mq_status native_companions(mq__emit *em, const mq__plan_entry *e, const float *scale,
                                   const void *zp) {
    const mq_qlayout *L = &e->layout;
    MQ_TRY(mq__emit_floats(em, scale, (size_t)L->nscales, MQ_F32));
    if (L->has_zero_point)
        MQ_TRY(mq__emit_write(em, zp, (size_t)L->nscales * mq_dtype_size(L->zero_point_dtype)));
    if (is_4bit(e->spec.type)) {
        uint8_t dims[MQ_MAX_DIMS * 8];
        for (int d = 0; d < e->src->ndim; d++)
            mq__store_le64(dims + 8 * d, (uint64_t)e->src->shape[d]);
        MQ_TRY(mq__emit_write(em, dims, (size_t)e->src->ndim * 8));
    }
    if (e->has_input_params) {
        uint8_t zp8 = (uint8_t)e->input_zero_point;
        MQ_TRY(mq__emit_floats(em, &e->input_scale, 1, MQ_F32));
        MQ_TRY(mq__emit_write(em, &zp8, 1));
    }
    return MQ_OK;
}

static mq_status native_hf_config(mq_ctx *ctx, const mq__plan *p, char **out) {
    (void)ctx, (void)p;
    *out = NULL;
    return MQ_OK;
}

const mq__layout_ops mq__layout_native = {
    "native", native_adapt, native_outputs, native_rows, native_companions, native_hf_config,
};
