build2/cli/main.o: cli/main.c cli/cli.h include/monoquant.h cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
