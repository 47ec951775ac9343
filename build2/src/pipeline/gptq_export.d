build2/src/pipeline/gptq_export.o: src/pipeline/gptq_export.c \
 src/pipeline/gptq_export.h src/common/internal.h include/monoquant.h \
 src/quant/quant_internal.h
src/pipeline/gptq_export.h:
src/common/internal.h:
include/monoquant.h:
src/quant/quant_internal.h:
