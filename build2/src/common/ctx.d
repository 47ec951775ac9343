build2/src/common/ctx.o: src/common/ctx.c src/common/internal.h \
 include/monoquant.h src/io/dest.h
src/common/internal.h:
include/monoquant.h:
src/io/dest.h:
