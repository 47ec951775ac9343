build2/src/calib/range_search.o: src/calib/range_search.c \
 src/calib/calib_internal.h src/common/internal.h include/monoquant.h \
 src/quant/quant_internal.h
src/calib/calib_internal.h:
src/common/internal.h:
include/monoquant.h:
src/quant/quant_internal.h:
