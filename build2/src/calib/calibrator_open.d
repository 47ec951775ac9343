build2/src/calib/calibrator_open.o: src/calib/calibrator_open.c \
 src/calib/calib_internal.h src/common/internal.h include/monoquant.h
src/calib/calib_internal.h:
src/common/internal.h:
include/monoquant.h:
