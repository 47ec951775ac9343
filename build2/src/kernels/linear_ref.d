build2/src/kernels/linear_ref.o: src/kernels/linear_ref.c \
 src/kernels/kernels.h src/common/internal.h include/monoquant.h \
 src/common/convert.h
src/kernels/kernels.h:
src/common/internal.h:
include/monoquant.h:
src/common/convert.h:
