/* monoquant compare (not implemented yet). */
#include "cli.h"

int cmd_compare(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "monoquant: 'compare' is not implemented yet\n");
    return EXIT_GENERAL;
}
