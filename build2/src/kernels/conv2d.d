build2/src/kernels/conv2d.o: src/kernels/conv2d.c src/kernels/kernels.h \
 src/common/internal.h include/monoquant.h
src/kernels/kernels.h:
src/common/internal.h:
include/monoquant.h:
