build2/src/common/strbuf.o: src/common/strbuf.c src/common/strbuf.h \
 src/common/internal.h include/monoquant.h
src/common/strbuf.h:
src/common/internal.h:
include/monoquant.h:
