build2/src/common/cpu.o: src/common/cpu.c src/common/internal.h \
 include/monoquant.h
src/common/internal.h:
include/monoquant.h:
