/* The option parser shared by every subcommand: each command describes its options in a table
 * (one line per option, see the OPT_* macros) over a state struct; the global options
 * (-q, -v, --json, --threads, --progress, --no-progress, -f/--force, -h/--help) are accepted
 * before or after the subcommand. Values come as "--name VALUE" or "--name=VALUE" (short:
 * "-o VALUE"); short flags cluster ("-qf"); "--" ends the options. */
#ifndef MQ_CLI_OPTS_H
#define MQ_CLI_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum cli_opt_type {
    CLI_FLAG,    /* bool: true (false with CLI_NEGATE) */
    CLI_COUNT,   /* int: +1 per use (-v -v) */
    CLI_STR,     /* const char * */
    CLI_INT,     /* long long in [lo, hi] */
    CLI_DOUBLE,  /* double (finite) */
    CLI_CHOICE,  /* int: value of the matching choice */
    CLI_LIST,    /* cli_list: appended; repeatable */
    CLI_FN       /* fn(state, value) does the work */
} cli_opt_type;

enum {
    CLI_NEGATE = 1u, /* CLI_FLAG stores false */
    CLI_GREEDY = 2u  /* CLI_LIST also takes the words that follow, up to the next option */
};

/* A value of an enumerated option: `names` lists the accepted spellings, '|'-separated, the
 * first one canonical (shown in --help and errors); matching ignores case. */
typedef struct cli_choice {
    const char *names;
    int value;
} cli_choice;

typedef struct cli_list {
    const char **v;
    size_t n, cap;
    bool from_config; /* the command line replaces entries from a config file */
} cli_list;

/* Returns NULL when the value is accepted, else the problem (static or in err). */
typedef const char *(*cli_opt_fn)(void *state, const char *value, char *err, size_t cap);

typedef struct cli_option {
    const char *names;        /* "output|o": long names and one-letter short names; first shown */
    cli_opt_type type;
    size_t offset;            /* the field in the state struct */
    const char *metavar;      /* the value's name in --help; NULL for flags */
    const char *help;         /* one line; more lines after '\n' */
    long long lo, hi;         /* CLI_INT */
    const cli_choice *choices;/* CLI_CHOICE: ends with {NULL, 0} */
    cli_opt_fn fn;            /* CLI_FN */
    unsigned flags;
} cli_option;

#define OPT_FLAG(names, S, f, help) {names, CLI_FLAG, offsetof(S, f), NULL, help, 0, 0, NULL, NULL, 0}
#define OPT_NOFLAG(names, S, f, help) {names, CLI_FLAG, offsetof(S, f), NULL, help, 0, 0, NULL, NULL, CLI_NEGATE}
#define OPT_COUNT(names, S, f, help) {names, CLI_COUNT, offsetof(S, f), NULL, help, 0, 0, NULL, NULL, 0}
#define OPT_STR(names, S, f, meta, help) {names, CLI_STR, offsetof(S, f), meta, help, 0, 0, NULL, NULL, 0}
#define OPT_INT(names, S, f, meta, lo, hi, help) {names, CLI_INT, offsetof(S, f), meta, help, lo, hi, NULL, NULL, 0}
#define OPT_DOUBLE(names, S, f, meta, help) {names, CLI_DOUBLE, offsetof(S, f), meta, help, 0, 0, NULL, NULL, 0}
#define OPT_CHOICE(names, S, f, meta, ch, help) {names, CLI_CHOICE, offsetof(S, f), meta, help, 0, 0, ch, NULL, 0}
#define OPT_LIST(names, S, f, meta, help) {names, CLI_LIST, offsetof(S, f), meta, help, 0, 0, NULL, NULL, 0}
#define OPT_LIST_GREEDY(names, S, f, meta, help) {names, CLI_LIST, offsetof(S, f), meta, help, 0, 0, NULL, NULL, CLI_GREEDY}
#define OPT_FN(names, meta, fn, help) {names, CLI_FN, 0, meta, help, 0, 0, NULL, fn, 0}
#define OPT_END {NULL, CLI_FLAG, 0, NULL, NULL, 0, 0, NULL, NULL, 0}

/* One dtype vocabulary for quantize, dequantize and calibrate (`--type`, alias `--dtype`):
 * the canonical name first, then the older spellings still accepted. */
#define CLI_T_INT8 "int8|i8|s8"
#define CLI_T_UINT8 "uint8|u8"
#define CLI_T_INT4 "int4|i4|s4"
#define CLI_T_UINT4 "uint4|u4"
#define CLI_T_FP16 "fp16|f16|float16|half"
#define CLI_T_BF16 "bf16|bfloat16"
#define CLI_T_FP32 "fp32|f32|float32|float"

typedef struct cli_command {
    const char *name;
    const char *usage;        /* after "monoquant NAME " */
    const char *about;        /* paragraphs before the option list */
    const cli_option *opts;   /* ends with OPT_END */
    const char *footer;       /* after the option list (may be NULL) */
} cli_command;

#define CLI_MAX_POS 64
#define CLI_MAX_OPTS 96

typedef struct cli_args {
    const char *pos[CLI_MAX_POS];  /* words that are not options, in order */
    int npos;
    bool seen[CLI_MAX_OPTS];        /* seen[i]: option i of the command's table was given */
} cli_args;

/* Parses argv[1..argc) (argv[0] is the subcommand) into state and the global options.
 * Returns 0, -1 when --help was printed (exit 0), or an exit code after printing the
 * problem ("monoquant NAME: ..."). */
int cli_parse(const cli_command *cmd, void *state, int argc, char **argv, cli_args *out);
/* Parses the global options before the subcommand; returns the index of the subcommand
 * (argc when none), or -(exit code) - 1 after printing a problem. */
int cli_parse_globals(int argc, char **argv);
/* Applies `value` (NULL for a flag) to option `name` (a long name) as a config file entry
 * would. Returns 0, -1 for an unknown name, or an exit code after printing the problem. */
int cli_apply_named(const cli_command *cmd, void *state, const char *name, const char *value,
                    bool from_config, cli_args *args);
/* True when option `name` (its canonical long name) was given. */
bool cli_given(const cli_command *cmd, const cli_args *args, const char *name);
/* Full --help of a command: usage, about, its options, the global options, footer. */
void cli_help(const cli_command *cmd, FILE *f);
/* The global options' lines of --help. */
void cli_help_globals(FILE *f);
/* Index of the choice matching v (any spelling, any case), or -1. */
int cli_choice_find(const cli_choice *c, const char *v);
/* Appends to a list (the command line replacing config entries). False: out of memory. */
bool cli_list_push(cli_list *l, const char *s, bool from_config);
void cli_list_free(cli_list *l);

#endif
