build2/src/quant/qkernels_avx2.o: src/quant/qkernels_avx2.c \
 src/quant/quant_internal.h src/common/internal.h include/monoquant.h
src/quant/quant_internal.h:
src/common/internal.h:
include/monoquant.h:
