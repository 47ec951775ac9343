build2/src/quant/qformat.o: src/quant/qformat.c \
 src/quant/quant_internal.h src/common/internal.h include/monoquant.h
src/quant/quant_internal.h:
src/common/internal.h:
include/monoquant.h:
