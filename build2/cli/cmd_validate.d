build2/cli/cmd_validate.o: cli/cmd_validate.c cli/cli.h \
 include/monoquant.h cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
