build2/cli/cmd_quantize.o: cli/cmd_quantize.c cli/cli.h \
 include/monoquant.h cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
