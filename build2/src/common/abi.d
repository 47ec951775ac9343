build2/src/common/abi.o: src/common/abi.c src/common/internal.h \
 include/monoquant.h
src/common/internal.h:
include/monoquant.h:
