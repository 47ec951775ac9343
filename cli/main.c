/* monoquant: the command-line tool. Subcommand table, global options, help. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

cli_opts g_cli;

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"quantize", cmd_quantize, "quantize a checkpoint (INT8, INT4, FP16, BF16)"},
    {"dequantize", cmd_dequantize, "rebuild a plain floating-point checkpoint"},
    {"info", cmd_info, "describe a checkpoint: tensors, dtypes, sizes, metadata"},
    {"validate", cmd_validate, "check a quantized checkpoint and its error figures"},
    {"compare", cmd_compare, "compare two checkpoints tensor by tensor"},
    {"calibrate", cmd_calibrate, "turn recorded activations into calibration statistics"},
};
#define NCOMMANDS (sizeof commands / sizeof *commands)

static void usage(FILE *f) {
    fprintf(f, "usage: monoquant [global options] COMMAND [ARGS] [global options]\n\n"
               "commands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fputc('\n', f);
    cli_help_globals(f);
    fprintf(f, "  --version               the version\n\n"
               "'monoquant COMMAND --help' describes a command (docs/CLI.md has them all).\n"
               "Outputs never replace an existing file without -f; temporary files are named\n"
               ".monoquant-<pid>-<n>.tmp beside the output.\n"
               "Exit codes: 0 ok, 1 general error, 2 usage/configuration, 3 quantization,\n"
               "4 validation, 5 I/O or format (also: input changed while reading), 129/130/143\n"
               "interrupted by SIGHUP/SIGINT/SIGTERM.\n");
}

int main(int argc, char **argv) {
    const char *ci = getenv("CI");
    g_cli.progress = isatty(2) && !(ci && *ci);
    for (int i = 1; i < argc && argv[i][0] == '-'; i++)
        if (!strcmp(argv[i], "--version")) {
            printf("monoquant %s\n", mq_version());
            return EXIT_OK;
        }
    int i = cli_parse_globals(argc, argv);
    if (i < 0) return -i - 1;
    if (i >= argc) {
        if (g_cli.help) {
            usage(stdout);
            return EXIT_OK;
        }
        usage(stderr);
        return EXIT_CONFIG;
    }
    if (!strcmp(argv[i], "help")) {
        if (i + 1 >= argc) {
            usage(stdout);
            return EXIT_OK;
        }
        /* "help CMD" is "CMD --help" */
        g_cli.help = true;
        i++;
    }
    for (size_t c = 0; c < NCOMMANDS; c++)
        if (!strcmp(argv[i], commands[c].name)) return commands[c].fn(argc - i, argv + i);
    if (g_cli.help && !strcmp(argv[i - 1], "help")) {
        fprintf(stderr, "monoquant: unknown command '%s'\n", argv[i]);
        return EXIT_CONFIG;
    }
    fprintf(stderr, "monoquant: unknown command '%s' (see 'monoquant --help')\n", argv[i]);
    return EXIT_CONFIG;
}
