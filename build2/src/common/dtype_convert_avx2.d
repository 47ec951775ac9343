build2/src/common/dtype_convert_avx2.o: src/common/dtype_convert_avx2.c \
 src/common/convert.h src/common/internal.h include/monoquant.h
src/common/convert.h:
src/common/internal.h:
include/monoquant.h:
