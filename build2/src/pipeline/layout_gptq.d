build2/src/pipeline/layout_gptq.o: src/pipeline/layout_gptq.c \
 src/pipeline/gptq_export.h src/common/internal.h include/monoquant.h \
 src/pipeline/pipeline_internal.h src/common/strbuf.h src/io/io.h
src/pipeline/gptq_export.h:
src/common/internal.h:
include/monoquant.h:
src/pipeline/pipeline_internal.h:
src/common/strbuf.h:
src/io/io.h:
