/* Fuzz target: observer options text and observer state from untrusted bytes (as read from a
 * statistics file), then qparams, an update and a merge. Nothing may crash or leak.
 * Input: byte 0 kind/type/scheme/granularity, byte 1 channels, then state values, and the
 * rest of the input also as options text. */
#include "monoquant.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void take(const uint8_t **p, size_t *n, void *dst, size_t k) {
    size_t m = *n < k ? *n : k;
    memset(dst, 0, k);
    memcpy(dst, *p, m);
    *p += m;
    *n -= m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return 0;
    mq_ctx_set_threads(ctx, 1);
    /* options text */
    char text[256];
    size_t tn = size - 2 < sizeof text - 1 ? size - 2 : sizeof text - 1;
    memcpy(text, data + 2, tn);
    text[tn] = 0;
    mq_observer_options parsed;
    mq_observer_options_default(&parsed, MQ_OBS_MINMAX);
    if (mq_observer_options_parse(ctx, text, &parsed) == MQ_OK) {
        char back[512];
        mq_observer_options_format(&parsed, back, sizeof back);
    }
    /* state */
    mq_observer_options o;
    mq_observer_options_default(&o, (mq_observer_kind)(data[0] % 6));
    o.type = (mq_qtype)(MQ_Q_INT8 + (data[0] >> 3) % 4);
    o.scheme = (data[0] >> 5) & 1 ? MQ_SYMMETRIC : MQ_ASYMMETRIC;
    o.bins = o.type == MQ_Q_INT4 || o.type == MQ_Q_UINT4 ? 16 : 256;
    if ((data[0] >> 6) & 1) o.granularity = MQ_PER_CHANNEL, o.channels = 1 + data[1] % 8;
    mq_observer *a = NULL, *b = NULL;
    if (mq_observer_create(ctx, &o, &a) == MQ_OK && mq_observer_create(ctx, &o, &b) == MQ_OK) {
        const uint8_t *p = data + 2;
        size_t n = size - 2;
        size_t count = mq_observer_state_count(a);
        for (size_t i = 0; i < count; i++) {
            mq_tensor t;
            mq_observer_state_tensor(a, i, &t);
            void *buf = malloc(t.nbytes ? (size_t)t.nbytes : 1);
            if (!buf) break;
            take(&p, &n, buf, (size_t)t.nbytes);
            t.data = buf;
            mq_observer_state_set(a, &t);
            free(buf);
        }
        float scale[8], lo[8], hi[8];
        int32_t zp[8];
        mq_observer_qparams(a, scale, zp, lo, hi);
        float x[16];
        take(&p, &n, x, sizeof x);
        int64_t np = mq_observer_nparams(a);
        mq_observer_update(b, x, (int64_t)(16 / np), np);
        mq_observer_update(a, x, (int64_t)(16 / np), np);
        mq_observer_merge(b, a);
        mq_observer_qparams(b, scale, zp, lo, hi);
    }
    mq_observer_free(a);
    mq_observer_free(b);
    mq_ctx_free(ctx);
    return 0;
}
