build2/cli/output.o: cli/output.c cli/cli.h include/monoquant.h \
 cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
