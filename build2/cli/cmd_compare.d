build2/cli/cmd_compare.o: cli/cmd_compare.c cli/cli.h include/monoquant.h \
 cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
