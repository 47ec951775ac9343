build2/src/io/model.o: src/io/model.c src/io/model_internal.h \
 src/common/internal.h include/monoquant.h src/io/io.h
src/io/model_internal.h:
src/common/internal.h:
include/monoquant.h:
src/io/io.h:
