"""ctypes binding of libmonoquant.so: finding and checking the library, the prototypes, the
structs (only the fields the header promises to keep, each extensible struct sized by its
own sizeof), and errors as exceptions carrying the library's message and status.

Every other module of the package goes through this one."""
import ctypes as C
import ctypes.util
import os
import threading

# The library versions this binding is written for: same major and minor.
SUPPORTED_VERSION = (0, 2)

MAX_DIMS = 8
# mq_dtype
BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64 = range(1, 14)
C64 = 17
# mq_qtype
Q_NONE, Q_INT8, Q_UINT8, Q_INT4, Q_UINT4, Q_FP16, Q_BF16 = range(7)
SYMMETRIC, ASYMMETRIC = 0, 1
PER_TENSOR, PER_CHANNEL, PER_GROUP = 0, 1, 2
SEARCH = {"minmax": 0, "mse": 1, "gptq": 2}
KIND_OTHER, KIND_LINEAR, KIND_CONV, KIND_EMBEDDING, KIND_NORM, KIND_BIAS, KIND_RNN = range(7)
KIND_NAMES = ("other", "linear", "conv", "embedding", "norm", "bias", "rnn")
ACTION_NAMES = ("keep", "quantize", "cast")
ACT_F32, ACT_DYNAMIC, ACT_STATIC = 0, 1, 2
FORMAT_AUTO, FORMAT_SAFETENSORS, FORMAT_PYTORCH = 0, 1, 2
# mq_activations (what the pipeline stores) and mq_layout
ACTIVATIONS = {None: 0, "auto": 0, "none": 1, "weight_only": 1, "dynamic": 2, "static": 3}
LAYOUTS = {"compressed-tensors": 0, "native": 1, "gptq": 2}
OBSERVERS = {"minmax": 0, "moving_average": 1, "histogram": 2, "entropy": 3, "percentile": 4,
             "mse": 5}


class MonoquantError(RuntimeError):
    """A failure reported by the library: `status` (the mq_status number), `status_name`
    (e.g. "invalid argument") and `message` (the library's message, naming the file or
    tensor and the problem)."""

    def __init__(self, status, message, status_name=None):
        self.status = int(status)
        self.status_name = status_name or f"status {status}"
        self.message = message
        super().__init__(f"{message} ({self.status_name})")


def _find_library():
    env = os.environ.get("MONOQUANT_LIBRARY")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    out = [os.path.join(here, "libmonoquant.so")]
    # source tree: python/monoquant/ -> ../../$BUILD/
    out.append(os.path.join(here, "..", "..", os.environ.get("BUILD", "build"), "libmonoquant.so"))
    found = ctypes.util.find_library("monoquant")
    if found:
        out.append(found)
    return out


def _load():
    errors = []
    for path in _find_library():
        if os.sep in path and not os.path.exists(path):
            errors.append(f"{path}: not found")
            continue
        try:
            return C.CDLL(os.path.abspath(path) if os.sep in path else path), path
        except OSError as e:
            errors.append(f"{path}: {e}")
    raise ImportError("monoquant: cannot load libmonoquant.so (set MONOQUANT_LIBRARY, or run "
                      "`make` in the source tree / `make python`): " + "; ".join(errors))


LIB, LIB_PATH = _load()
LIB.mq_version.restype = C.c_char_p
VERSION = LIB.mq_version().decode()
if not hasattr(LIB, "mq_version_number"):
    raise ImportError(f"monoquant: {LIB_PATH} is version {VERSION}; this package needs "
                      f"{SUPPORTED_VERSION[0]}.{SUPPORTED_VERSION[1]}.x")
LIB.mq_version_number.restype = C.c_uint
VERSION_NUMBER = LIB.mq_version_number()
VERSION_TUPLE = (VERSION_NUMBER // 10000, VERSION_NUMBER // 100 % 100, VERSION_NUMBER % 100)
if VERSION_TUPLE[:2] != SUPPORTED_VERSION:
    raise ImportError(f"monoquant: {LIB_PATH} is version {VERSION}; this package needs "
                      f"{SUPPORTED_VERSION[0]}.{SUPPORTED_VERSION[1]}.x (same major and minor)")


def _sized(fields):
    """An extensible struct: struct_size first, then the prefix of fields this binding uses
    (the library gives defaults for the fields after it)."""
    return [("struct_size", C.c_size_t)] + fields


class Tensor(C.Structure):
    _fields_ = [("name", C.c_char_p), ("dtype", C.c_int), ("ndim", C.c_int),
                ("shape", C.c_int64 * MAX_DIMS), ("numel", C.c_uint64),
                ("nbytes", C.c_uint64), ("data", C.c_void_p)]


class TensorDesc(C.Structure):
    _fields_ = [("name", C.c_char_p), ("dtype", C.c_int), ("ndim", C.c_int),
                ("shape", C.c_int64 * MAX_DIMS)]


class KV(C.Structure):
    _fields_ = [("key", C.c_char_p), ("value", C.c_char_p)]


class ErrorStats(C.Structure):
    _fields_ = [("sqnr_db", C.c_double), ("rel_fro", C.c_double), ("max_abs", C.c_double),
                ("mse", C.c_double), ("cosine", C.c_double)]


class QSpec(C.Structure):
    _fields_ = [("type", C.c_int), ("scheme", C.c_int), ("granularity", C.c_int),
                ("group_size", C.c_int), ("search", C.c_int)]


class LayerRule(C.Structure):
    _fields_ = [("pattern", C.c_char_p), ("type", C.c_int)]


class QuantizeOptions(C.Structure):
    """mq_quantize_options, up to `act_order` (later fields get the library's defaults)."""
    _fields_ = _sized([
        ("spec", QSpec), ("kinds", C.c_uint), ("include", C.c_void_p), ("ninclude", C.c_size_t),
        ("exclude", C.c_void_p), ("nexclude", C.c_size_t), ("min_params", C.c_uint64),
        ("rules", C.c_void_p), ("nrules", C.c_size_t), ("default_skip", C.c_int),
        ("skip_nonfinite", C.c_int), ("error_stats", C.c_int), ("sqnr_warn_db", C.c_double),
        ("calibration", C.c_char_p), ("out_format", C.c_int), ("dry_run", C.c_int),
        ("key", C.c_char_p), ("strict", C.c_int), ("clamp_casts", C.c_int),
        ("layout", C.c_int), ("activations", C.c_int), ("scale_dtype", C.c_int),
        ("output_folder", C.c_int), ("max_shard_size", C.c_uint64), ("act_order", C.c_int)])


class ObserverOptions(C.Structure):
    _fields_ = _sized([
        ("kind", C.c_int), ("type", C.c_int), ("scheme", C.c_int), ("granularity", C.c_int),
        ("channels", C.c_int64), ("averaging_constant", C.c_double), ("bins", C.c_int),
        ("upsample_rate", C.c_int), ("percentile", C.c_double)])


class LinearDesc(C.Structure):
    _fields_ = _sized([
        ("type", C.c_int), ("scheme", C.c_int), ("granularity", C.c_int),
        ("group_size", C.c_int), ("out_features", C.c_int64), ("in_features", C.c_int64),
        ("weight_dtype", C.c_int), ("weight", C.c_void_p), ("scale", C.c_void_p),
        ("zero_point", C.c_void_p), ("bias", C.c_void_p), ("act", C.c_int),
        ("input_scale", C.c_float), ("input_zero_point", C.c_int)])


_GEOMETRY = [("in_channels", C.c_int64), ("kernel_h", C.c_int), ("kernel_w", C.c_int),
             ("stride_h", C.c_int), ("stride_w", C.c_int), ("pad_h", C.c_int), ("pad_w", C.c_int),
             ("dilation_h", C.c_int), ("dilation_w", C.c_int), ("groups", C.c_int)]


class Conv2dDesc(C.Structure):
    _fields_ = _sized(_GEOMETRY)


class QLayout(C.Structure):
    _fields_ = [("rows", C.c_int64), ("cols", C.c_int64), ("groups_per_row", C.c_int64),
                ("nscales", C.c_int64), ("data_dtype", C.c_int), ("ndata_dims", C.c_int),
                ("data_shape", C.c_int64 * MAX_DIMS), ("data_bytes", C.c_uint64),
                ("row_bytes", C.c_uint64), ("scale_dtype", C.c_int), ("has_zero_point", C.c_int),
                ("zero_point_dtype", C.c_int), ("group_size", C.c_int64),
                ("last_group_size", C.c_int64), ("qmin", C.c_int), ("qmax", C.c_int)]


class QTensor(C.Structure):
    """mq_qtensor: handed out by pointer by the library, which may only grow it at its end."""
    _fields_ = [("name", C.c_char_p), ("kind", C.c_int), ("dtype", C.c_int), ("ndim", C.c_int),
                ("shape", C.c_int64 * MAX_DIMS), ("numel", C.c_uint64), ("spec", QSpec),
                ("layout", QLayout), ("data", C.POINTER(Tensor)), ("scale", C.POINTER(Tensor)),
                ("zero_point", C.POINTER(Tensor)), ("shape_tensor", C.POINTER(Tensor)),
                ("input_scale", C.POINTER(Tensor)), ("input_zero_point", C.POINTER(Tensor)),
                ("stored_bytes", C.c_uint64), ("storage", C.c_char_p),
                ("g_idx", C.POINTER(Tensor))]


def _proto(name, restype, *argtypes):
    f = getattr(LIB, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


P, VP, SZ = C.POINTER, C.c_void_p, C.c_size_t
_proto("mq_status_str", C.c_char_p, C.c_int)
_proto("mq_ctx_create", VP)
_proto("mq_ctx_free", None, VP)
_proto("mq_ctx_message", C.c_char_p, VP)
_proto("mq_ctx_status", C.c_int, VP)
_proto("mq_ctx_set_threads", C.c_int, VP, C.c_int)
_proto("mq_ctx_threads", C.c_int, VP)
_proto("mq_dtype_name", C.c_char_p, C.c_int)
_proto("mq_model_open", C.c_int, VP, C.c_char_p, VP, P(VP))
_proto("mq_model_free", None, VP)
_proto("mq_model_tensor_count", SZ, VP)
_proto("mq_model_tensor", P(Tensor), VP, SZ)
_proto("mq_model_find", C.c_int64, VP, C.c_char_p)
_proto("mq_model_format", C.c_int, VP)
_proto("mq_model_file_count", SZ, VP)
_proto("mq_model_metadata_count", SZ, VP)
_proto("mq_model_metadata_key", C.c_char_p, VP, SZ)
_proto("mq_model_metadata_value", C.c_char_p, VP, SZ)
_proto("mq_model_metadata_find", C.c_int64, VP, C.c_char_p)
_proto("mq_classify_tensor", C.c_int, P(Tensor))
_proto("mq_model_create", C.c_int, VP, P(VP))
_proto("mq_model_add_view", C.c_int, VP, C.c_char_p, C.c_int, C.c_int, P(C.c_int64), VP)
_proto("mq_model_set_metadata", C.c_int, VP, C.c_char_p, C.c_char_p)
_proto("mq_model_set_source_folder", C.c_int, VP, C.c_char_p)
_proto("mq_ctx_set_overwrite", None, VP, C.c_int)
_proto("mq_writer_open", C.c_int, VP, C.c_char_p, C.c_int, VP, SZ, VP, SZ, P(VP))
_proto("mq_writer_write", C.c_int, VP, VP, SZ)
_proto("mq_writer_commit", C.c_int, VP)
_proto("mq_writer_free", None, VP)
_proto("mq_qspec_recommended", None, P(QSpec), C.c_int)
_proto("mq_quantize_model", C.c_int, VP, VP, C.c_char_p, P(QuantizeOptions), P(VP))
_proto("mq_quantize_file", C.c_int, VP, C.c_char_p, C.c_char_p, P(QuantizeOptions), P(VP))
_proto("mq_report_free", None, VP)
_proto("mq_qmodel_open", C.c_int, VP, C.c_char_p, P(VP))
_proto("mq_qmodel_free", None, VP)
_proto("mq_qmodel_model", VP, VP)
_proto("mq_qmodel_count", SZ, VP)
_proto("mq_qmodel_tensor", P(QTensor), VP, SZ)
_proto("mq_qmodel_find", C.c_int64, VP, C.c_char_p)
_proto("mq_qmodel_is_quantized", C.c_int, VP)
_proto("mq_qmodel_verify", C.c_int, VP, SZ)
_proto("mq_qmodel_read_rows", C.c_int, VP, SZ, C.c_int64, C.c_int64, VP)
_proto("mq_qmodel_error", C.c_int, VP, SZ, VP, SZ, P(ErrorStats))
_proto("mq_qmodel_dequantize", C.c_int, VP, C.c_char_p, C.c_int, C.c_int)
_proto("mq_linear_create", C.c_int, VP, P(LinearDesc), P(VP))
_proto("mq_linear_free", None, VP)
_proto("mq_linear_forward", C.c_int, VP, VP, VP, C.c_int64, VP)
_proto("mq_linear_weight_bytes", C.c_uint64, VP)
_proto("mq_conv2d_create", C.c_int, VP, P(LinearDesc), P(Conv2dDesc), P(VP))
_proto("mq_conv2d_free", None, VP)
_proto("mq_qmodel_runnable", C.c_int, VP, SZ)
_proto("mq_qmodel_linear_create", C.c_int, VP, VP, SZ, C.c_int, VP, P(VP), P(C.c_int))
_proto("mq_qmodel_conv2d_create", C.c_int, VP, VP, SZ, C.c_int, VP, P(Conv2dDesc), P(VP),
       P(C.c_int))
_proto("mq_qspec_format", SZ, P(QSpec), C.c_char_p, SZ)
_proto("mq_conv2d_output_size", C.c_int, VP, VP, C.c_int64, C.c_int64, P(C.c_int64),
       P(C.c_int64))
_proto("mq_conv2d_forward", C.c_int, VP, VP, VP, C.c_int64, C.c_int64, C.c_int64, VP)
_proto("mq_calibrator_create", C.c_int, VP, P(ObserverOptions), P(VP))
_proto("mq_calibrator_free", None, VP)
_proto("mq_calibrator_add_layer", C.c_int, VP, C.c_char_p, C.c_int64)
_proto("mq_calibrator_set_hessian", C.c_int, VP, C.c_int)
_proto("mq_calibrator_update", C.c_int, VP, C.c_char_p, C.c_int, VP, C.c_int, P(C.c_int64),
       C.c_int)
_proto("mq_calibrator_layer_count", SZ, VP)
_proto("mq_calibrator_layer_name", C.c_char_p, VP, SZ)
_proto("mq_calibrator_layer_rows", C.c_uint64, VP, SZ)
_proto("mq_calibrator_merge", C.c_int, VP, VP)
_proto("mq_calibrator_save", C.c_int, VP, C.c_char_p, VP, SZ)
_proto("mq_calibrator_open", C.c_int, VP, C.c_char_p, P(VP))
_proto("mq_observer_options_parse", C.c_int, VP, C.c_char_p, P(ObserverOptions))

_proto("mq_quantize_options_default_sized", None, P(QuantizeOptions), SZ)
_proto("mq_observer_options_default_sized", None, P(ObserverOptions), SZ, C.c_int)
_proto("mq_linear_desc_init_sized", None, P(LinearDesc), SZ, C.c_int, C.c_int64, C.c_int64, VP)
_proto("mq_conv2d_desc_init_sized", None, P(Conv2dDesc), SZ, C.c_int64, C.c_int, C.c_int)


def quantize_options_default():
    o = QuantizeOptions()
    LIB.mq_quantize_options_default_sized(C.byref(o), C.sizeof(o))
    return o


def observer_options_default(kind):
    o = ObserverOptions()
    LIB.mq_observer_options_default_sized(C.byref(o), C.sizeof(o), kind)
    return o


def linear_desc_init(qtype, out_features, in_features, weight):
    d = LinearDesc()
    LIB.mq_linear_desc_init_sized(C.byref(d), C.sizeof(d), qtype, out_features, in_features,
                                  weight)
    return d


def conv2d_desc_init(in_channels, kh, kw):
    d = Conv2dDesc()
    LIB.mq_conv2d_desc_init_sized(C.byref(d), C.sizeof(d), in_channels, kh, kw)
    return d


def status_name(st):
    return LIB.mq_status_str(st).decode()


class Context:
    """An mq_ctx owned by Python (freed with the object)."""

    def __init__(self, threads=None):
        self.ptr = LIB.mq_ctx_create()
        if not self.ptr:
            raise MemoryError("monoquant: cannot create a context")
        self.vp = C.c_void_p(self.ptr)  # passed as it is, no conversion per call
        if threads is not None:
            self.check(LIB.mq_ctx_set_threads(self.ptr, int(threads)))

    def check(self, st, what=None):
        if st != 0:
            msg = LIB.mq_ctx_message(self.ptr).decode(errors="replace")
            if what:
                msg = f"{what}: {msg}"
            raise MonoquantError(st, msg, status_name(st))

    # Objects allocated through this context (kernels) must be freed first. At interpreter
    # exit finalizers run in any order, so a context with live dependents waits for the last.
    _deps = 0
    _closing = False

    def retain(self):
        self._deps += 1

    def release(self):
        self._deps -= 1
        if self._closing and self._deps == 0:
            self._free_now()

    def _free_now(self):
        if getattr(self, "ptr", None) and LIB is not None:
            LIB.mq_ctx_free(self.ptr)
            self.ptr = None

    def __del__(self):
        if self._deps:
            self._closing = True
        else:
            self._free_now()


_threads = None
_local = threading.local()


def set_num_threads(n):
    """Threads the kernels and the pipeline use from now on (0: one per CPU). Default:
    torch's intra-op thread count when the package was first used."""
    global _threads, _generation
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"set_num_threads: {n!r} is not a thread count >= 0")
    _threads = n
    _generation += 1


_generation = 0


def get_num_threads():
    global _threads
    if _threads is None:
        try:
            import torch
            _threads = torch.get_num_threads()
        except Exception:  # noqa: BLE001
            _threads = 0
    return _threads


def thread_context():
    """This thread's context for running layers, with the current thread count."""
    c = getattr(_local, "ctx", None)
    if c is None or c.gen != _generation:
        n = get_num_threads()
        if c is None:
            c = _local.ctx = Context(n)
        else:
            c.check(LIB.mq_ctx_set_threads(c.ptr, n))
        c.gen = _generation
    return c


# ---- reports ---------------------------------------------------------------------------

for _n, _r, _a in [
        ("tensor_count", SZ, []), ("tensor_name", C.c_char_p, [SZ]),
        ("tensor_kind", C.c_int, [SZ]), ("tensor_dtype", C.c_int, [SZ]),
        ("tensor_shape", C.c_int, [SZ, P(C.c_int64)]), ("tensor_numel", C.c_uint64, [SZ]),
        ("tensor_action", C.c_int, [SZ]), ("tensor_spec", C.c_int, [SZ, P(QSpec)]),
        ("tensor_reason", C.c_char_p, [SZ]), ("tensor_bytes_in", C.c_uint64, [SZ]),
        ("tensor_bytes_out", C.c_uint64, [SZ]),
        ("tensor_error", C.c_int, [SZ, P(ErrorStats)]),
        ("tensor_has_input_params", C.c_int, [SZ]),
        ("tensor_output_sqnr", C.c_int, [SZ, P(C.c_double)]),
        ("bytes_in", C.c_uint64, []), ("bytes_out", C.c_uint64, []),
        ("file_bytes_in", C.c_uint64, []), ("file_bytes_out", C.c_uint64, []),
        ("warning_count", SZ, []), ("warning", C.c_char_p, [SZ]),
        ("config_json", C.c_char_p, []), ("seconds", C.c_double, [])]:
    _proto("mq_report_" + _n, _r, VP, *_a)


def _s(b):
    return b.decode(errors="replace") if b is not None else None


def read_report(ptr):
    """The report as plain Python data: (totals dict, [tensor dicts], [warnings])."""
    tensors = []
    R = lambda n, *a: getattr(LIB, "mq_report_" + n)(ptr, *a)  # noqa: E731
    for i in range(R("tensor_count")):
        shape = (C.c_int64 * MAX_DIMS)()
        nd = R("tensor_shape", i, shape)
        spec = QSpec()
        R("tensor_spec", i, C.byref(spec))
        err = ErrorStats()
        has_err = R("tensor_error", i, C.byref(err))
        osq = C.c_double()
        has_osq = R("tensor_output_sqnr", i, C.byref(osq))
        tensors.append(dict(
            name=_s(R("tensor_name", i)), kind=R("tensor_kind", i), dtype=R("tensor_dtype", i),
            shape=tuple(shape[:nd]), numel=R("tensor_numel", i), action=R("tensor_action", i),
            spec=(spec.type, spec.scheme, spec.granularity, spec.group_size, spec.search),
            reason=_s(R("tensor_reason", i)), bytes_in=R("tensor_bytes_in", i),
            bytes_out=R("tensor_bytes_out", i),
            error=_err(err) if has_err else None,
            has_input_params=bool(R("tensor_has_input_params", i)),
            output_sqnr_db=osq.value if has_osq else None))
    totals = dict(bytes_in=R("bytes_in"), bytes_out=R("bytes_out"),
                  file_bytes_in=R("file_bytes_in"), file_bytes_out=R("file_bytes_out"),
                  config_json=_s(R("config_json")), seconds=R("seconds"))
    warnings = [_s(R("warning", i)) for i in range(R("warning_count"))]
    return totals, tensors, warnings


def _err(e):
    return dict(sqnr_db=e.sqnr_db, rel_fro=e.rel_fro, max_abs=e.max_abs, mse=e.mse,
                cosine=e.cosine)
