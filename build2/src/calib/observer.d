build2/src/calib/observer.o: src/calib/observer.c \
 src/calib/calib_internal.h src/common/internal.h include/monoquant.h
src/calib/calib_internal.h:
src/common/internal.h:
include/monoquant.h:
