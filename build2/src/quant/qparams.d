build2/src/quant/qparams.o: src/quant/qparams.c \
 src/quant/quant_internal.h src/common/internal.h include/monoquant.h
src/quant/quant_internal.h:
src/common/internal.h:
include/monoquant.h:
