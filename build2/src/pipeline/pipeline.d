build2/src/pipeline/pipeline.o: src/pipeline/pipeline.c \
 src/pipeline/pipeline_internal.h src/common/internal.h \
 include/monoquant.h src/common/strbuf.h src/io/io.h \
 src/pipeline/hf_folder.h src/io/folder.h src/quant/quant_internal.h
src/pipeline/pipeline_internal.h:
src/common/internal.h:
include/monoquant.h:
src/common/strbuf.h:
src/io/io.h:
src/pipeline/hf_folder.h:
src/io/folder.h:
src/quant/quant_internal.h:
