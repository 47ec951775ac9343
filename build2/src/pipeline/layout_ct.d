build2/src/pipeline/layout_ct.o: src/pipeline/layout_ct.c \
 src/pipeline/pipeline_internal.h src/common/internal.h \
 include/monoquant.h src/common/strbuf.h src/io/io.h
src/pipeline/pipeline_internal.h:
src/common/internal.h:
include/monoquant.h:
src/common/strbuf.h:
src/io/io.h:
