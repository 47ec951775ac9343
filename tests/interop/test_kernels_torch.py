"""Quantized Conv2d and Linear (weight-only) against PyTorch's F.conv2d / F.linear on the
dequantized weights, on every instruction-set path, calling libmonoquant through ctypes.
Checks the geometry (stride, padding, dilation, groups), the stored layouts (INT8, packed
INT4 words, zero points) and the arithmetic against an independent implementation."""
import ctypes as C

import numpy as np
import torch
import torch.nn.functional as F

import mqlib
from harness import case, finish

LIB = mqlib.LIB
Q_NONE, Q_INT8, Q_UINT8, Q_INT4, Q_UINT4 = 0, 1, 2, 3, 4
PER_TENSOR, PER_CHANNEL, PER_GROUP = 0, 1, 2


LinearDesc, Conv2dDesc = mqlib.LinearDesc, mqlib.Conv2dDesc


LIB.mq_conv2d_create.argtypes = [C.c_void_p, C.POINTER(LinearDesc), C.POINTER(Conv2dDesc),
                                 C.POINTER(C.c_void_p)]
LIB.mq_conv2d_free.argtypes = [C.c_void_p]
LIB.mq_conv2d_forward.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p, C.c_int64, C.c_int64,
                                  C.c_int64, C.c_void_p]
LIB.mq_linear_create.argtypes = [C.c_void_p, C.POINTER(LinearDesc), C.POINTER(C.c_void_p)]
LIB.mq_linear_free.argtypes = [C.c_void_p]
LIB.mq_linear_forward.argtypes = [C.c_void_p, C.c_void_p, C.c_void_p, C.c_int64, C.c_void_p]

rng = np.random.default_rng(11)
ptr = lambda a: a.ctypes.data if a is not None else None  # noqa: E731


def run_all_isas(create, free, forward):
    outs = []
    for isa in mqlib.isa_levels():
        ctx = LIB.mq_ctx_create()
        obj = C.c_void_p()
        try:
            assert LIB.mq_ctx_set_isa(ctx, isa) == 0
            assert create(ctx, obj) == 0, LIB.mq_ctx_message(ctx).decode()
            outs.append(forward(ctx, obj))
        finally:
            free(obj)
            LIB.mq_ctx_free(ctx)
    for o in outs[1:]:
        assert np.array_equal(o.view(np.uint32), outs[0].view(np.uint32)), "paths differ"
    return outs[0]


@case
def conv2d_int8_matches_torch():
    for _ in range(25):
        groups = int(rng.integers(1, 4))
        cin, cout = groups * int(rng.integers(1, 5)), groups * int(rng.integers(1, 9))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        sh, sw = (int(v) for v in rng.integers(1, 3, 2))
        ph, pw = (int(v) for v in rng.integers(0, 3, 2))
        dh, dw = (int(v) for v in rng.integers(1, 3, 2))
        b, h, w = int(rng.integers(1, 3)), int(rng.integers(6, 12)), int(rng.integers(6, 12))
        K = cin // groups * kh * kw
        q = rng.integers(0, 256, (cout, K)).astype(np.uint8)
        zp = rng.integers(0, 256, cout).astype(np.uint8)
        sc = (rng.random(cout) * 0.02 + 0.001).astype(np.float32)
        bias = rng.standard_normal(cout).astype(np.float32)
        x = rng.standard_normal((b, cin, h, w)).astype(np.float32)
        wdq = ((q.astype(np.float64) - zp[:, None]) * sc[:, None]).reshape(cout, cin // groups, kh, kw)
        want = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(wdq),
                        torch.from_numpy(bias).double(), (sh, sw), (ph, pw), (dh, dw), groups).numpy()
        d = Conv2dDesc()
        wd = LinearDesc(type=Q_UINT8, scheme=1, granularity=PER_CHANNEL, out_features=cout,
                         in_features=K, weight=ptr(q), scale=ptr(sc), zero_point=ptr(zp),
                         bias=ptr(bias))
        d.in_channels, d.kernel_h, d.kernel_w, d.groups = cin, kh, kw, groups
        d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dilation_h, d.dilation_w = sh, sw, ph, pw, dh, dw

        def fwd(ctx, obj):
            y = np.empty(want.shape, np.float32)
            assert LIB.mq_conv2d_forward(ctx, obj, ptr(x), b, h, w, ptr(y)) == 0
            return y
        got = run_all_isas(lambda ctx, obj: LIB.mq_conv2d_create(ctx, C.byref(wd), C.byref(d),
                                                                C.byref(obj)),
                           LIB.mq_conv2d_free, fwd)
        scale = np.abs(want).max() + 1
        assert np.abs(got - want).max() <= 1e-5 * scale, f"max diff {np.abs(got - want).max()}"


@case
def linear_int4_groups_match_torch():
    for n, k, gs, signed in [(33, 100, 32, True), (70, 256, 128, False), (5, 24, 8, True)]:
        vals = rng.integers(-8, 8, (n, k)) if signed else rng.integers(0, 16, (n, k))
        nib = (vals + 8 if signed else vals).astype(np.uint32)
        words = (k + 7) // 8
        padded = np.zeros((n, words * 8), np.uint32)
        padded[:, :k] = nib
        packed = np.zeros((n, words), np.uint32)
        for j in range(8):
            packed |= padded[:, j::8] << (4 * j)
        g = (k + gs - 1) // gs
        sc = (rng.random((n, g)) * 0.1 + 0.01).astype(np.float32)
        zp = (rng.integers(-8, 8, (n, g)) if signed else rng.integers(0, 16, (n, g))).astype(np.int8)
        col_group = np.arange(k) // gs
        wdq = (vals - zp[:, col_group].astype(np.int64)) * sc[:, col_group].astype(np.float64)
        x = rng.standard_normal((3, k)).astype(np.float32)
        want = F.linear(torch.from_numpy(x).double(), torch.from_numpy(wdq)).numpy()
        d = LinearDesc(type=Q_INT4 if signed else Q_UINT4, scheme=1, granularity=PER_GROUP,
                       group_size=gs, out_features=n, in_features=k, weight=ptr(packed),
                       scale=ptr(sc), zero_point=ptr(zp))

        def fwd(ctx, obj):
            y = np.empty((3, n), np.float32)
            assert LIB.mq_linear_forward(ctx, obj, ptr(x), 3, ptr(y)) == 0
            return y
        got = run_all_isas(lambda ctx, obj: LIB.mq_linear_create(ctx, C.byref(d), C.byref(obj)),
                           LIB.mq_linear_free, fwd)
        assert np.abs(got - want).max() <= 1e-5 * (np.abs(want).max() + 1), \
            f"{n}x{k} g{gs}: max diff {np.abs(got - want).max()}"


finish()
