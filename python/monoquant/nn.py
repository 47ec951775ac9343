"""Quantized layers that run on monoquant's C kernels: drop-in replacements for nn.Linear,
nn.Conv2d and nn.MultiheadAttention in inference.

The weights live inside the C object in the kernel's packed layout (INT8, INT4, FP16 or BF16
as stored in the checkpoint; no float copy). Activations: f32, bf16 or f16 CPU tensors of any
batch shape; the output has the input's dtype. The kernels compute in f32 (weight-only), or
quantize each input row to int8 (dynamic) or use the calibrated input scale (static).
These modules are inference-only: an input that needs a gradient raises an error, as does
state_dict() (use monoquant.save / monoquant.load)."""
import ctypes as C
import math
import threading

import torch
import torch.nn.functional as F
from torch import nn

from . import _lib as L

_FLOAT = {torch.float32, torch.float16, torch.bfloat16}
MODES = {"none": L.ACT_F32, "weight_only": L.ACT_F32, "dynamic": L.ACT_DYNAMIC,
         "static": L.ACT_STATIC}
MODE_NAMES = {L.ACT_F32: "none", L.ACT_DYNAMIC: "dynamic", L.ACT_STATIC: "static"}
QTYPE_NAMES = {L.Q_NONE: "f32", L.Q_INT8: "int8", L.Q_UINT8: "uint8", L.Q_INT4: "int4",
               L.Q_UINT4: "uint4", L.Q_FP16: "fp16", L.Q_BF16: "bf16"}

_builder = None
_linear_forward = L.LIB.mq_linear_forward
# bound once: the forward fast path reads them on every call
_Tensor, _F32 = torch.Tensor, torch.float32
_empty, _grad_enabled = torch.empty, torch.is_grad_enabled


def _build_ctx():
    """The context kernel objects allocate through (its allocator is thread-safe)."""
    global _builder
    if _builder is None:
        _builder = L.Context()
    return _builder


def _check_input(mod, x, what):
    # fast path: the common case costs a few attribute reads
    if (type(x) is torch.Tensor and x.dtype in _FLOAT and x.is_cpu and not x.is_sparse
            and not (x.requires_grad and torch.is_grad_enabled())):
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.device.type != "cpu":
        raise TypeError(f"{what}: input is on {x.device}; monoquant's kernels run on CPU tensors "
                        "(move the input with .cpu())")
    if x.dtype not in _FLOAT:
        raise TypeError(f"{what}: input dtype {x.dtype} is not supported (float32, bfloat16 or "
                        "float16)")
    if x.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"{what} is inference-only: its input requires a gradient, which "
                           "cannot flow through the quantized kernels (run under torch.no_grad() "
                           "or torch.inference_mode(), or detach the input)")
    if x.is_sparse or x.is_quantized:
        raise TypeError(f"{what}: sparse or quantized input tensors are not supported")


def _f32(x):
    """x as a dense f32 tensor (a copy only when it is not one already; a view with the
    negative bit set is materialized, its data_ptr holds the values before negation)."""
    if x.is_neg():
        x = x.resolve_neg()
    if x.dtype != torch.float32:
        return x.to(torch.float32, memory_format=torch.contiguous_format).contiguous()
    return x if x.is_contiguous() else x.contiguous()


class _Kernel:
    """Owns one mq_linear / mq_conv2d; freed with the object. It allocated through `ctx`,
    which must outlive it: the reference held here keeps it alive until then."""

    def __init__(self, ptr, free, ctx):
        self.ptr, self._free, self._ctx = ptr, free, ctx
        ctx.retain()
        self.lock = threading.Lock()

    def __del__(self):
        if self.ptr and L.LIB is not None:
            self._free(self.ptr)
            self.ptr = None
            self._ctx.release()


class _QuantizedBase(nn.Module):
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        raise RuntimeError(f"{type(self).__name__} holds its weights packed inside the C kernels "
                           "and has no float state_dict; save the model with "
                           "monoquant.save(model, path) and read it back with monoquant.load")

    def _load_from_state_dict(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}: load quantized checkpoints with "
                           "monoquant.load(path, float_model)")

    @property
    def weight_bytes(self):
        """Bytes the C object holds (packed weights, scales, kernel constants)."""
        return int(L.LIB.mq_linear_weight_bytes(self._k.ptr)) if self._is_linear else self._bytes

    def extra_repr(self):
        return (f"{self._shape_repr()}, weight={QTYPE_NAMES.get(self.qtype, '?')}, "
                f"activations={MODE_NAMES[self.act]}, bias={self.has_bias}")


class QuantizedLinear(_QuantizedBase):
    """y = x W^T + b over packed weights. Built by monoquant.quantize / monoquant.load (or
    from_qmodel for a checkpoint's tensor)."""
    _is_linear = True

    def __init__(self, in_features, out_features, kernel, qtype, act, has_bias):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._k, self.qtype, self.act, self.has_bias = kernel, qtype, act, has_bias
        self._kp, self._lock = C.c_void_p(kernel.ptr), kernel.lock  # read on every call

    @classmethod
    def from_qmodel(cls, qm, index, act, bias=None):
        """Layer from logical tensor `index` of an open checkpoint (monoquant.io.Checkpoint)."""
        q = L.LIB.mq_qmodel_tensor(qm.ptr, index).contents
        n, k = q.shape[0], q.numel // q.shape[0]
        b = _bias_f32(bias, n, q.name.decode())
        ctx = _build_ctx()
        out, used = C.c_void_p(), C.c_int()
        ctx.check(L.LIB.mq_qmodel_linear_create(ctx.ptr, qm.ptr, index, act,
                                                b.data_ptr() if b is not None else None,
                                                C.byref(out), C.byref(used)))
        return cls(k, n, _Kernel(out.value, L.LIB.mq_linear_free, ctx), q.spec.type, used.value,
                   b is not None)

    def _shape_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"

    def forward(self, x):
        # fast path, the common case: a dense f32 CPU tensor [M, K]; every other input goes
        # through the full checks (and one conversion) below
        if type(x) is _Tensor:
            s = x.shape
            if (len(s) == 2 and s[1] == self.in_features and x.dtype is _F32 and x.is_cpu
                    and x.is_contiguous() and not x.is_neg()
                    and not (x.requires_grad and _grad_enabled())):
                m = s[0]
                y = _empty((m, self.out_features), dtype=_F32)
                if m:
                    ctx = L.thread_context()
                    with self._lock:
                        st = _linear_forward(ctx.vp, self._kp, x.data_ptr(), m, y.data_ptr())
                    if st:
                        ctx.check(st, "QuantizedLinear")
                return y
        _check_input(self, x, "QuantizedLinear")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"QuantizedLinear: input shape {tuple(x.shape)} does not end with "
                             f"in_features={self.in_features}")
        dt = x.dtype
        x = _f32(x)
        y = _empty(x.shape[:-1] + (self.out_features,), dtype=_F32)
        m = x.numel() // self.in_features
        if m:
            self._run(x.data_ptr(), m, y.data_ptr())
        return y if dt is _F32 else y.to(dt)

    def _run(self, xp, m, yp):
        ctx = L.thread_context()
        with self._lock:
            st = _linear_forward(ctx.vp, self._kp, xp, m, yp)
        if st:
            ctx.check(st, "QuantizedLinear")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv2d_supported(conv):
    """None when the kernels can run this nn.Conv2d, else why not."""
    if conv.padding_mode != "zeros":
        return f"padding_mode '{conv.padding_mode}'"
    if isinstance(conv.padding, str) and conv.padding not in ("valid", "same"):
        return f"padding '{conv.padding}'"
    if isinstance(conv.padding, str) and conv.padding == "same":
        kh, kw = conv.kernel_size
        dh, dw = conv.dilation
        if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
            return "asymmetric 'same' padding"
    return None


def _conv_padding(conv):
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return 0, 0
        kh, kw = conv.kernel_size
        dh, dw = conv.dilation
        return dh * (kh - 1) // 2, dw * (kw - 1) // 2
    return _pair(conv.padding)


class QuantizedConv2d(_QuantizedBase):
    """nn.Conv2d (zero padding, any stride, dilation, groups) over packed weights, NCHW."""
    _is_linear = False

    def __init__(self, conv, kernel, qtype, act, has_bias, nbytes):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = _pair(conv.kernel_size), _pair(conv.stride)
        self.padding, self.dilation, self.groups = _conv_padding(conv), _pair(conv.dilation), conv.groups
        self._k, self.qtype, self.act, self.has_bias, self._bytes = kernel, qtype, act, has_bias, nbytes

    @classmethod
    def from_qmodel(cls, qm, index, act, conv, bias=None):
        why = conv2d_supported(conv)
        if why:
            raise ValueError(f"QuantizedConv2d: {why} is not supported")
        q = L.LIB.mq_qmodel_tensor(qm.ptr, index).contents
        b = _bias_f32(bias, conv.out_channels, q.name.decode())
        g = L.conv2d_desc_init(conv.in_channels, *_pair(conv.kernel_size))
        g.stride_h, g.stride_w = _pair(conv.stride)
        g.pad_h, g.pad_w = _conv_padding(conv)
        g.dilation_h, g.dilation_w = _pair(conv.dilation)
        g.groups = conv.groups
        ctx = _build_ctx()
        out, used = C.c_void_p(), C.c_int()
        ctx.check(L.LIB.mq_qmodel_conv2d_create(ctx.ptr, qm.ptr, index, act,
                                                b.data_ptr() if b is not None else None,
                                                C.byref(g), C.byref(out), C.byref(used)))
        return cls(conv, _Kernel(out.value, L.LIB.mq_conv2d_free, ctx), q.spec.type, used.value,
                   b is not None, int(q.stored_bytes))

    def _shape_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}")

    def forward(self, x):
        _check_input(self, x, "QuantizedConv2d")
        unbatched = x.dim() == 3
        if unbatched:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"QuantizedConv2d: input shape {tuple(x.shape)} is not "
                             f"[N, {self.in_channels}, H, W] or [{self.in_channels}, H, W]")
        dt = x.dtype
        x = _f32(x)
        n, _, h, w = x.shape
        ctx = L.thread_context()
        oh, ow = C.c_int64(), C.c_int64()
        ctx.check(L.LIB.mq_conv2d_output_size(ctx.ptr, self._k.ptr, h, w, C.byref(oh),
                                              C.byref(ow)), "QuantizedConv2d")
        y = torch.empty((n, self.out_channels, oh.value, ow.value), dtype=torch.float32)
        if y.numel():
            with self._k.lock:
                st = L.LIB.mq_conv2d_forward(ctx.ptr, self._k.ptr, x.data_ptr(), n, h, w,
                                             y.data_ptr())
            if st:
                ctx.check(st, "QuantizedConv2d")
        if unbatched:
            y = y.squeeze(0)
        return y if dt == torch.float32 else y.to(dt)


def _bias_f32(bias, n, name):
    if bias is None:
        return None
    b = bias.detach().to(torch.float32).contiguous()
    if b.numel() != n:
        raise ValueError(f"{name}: bias has {b.numel()} values, the layer {n} outputs")
    return b


MHA_PROJECTIONS = ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def mha_weights(mha):
    """The input-projection weights of an nn.MultiheadAttention, by attribute name: the
    packed in_proj_weight [3E, E], or q/k/v_proj_weight when key/value dims differ."""
    return ("in_proj_weight",) if mha._qkv_same_embed_dim else MHA_PROJECTIONS


def float_linear(weight, bias):
    """An nn.Linear over existing tensors (no copy), for projections that stay float."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    lin.weight = nn.Parameter(weight.detach(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return lin.eval()


class QuantizedMultiheadAttention(nn.Module):
    """nn.MultiheadAttention in inference with its input projections (the packed
    in_proj_weight, or separate q/k/v_proj_weight when kdim/vdim differ) and out_proj on the
    quantized kernels where they were quantized; the attention itself (softmax of q k^T) runs
    in torch. Supports attn_mask, key_padding_mask, need_weights, average_attn_weights,
    is_causal, batch_first, bias_k/bias_v (add_bias_kv) and add_zero_attn."""

    def __init__(self, mha, in_proj, out_proj, qkv=None):
        super().__init__()
        self.embed_dim, self.num_heads = mha.embed_dim, mha.num_heads
        self.head_dim = mha.embed_dim // mha.num_heads
        self.batch_first = mha.batch_first
        self.in_proj = in_proj          # [3E, E] (QuantizedLinear or float), or None
        if qkv is not None:             # separate projections, each QuantizedLinear or float
            self.q_proj, self.k_proj, self.v_proj = qkv
        self.out_proj = out_proj        # QuantizedLinear or the float Linear
        self.add_zero_attn = bool(mha.add_zero_attn)
        for n in ("bias_k", "bias_v"):
            b = getattr(mha, n)
            self.register_buffer(n, None if b is None else b.detach().clone(), persistent=False)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        _check_input(self, query, "QuantizedMultiheadAttention")
        same = query is key and key is value
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        tgt, bsz, e = query.shape
        h, hd = self.num_heads, self.head_dim
        if self.in_proj is None:
            q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        elif same:
            q, k, v = self.in_proj(query).split(e, dim=-1)
        else:
            q = self.in_proj(query)[..., :e]
            k = self.in_proj(key)[..., e:2 * e]
            v = self.in_proj(value)[..., 2 * e:]
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(tgt, k.shape[0], dtype=torch.bool).triu(1)
        if self.bias_k is not None:  # one more key and value, visible to every query
            k = torch.cat([k, self.bias_k.to(k.dtype).expand(1, bsz, e)])
            v = torch.cat([v, self.bias_v.to(v.dtype).expand(1, bsz, e)])
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        q = q.reshape(tgt, bsz * h, hd).transpose(0, 1)
        k = k.reshape(k.shape[0], bsz * h, hd).transpose(0, 1)
        v = v.reshape(v.shape[0], bsz * h, hd).transpose(0, 1)
        if self.add_zero_attn:  # and one more, zero
            k = torch.cat([k, k.new_zeros((bsz * h, 1, hd))], dim=1)
            v = torch.cat([v, v.new_zeros((bsz * h, 1, hd))], dim=1)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        src = k.shape[1]
        scores = torch.bmm(q * (1.0 / math.sqrt(hd)), k.transpose(1, 2))
        if attn_mask is not None:
            m = attn_mask if attn_mask.dim() == 3 else attn_mask.unsqueeze(0)
            scores = scores.masked_fill(m, float("-inf")) if m.dtype == torch.bool else scores + m
        if key_padding_mask is not None:
            kpm = key_padding_mask.reshape(bsz, 1, 1, src)
            scores = scores.view(bsz, h, tgt, src)
            scores = (scores.masked_fill(kpm, float("-inf")) if kpm.dtype == torch.bool
                      else scores + kpm).view(bsz * h, tgt, src)
        attn = F.softmax(scores, dim=-1)
        out = torch.bmm(attn, v).transpose(0, 1).reshape(tgt, bsz, e)
        out = self.out_proj(out)
        if self.batch_first and not unbatched:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        w = attn.view(bsz, h, tgt, src)
        w = w.mean(dim=1) if average_attn_weights else w
        return out, (w.squeeze(0) if unbatched else w)
