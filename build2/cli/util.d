build2/cli/util.o: cli/util.c cli/cli.h include/monoquant.h cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
