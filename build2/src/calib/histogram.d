build2/src/calib/histogram.o: src/calib/histogram.c \
 src/calib/calib_internal.h src/common/internal.h include/monoquant.h
src/calib/calib_internal.h:
src/common/internal.h:
include/monoquant.h:
