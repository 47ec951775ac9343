build2/src/kernels/linear_check.o: src/kernels/linear_check.c \
 src/kernels/kernels.h src/common/internal.h include/monoquant.h
src/kernels/kernels.h:
src/common/internal.h:
include/monoquant.h:
