"""quantize(): an in-memory PyTorch model through the library's quantization pipeline
(mq_quantize_model over zero-copy views of the parameters), then its Linear / Conv2d /
MultiheadAttention layers rebuilt on the quantized kernels."""
import copy
import ctypes as C
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping

import torch
from torch import nn

from . import _lib as L
from . import nn as qnn
from .io import Checkpoint, _attach_checkpoint, stored_activations

TORCH_TO_MQ = {
    torch.bool: L.BOOL, torch.uint8: L.U8, torch.int8: L.I8, torch.int16: L.I16,
    torch.int32: L.I32, torch.int64: L.I64, torch.float16: L.F16, torch.bfloat16: L.BF16,
    torch.float32: L.F32, torch.float64: L.F64, torch.complex64: L.C64,
}
MQ_TO_TORCH = {v: k for k, v in TORCH_TO_MQ.items()}

_TYPES = {"int8": L.Q_INT8, "uint8": L.Q_UINT8, "int4": L.Q_INT4, "uint4": L.Q_UINT4,
          "fp16": L.Q_FP16, "bf16": L.Q_BF16, "none": L.Q_NONE, 8: L.Q_INT8, 4: L.Q_INT4,
          16: L.Q_FP16, None: L.Q_NONE, torch.qint8: L.Q_INT8, torch.quint8: L.Q_UINT8,
          torch.float16: L.Q_FP16, torch.bfloat16: L.Q_BF16}
_GRAN = {"tensor": L.PER_TENSOR, "channel": L.PER_CHANNEL, "group": L.PER_GROUP}
DEFAULT_LAYER_TYPES = (nn.Linear, nn.Conv2d, nn.MultiheadAttention)


def _qtype(v, what):
    key = v.lower() if isinstance(v, str) else v
    if isinstance(key, bool) or key not in _TYPES:
        raise ValueError(f"{what}: {v!r} is not a target (8, 4, 16, 'int8', 'uint8', 'int4', "
                         "'uint4', 'fp16', 'bf16', torch.qint8, torch.quint8, torch.float16)")
    return _TYPES[key]


class QuantizationConfig:
    """The keyword arguments of quantize() as one object:
    quantize(model, config=QuantizationConfig(bits=4, group_size=64))."""

    def __init__(self, **kwargs):
        bad = set(kwargs) - set(_QUANTIZE_ARGS)
        if bad:
            raise TypeError(f"QuantizationConfig: unknown option(s) {sorted(bad)}")
        self.kwargs = kwargs

    def __repr__(self):
        return f"QuantizationConfig({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"


class LayerReport:
    """One input tensor: what happened to it and the error figures."""

    def __init__(self, d):
        self.name, self.shape, self.numel = d["name"], d["shape"], d["numel"]
        self.kind = L.KIND_NAMES[d["kind"]] if d["kind"] < len(L.KIND_NAMES) else "unknown"
        self.action = L.ACTION_NAMES[d["action"]]
        self.reason = d["reason"]
        self.format = qnn.QTYPE_NAMES.get(d["spec"][0], "?") if d["action"] else None
        self.group_size = d["spec"][3] if d["spec"][2] == L.PER_GROUP and d["action"] == 1 else None
        self.bytes_in, self.bytes_out = d["bytes_in"], d["bytes_out"]
        e = d["error"] or {}
        self.sqnr_db, self.rel_fro = e.get("sqnr_db"), e.get("rel_fro")
        self.max_abs, self.cosine = e.get("max_abs"), e.get("cosine")
        self.output_sqnr_db = d["output_sqnr_db"]
        self.has_input_params = d["has_input_params"]
        self.module = None       # the module type it ran as after quantize()
        self.activations = None  # the activation mode it runs with

    def __repr__(self):
        if self.action == "keep":
            return f"<{self.name}: kept ({self.reason})>"
        s = f"<{self.name}: {self.format}"
        if self.sqnr_db is not None:
            s += f", SQNR {self.sqnr_db:.1f} dB"
        return s + (f", {self.activations} activations>" if self.activations else ">")


class Report:
    """What quantize() did: per tensor (layers), the quantized and skipped names with reasons,
    sizes before and after, per-layer SQNR, and the warnings the CLI gives."""

    def __init__(self, totals, tensors, warnings):
        self.layers = [LayerReport(t) for t in tensors]
        self.warnings = list(warnings)
        self.bytes_in, self.bytes_out = totals["bytes_in"], totals["bytes_out"]
        self.file_bytes_out = totals["file_bytes_out"]
        self.seconds = totals["seconds"]
        cfg = totals["config_json"]
        self.config = json.loads(cfg) if cfg else None

    @property
    def quantized(self):
        return [t.name for t in self.layers if t.action != "keep"]

    @property
    def skipped(self):
        """{name: reason} of every tensor kept as it was."""
        return {t.name: t.reason for t in self.layers if t.action == "keep"}

    def __getitem__(self, name):
        for t in self.layers:
            if t.name == name:
                return t
        raise KeyError(name)

    def __str__(self):
        lines = [f"{len(self.quantized)} tensors converted, {len(self.skipped)} kept; "
                 f"{self.bytes_in:,} -> {self.bytes_out:,} bytes "
                 f"({self.bytes_out / max(1, self.bytes_in):.1%})"]
        for t in self.layers:
            if t.action == "keep":
                lines.append(f"  {t.name:48s} kept: {t.reason}")
            else:
                sq = f"{t.sqnr_db:7.2f} dB" if t.sqnr_db is not None else ""
                lines.append(f"  {t.name:48s} {t.format:5s} {sq} {t.activations or ''}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    __repr__ = __str__


def _escape_glob(name):
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


class _Views:
    """An in-memory mq_model over the tensors of a state_dict (zero copy; non-contiguous
    tensors copied once and kept alive here)."""

    def __init__(self, ctx, state):
        self.ctx = ctx
        self.keep = []
        self.ptr = C.c_void_p()
        ctx.check(L.LIB.mq_model_create(ctx.ptr, C.byref(self.ptr)))
        for name, t in state.items():
            self.add(name, t)

    def add(self, name, t):
        if not isinstance(name, str):
            raise TypeError(f"state_dict key {name!r} is not a string")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"'{name}': expected a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise TypeError(f"'{name}' is on {t.device}; monoquant quantizes CPU tensors (move "
                            "the model with .cpu() first)")
        if t.is_sparse or t.layout != torch.strided:
            raise TypeError(f"'{name}': sparse tensors are not supported")
        if t.is_quantized:
            raise TypeError(f"'{name}' is already a quantized tensor ({t.dtype}); pass the float "
                            "model")
        if t.dtype not in TORCH_TO_MQ:
            raise TypeError(f"'{name}': dtype {t.dtype} is not supported")
        if t.dim() > L.MAX_DIMS:
            raise ValueError(f"'{name}': {t.dim()} dimensions (at most {L.MAX_DIMS})")
        t = t.detach()
        if not t.is_contiguous() or t.storage_offset() < 0:
            t = t.contiguous()  # one copy; a strided view is never read as if it were dense
        if t.dtype == torch.bool or t.is_conj() or t.is_neg():
            t = t.resolve_conj().resolve_neg().contiguous()
        self.keep.append(t)
        shape = (C.c_int64 * max(1, t.dim()))(*t.shape)
        self.ctx.check(L.LIB.mq_model_add_view(self.ptr, name.encode(), TORCH_TO_MQ[t.dtype],
                                               t.dim(), shape, t.data_ptr() if t.numel() else None))

    def close(self):
        if self.ptr:
            L.LIB.mq_model_free(self.ptr)
            self.ptr = None

    __del__ = close


def _check_state(state, runnable_names):
    """Integer tensors where a layer weight is expected are a mistake (e.g. an already
    quantized state_dict), not something to keep silently."""
    for name in runnable_names:
        t = state.get(name)
        if t is not None and isinstance(t, torch.Tensor) and not t.is_floating_point():
            raise TypeError(f"'{name}' is {t.dtype}, but it is a layer weight: monoquant "
                            "quantizes floating-point weights (is this state_dict already "
                            "quantized? read monoquant checkpoints with monoquant.load)")


def _layer_modules(model, layer_types):
    """{weight name: (module name, module)} of the layers the kernels can run."""
    out = {}
    for name, m in model.named_modules():
        pre = name + "." if name else ""
        if isinstance(m, nn.MultiheadAttention):
            if nn.MultiheadAttention in layer_types:
                for attr in qnn.mha_weights(m):
                    out[pre + attr] = (name, m)
        elif isinstance(m, nn.Conv2d):
            if any(isinstance(m, t) for t in layer_types) and qnn.conv2d_supported(m) is None:
                out[pre + "weight"] = (name, m)
        elif isinstance(m, nn.Linear):
            if any(isinstance(m, t) for t in layer_types):
                out[pre + "weight"] = (name, m)
    return out


def _options(bits, dynamic, symmetric, group_size, granularity, skip, min_params, method,
             layers, default_skip, strict, sqnr_warn_db, error_stats, include, kinds,
             act_order=False):
    qt = _qtype(bits, "bits")
    if qt == L.Q_NONE:
        raise ValueError("bits: None keeps everything; pick a target")
    o = L.quantize_options_default()
    o.layout = L.LAYOUTS["native"]  # modules of any kind, run in memory
    o.activations = L.ACTIVATIONS[dynamic]  # stored per layer; the modules run what is stored
    L.LIB.mq_qspec_recommended(C.byref(o.spec), qt)
    o.spec.search = L.SEARCH["minmax"]  # the CLI's default for every type
    if symmetric is not None:
        o.spec.scheme = L.SYMMETRIC if symmetric else L.ASYMMETRIC
    if granularity is not None:
        if granularity not in _GRAN:
            raise ValueError(f"granularity: {granularity!r} is not 'tensor', 'channel' or 'group'")
        o.spec.granularity = _GRAN[granularity]
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size: {group_size!r} is not a positive integer")
        o.spec.group_size = group_size
    if method is not None:
        if method not in L.SEARCH:
            raise ValueError(f"method: {method!r} is not 'minmax', 'mse' or 'gptq'")
        o.spec.search = L.SEARCH[method]
    if min_params is not None:
        if isinstance(min_params, bool) or not isinstance(min_params, int) or min_params < 0:
            raise ValueError(f"min_params: {min_params!r} is not a count")
        o.min_params = min_params
    if kinds is not None:
        mask = 0
        for k in kinds:
            if k not in L.KIND_NAMES:
                raise ValueError(f"kinds: {k!r} is not one of {L.KIND_NAMES}")
            mask |= 1 << L.KIND_NAMES.index(k)
        o.kinds = mask
    o.default_skip = int(bool(default_skip))
    o.strict = int(bool(strict))
    o.error_stats = int(bool(error_stats))
    o.act_order = int(bool(act_order))
    o.sqnr_warn_db = float(sqnr_warn_db or 0)
    keep = []
    for what, pats in (("skip", skip), ("include", include)):
        if isinstance(pats, str):
            raise TypeError(f"{what}: expected a list of glob patterns, got the string {pats!r}")
        pats = [p.encode() for p in (pats or ())]
        for p in pats:
            if not p:
                raise ValueError(f"{what}: empty pattern")
        keep.append(pats)
    rules = []
    for pat, b in (layers or {}).items():
        if not isinstance(pat, str) or not pat:
            raise TypeError(f"layers: key {pat!r} is not a glob pattern")
        rules.append((pat.encode(), _qtype(b, f"layers[{pat!r}]")))
    return o, keep[0], keep[1], rules


class _Arrays:
    """ctypes arrays kept alive while the options point at them."""

    def set(self, o, exclude, include, rules):
        self.ex = (C.c_char_p * max(1, len(exclude)))(*exclude)
        self.inc = (C.c_char_p * max(1, len(include)))(*include)
        self.rules = (L.LayerRule * max(1, len(rules)))(*[L.LayerRule(p, t) for p, t in rules])
        o.exclude, o.nexclude = C.cast(self.ex, C.c_void_p), len(exclude)
        o.include, o.ninclude = C.cast(self.inc, C.c_void_p), len(include)
        o.rules, o.nrules = C.cast(self.rules, C.c_void_p), len(rules)


_QUANTIZE_ARGS = ("bits", "dynamic", "activations", "symmetric", "group_size", "granularity",
                  "layer_types", "skip", "include", "min_params", "method", "calibration_data",
                  "observer", "per_channel_observer", "calibration_stats", "layers", "inplace",
                  "default_skip", "strict", "sqnr_warn_db", "error_stats", "kinds", "dtype",
                  "forward", "metadata", "act_order")


def quantize(model, bits=8, *, dynamic=None, activations=None, symmetric=None, group_size=None,
             granularity=None, layer_types=DEFAULT_LAYER_TYPES, skip=(), include=(),
             min_params=None, method=None, calibration_data=None, observer="minmax",
             per_channel_observer=False, calibration_stats=None, layers=None, inplace=False,
             default_skip=True, strict=False, sqnr_warn_db=0.0, error_stats=True, kinds=None,
             dtype=None, forward=None, metadata=None, config=None, act_order=False):
    """Quantizes `model` (an nn.Module or a state_dict) with the library's pipeline: the same
    plan, skips, warnings and bytes as `monoquant quantize` with the same settings.

    Returns (quantized_model, report). For an nn.Module, its Linear / Conv2d /
    MultiheadAttention layers whose weights were quantized are replaced by
    monoquant.nn.Quantized* modules running on the C kernels; for a state_dict, the result is
    the quantized checkpoint's tensors (compressed-tensors layout) as a dict. The original is
    never modified unless inplace=True.

    bits: 8 (INT8, default), 4 (INT4, groups of 128), 16 (FP16 casts), or a type name
        ('int8', 'uint8', 'int4', 'uint4', 'fp16', 'bf16'); `dtype` (torch.qint8,
        torch.quint8, torch.float16) is accepted instead, as in torch's quantize_dynamic.
    dynamic / activations: how INT8 layers meet their inputs: activations='dynamic'
        (per-row int8 at run time), 'static' (calibrated input scale), 'none' (weight-only);
        dynamic=True/False is 'dynamic'/'none'. Default: static with calibration, else
        dynamic, for 8-bit; weight-only for 4-bit and casts. 'static' needs statistics for
        every quantized layer. Stored per layer in the checkpoint (load() reads it back).
    symmetric, group_size, granularity ('tensor'|'channel'|'group'), method
        ('minmax'|'mse'|'gptq'): the quantization spec (defaults: the CLI's).
    act_order: GPTQ quantizes the columns in decreasing order of the Hessian's diagonal
        (the CLI's --act-order; the stored layout is the same).
    layer_types: module types to quantize (others are excluded by name).
    skip / include: glob patterns of tensor names to keep / to consider only.
    min_params: tensors with fewer elements are kept. layers: {glob: bits} overrides.
    calibration_data: an iterable of model inputs (a DataLoader): each item is passed to
        `forward(model, item)` (default: model(item), or model(*item) for a tuple/list);
        observers (`observer`: 'minmax', 'moving_average', 'histogram', 'entropy',
        'percentile', 'mse') record every layer's inputs; `calibration_stats` instead takes a
        statistics file of `monoquant calibrate` or monoquant.Stats.
    strict: any warning raises (nothing is built). config: a QuantizationConfig.
    metadata: {key: value} strings stored in the checkpoint, as a source checkpoint's
        metadata is by the CLI.
    """
    if config is not None:
        if not isinstance(config, QuantizationConfig):
            raise TypeError(f"config: expected a QuantizationConfig, got {type(config).__name__}")
        args = dict(config.kwargs)
        return quantize(model, **{**args, "config": None})
    if dtype is not None:
        bits = dtype
    if dynamic is not None and activations is not None:
        raise ValueError("give either dynamic= or activations=, not both")
    if dynamic is not None:
        activations = "dynamic" if dynamic else "none"
    if activations is not None and activations not in qnn.MODES:
        raise ValueError(f"activations: {activations!r} is not 'none', 'dynamic' or 'static'")
    if not isinstance(layer_types, (tuple, list)) or not all(
            isinstance(t, type) and issubclass(t, nn.Module) for t in layer_types):
        raise TypeError("layer_types: expected a tuple of nn.Module subclasses")
    is_module = isinstance(model, nn.Module)
    if not is_module and not isinstance(model, Mapping):
        raise TypeError(f"quantize: expected an nn.Module or a state_dict, got "
                        f"{type(model).__name__}")
    if calibration_data is not None and not is_module:
        raise TypeError("calibration_data needs an nn.Module to run (got a state_dict)")
    qt = _qtype(bits, "bits")
    if method is None and qt in (L.Q_INT4, L.Q_UINT4) and calibration_data is not None:
        method = "gptq"  # the CLI's choice with Hessian statistics
    o, exclude, include_p, rules = _options(bits, activations, symmetric, group_size,
                                            granularity, skip, min_params, method, layers,
                                            default_skip, strict, sqnr_warn_db, error_stats,
                                            include, kinds, act_order)
    if method == "gptq" and calibration_data is None and calibration_stats is None:
        raise ValueError("method='gptq' needs calibration_data (or calibration_stats with "
                         "Hessians)")
    state = model.state_dict() if is_module else dict(model)
    layer_mods = _layer_modules(model, layer_types) if is_module else {}
    _check_state(state, layer_mods)
    ctx = L.Context(L.get_num_threads())
    tmp = tempfile.mkdtemp(prefix="monoquant-")
    try:
        stats_path = None
        if calibration_data is not None:
            from .calibrate import calibrate
            stats = calibrate(model, calibration_data, observer=observer,
                              per_channel=per_channel_observer, hessian=method == "gptq",
                              layer_types=layer_types, forward=forward)
            stats_path = os.path.join(tmp, "calibration.safetensors")
            stats.save(stats_path)
        elif calibration_stats is not None:
            stats_path = calibration_stats.path if hasattr(calibration_stats, "path") \
                else os.fspath(calibration_stats)
        o.calibration = stats_path.encode() if stats_path else None
        arrays = _Arrays()
        views = _Views(ctx, state)
        try:
            for k, v in (metadata or {}).items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise TypeError(f"metadata: {k!r}: {v!r} is not a pair of strings")
                ctx.check(L.LIB.mq_model_set_metadata(views.ptr, k.encode(), v.encode()))
            if is_module:
                # tensors the pipeline would convert that no module here can run: keep them
                arrays.set(o, exclude, include_p, rules)
                o.dry_run = 1
                rep = C.c_void_p()
                ctx.check(L.LIB.mq_quantize_model(ctx.ptr, views.ptr, None, C.byref(o),
                                                  C.byref(rep)))
                _, plan, _ = L.read_report(rep)
                L.LIB.mq_report_free(rep)
                o.dry_run = 0
                extra = [_escape_glob(t["name"]).encode() for t in plan
                         if t["action"] != 0 and t["name"] not in layer_mods]
                exclude = exclude + extra
            arrays.set(o, exclude, include_p, rules)
            out = os.path.join(tmp, "model.safetensors")
            rep = C.c_void_p()
            ctx.check(L.LIB.mq_quantize_model(ctx.ptr, views.ptr, out.encode(), C.byref(o),
                                              C.byref(rep)))
            report = Report(*L.read_report(rep))
            L.LIB.mq_report_free(rep)
        finally:
            views.close()
        if not is_module:
            return Checkpoint(out).state_dict(raw=True), report
        recipe = _Recipe(o, exclude, include_p, rules, stats_path, metadata, model)
        qmodel = model if inplace else _copy_without(model, layer_mods, report)
        _rebuild(qmodel, Checkpoint(out), report, None)
        _attach_checkpoint(qmodel, out, tmp, recipe)
        tmp = None
        return qmodel, report
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


class _Recipe:
    """What save() needs to run the pipeline again on the same float tensors into another
    layout or a model folder: the options, and the model's tensors held weakly (no memory
    kept alive) with their version counters, so that a tensor changed or freed since is
    noticed instead of saved."""

    def __init__(self, o, exclude, include, rules, calibration, metadata, model):
        self.options = L.QuantizeOptions.from_buffer_copy(o)  # pointers reset before use
        self.exclude, self.include, self.rules = list(exclude), list(include), list(rules)
        self.calibration = os.path.abspath(calibration) if calibration else None
        self.metadata = dict(metadata or {})
        self.sources, self.prints = [], {}
        for name, t in model.state_dict(keep_vars=True).items():
            self.sources.append((name, weakref.ref(t), t._version))
            self.prints[name] = _fingerprint(t)
        self.config = _config_source(model)

    def check(self, state):
        """Refuses a float state_dict that is not the one quantized: other names, shapes or
        dtypes, or other values at a few hundred sampled positions per tensor."""
        if set(state) != set(self.prints):
            odd = sorted(set(state) ^ set(self.prints))
            raise ValueError(f"save: model= has other tensors than the model quantized "
                             f"({odd[:4]}{'...' if len(odd) > 4 else ''})")
        for name, t in state.items():
            if not isinstance(t, torch.Tensor) or _fingerprint(t) != self.prints[name]:
                raise ValueError(f"save: model= is not the float model that was quantized: "
                                 f"'{name}' differs")

    def state(self):
        """The float state_dict quantize() read, or None when a tensor is gone or changed."""
        out = {}
        for name, ref, version in self.sources:
            t = ref()
            if t is None or t._version != version:
                return None
            out[name] = t.detach()
        return out

    def run(self, state, out, *, layout, folder, max_shard_size, config_dir, overwrite):
        ctx = L.Context(L.get_num_threads())
        L.LIB.mq_ctx_set_overwrite(ctx.ptr, int(bool(overwrite)))
        o = L.QuantizeOptions.from_buffer_copy(self.options)
        o.layout, o.output_folder = layout, int(folder)
        o.max_shard_size = max_shard_size or 0
        o.dry_run = 0
        o.calibration = self.calibration.encode() if self.calibration else None
        arrays = _Arrays()
        arrays.set(o, self.exclude, self.include, self.rules)
        views = _Views(ctx, state)
        try:
            for k, v in self.metadata.items():
                ctx.check(L.LIB.mq_model_set_metadata(views.ptr, k.encode(), v.encode()))
            if config_dir:
                ctx.check(L.LIB.mq_model_set_source_folder(views.ptr,
                                                           os.fsencode(config_dir)))
            rep = C.c_void_p()
            ctx.check(L.LIB.mq_quantize_model(ctx.ptr, views.ptr, os.fsencode(out), C.byref(o),
                                              C.byref(rep)))
            L.LIB.mq_report_free(rep)
        finally:
            views.close()


def _fingerprint(t):
    """dtype, shape and the values at up to 257 evenly spaced positions."""
    t = t.detach()
    flat = t.reshape(-1)
    n = flat.numel()
    idx = torch.linspace(0, max(n - 1, 0), steps=min(n, 257)).long()
    sample = flat[idx].contiguous().view(torch.uint8).numpy().tobytes() if n else b""
    return t.dtype, tuple(t.shape), sample


def _config_source(model):
    """Where a model's folder files come from: the Hugging Face folder it was loaded from
    (config._name_or_path / name_or_path naming a folder with a config.json), else its config
    object when it can write itself (save_pretrained), else None."""
    cfg = getattr(model, "config", None)
    for p in (getattr(cfg, "_name_or_path", None), getattr(model, "name_or_path", None)):
        if isinstance(p, str) and p and os.path.isfile(os.path.join(p, "config.json")):
            return os.path.abspath(p)
    if cfg is not None and callable(getattr(cfg, "save_pretrained", None)):
        return cfg
    return None


def dynamic_quantize(model, dtype=torch.qint8, **kwargs):
    """quantize() with dynamic int8 activations (torch.ao's quantize_dynamic spelling)."""
    kwargs.setdefault("activations", "dynamic")
    return quantize(model, dtype=dtype, **kwargs)


def static_quantize(model, calibration_data, dtype=torch.qint8, **kwargs):
    """quantize() with static activations from calibration_data."""
    kwargs.setdefault("activations", "static")
    return quantize(model, dtype=dtype, calibration_data=calibration_data, **kwargs)


def _copy_without(model, layer_mods, report):
    """A deep copy of `model` that does not copy the float weights about to be replaced."""
    converted = set(report.quantized)
    memo = {}
    for wname, (_, m) in layer_mods.items():
        if wname in converted:
            p = getattr(m, wname.rpartition(".")[2])
            memo[id(p)] = nn.Parameter(torch.empty(0, dtype=p.dtype), requires_grad=False)
    return copy.deepcopy(model, memo)


def _mode_for(qtype, has_input_params, activations, stored=None):
    """The mode a layer runs in: the caller's, else the one the checkpoint stores for it,
    else what the tensors say (input parameters: static; 8-bit: dynamic; else weight-only)."""
    if qtype in (L.Q_FP16, L.Q_BF16):
        return L.ACT_F32
    if activations is not None:
        return qnn.MODES[activations]
    if stored is not None:
        return qnn.MODES[stored]
    if qtype in (L.Q_INT8, L.Q_UINT8):
        return L.ACT_STATIC if has_input_params else L.ACT_DYNAMIC
    return L.ACT_F32


def _set_module(root, name, new):
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _rebuild(model, ckpt, report, activations):
    """Replaces every layer whose weight the checkpoint holds quantized or cast."""
    layer_mods = _layer_modules(model, DEFAULT_LAYER_TYPES)
    stored = stored_activations(ckpt)

    def quantized(wname, bias):
        i = ckpt.find(wname)
        if i < 0 or not L.LIB.mq_qmodel_runnable(ckpt.qm.ptr, i):
            return None
        q = ckpt.tensor(i)
        lin = qnn.QuantizedLinear.from_qmodel(
            ckpt.qm, i, _mode_for(q.spec.type, bool(q.input_scale), activations, stored(wname)),
            bias)
        _note(report, wname, lin)
        return lin

    mhas = {mname: m for mname, m in layer_mods.values() if isinstance(m, nn.MultiheadAttention)}
    for mname, m in mhas.items():
        pre = mname + "." if mname else ""
        e, b = m.embed_dim, m.in_proj_bias
        if m._qkv_same_embed_dim:
            in_proj, qkv = quantized(pre + "in_proj_weight", b), None
            runs = in_proj is not None
            if in_proj is None:
                in_proj = qnn.float_linear(m.in_proj_weight, b)
        else:
            biases = (None,) * 3 if b is None else (b[:e], b[e:2 * e], b[2 * e:])
            qkv = [quantized(pre + n, bb) for n, bb in zip(qnn.MHA_PROJECTIONS, biases)]
            runs = any(p is not None for p in qkv)
            qkv = [p if p is not None else qnn.float_linear(getattr(m, n), bb)
                   for p, n, bb in zip(qkv, qnn.MHA_PROJECTIONS, biases)]
            in_proj = None
        out_proj = quantized(pre + "out_proj.weight", m.out_proj.bias)
        if not runs and out_proj is None:
            continue
        new = qnn.QuantizedMultiheadAttention(
            m, in_proj, m.out_proj if out_proj is None else out_proj, qkv)
        new.train(False)
        _set_module(model, mname, new)
    owned = {(f"{n}." if n else "") + "out_proj.weight" for n in mhas}
    for wname, (mname, m) in layer_mods.items():
        if isinstance(m, nn.MultiheadAttention) or wname in owned:
            continue  # done with its attention module
        i = ckpt.find(wname)
        if i < 0 or not L.LIB.mq_qmodel_runnable(ckpt.qm.ptr, i):
            continue
        q = ckpt.tensor(i)
        mode = _mode_for(q.spec.type, bool(q.input_scale), activations, stored(wname))
        if isinstance(m, nn.Conv2d):
            new = qnn.QuantizedConv2d.from_qmodel(ckpt.qm, i, mode, m, m.bias)
        else:
            new = qnn.QuantizedLinear.from_qmodel(ckpt.qm, i, mode, m.bias)
        _note(report, wname, new)
        new.train(False)
        _set_module(model, mname, new)


def _note(report, name, mod):
    if report is None:
        return
    try:
        t = report[name]
    except KeyError:
        return
    t.module = type(mod).__name__
    t.activations = qnn.MODE_NAMES[mod.act]

