build2/src/quant/quantize.o: src/quant/quantize.c \
 src/quant/quant_internal.h src/common/internal.h include/monoquant.h \
 src/kernels/gemm.h
src/quant/quant_internal.h:
src/common/internal.h:
include/monoquant.h:
src/kernels/gemm.h:
