build2/src/common/dtype_convert_avx512.o: \
 src/common/dtype_convert_avx512.c src/common/convert.h \
 src/common/internal.h include/monoquant.h
src/common/convert.h:
src/common/internal.h:
include/monoquant.h:
