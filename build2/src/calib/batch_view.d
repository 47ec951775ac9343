build2/src/calib/batch_view.o: src/calib/batch_view.c \
 src/calib/calib_internal.h src/common/internal.h include/monoquant.h
src/calib/calib_internal.h:
src/common/internal.h:
include/monoquant.h:
