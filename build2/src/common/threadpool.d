build2/src/common/threadpool.o: src/common/threadpool.c \
 src/common/internal.h include/monoquant.h
src/common/internal.h:
include/monoquant.h:
