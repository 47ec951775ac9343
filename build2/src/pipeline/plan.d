build2/src/pipeline/plan.o: src/pipeline/plan.c \
 src/pipeline/pipeline_internal.h src/common/internal.h \
 include/monoquant.h src/common/strbuf.h src/io/io.h \
 src/quant/quant_internal.h
src/pipeline/pipeline_internal.h:
src/common/internal.h:
include/monoquant.h:
src/common/strbuf.h:
src/io/io.h:
src/quant/quant_internal.h:
