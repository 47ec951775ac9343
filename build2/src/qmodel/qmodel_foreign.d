build2/src/qmodel/qmodel_foreign.o: src/qmodel/qmodel_foreign.c \
 src/qmodel/qmodel_internal.h src/pipeline/hf_config.h \
 src/common/internal.h include/monoquant.h \
 src/pipeline/pipeline_internal.h src/common/strbuf.h src/io/io.h \
 src/quant/quant_internal.h
src/qmodel/qmodel_internal.h:
src/pipeline/hf_config.h:
src/common/internal.h:
include/monoquant.h:
src/pipeline/pipeline_internal.h:
src/common/strbuf.h:
src/io/io.h:
src/quant/quant_internal.h:
