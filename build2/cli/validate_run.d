build2/cli/validate_run.o: cli/validate_run.c cli/cli.h \
 include/monoquant.h cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
