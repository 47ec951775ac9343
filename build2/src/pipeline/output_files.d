build2/src/pipeline/output_files.o: src/pipeline/output_files.c \
 src/pipeline/pipeline_internal.h src/common/internal.h \
 include/monoquant.h src/common/strbuf.h src/io/io.h \
 src/pipeline/hf_folder.h src/io/folder.h
src/pipeline/pipeline_internal.h:
src/common/internal.h:
include/monoquant.h:
src/common/strbuf.h:
src/io/io.h:
src/pipeline/hf_folder.h:
src/io/folder.h:
