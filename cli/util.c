/* CLI helpers: exit codes, messages, progress bar, option parsing. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int cli_exit_code(mq_status st) {
    switch (st) {
    case MQ_OK: return EXIT_OK;
    case MQ_ERR_INVALID: return EXIT_CONFIG;
    case MQ_ERR_IO:
    case MQ_ERR_FORMAT:
    case MQ_ERR_UNSUPPORTED: return EXIT_IO;
    case MQ_ERR_QUANT: return EXIT_QUANT;
    case MQ_ERR_VALIDATION: return EXIT_VALIDATION;
    default: return EXIT_GENERAL;
    }
}

int cli_fail(mq_ctx *ctx, mq_status st) {
    cli_progress_done();
    const char *msg = ctx ? mq_ctx_message(ctx) : "";
    fprintf(stderr, "monoquant: error: %s\n", *msg ? msg : mq_status_str(st));
    return cli_exit_code(st);
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "monoquant%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'monoquant %s%s--help')\n", cmd ? cmd : "", cmd ? " " : "");
    va_end(ap);
    return EXIT_CONFIG;
}

void cli_warn(const char *fmt, ...) {
    cli_progress_done();
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "monoquant: warning: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void cli_info(const char *fmt, ...) {
    if (g_cli.quiet) return;
    cli_progress_done();
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

volatile sig_atomic_t cli_bar_shown;
#define bar_shown cli_bar_shown

int cli_progress(void *ud, const char *what, uint64_t done, uint64_t total) {
    (void)ud;
    if (!g_cli.progress) return 0;
    double frac = total ? (double)done / (double)total : 1.0;
    if (frac > 1) frac = 1;
    int width = 30, fill = (int)(frac * width);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r[%s] %5.1f%%  %-40.40s", bar, frac * 100, what ? what : "");
    fflush(stderr);
    bar_shown = true;
    return 0;
}

void cli_progress_done(void) {
    if (!bar_shown) return;
    fprintf(stderr, "\r%*s\r", 80, "");
    fflush(stderr);
    bar_shown = false;
}

bool cli_parse_int(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_parse_double(const char *s, double *out) {
    if (!s || !*s) return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || isnan(v)) return false;
    *out = v;
    return true;
}

const char *cli_qspec_name(const mq_qspec *spec, char *buf, size_t cap) {
    mq_qspec_format(spec, buf, cap);
    return buf;
}

const char *cli_bytes(uint64_t n, char *buf, size_t cap) {
    static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000 && u < 4) v /= 1000, u++;
    if (u == 0) snprintf(buf, cap, "%llu B", (unsigned long long)n);
    else snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

void cli_json_string(FILE *f, const char *s) {
    char small[256];
    size_t n = mq_json_string_format(s, small, sizeof small);
    if (n < sizeof small) {
        fputs(small, f);
        return;
    }
    char *big = (char *)malloc(n + 1);
    if (!big) {
        fputs("\"\"", f);
        return;
    }
    mq_json_string_format(s, big, n + 1);
    fputs(big, f);
    free(big);
}

void cli_json_number(FILE *f, double v) {
    if (isnan(v)) fputs("null", f);
    else if (isinf(v)) fputs(v > 0 ? "1e999" : "-1e999", f); /* parses as +-Infinity */
    else fprintf(f, "%.6g", v);
}

void cli_json_error_stats(FILE *f, const mq_error_stats *e) {
    fputs(", \"sqnr_db\": ", f);
    cli_json_number(f, e->sqnr_db);
    fputs(", \"rel_error\": ", f);
    cli_json_number(f, e->rel_fro);
    fputs(", \"max_abs_error\": ", f);
    cli_json_number(f, e->max_abs);
}

int cli_verdict(size_t failures, bool strict, size_t warnings) {
    if (failures) {
        fprintf(stderr, "monoquant: error: validation failed: %zu problem(s)\n", failures);
        return EXIT_VALIDATION;
    }
    if (strict && warnings) {
        fprintf(stderr, "monoquant: error: %zu warning(s) under --strict\n", warnings);
        return EXIT_QUANT;
    }
    return EXIT_OK;
}
