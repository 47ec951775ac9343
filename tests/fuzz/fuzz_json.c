/* Fuzz target for the internal JSON reader: syntax checking of arbitrary bytes, the integer
 * readers, and the string writer round trip (write any UTF-8 text, read it back unchanged). */
#include "io/json.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mq_ctx *ctx = mq_ctx_create();
    if (!ctx) return 0;
    mq_json j;
    mq__json_init(&j, ctx, data, size, "fuzz", 0);
    if (mq__json_skip(&j) == MQ_OK) (void)mq__json_finish(&j);
    mq__json_free(&j);

    uint64_t u;
    int64_t i;
    mq__json_init(&j, ctx, data, size, "fuzz", 0);
    (void)mq__json_u64(&j, "u", &u);
    mq__json_free(&j);
    mq__json_init(&j, ctx, data, size, "fuzz", 0);
    (void)mq__json_i64(&j, "i", &i);
    mq__json_free(&j);

    if (mq__utf8_check(data, size) == size) {
        mq_buf b;
        mq__buf_init(&b, ctx);
        if (mq__json_write_string(&b, (const char *)data, size) == MQ_OK) {
            const char *s;
            size_t n;
            mq__json_init(&j, ctx, b.data, b.len, "fuzz", 0);
            mq_status st = mq__json_string(&j, &s, &n);
            if (st == MQ_OK) st = mq__json_finish(&j);
            if (st != MQ_OK || n != size || memcmp(s, data, size) != 0) __builtin_trap();
            mq__json_free(&j);
        }
        mq__buf_free(&b);
    }
    mq_ctx_free(ctx);
    return 0;
}
