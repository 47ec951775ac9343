build2/src/kernels/gemm_ref.o: src/kernels/gemm_ref.c src/kernels/gemm.h \
 src/common/internal.h include/monoquant.h
src/kernels/gemm.h:
src/common/internal.h:
include/monoquant.h:
