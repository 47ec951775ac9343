build2/src/pipeline/layout_native.o: src/pipeline/layout_native.c \
 src/pipeline/pipeline_internal.h src/common/internal.h \
 include/monoquant.h src/common/strbuf.h src/io/io.h
src/pipeline/pipeline_internal.h:
src/common/internal.h:
include/monoquant.h:
src/common/strbuf.h:
src/io/io.h:
