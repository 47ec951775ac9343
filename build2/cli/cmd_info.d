build2/cli/cmd_info.o: cli/cmd_info.c cli/cli.h include/monoquant.h \
 cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
