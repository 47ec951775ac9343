build2/src/pipeline/classify.o: src/pipeline/classify.c \
 src/common/internal.h include/monoquant.h
src/common/internal.h:
include/monoquant.h:
