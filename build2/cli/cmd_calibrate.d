build2/cli/cmd_calibrate.o: cli/cmd_calibrate.c cli/cli.h \
 include/monoquant.h cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
