build2/src/kernels/linear.o: src/kernels/linear.c src/kernels/kernels.h \
 src/common/internal.h include/monoquant.h src/common/convert.h \
 src/quant/quant_internal.h
src/kernels/kernels.h:
src/common/internal.h:
include/monoquant.h:
src/common/convert.h:
src/quant/quant_internal.h:
