build2/src/io/model_memory.o: src/io/model_memory.c \
 src/io/model_internal.h src/common/internal.h include/monoquant.h
src/io/model_internal.h:
src/common/internal.h:
include/monoquant.h:
