build2/src/kernels/linear_avx512.o: src/kernels/linear_avx512.c \
 src/kernels/tile.h src/kernels/kernels.h src/common/internal.h \
 include/monoquant.h
src/kernels/tile.h:
src/kernels/kernels.h:
src/common/internal.h:
include/monoquant.h:
