build2/src/quant/qkernels_ref.o: src/quant/qkernels_ref.c \
 src/quant/quant_internal.h src/common/internal.h include/monoquant.h \
 src/common/convert.h
src/quant/quant_internal.h:
src/common/internal.h:
include/monoquant.h:
src/common/convert.h:
