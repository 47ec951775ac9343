/* monoquant validate (not implemented yet). */
#include "cli.h"

int cmd_validate(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "monoquant: 'validate' is not implemented yet\n");
    return EXIT_GENERAL;
}
