build2/src/io/pickle.o: src/io/pickle.c src/io/pickle.h \
 src/common/internal.h include/monoquant.h
src/io/pickle.h:
src/common/internal.h:
include/monoquant.h:
