build2/src/io/json.o: src/io/json.c src/io/json.h src/common/internal.h \
 include/monoquant.h src/common/strbuf.h
src/io/json.h:
src/common/internal.h:
include/monoquant.h:
src/common/strbuf.h:
