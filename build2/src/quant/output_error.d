build2/src/quant/output_error.o: src/quant/output_error.c \
 src/quant/quant_internal.h src/common/internal.h include/monoquant.h \
 src/kernels/gemm.h
src/quant/quant_internal.h:
src/common/internal.h:
include/monoquant.h:
src/kernels/gemm.h:
