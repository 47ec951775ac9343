build2/src/io/safetensors_write.o: src/io/safetensors_write.c \
 src/io/json.h src/common/internal.h include/monoquant.h \
 src/common/strbuf.h src/io/writer_internal.h src/io/io.h
src/io/json.h:
src/common/internal.h:
include/monoquant.h:
src/common/strbuf.h:
src/io/writer_internal.h:
src/io/io.h:
