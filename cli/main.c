/* monoquant: the command-line tool. Subcommand table, global flags, help. */
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

static void usage(FILE *f) {
    fprintf(f, "usage: monoquant [-q|-v] [--progress|--no-progress] COMMAND [ARGS]\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'monoquant COMMAND --help' describes a command. Exit codes: 0 ok, 1 general "
               "error,\n2 usage/configuration, 3 quantization, 4 validation, 5 I/O or format.\n");
}

int main(int argc, char **argv) {
    const char *ci = getenv("CI");
    g_cli.progress = isatty(2) && !(ci && *ci);
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) g_cli.quiet = true, g_cli.progress = false;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) g_cli.verbose++;
        else if (!strcmp(a, "--progress")) g_cli.progress = true;
        else if (!strcmp(a, "--no-progress")) g_cli.progress = false;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--version")) {
            printf("monoquant %s\n", mq_version());
            return EXIT_OK;
        } else {
            fprintf(stderr, "monoquant: unknown option '%s'\n", a);
            usage(stderr);
            return EXIT_CONFIG;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_CONFIG;
    }
    for (size_t c = 0; c < sizeof commands / sizeof *commands; c++)
        if (!strcmp(argv[i], commands[c].name)) return commands[c].fn(argc - i, argv + i);
    if (!strcmp(argv[i], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    fprintf(stderr, "monoquant: unknown command '%s'\n", argv[i]);
    usage(stderr);
    return EXIT_CONFIG;
}
