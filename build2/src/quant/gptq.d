build2/src/quant/gptq.o: src/quant/gptq.c src/quant/quant_internal.h \
 src/common/internal.h include/monoquant.h src/kernels/gemm.h
src/quant/quant_internal.h:
src/common/internal.h:
include/monoquant.h:
src/kernels/gemm.h:
