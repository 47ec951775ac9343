/* monoquant calibrate (not implemented yet). */
#include "cli.h"

int cmd_calibrate(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "monoquant: 'calibrate' is not implemented yet\n");
    return EXIT_GENERAL;
}
