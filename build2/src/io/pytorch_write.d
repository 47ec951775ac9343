build2/src/io/pytorch_write.o: src/io/pytorch_write.c src/io/pickle.h \
 src/common/internal.h include/monoquant.h src/io/pytorch_internal.h \
 src/io/model_internal.h src/io/writer_internal.h src/io/io.h \
 src/io/zip.h
src/io/pickle.h:
src/common/internal.h:
include/monoquant.h:
src/io/pytorch_internal.h:
src/io/model_internal.h:
src/io/writer_internal.h:
src/io/io.h:
src/io/zip.h:
