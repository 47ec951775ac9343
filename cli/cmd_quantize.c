/* monoquant quantize (not implemented yet). */
#include "cli.h"

int cmd_quantize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "monoquant: 'quantize' is not implemented yet\n");
    return EXIT_GENERAL;
}
