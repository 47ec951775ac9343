build2/src/io/writer.o: src/io/writer.c src/io/writer_internal.h \
 src/common/internal.h include/monoquant.h src/io/io.h src/io/dest.h
src/io/writer_internal.h:
src/common/internal.h:
include/monoquant.h:
src/io/io.h:
src/io/dest.h:
