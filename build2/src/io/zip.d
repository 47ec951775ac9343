build2/src/io/zip.o: src/io/zip.c src/io/zip.h src/common/internal.h \
 include/monoquant.h
src/io/zip.h:
src/common/internal.h:
include/monoquant.h:
