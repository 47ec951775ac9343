build2/src/pipeline/hf_config.o: src/pipeline/hf_config.c \
 src/pipeline/hf_config.h src/common/internal.h include/monoquant.h \
 src/io/json.h src/common/strbuf.h
src/pipeline/hf_config.h:
src/common/internal.h:
include/monoquant.h:
src/io/json.h:
src/common/strbuf.h:
