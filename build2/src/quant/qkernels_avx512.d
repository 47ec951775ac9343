build2/src/quant/qkernels_avx512.o: src/quant/qkernels_avx512.c \
 src/quant/quant_internal.h src/common/internal.h include/monoquant.h
src/quant/quant_internal.h:
src/common/internal.h:
include/monoquant.h:
