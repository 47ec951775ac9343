build2/cli/cmd_dequantize.o: cli/cmd_dequantize.c cli/cli.h \
 include/monoquant.h cli/opts.h
cli/cli.h:
include/monoquant.h:
cli/opts.h:
