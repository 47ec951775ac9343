build2/src/io/folder.o: src/io/folder.c src/io/folder.h \
 src/common/internal.h include/monoquant.h src/io/dest.h
src/io/folder.h:
src/common/internal.h:
include/monoquant.h:
src/io/dest.h:
