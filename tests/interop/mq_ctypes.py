"""ctypes binding of the public C API (build/libmonoquant.so) used by the PyTorch interop
tests: open a checkpoint and read its tensors as torch tensors, or write tensors with
mq_writer_*."""
import ctypes
import os
import subprocess
import sys

import torch

LIB = os.path.join(os.environ.get("BUILD", "build"), "libmonoquant.so")
try:
    _L = ctypes.CDLL(os.path.abspath(LIB))
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

MAX_DIMS = 8
# mq_dtype values (include/monoquant.h)
BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64 = range(1, 14)
C64 = 17

TORCH_TO_MQ = {
    torch.bool: BOOL, torch.uint8: U8, torch.int8: I8, torch.int16: I16, torch.int32: I32,
    torch.int64: I64, torch.float16: F16, torch.bfloat16: BF16, torch.float32: F32,
    torch.float64: F64, torch.complex64: C64,
}
MQ_TO_TORCH = {v: k for k, v in TORCH_TO_MQ.items()}


class Tensor(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_int64 * MAX_DIMS), ("numel", ctypes.c_uint64),
                ("nbytes", ctypes.c_uint64), ("data", ctypes.c_void_p)]


class OpenOptions(ctypes.Structure):
    _fields_ = [("format", ctypes.c_int), ("key", ctypes.c_char_p)]


class TensorDesc(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("ndim", ctypes.c_int),
                ("shape", ctypes.c_int64 * MAX_DIMS)]


class KV(ctypes.Structure):
    _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_char_p)]


_L.mq_ctx_create.restype = ctypes.c_void_p
_L.mq_ctx_free.argtypes = [ctypes.c_void_p]
_L.mq_ctx_message.restype = ctypes.c_char_p
_L.mq_ctx_message.argtypes = [ctypes.c_void_p]
_L.mq_model_open.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_void_p)]
_L.mq_model_free.argtypes = [ctypes.c_void_p]
_L.mq_model_tensor_count.restype = ctypes.c_size_t
_L.mq_model_tensor_count.argtypes = [ctypes.c_void_p]
_L.mq_model_tensor.restype = ctypes.POINTER(Tensor)
_L.mq_model_tensor.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_L.mq_model_metadata_get.restype = ctypes.c_char_p
_L.mq_model_metadata_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_L.mq_writer_open.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p,
                              ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                              ctypes.POINTER(ctypes.c_void_p)]
_L.mq_writer_write.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
_L.mq_writer_commit.argtypes = [ctypes.c_void_p]
_L.mq_writer_free.argtypes = [ctypes.c_void_p]


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
        self.ctx = ctypes.c_void_p(_L.mq_ctx_create())
        self.m = ctypes.c_void_p()
        opts = OpenOptions(0, key.encode() if key is not None else None)
        st = _L.mq_model_open(self.ctx, str(path).encode(), ctypes.byref(opts), ctypes.byref(self.m))
        if st != 0:
            msg = _L.mq_ctx_message(self.ctx).decode()
            _L.mq_ctx_free(self.ctx)
            raise MQError(st, msg)
        self.tensors = []
        for i in range(_L.mq_model_tensor_count(self.m)):
            t = _L.mq_model_tensor(self.m, i).contents
            shape = list(t.shape[:t.ndim])
            buf = ctypes.string_at(t.data, t.nbytes) if t.nbytes else b""
            dt = MQ_TO_TORCH[t.dtype]
            if dt == torch.bool:
                tt = torch.frombuffer(bytearray(buf), dtype=torch.uint8).to(torch.bool) if buf \
                    else torch.empty(0, dtype=torch.bool)
            else:
                tt = torch.frombuffer(bytearray(buf), dtype=dt) if buf else torch.empty(0, dtype=dt)
            self.tensors.append((t.name.decode(), tt.reshape(shape), t.data))

    def meta(self, key):
        v = _L.mq_model_metadata_get(self.m, key.encode())
        return v.decode() if v is not None else None

    def dict(self):
        return {n: t for n, t, _ in self.tensors}

    def close(self):
        _L.mq_model_free(self.m)
        _L.mq_ctx_free(self.ctx)


def read(path, key=None):
    m = Model(path, key)
    try:
        return m.dict(), m
    finally:
        pass


def open_error(path, key=None):
    """Opens a file expected to fail; returns (status, message)."""
    try:
        Model(path, key).close()
    except MQError as e:
        return e.status, e.message
    return 0, ""


def write(path, tensors, meta=None, chunk=None):
    """Writes an ordered dict name -> torch tensor through mq_writer_*."""
    ctx = ctypes.c_void_p(_L.mq_ctx_create())
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
    w = ctypes.c_void_p()
    try:
        st = _L.mq_writer_open(ctx, str(path).encode(), 0, descs, len(items), kvs, len(meta),
                               ctypes.byref(w))
        if st != 0:
            raise MQError(st, _L.mq_ctx_message(ctx).decode())
        for _, t in items:
            b = _raw(t)
            step = chunk or max(1, len(b))
            for o in range(0, len(b), step):
                st = _L.mq_writer_write(w, b[o:o + step], len(b[o:o + step]))
                if st != 0:
                    raise MQError(st, _L.mq_ctx_message(ctx).decode())
        st = _L.mq_writer_commit(w)
        if st != 0:
            raise MQError(st, _L.mq_ctx_message(ctx).decode())
    finally:
        _L.mq_writer_free(w)
        _L.mq_ctx_free(ctx)


def same(a, b):
    """Bit-identical tensors (dtype, shape and bytes)."""
    return a.dtype == b.dtype and list(a.shape) == list(b.shape) and _raw(a) == _raw(b)
