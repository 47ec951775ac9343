"""Calibration from Python: forward pre-hooks hand every Linear / Conv2d input to the
library's observers (mq_calibrator_*) without copies; the statistics file is the one
`monoquant calibrate` writes, and statistics of separate runs merge exactly."""
import ctypes as C
import os

import torch
from torch import nn

from . import _lib as L

_DT = {torch.float32: L.F32, torch.float16: L.F16, torch.bfloat16: L.BF16, torch.float64: L.F64}
_QT = {"uint8": L.Q_UINT8, "int8": L.Q_INT8, "uint4": L.Q_UINT4, "int4": L.Q_INT4}


class Stats:
    """Calibration statistics being gathered (an mq_calibrator): update through hooks,
    merge(), save()."""

    def __init__(self, observer="minmax", *, dtype="uint8", symmetric=False, per_channel=False,
                 hessian=False, **observer_args):
        if observer not in L.OBSERVERS:
            raise ValueError(f"observer: {observer!r} is not one of {sorted(L.OBSERVERS)}")
        if dtype not in _QT:
            raise ValueError(f"dtype: {dtype!r} is not one of {sorted(_QT)}")
        o = L.observer_options_default(L.OBSERVERS[observer])
        o.type = _QT[dtype]
        o.scheme = L.SYMMETRIC if symmetric else L.ASYMMETRIC
        if per_channel:
            o.granularity = L.PER_CHANNEL
        for k, v in observer_args.items():
            if k not in ("averaging_constant", "bins", "upsample_rate", "percentile"):
                raise TypeError(f"unknown observer option {k!r}")
            setattr(o, k, v)
        self.ctx = L.Context(L.get_num_threads())
        self.ptr = C.c_void_p()
        self.ctx.check(L.LIB.mq_calibrator_create(self.ctx.ptr, C.byref(o), C.byref(self.ptr)))
        if hessian:
            self.ctx.check(L.LIB.mq_calibrator_set_hessian(self.ptr, 1))
        self.path = None

    @classmethod
    def load(cls, path):
        """A statistics file (Stats.save, `monoquant calibrate`) read back with its observer
        settings and state, ready to merge or to continue gathering."""
        self = cls.__new__(cls)
        self.ctx = L.Context(L.get_num_threads())
        self.ptr = C.c_void_p()
        self.path = os.fsdecode(os.fspath(path))
        self.ctx.check(L.LIB.mq_calibrator_open(self.ctx.ptr, self.path.encode(),
                                                C.byref(self.ptr)))
        return self

    def __del__(self):
        if getattr(self, "ptr", None) and L.LIB is not None:
            L.LIB.mq_calibrator_free(self.ptr)
            self.ptr = None

    def add_layer(self, name, channels):
        self.ctx.check(L.LIB.mq_calibrator_add_layer(self.ptr, name.encode(), int(channels)))

    def update(self, name, x, channel_axis=-1):
        """One batch of inputs of layer `name` (declared with add_layer)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"calibration input of '{name}': expected a tensor, got "
                            f"{type(x).__name__}")
        if x.device.type != "cpu":
            raise TypeError(f"calibration input of '{name}' is on {x.device}; calibrate on CPU")
        if x.dtype not in _DT:
            raise TypeError(f"calibration input of '{name}': dtype {x.dtype} (float tensors only)")
        if x.dim() > L.MAX_DIMS or x.dim() == 0:
            raise ValueError(f"calibration input of '{name}': {x.dim()} dimensions")
        x = x.detach()
        if not x.is_contiguous():
            x = x.contiguous()
        shape = (C.c_int64 * x.dim())(*x.shape)
        self.ctx.check(L.LIB.mq_calibrator_update(self.ptr, name.encode(), _DT[x.dtype],
                                                  x.data_ptr(), x.dim(), shape, channel_axis))

    @property
    def layers(self):
        """{layer: rows observed}."""
        n = L.LIB.mq_calibrator_layer_count(self.ptr)
        return {L.LIB.mq_calibrator_layer_name(self.ptr, i).decode():
                L.LIB.mq_calibrator_layer_rows(self.ptr, i) for i in range(n)}

    def merge(self, other):
        """Folds `other` (same observer settings) into these statistics: exactly what one run
        over both inputs gives for min/max, histograms of equal range, counts, sums of x^2,
        max |x| and Hessian sums (docs/CALIBRATION.md)."""
        if not isinstance(other, Stats):
            raise TypeError(f"merge: expected Stats, got {type(other).__name__}")
        self.ctx.check(L.LIB.mq_calibrator_merge(self.ptr, other.ptr))
        return self

    def save(self, path, *, metadata=None):
        """Writes the statistics file of `monoquant calibrate` (safetensors)."""
        path = os.fsdecode(os.fspath(path))
        meta = list((metadata or {}).items())
        kvs = (L.KV * max(1, len(meta)))(*[L.KV(str(k).encode(), str(v).encode()) for k, v in meta])
        self.ctx.check(L.LIB.mq_calibrator_save(self.ptr, path.encode(), kvs, len(meta)))
        self.path = path
        return path


def _layers(model, layer_types):
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and any(isinstance(m, t) for t in layer_types):
            yield name, m, m.in_channels, 1
        elif isinstance(m, nn.Linear) and any(isinstance(m, t) for t in layer_types):
            yield name, m, m.in_features, -1


def _default_forward(model, item):
    if isinstance(item, (tuple, list)):
        return model(*item)
    if isinstance(item, dict):
        return model(**item)
    return model(item)


def calibrate(model, data, *, observer="minmax", stats=None, per_channel=False, hessian=False,
              layer_types=(nn.Linear, nn.Conv2d), forward=None, **stats_args):
    """Runs `model` over `data` (any iterable of inputs) under torch.no_grad with forward
    pre-hooks feeding every Linear / Conv2d input to the observers. Returns the Stats (pass
    `stats` to continue gathering into existing ones)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"calibrate: expected an nn.Module, got {type(model).__name__}")
    if stats is None:
        stats = Stats(observer, per_channel=per_channel, hessian=hessian, **stats_args)
    forward = forward or _default_forward
    hooks = []
    try:
        for name, m, channels, axis in _layers(model, layer_types):
            stats.add_layer(name, channels)

            def hook(mod, inputs, name=name, axis=axis):
                x = inputs[0] if inputs else None
                if isinstance(x, torch.Tensor):
                    if axis == 1 and x.dim() == 3:
                        x = x.unsqueeze(0)
                    stats.update(name, x, axis)
            hooks.append(m.register_forward_pre_hook(hook))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                n = 0
                for item in data:
                    forward(model, item)
                    n += 1
            if n == 0:
                raise ValueError("calibrate: calibration_data gave no inputs")
        finally:
            model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return stats
