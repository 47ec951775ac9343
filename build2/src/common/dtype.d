build2/src/common/dtype.o: src/common/dtype.c src/common/internal.h \
 include/monoquant.h src/common/convert.h
src/common/internal.h:
include/monoquant.h:
src/common/convert.h:
