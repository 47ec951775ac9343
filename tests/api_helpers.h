/* Test helpers over the public API: one tensor of an mq_report read through its accessors
 * into a plain struct (so that checks can name fields), a spec's name, a metadata value. */
#ifndef MQ_TEST_API_HELPERS_H
#define MQ_TEST_API_HELPERS_H

#include "monoquant.h"

#include <string.h>

typedef struct tensor_view {
    const char *name;
    mq_layer_kind kind;
    mq_dtype dtype;
    int ndim;
    int64_t shape[MQ_MAX_DIMS];
    mq_action action;
    mq_qspec spec;
    const char *reason;
    uint64_t bytes_in, bytes_out;
    int has_error;
    mq_error_stats error;
    int has_input_params;
    int has_output_error;
    double output_sqnr_db;
} tensor_view;

/* Tensor i of the report (NULL past the end). Views live in a ring of 8: a check may hold a
 * few at once. */
static inline const tensor_view *tensor_view_at(const mq_report *r, size_t i) {
    static tensor_view ring[8];
    static unsigned next;
    if (i >= mq_report_tensor_count(r)) return NULL;
    tensor_view *v = &ring[next++ % 8];
    memset(v, 0, sizeof *v);
    v->name = mq_report_tensor_name(r, i);
    v->kind = mq_report_tensor_kind(r, i);
    v->dtype = mq_report_tensor_dtype(r, i);
    v->ndim = mq_report_tensor_shape(r, i, v->shape);
    v->action = mq_report_tensor_action(r, i);
    mq_report_tensor_spec(r, i, &v->spec);
    v->reason = mq_report_tensor_reason(r, i);
    v->bytes_in = mq_report_tensor_bytes_in(r, i);
    v->bytes_out = mq_report_tensor_bytes_out(r, i);
    v->has_error = mq_report_tensor_error(r, i, &v->error);
    v->has_input_params = mq_report_tensor_has_input_params(r, i);
    v->has_output_error = mq_report_tensor_output_sqnr(r, i, &v->output_sqnr_db);
    return v;
}

/* The tensor named `name` (NULL when absent). */
static inline const tensor_view *tensor_view_find(const mq_report *r, const char *name) {
    for (size_t i = 0; i < mq_report_tensor_count(r); i++)
        if (!strcmp(mq_report_tensor_name(r, i), name)) return tensor_view_at(r, i);
    return NULL;
}

/* mq_qspec_format into buf, returning buf. */
static inline const char *spec_name(const mq_qspec *spec, char *buf, size_t cap) {
    mq_qspec_format(spec, buf, cap);
    return buf;
}

/* Value of metadata entry `key` of a model, or NULL. */
static inline const char *meta_get(const mq_model *m, const char *key) {
    int64_t i = mq_model_metadata_find(m, key);
    return i < 0 ? NULL : mq_model_metadata_value(m, (size_t)i);
}

#endif
