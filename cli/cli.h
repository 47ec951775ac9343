/* Shared pieces of the monoquant command-line tool. The CLI uses only the public header. */
#ifndef MQ_CLI_H
#define MQ_CLI_H

#include "monoquant.h"
#include "opts.h"

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

/* Exit codes (docs/CLI.md). */
enum {
    EXIT_OK = 0,
    EXIT_GENERAL = 1,     /* out of memory, cancelled, internal */
    EXIT_CONFIG = 2,      /* usage or configuration error */
    EXIT_QUANT = 3,       /* quantization error; warnings under --strict */
    EXIT_VALIDATION = 4,  /* validation failed */
    EXIT_IO = 5           /* I/O or format error */
};

/* Global options (cli/opts.c), accepted before or after the subcommand. */
typedef struct cli_opts {
    bool quiet;           /* -q: errors only */
    int verbose;          /* -v: more detail */
    bool progress;        /* progress bar on stderr (a terminal, not CI, unless asked) */
    bool progress_on, progress_off; /* --progress / --no-progress */
    bool json;            /* --json: machine-readable output on stdout */
    long long threads;    /* --threads N (0: all CPUs) */
    bool force;           /* -f/--force: replace an existing output file */
    bool help;            /* -h/--help */
} cli_opts;

extern cli_opts g_cli;    /* set by the option parser from the global flags and the environment */

/* Output policy (docs/CLI.md "Output policy"), before any work: refuses an existing `path`
 * unless -f/--force (on a terminal it asks), sets the context's overwrite permission, and
 * runs mq_output_check against `input` (may be NULL). Notes stale temporary files of dead
 * runs in the destination folder. Returns 0 or an exit code after printing the problem. */
int cli_prepare_output(mq_ctx *ctx, const char *path, const mq_model *input);
/* The same for a model folder destination: an existing folder is replaced only with
 * -f/--force (or a yes on the terminal); anything else under that name, or the input's own
 * folder, is refused. */
int cli_prepare_output_folder(mq_ctx *ctx, const char *path, const mq_model *input);
/* Same file (device and inode)? False when either cannot be inspected. */
bool cli_same_file(const char *a, const char *b);

/* Signals: SIGINT, SIGTERM and SIGHUP remove the temporary files of the context being run
 * and exit 130, 143 or 129 with one line; SIGBUS (a mapped input shrank) exits 5 the same
 * way. Call with the context that writes (NULL when none). */
void cli_signals_install(mq_ctx *ctx);

int cli_exit_code(mq_status st);
/* Prints "monoquant: error: <message>" and returns the exit code for st. */
int cli_fail(mq_ctx *ctx, mq_status st);
/* Prints "monoquant <cmd>: <message>" for usage errors and returns EXIT_CONFIG (cmd NULL:
 * an error before the subcommand). */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Progress bar on stderr (only when g_cli.progress); install with mq_ctx_set_progress. */
int cli_progress(void *ud, const char *what, uint64_t done, uint64_t total);
void cli_progress_done(void);
/* A progress line is on the terminal (the signal handler ends it first). */
extern volatile sig_atomic_t cli_bar_shown;

/* Option parsing helpers: value of "--name=value" or "--name value" (advancing *i). Returns
 * NULL if argv[*i] is not that option; sets *missing when the value is absent. */
const char *cli_opt_value(int argc, char **argv, int *i, const char *name, bool *missing);
bool cli_parse_int(const char *s, long long lo, long long hi, long long *out);
bool cli_parse_double(const char *s, double *out);

/* Formats a byte count as "12.3 MB" into buf. */
const char *cli_bytes(uint64_t n, char *buf, size_t cap);
/* mq_qspec_format into buf, returning buf (for use inside printf arguments). */
const char *cli_qspec_name(const mq_qspec *spec, char *buf, size_t cap);
/* Writes s as a JSON string literal (quotes included), escaped by the library's escaper
 * (mq_json_string_format). */
void cli_json_string(FILE *f, const char *s);
/* Writes a JSON number (%.6g; NaN as null, infinities as +-1e999). */
void cli_json_number(FILE *f, double v);
/* Writes `, "sqnr_db": .., "rel_error": .., "max_abs_error": ..`. */
void cli_json_error_stats(FILE *f, const mq_error_stats *e);

/* The exit code of a validation: prints "validation failed: N problem(s)" (exit 4) or, under
 * --strict, "N warning(s) under --strict" (exit 3). */
int cli_verdict(size_t failures, bool strict, size_t warnings);

/* validate --run (cli/validate_run.c). */
typedef struct validate_run_opts {
    const char *q, *ref, *activations;
    int act;              /* mq_act_mode */
    long long rows;       /* input rows per layer */
    unsigned long long seed;
    double min_sqnr;
    bool has_min, json, strict;
} validate_run_opts;
int validate_run(const validate_run_opts *o, mq_ctx *ctx, mq_qmodel *qm, mq_qmodel *ref);

/* Subcommands: argv[0] is the subcommand name. */
int cmd_info(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_dequantize(int argc, char **argv);
int cmd_validate(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);

#endif
