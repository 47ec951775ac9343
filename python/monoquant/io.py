"""Checkpoints: reading them (Checkpoint, info, validate, compare, dequantize), and saving /
loading quantized models (save, load) with the same files as the CLI."""
import ctypes as C
import json
import os
import re
import shutil
import tempfile
import weakref

import torch

from . import _lib as L

_MQ_TO_TORCH = {L.BOOL: torch.bool, L.U8: torch.uint8, L.I8: torch.int8, L.I16: torch.int16,
                L.I32: torch.int32, L.I64: torch.int64, L.F16: torch.float16,
                L.BF16: torch.bfloat16, L.F32: torch.float32, L.F64: torch.float64,
                L.C64: torch.complex64}
_TORCH_DTYPES = {"f32": L.F32, "float32": L.F32, "f16": L.F16, "float16": L.F16,
                 "bf16": L.BF16, "bfloat16": L.BF16, torch.float32: L.F32,
                 torch.float16: L.F16, torch.bfloat16: L.BF16, None: 0}



def _path(p, what="path"):
    if not isinstance(p, (str, bytes, os.PathLike)):
        raise TypeError(f"{what}: expected a file path, got {type(p).__name__}")
    return os.fsdecode(os.fspath(p))


def _tensor_from(t):
    """A torch copy of an mq_tensor's data."""
    dt = _MQ_TO_TORCH.get(t.dtype)
    shape = tuple(t.shape[:t.ndim])
    if dt is None:
        raise TypeError(f"'{t.name.decode()}': dtype {L.LIB.mq_dtype_name(t.dtype).decode()} "
                        "has no torch equivalent")
    out = torch.empty(shape, dtype=dt)
    if t.nbytes:
        C.memmove(out.data_ptr(), t.data, t.nbytes)
    return out


class _QModel:
    def __init__(self, ctx, path):
        self.ctx = ctx
        self.ptr = C.c_void_p()
        ctx.check(L.LIB.mq_qmodel_open(ctx.ptr, path.encode(), C.byref(self.ptr)))

    def __del__(self):
        if self.ptr and L.LIB is not None:
            L.LIB.mq_qmodel_free(self.ptr)
            self.ptr = None


class Checkpoint:
    """A checkpoint file as the library reads it: logical tensors (quantized ones reassembled
    from their stored parts), stored tensors and metadata."""

    def __init__(self, path):
        self.path = _path(path)
        self.ctx = L.Context(L.get_num_threads())
        self.qm = _QModel(self.ctx, self.path)
        self.model = L.LIB.mq_qmodel_model(self.qm.ptr)

    def __len__(self):
        return L.LIB.mq_qmodel_count(self.qm.ptr)

    def find(self, name):
        return L.LIB.mq_qmodel_find(self.qm.ptr, name.encode())

    def tensor(self, i):
        return L.LIB.mq_qmodel_tensor(self.qm.ptr, i).contents

    def names(self):
        return [self.tensor(i).name.decode() for i in range(len(self))]

    @property
    def format(self):
        return {1: "safetensors", 2: "pytorch"}.get(L.LIB.mq_model_format(self.model), "auto")

    @property
    def is_quantized(self):
        return bool(L.LIB.mq_qmodel_is_quantized(self.qm.ptr))

    def metadata(self):
        m = self.model
        return {L.LIB.mq_model_metadata_key(m, i).decode(): L.LIB.mq_model_metadata_value(m, i).decode()
                for i in range(L.LIB.mq_model_metadata_count(m))}

    def stored(self):
        """The stored tensors, in file order, as mq_tensor structs."""
        m = self.model
        return [L.LIB.mq_model_tensor(m, i).contents for i in range(L.LIB.mq_model_tensor_count(m))]

    def read(self, i, dtype=None):
        """Logical tensor i as a torch tensor: plain ones as stored, quantized ones
        dequantized (to `dtype`, default their original dtype)."""
        q = self.tensor(i)
        if q.spec.type == L.Q_NONE:
            t = _tensor_from(q.data.contents)
            return t if dtype is None else t.to(dtype)
        shape = tuple(q.shape[:q.ndim])
        out = torch.empty(shape, dtype=torch.float32)
        rows = shape[0] if shape else 1
        self.ctx.check(L.LIB.mq_qmodel_read_rows(self.qm.ptr, i, 0, rows, out.data_ptr()))
        return out.to(dtype or _MQ_TO_TORCH.get(q.dtype, torch.float32))

    def state_dict(self, raw=False):
        """raw: the stored tensors under their stored names (packed weights, scales...);
        else the logical tensors, quantized ones dequantized."""
        if raw:
            return {t.name.decode(): _tensor_from(t) for t in self.stored()}
        return {self.tensor(i).name.decode(): self.read(i) for i in range(len(self))}


class _Kept:
    """The checkpoint a quantized model was built from, kept for save(); a temporary one is
    removed with the model. `recipe`: how quantize() made it (None after load())."""

    def __init__(self, path, tmpdir, recipe=None):
        self.path = path
        self.tmpdir = tmpdir
        self.recipe = recipe
        if tmpdir:
            self._fin = weakref.finalize(self, shutil.rmtree, tmpdir, True)


def _attach_checkpoint(model, path, tmpdir, recipe=None):
    object.__setattr__(model, "_monoquant_checkpoint", _Kept(path, tmpdir, recipe))


_MODES = ("none", "dynamic", "static")


def _json_obj(text):
    try:
        v = json.loads(text) if text else None
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def _folder_config(path):
    """quantization_config of the config.json beside a checkpoint (or in its folder)."""
    d = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    try:
        with open(os.path.join(d, "config.json"), "rb") as f:
            cfg = _json_obj(f.read(64 << 20).decode("utf-8", "replace"))
    except OSError:
        return None
    q = cfg.get("quantization_config") if cfg else None
    return q if isinstance(q, dict) else None


def _ct_matches(layer, target):
    if target.startswith("re:"):
        try:
            return re.match(target[3:], layer) is not None
        except re.error:
            return False  # a pattern no loader could use either
    return target == layer or target == "Linear"  # a class name: the runnable layers are Linear


def stored_activations(ck):
    """name of a layer weight -> the activation mode its checkpoint stores ('none',
    'dynamic', 'static'), or None when the file does not say. Read from monoquant's own
    configuration (per tensor), else compressed-tensors' quantization_config (metadata or
    config.json: input_activations of the layer's config group); GPTQ is weight-only."""
    meta = ck.metadata()
    for key in ("monoquant_config", "quantization_config"):
        cfg = _json_obj(meta.get(key))
        if cfg and cfg.get("quant_method") == "monoquant":
            per = cfg.get("quantized") if isinstance(cfg.get("quantized"), dict) else {}

            def own(name):
                e = per.get(name)
                a = e.get("activations") if isinstance(e, dict) else None
                return a if a in _MODES else None
            return own
    cfg = _json_obj(meta.get("quantization_config")) or _folder_config(ck.path) or {}
    method = cfg.get("quant_method")
    if method == "compressed-tensors":
        groups, ignore = cfg.get("config_groups"), cfg.get("ignore")
        groups = [g for g in groups.values() if isinstance(g, dict)] \
            if isinstance(groups, dict) else []
        ignore = [t for t in ignore if isinstance(t, str)] if isinstance(ignore, list) else []

        def ct(name):
            layer = name[:-len(".weight")] if name.endswith(".weight") else name
            if any(_ct_matches(layer, t) and t != "Linear" for t in ignore):
                return None
            for g in groups:
                targets = g.get("targets") if isinstance(g.get("targets"), list) else []
                if any(isinstance(t, str) and _ct_matches(layer, t) for t in targets):
                    ia = g.get("input_activations")
                    if not isinstance(ia, dict):
                        return "none"
                    return "dynamic" if ia.get("dynamic") else "static"
            return None
        return ct
    if method == "gptq" or os.path.isfile(os.path.join(
            ck.path if os.path.isdir(ck.path) else os.path.dirname(os.path.abspath(ck.path)),
            "quantize_config.json")):
        return lambda name: "none"
    return lambda name: None


def _check_dest(path, overwrite, src=None):
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it")
        if not os.path.isfile(path) or os.path.islink(path):
            raise FileExistsError(f"{path}: not a regular file; refusing to replace it")
        if src and os.path.samefile(path, src):
            raise ValueError(f"{path}: is the checkpoint being saved")


def _format_of(path):
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        return L.FORMAT_SAFETENSORS
    if ext in (".pt", ".pth", ".bin"):
        return L.FORMAT_PYTORCH
    raise ValueError(f"{path}: unknown extension (.safetensors, .pt, .pth or .bin)")


def _is_folder_dest(path):
    return path.endswith(("/", os.sep)) or os.path.isdir(path)


def save(qmodel, path, *, overwrite=False, format=None, config=None, model=None,
         max_shard_size=None):
    """Writes the quantized checkpoint of a model from quantize() or load().

    A file (.safetensors, .pt/.pth/.bin): by default the checkpoint the model runs (the
    native layout), byte for byte what `monoquant quantize --format native` writes for the
    same settings. A folder (a path ending in '/', or an existing folder): a Hugging Face
    model folder as `monoquant quantize hf-folder/ -o out/` writes it, byte for byte:
    model.safetensors (or shards of at most `max_shard_size` bytes plus
    model.safetensors.index.json) in the compressed-tensors layout that vLLM and
    transformers load, and, given the model's folder, its config.json with the
    quantization_config and its other non-weight files (tokenizer, generation config...).

    format: 'compressed-tensors' (default for folders), 'native' (default for files) or
        'gptq', as the CLI's --format. A layout other than the kept one quantizes the float
        weights again with the same settings (same values): `model`, the float nn.Module or
        state_dict quantize() was given, by default that very model while none of its
        tensors has changed or been freed.
    config: the model's folder (a Hugging Face folder, or its config.json), a dict, or a
        config object with save_pretrained (transformers' PretrainedConfig), written as
        config.json. Default: the folder the model was loaded from (config._name_or_path),
        else its config object; a model without one gives a folder without config.json.
    Never replaces an existing file or folder unless overwrite=True; written under a
    temporary name beside the destination and renamed."""
    kept = getattr(qmodel, "_monoquant_checkpoint", None)
    if kept is None:
        raise TypeError("save: not a model from monoquant.quantize or monoquant.load")
    path = _path(path)
    folder = _is_folder_dest(path)
    if format is not None and format not in L.LAYOUTS:
        raise ValueError(f"save: format {format!r} is not one of {sorted(L.LAYOUTS)}")
    if max_shard_size is not None and (isinstance(max_shard_size, bool) or not isinstance(
            max_shard_size, int) or max_shard_size < 1):
        raise ValueError(f"save: max_shard_size {max_shard_size!r} is not a positive byte count")
    if not folder:
        for name, v in (("config", config), ("max_shard_size", max_shard_size)):
            if v is not None:
                raise ValueError(f"save: {name}= is for folder outputs (a path ending in '/')")
        fmt = _format_of(path)
        if format in (None, "native") and model is None:
            return _save_kept(kept, path, fmt, overwrite)
    layout = L.LAYOUTS[format or ("compressed-tensors" if folder else "native")]
    recipe = kept.recipe
    if recipe is None:
        raise TypeError("save: this model was read from a checkpoint (monoquant.load), so its "
                        "quantization settings are not known; save it as a file, or quantize "
                        "the float model with monoquant.quantize and save that")
    state = _float_state(model, recipe)
    dest = path.rstrip("/" + os.sep) if folder else path
    if not dest:
        raise ValueError(f"save: {path!r} is not a folder name")
    if os.path.lexists(dest) and not overwrite:
        raise FileExistsError(f"{dest}: exists; pass overwrite=True to replace it")
    tmp = None
    try:
        config_dir, tmp = _config_dir(config if config is not None else recipe.config,
                                      folder) if folder else (None, None)
        recipe.run(state, dest, layout=layout, folder=folder, max_shard_size=max_shard_size,
                   config_dir=config_dir, overwrite=overwrite)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _float_state(model, recipe):
    from torch import nn
    if model is None:
        state = recipe.state()
        if state is None:
            raise ValueError("save: the float model given to quantize() has changed or been "
                             "freed since (or quantize ran with inplace=True); pass it as "
                             "model=, as it was when quantized")
        return state
    if isinstance(model, nn.Module):
        state = model.state_dict()
    elif isinstance(model, dict):
        state = dict(model)
    else:
        raise TypeError(f"save: model= expects the float nn.Module or state_dict, got "
                        f"{type(model).__name__}")
    recipe.check(state)
    return state


def _config_dir(config, folder):
    """(folder whose files go into the output, temporary folder to remove or None)."""
    if config is None:
        return None, None
    if isinstance(config, (str, bytes, os.PathLike)):
        p = _path(config, "config")
        if os.path.isfile(p) and os.path.basename(p) == "config.json":
            p = os.path.dirname(os.path.abspath(p))
        if not os.path.isfile(os.path.join(p, "config.json")):
            raise ValueError(f"save: config {p!r} is not a model folder with a config.json (or "
                             "a config.json)")
        return p, None
    tmp = tempfile.mkdtemp(prefix="monoquant-config-")
    try:
        if isinstance(config, dict):
            with open(os.path.join(tmp, "config.json"), "w") as f:
                f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
        elif callable(getattr(config, "save_pretrained", None)):
            config.save_pretrained(tmp)
            if not os.path.isfile(os.path.join(tmp, "config.json")):
                raise ValueError("save: config.save_pretrained wrote no config.json")
        else:
            raise TypeError(f"save: config expects a model folder, a config.json path, a dict "
                            f"or an object with save_pretrained, got {type(config).__name__}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, tmp


def _save_kept(kept, path, fmt, overwrite):
    _check_dest(path, overwrite, kept.path)
    src_fmt = _format_of(kept.path)
    folder = os.path.dirname(os.path.abspath(path))
    if src_fmt == fmt:
        fd, tmp = tempfile.mkstemp(prefix=".mq-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f, open(kept.path, "rb") as s:
                shutil.copyfileobj(s, f, 1 << 22)
                f.flush()
                os.fsync(f.fileno())
            if os.path.exists(path):
                os.chmod(tmp, os.stat(path).st_mode & 0o7777)
            else:
                um = os.umask(0)
                os.umask(um)
                os.chmod(tmp, 0o666 & ~um)
            os.replace(tmp, path)
            tmp = None
        finally:
            if tmp:
                os.unlink(tmp)
        return path
    _rewrite(kept.path, path, fmt)
    return path


def _rewrite(src, dst, fmt):
    ck = Checkpoint(src)
    stored = ck.stored()
    descs = (L.TensorDesc * max(1, len(stored)))()
    for i, t in enumerate(stored):
        descs[i].name, descs[i].dtype, descs[i].ndim = t.name, t.dtype, t.ndim
        for d in range(t.ndim):
            descs[i].shape[d] = t.shape[d]
    # safetensors files reserve room after the stored config for figures filled in last;
    # formats whose metadata is written at the end store it without that padding
    meta = [(k, v.rstrip(" ") if k == "quantization_config" else v)
            for k, v in ck.metadata().items() if k != "format"]
    kvs = (L.KV * max(1, len(meta)))(*[L.KV(k.encode(), v.encode()) for k, v in meta])
    ctx = ck.ctx
    w = C.c_void_p()
    try:
        ctx.check(L.LIB.mq_writer_open(ctx.ptr, dst.encode(), fmt, descs, len(stored), kvs,
                                       len(meta), C.byref(w)))
        for t in stored:
            if t.nbytes:
                ctx.check(L.LIB.mq_writer_write(w, t.data, t.nbytes))
        ctx.check(L.LIB.mq_writer_commit(w))
    finally:
        L.LIB.mq_writer_free(w)


def load(path, model, *, activations=None, inplace=False, strict=True):
    """Rebuilds a quantized checkpoint (from the CLI or save()) into `model`, a float model
    of the same architecture (e.g. freshly constructed): its quantized Linear / Conv2d /
    MultiheadAttention layers become monoquant.nn modules over the stored weights, every
    other tensor is loaded as it is. strict: every checkpoint tensor must find its place and
    every model tensor must be in the checkpoint. Returns the model (a copy unless
    inplace=True)."""
    from . import core
    from torch import nn
    if not isinstance(model, nn.Module):
        raise TypeError(f"load: expected the float nn.Module to load into, got {type(model).__name__}")
    ck = Checkpoint(path)
    layer_mods = core._layer_modules(model, core.DEFAULT_LAYER_TYPES)
    replaced = {}
    for wname, (mname, m) in layer_mods.items():
        i = ck.find(wname)
        if i >= 0 and L.LIB.mq_qmodel_runnable(ck.qm.ptr, i):
            replaced[wname] = mname

    class _R:
        quantized = list(replaced)
    qmodel = model if inplace else core._copy_without(model, layer_mods, _R)
    consumed = set()
    for wname, mname in replaced.items():
        pre = mname + "." if mname else ""
        if wname.endswith(("in_proj_weight", "q_proj_weight", "k_proj_weight",
                           "v_proj_weight")):
            consumed.update({wname, pre + "in_proj_bias"})
            j = ck.find(pre + "out_proj.weight")
            if j >= 0 and L.LIB.mq_qmodel_runnable(ck.qm.ptr, j):
                consumed.update({pre + "out_proj.weight", pre + "out_proj.bias"})
        else:
            consumed.update({wname, pre + "bias"})
    # biases and plain tensors go in before the layers are rebuilt (they read the bias)
    state = qmodel.state_dict(keep_vars=True) if not replaced else _state_of(qmodel, replaced)
    names = set(ck.names())
    unexpected = sorted(n for n in names if n not in state and n not in consumed)
    missing = sorted(n for n in state if n not in names and n not in consumed)
    if strict and (unexpected or missing):
        raise ValueError(f"load: {path} does not match the model: "
                         f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}, "
                         f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}")
    with torch.no_grad():
        for i in range(len(ck)):
            n = ck.tensor(i).name.decode()
            if n in state and (n not in consumed or n.endswith("bias")):
                dst = state[n]
                src = ck.read(i)
                if tuple(src.shape) != tuple(dst.shape):
                    raise ValueError(f"load: '{n}' is {tuple(src.shape)} in {path}, "
                                     f"{tuple(dst.shape)} in the model")
                dst.copy_(src.to(dst.dtype))
    core._rebuild(qmodel, ck, None, activations)
    _attach_checkpoint(qmodel, ck.path, None)
    return qmodel


def _state_of(model, replaced):
    """Parameters and buffers by name (keep_vars), including those of layers about to be
    replaced (their bias is read when the quantized layer is built)."""
    out = {}
    for mname, m in model.named_modules():
        pre = mname + "." if mname else ""
        for n, p in m.named_parameters(recurse=False):
            out[pre + n] = p
        for n, b in m.named_buffers(recurse=False):
            if n not in m._non_persistent_buffers_set:
                out[pre + n] = b
    return out


def info(path):
    """What a checkpoint holds, as `monoquant info`: a dict with format, files, metadata,
    tensors (stored: name, dtype, shape, bytes, kind) and logical tensors (name, shape,
    stored as: int8 / int4 / fp16 / none...)."""
    ck = Checkpoint(path)
    stored = []
    for t in ck.stored():
        stored.append(dict(name=t.name.decode(), dtype=L.LIB.mq_dtype_name(t.dtype).decode(),
                           shape=tuple(t.shape[:t.ndim]), bytes=t.nbytes,
                           kind=L.KIND_NAMES[L.LIB.mq_classify_tensor(C.byref(t))]))
    logical = []
    for i in range(len(ck)):
        q = ck.tensor(i)
        buf = C.create_string_buffer(64)
        L.LIB.mq_qspec_format(C.byref(q.spec), buf, 64)
        logical.append(dict(name=q.name.decode(), shape=tuple(q.shape[:q.ndim]),
                            kind=L.KIND_NAMES[q.kind], stored_as=buf.value.decode(),
                            stored_bytes=q.stored_bytes))
    return dict(path=ck.path, format=ck.format, files=L.LIB.mq_model_file_count(ck.model),
                quantized=ck.is_quantized, metadata=ck.metadata(), tensors=stored,
                logical=logical, bytes=sum(t["bytes"] for t in stored))


def validate(path):
    """Checks a checkpoint's structure and values (`monoquant validate`): returns a dict
    (tensors, quantized); raises MonoquantError (status "validation failed") naming the
    tensor otherwise."""
    ck = Checkpoint(path)
    for i in range(len(ck)):
        ck.ctx.check(L.LIB.mq_qmodel_verify(ck.qm.ptr, i))
    nq = sum(1 for i in range(len(ck)) if ck.tensor(i).spec.type != L.Q_NONE)
    return dict(path=ck.path, ok=True, tensors=len(ck), quantized=nq)


def compare(reference, other):
    """Error figures of every tensor of `other` against the same-named tensor of `reference`
    (both read as f32; quantized ones dequantized): {name: {sqnr_db, rel_fro, max_abs, mse,
    cosine}}."""
    a, b = Checkpoint(reference), Checkpoint(other)
    out = {}
    for j in range(len(b)):
        name = b.tensor(j).name.decode()
        i = a.find(name)
        if i < 0:
            continue
        qa, qb = a.tensor(i), b.tensor(j)
        if not (_is_float(qa) and _is_float(qb)):
            continue
        e = L.ErrorStats()
        a.ctx.check(L.LIB.mq_qmodel_error(a.qm.ptr, i, b.qm.ptr, j, C.byref(e)))
        out[name] = L._err(e)
    return out


def _is_float(q):
    return q.spec.type != L.Q_NONE or q.data.contents.dtype in (L.F16, L.BF16, L.F32, L.F64)


def dequantize(src, out=None, *, dtype=None, overwrite=False):
    """A quantized checkpoint (a path, or a model from quantize/load) back to float tensors:
    written to `out` (as `monoquant dequantize`) or returned as a state_dict."""
    kept = getattr(src, "_monoquant_checkpoint", None)
    path = kept.path if kept is not None else _path(src, "dequantize")
    if dtype not in _TORCH_DTYPES:
        raise ValueError(f"dequantize: dtype {dtype!r} is not float32, float16 or bfloat16")
    ck = Checkpoint(path)
    if out is None:
        td = None if dtype is None else _MQ_TO_TORCH[_TORCH_DTYPES[dtype]]
        return {ck.tensor(i).name.decode(): ck.read(i, td) for i in range(len(ck))}
    out = _path(out, "out")
    _check_dest(out, overwrite, path)
    ck.ctx.check(L.LIB.mq_qmodel_dequantize(ck.qm.ptr, out.encode(), _TORCH_DTYPES[dtype],
                                            _format_of(out)))
    return out
