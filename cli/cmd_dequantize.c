/* monoquant dequantize (not implemented yet). */
#include "cli.h"

int cmd_dequantize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "monoquant: 'dequantize' is not implemented yet\n");
    return EXIT_GENERAL;
}
