build2/src/io/dest.o: src/io/dest.c src/io/dest.h src/common/internal.h \
 include/monoquant.h src/io/model_internal.h
src/io/dest.h:
src/common/internal.h:
include/monoquant.h:
src/io/model_internal.h:
