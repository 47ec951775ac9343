build2/src/kernels/gemm_avx2.o: src/kernels/gemm_avx2.c \
 src/kernels/gemm.h src/common/internal.h include/monoquant.h \
 src/kernels/tile.h src/kernels/kernels.h
src/kernels/gemm.h:
src/common/internal.h:
include/monoquant.h:
src/kernels/tile.h:
src/kernels/kernels.h:
