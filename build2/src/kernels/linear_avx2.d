build2/src/kernels/linear_avx2.o: src/kernels/linear_avx2.c \
 src/kernels/tile.h src/kernels/kernels.h src/common/internal.h \
 include/monoquant.h
src/kernels/tile.h:
src/kernels/kernels.h:
src/common/internal.h:
include/monoquant.h:
