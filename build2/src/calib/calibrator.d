build2/src/calib/calibrator.o: src/calib/calibrator.c \
 src/calib/calib_internal.h src/common/internal.h include/monoquant.h \
 src/kernels/gemm.h
src/calib/calib_internal.h:
src/common/internal.h:
include/monoquant.h:
src/kernels/gemm.h:
