build2/src/io/safetensors_read.o: src/io/safetensors_read.c src/io/json.h \
 src/common/internal.h include/monoquant.h src/common/strbuf.h \
 src/io/model_internal.h
src/io/json.h:
src/common/internal.h:
include/monoquant.h:
src/common/strbuf.h:
src/io/model_internal.h:
