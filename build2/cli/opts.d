build2/cli/opts.o: cli/opts.c cli/opts.h cli/cli.h include/monoquant.h
cli/opts.h:
cli/cli.h:
include/monoquant.h:
