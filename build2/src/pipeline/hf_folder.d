build2/src/pipeline/hf_folder.o: src/pipeline/hf_folder.c \
 src/pipeline/hf_folder.h src/io/folder.h src/common/internal.h \
 include/monoquant.h src/io/json.h src/common/strbuf.h
src/pipeline/hf_folder.h:
src/io/folder.h:
src/common/internal.h:
include/monoquant.h:
src/io/json.h:
src/common/strbuf.h:
