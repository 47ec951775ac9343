"""ctypes binding of $BUILD/libmonoquant.so, the one place the interop tests load the library.
A sanitizer build (`make asan`) needs the ASan runtime loaded first: the test then re-executes
itself once with it preloaded, so the library runs under the sanitizers too.

Holds the prototypes the tests share (context, instruction sets), the public structs (the
extensible ones set their struct_size when built, as the header's _default/_init functions
do), checkpoints read and written through mq_model_* / mq_writer_* as torch tensors (Model,
read, write, open_error, same), and observers (Observer). Prototypes only one test uses stay
in that test."""
import ctypes as C
import os
import subprocess
import sys

import numpy as np
import torch

__all__ = [
    "LIB", "_L", "load", "MAX_DIMS",
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F16", "BF16", "F32", "F64",
    "C64", "TORCH_TO_MQ", "MQ_TO_TORCH",
    "SYM", "ASYM", "PER_TENSOR", "PER_CHANNEL", "PER_GROUP", "KINDS", "QTYPES",
    "Tensor", "OpenOptions", "TensorDesc", "KV", "Options", "QSpec", "QLayout", "CalibData",
    "LinearDesc", "Conv2dDesc",
    "MQError", "Model", "read", "open_error", "write", "same", "Observer",
]


def _load():
    path = os.path.abspath(os.path.join(os.environ.get("BUILD", "build"), "libmonoquant.so"))
    try:
        return C.CDLL(path)
    except OSError as e:
        if "__asan" not in str(e) or os.environ.get("MQ_ASAN_REEXEC"):
            raise
    rt = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
                        capture_output=True, text=True, check=True).stdout.strip()
    env = dict(os.environ, LD_PRELOAD=rt, MQ_ASAN_REEXEC="1",
               ASAN_OPTIONS="detect_leaks=0:" + os.environ.get("ASAN_OPTIONS", ""))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


LIB = _load()
_L = LIB


def load():
    """The loaded library (one handle, so the prototypes declared here apply)."""
    return LIB


MAX_DIMS = 8
# mq_dtype values (include/monoquant.h)
BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64 = range(1, 14)
C64 = 17
# mq_qscheme, mq_granularity, mq_observer_kind, mq_qtype
SYM, ASYM = 0, 1
PER_TENSOR, PER_CHANNEL, PER_GROUP = 0, 1, 2
KINDS = {"minmax": 0, "moving_average": 1, "histogram": 2, "entropy": 3, "percentile": 4, "mse": 5}
QTYPES = {"int8": 1, "uint8": 2, "int4": 3, "uint4": 4}

TORCH_TO_MQ = {
    torch.bool: BOOL, torch.uint8: U8, torch.int8: I8, torch.int16: I16, torch.int32: I32,
    torch.int64: I64, torch.float16: F16, torch.bfloat16: BF16, torch.float32: F32,
    torch.float64: F64, torch.complex64: C64,
}
MQ_TO_TORCH = {v: k for k, v in TORCH_TO_MQ.items()}


class Tensor(C.Structure):
    _fields_ = [("name", C.c_char_p), ("dtype", C.c_int), ("ndim", C.c_int),
                ("shape", C.c_int64 * MAX_DIMS), ("numel", C.c_uint64),
                ("nbytes", C.c_uint64), ("data", C.c_void_p)]


class Extensible(C.Structure):
    """A struct whose first field is struct_size (the header's ABI policy)."""

    def __init__(self, *args, **kw):
        super().__init__(C.sizeof(self), *args, **kw)


class OpenOptions(Extensible):
    _fields_ = [("struct_size", C.c_size_t), ("format", C.c_int), ("key", C.c_char_p)]


class TensorDesc(C.Structure):
    _fields_ = [("name", C.c_char_p), ("dtype", C.c_int), ("ndim", C.c_int),
                ("shape", C.c_int64 * MAX_DIMS)]


class KV(C.Structure):
    _fields_ = [("key", C.c_char_p), ("value", C.c_char_p)]


class Options(Extensible):
    """mq_observer_options."""
    _fields_ = [("struct_size", C.c_size_t), ("kind", C.c_int), ("type", C.c_int),
                ("scheme", C.c_int), ("granularity", C.c_int), ("channels", C.c_int64),
                ("averaging_constant", C.c_double), ("bins", C.c_int),
                ("upsample_rate", C.c_int), ("percentile", C.c_double)]


class QSpec(C.Structure):
    _fields_ = [("type", C.c_int), ("scheme", C.c_int), ("granularity", C.c_int),
                ("group_size", C.c_int), ("search", C.c_int)]


class CalibData(Extensible):
    _fields_ = [("struct_size", C.c_size_t), ("importance", C.POINTER(C.c_float)),
                ("hessian", C.POINTER(C.c_float))]


class QLayout(C.Structure):
    _fields_ = [("rows", C.c_int64), ("cols", C.c_int64), ("groups_per_row", C.c_int64),
                ("nscales", C.c_int64), ("data_dtype", C.c_int), ("ndata_dims", C.c_int),
                ("data_shape", C.c_int64 * MAX_DIMS), ("data_bytes", C.c_uint64),
                ("row_bytes", C.c_uint64), ("scale_dtype", C.c_int),
                ("has_zero_point", C.c_int), ("zero_point_dtype", C.c_int),
                ("group_size", C.c_int64), ("last_group_size", C.c_int64),
                ("qmin", C.c_int), ("qmax", C.c_int)]


class LinearDesc(Extensible):
    _fields_ = [("struct_size", C.c_size_t), ("type", C.c_int), ("scheme", C.c_int),
                ("granularity", C.c_int), ("group_size", C.c_int), ("out_features", C.c_int64),
                ("in_features", C.c_int64), ("weight_dtype", C.c_int), ("weight", C.c_void_p),
                ("scale", C.c_void_p), ("zero_point", C.c_void_p), ("bias", C.c_void_p),
                ("act", C.c_int), ("input_scale", C.c_float), ("input_zero_point", C.c_int)]


class Conv2dDesc(Extensible):
    _fields_ = [("struct_size", C.c_size_t), ("in_channels", C.c_int64)] + [
        (n, C.c_int) for n in ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w",
                               "dilation_h", "dilation_w", "groups")]


LIB.mq_ctx_create.restype = C.c_void_p
LIB.mq_ctx_free.argtypes = [C.c_void_p]
LIB.mq_ctx_message.restype = C.c_char_p
LIB.mq_ctx_message.argtypes = [C.c_void_p]
LIB.mq_ctx_set_threads.argtypes = [C.c_void_p, C.c_int]
LIB.mq_ctx_set_isa.argtypes = [C.c_void_p, C.c_int]
LIB.mq_isa_supported.restype = C.c_int


def isa_levels():
    """Instruction-set levels this machine runs (each architecture has its own), scalar first."""
    ctx = LIB.mq_ctx_create()
    try:
        return [l for l in range(LIB.mq_isa_supported() + 1) if LIB.mq_ctx_set_isa(ctx, l) == 0]
    finally:
        LIB.mq_ctx_free(ctx)

LIB.mq_model_open.argtypes = [C.c_void_p, C.c_char_p, C.c_void_p, C.POINTER(C.c_void_p)]
LIB.mq_model_free.argtypes = [C.c_void_p]
LIB.mq_model_tensor_count.restype = C.c_size_t
LIB.mq_model_tensor_count.argtypes = [C.c_void_p]
LIB.mq_model_tensor.restype = C.POINTER(Tensor)
LIB.mq_model_tensor.argtypes = [C.c_void_p, C.c_size_t]
LIB.mq_model_metadata_find.restype = C.c_int64
LIB.mq_model_metadata_find.argtypes = [C.c_void_p, C.c_char_p]
LIB.mq_model_metadata_value.restype = C.c_char_p
LIB.mq_model_metadata_value.argtypes = [C.c_void_p, C.c_size_t]
LIB.mq_writer_open.argtypes = [C.c_void_p, C.c_char_p, C.c_int, C.c_void_p, C.c_size_t,
                               C.c_void_p, C.c_size_t, C.POINTER(C.c_void_p)]
LIB.mq_writer_write.argtypes = [C.c_void_p, C.c_char_p, C.c_size_t]
LIB.mq_writer_commit.argtypes = [C.c_void_p]
LIB.mq_writer_free.argtypes = [C.c_void_p]

LIB.mq_observer_options_default_sized.argtypes = [C.POINTER(Options), C.c_size_t, C.c_int]
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


class MQError(Exception):
    def __init__(self, status, message):
        super().__init__(f"status {status}: {message}")
        self.status = status
        self.message = message


def _raw(t):
    """Raw little-endian bytes of a tensor (any dtype, made contiguous)."""
    t = t.detach().contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else \
        t.reshape(-1).to(torch.uint8).numpy().tobytes()


class Model:
    """An opened checkpoint: .tensors is a list of (name, torch tensor, data address)."""

    def __init__(self, path, key=None):
        self.ctx = C.c_void_p(LIB.mq_ctx_create())
        self.m = C.c_void_p()
        opts = OpenOptions(0, key.encode() if key is not None else None)  # format AUTO
        st = LIB.mq_model_open(self.ctx, str(path).encode(), C.byref(opts), C.byref(self.m))
        if st != 0:
            msg = LIB.mq_ctx_message(self.ctx).decode()
            LIB.mq_ctx_free(self.ctx)
            raise MQError(st, msg)
        self.tensors = []
        for i in range(LIB.mq_model_tensor_count(self.m)):
            t = LIB.mq_model_tensor(self.m, i).contents
            shape = list(t.shape[:t.ndim])
            buf = C.string_at(t.data, t.nbytes) if t.nbytes else b""
            dt = MQ_TO_TORCH[t.dtype]
            if dt == torch.bool:
                tt = torch.frombuffer(bytearray(buf), dtype=torch.uint8).to(torch.bool) if buf \
                    else torch.empty(0, dtype=torch.bool)
            else:
                tt = torch.frombuffer(bytearray(buf), dtype=dt) if buf else torch.empty(0, dtype=dt)
            self.tensors.append((t.name.decode(), tt.reshape(shape), t.data))

    def meta(self, key):
        i = LIB.mq_model_metadata_find(self.m, key.encode())
        return LIB.mq_model_metadata_value(self.m, i).decode() if i >= 0 else None

    def dict(self):
        return {n: t for n, t, _ in self.tensors}

    def close(self):
        LIB.mq_model_free(self.m)
        LIB.mq_ctx_free(self.ctx)


def read(path, key=None):
    m = Model(path, key)
    return m.dict(), m


def open_error(path, key=None):
    """Opens a file expected to fail; returns (status, message)."""
    try:
        Model(path, key).close()
    except MQError as e:
        return e.status, e.message
    return 0, ""


def write(path, tensors, meta=None, chunk=None):
    """Writes an ordered dict name -> torch tensor through mq_writer_*."""
    ctx = C.c_void_p(LIB.mq_ctx_create())
    items = list(tensors.items())
    descs = (TensorDesc * max(1, len(items)))()
    for i, (name, t) in enumerate(items):
        descs[i].name = name.encode()
        descs[i].dtype = TORCH_TO_MQ[t.dtype]
        descs[i].ndim = t.dim()
        for d in range(t.dim()):
            descs[i].shape[d] = t.shape[d]
    meta = list((meta or {}).items())
    kvs = (KV * max(1, len(meta)))(*[KV(k.encode(), v.encode()) for k, v in meta])
    w = C.c_void_p()
    try:
        st = LIB.mq_writer_open(ctx, str(path).encode(), 0, descs, len(items), kvs, len(meta),
                                C.byref(w))
        if st != 0:
            raise MQError(st, LIB.mq_ctx_message(ctx).decode())
        for _, t in items:
            b = _raw(t)
            step = chunk or max(1, len(b))
            for o in range(0, len(b), step):
                st = LIB.mq_writer_write(w, b[o:o + step], len(b[o:o + step]))
                if st != 0:
                    raise MQError(st, LIB.mq_ctx_message(ctx).decode())
        st = LIB.mq_writer_commit(w)
        if st != 0:
            raise MQError(st, LIB.mq_ctx_message(ctx).decode())
    finally:
        LIB.mq_writer_free(w)
        LIB.mq_ctx_free(ctx)


def same(a, b):
    """Bit-identical tensors (dtype, shape and bytes)."""
    return a.dtype == b.dtype and list(a.shape) == list(b.shape) and _raw(a) == _raw(b)


class Observer:
    """One C observer on its own context."""

    def __init__(self, kind, qtype="uint8", scheme=ASYM, channels=0, **kw):
        self.ctx = LIB.mq_ctx_create()
        o = Options()
        LIB.mq_observer_options_default_sized(C.byref(o), C.sizeof(o), KINDS[kind])
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
