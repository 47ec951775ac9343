build2/src/quant/error_stats.o: src/quant/error_stats.c \
 src/quant/quant_internal.h src/common/internal.h include/monoquant.h
src/quant/quant_internal.h:
src/common/internal.h:
include/monoquant.h:
