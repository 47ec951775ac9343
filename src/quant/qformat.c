/* The stored types' traits: the one table every layer asks for names, bit widths, integer
 * ranges and storage dtypes. */
#include "quant/quant_internal.h"

#include <string.h>

#define NONE MQ_DTYPE_INVALID
static const mq_qformat formats[] = {
    /* type       name     bits integer signed qmin qmax off packed storage zero point */
    {MQ_Q_NONE,  "none",  0,  false, false, 0,    0,   0, false, NONE,    NONE},
    {MQ_Q_INT8,  "int8",  8,  true,  true,  -128, 127, 0, false, MQ_I8,   MQ_I8},
    {MQ_Q_UINT8, "uint8", 8,  true,  false, 0,    255, 0, false, MQ_U8,   MQ_U8},
    {MQ_Q_INT4,  "int4",  4,  true,  true,  -8,   7,   8, true,  MQ_I32,  MQ_I8},
    {MQ_Q_UINT4, "uint4", 4,  true,  false, 0,    15,  0, true,  MQ_I32,  MQ_I8},
    {MQ_Q_FP16,  "fp16",  16, false, true,  0,    0,   0, false, MQ_F16,  NONE},
    {MQ_Q_BF16,  "bf16",  16, false, true,  0,    0,   0, false, MQ_BF16, NONE},
};
#undef NONE

const mq_qformat *mq__qformat_of(mq_qtype type) {
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (formats[i].type == type) return &formats[i];
    return NULL;
}

bool mq__qformat(mq_qtype type, mq_qformat *out) {
    const mq_qformat *f = mq__qformat_of(type);
    if (!f || !f->integer) return false;
    *out = *f;
    return true;
}

bool mq__qtype_is_integer(mq_qtype type) {
    const mq_qformat *f = mq__qformat_of(type);
    return f && f->integer;
}

bool mq__qtype_is_cast(mq_qtype type) {
    const mq_qformat *f = mq__qformat_of(type);
    return f && !f->integer && f->bits == 16;
}

int mq__qtype_bits(mq_qtype type) {
    const mq_qformat *f = mq__qformat_of(type);
    return f ? f->bits : 0;
}

const char *mq_qtype_name(mq_qtype type) {
    const mq_qformat *f = mq__qformat_of(type);
    return f ? f->name : "unknown";
}

int mq__qtype_from_name(const char *name, mq_qtype *out) {
    for (size_t i = 0; name && i < sizeof formats / sizeof formats[0]; i++)
        if (!strcmp(name, formats[i].name)) {
            *out = formats[i].type;
            return 1;
        }
    return 0;
}
