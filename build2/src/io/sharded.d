build2/src/io/sharded.o: src/io/sharded.c src/io/json.h \
 src/common/internal.h include/monoquant.h src/common/strbuf.h \
 src/io/folder.h src/io/model_internal.h
src/io/json.h:
src/common/internal.h:
include/monoquant.h:
src/common/strbuf.h:
src/io/folder.h:
src/io/model_internal.h:
