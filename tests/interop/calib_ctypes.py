"""ctypes bindings of the observer API of build/libmonoquant.so, shared by the calibration
interop tests."""
import ctypes as C
import os
import subprocess
import sys

import numpy as np

try:
    LIB = C.CDLL(os.path.abspath(os.path.join(os.environ.get("BUILD", "build"), "libmonoquant.so")))
except OSError as e:
    # A sanitizer build (make asan) needs its runtime loaded first: run again with it preloaded.
    if "__asan" not in str(e) or os.environ.get("MQ_ASAN_PRELOADED"):
        raise
    rt = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
                        capture_output=True, text=True, check=True).stdout.strip()
    env = dict(os.environ, LD_PRELOAD=rt, MQ_ASAN_PRELOADED="1",
               ASAN_OPTIONS="detect_leaks=0:" + os.environ.get("ASAN_OPTIONS", ""))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

KINDS = {"minmax": 0, "moving_average": 1, "histogram": 2, "entropy": 3, "percentile": 4, "mse": 5}
QTYPES = {"int8": 1, "uint8": 2, "int4": 3, "uint4": 4}
SYM, ASYM = 0, 1
PER_TENSOR, PER_CHANNEL = 0, 1
F32 = 12


class Options(C.Structure):
    _fields_ = [("kind", C.c_int), ("type", C.c_int), ("scheme", C.c_int),
                ("granularity", C.c_int), ("channels", C.c_int64),
                ("averaging_constant", C.c_double), ("bins", C.c_int),
                ("upsample_rate", C.c_int), ("percentile", C.c_double)]


LIB.mq_ctx_create.restype = C.c_void_p
LIB.mq_ctx_free.argtypes = [C.c_void_p]
LIB.mq_ctx_message.restype = C.c_char_p
LIB.mq_ctx_message.argtypes = [C.c_void_p]
LIB.mq_observer_options_default.argtypes = [C.POINTER(Options), C.c_int]
LIB.mq_observer_create.argtypes = [C.c_void_p, C.POINTER(Options), C.POINTER(C.c_void_p)]
LIB.mq_observer_free.argtypes = [C.c_void_p]
LIB.mq_observer_update_strided.argtypes = [C.c_void_p, C.c_int, C.c_void_p, C.c_int,
                                           C.POINTER(C.c_int64), C.POINTER(C.c_int64), C.c_int]
LIB.mq_observer_merge.argtypes = [C.c_void_p, C.c_void_p]
LIB.mq_observer_nparams.restype = C.c_int64
LIB.mq_observer_nparams.argtypes = [C.c_void_p]
LIB.mq_observer_count.restype = C.c_uint64
LIB.mq_observer_count.argtypes = [C.c_void_p]
LIB.mq_observer_qparams.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p]


class Observer:
    """One C observer on its own context."""

    def __init__(self, kind, qtype="uint8", scheme=ASYM, channels=0, **kw):
        self.ctx = LIB.mq_ctx_create()
        o = Options()
        LIB.mq_observer_options_default(C.byref(o), KINDS[kind])
        o.type = QTYPES[qtype]
        o.scheme = scheme
        if channels:
            o.granularity = PER_CHANNEL
            o.channels = channels
        for k, v in kw.items():
            setattr(o, k, v)
        self.ptr = C.c_void_p()
        self._check(LIB.mq_observer_create(self.ctx, C.byref(o), C.byref(self.ptr)))

    def _check(self, st):
        if st != 0:
            raise RuntimeError(f"status {st}: {LIB.mq_ctx_message(self.ctx).decode()}")

    def update(self, x, axis=-1):
        """x: a float32 numpy array of any layout (strides are passed through)."""
        x = np.asarray(x)
        assert x.dtype == np.float32
        shape = (C.c_int64 * x.ndim)(*x.shape)
        strides = (C.c_int64 * x.ndim)(*[s // 4 for s in x.strides])
        self._check(LIB.mq_observer_update_strided(self.ptr, F32, x.ctypes.data, x.ndim, shape,
                                                   strides, axis))

    def merge(self, other):
        self._check(LIB.mq_observer_merge(self.ptr, other.ptr))

    def qparams(self):
        n = LIB.mq_observer_nparams(self.ptr)
        scale = np.zeros(n, np.float32)
        zp = np.zeros(n, np.int32)
        lo = np.zeros(n, np.float32)
        hi = np.zeros(n, np.float32)
        self._check(LIB.mq_observer_qparams(self.ptr, scale.ctypes.data, zp.ctypes.data,
                                            lo.ctypes.data, hi.ctypes.data))
        return scale, zp, lo, hi

    def __del__(self):
        LIB.mq_observer_free(self.ptr)
        LIB.mq_ctx_free(self.ctx)
