/* monoquant info (not implemented yet). */
#include "cli.h"

int cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "monoquant: 'info' is not implemented yet\n");
    return EXIT_GENERAL;
}
