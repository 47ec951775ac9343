build2/src/calib/stats_read.o: src/calib/stats_read.c \
 src/calib/calib_internal.h src/common/internal.h include/monoquant.h
src/calib/calib_internal.h:
src/common/internal.h:
include/monoquant.h:
