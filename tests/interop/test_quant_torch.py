"""INT8/UINT8 quantization is bit-identical to PyTorch: MinMaxObserver / PerChannelMinMaxObserver
qparams followed by quantize_per_tensor / quantize_per_channel (qint8 and quint8, affine and
symmetric), and dequantize. INT4/UINT4 groups match the same formulas written in numpy, and
their packed words decode as documented (eight per int32, lowest bits first, INT4 + 8).
The C library is called through ctypes, public API only."""
import ctypes as C
import json
import os
import struct
import sys

import numpy as np
import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mqlib  # noqa: E402
from harness import FIXTURES, case, finish  # noqa: E402

lib = mqlib.LIB

MQ_I8, MQ_U8, MQ_I32, MQ_F16, MQ_BF16, MQ_F32, MQ_F64 = 3, 2, 6, 10, 11, 12, 13
Q_INT8, Q_UINT8, Q_INT4, Q_UINT4 = 1, 2, 3, 4
SYM, ASYM = 0, 1
PER_TENSOR, PER_CHANNEL, PER_GROUP = 0, 1, 2


QSpec, QLayout = mqlib.QSpec, mqlib.QLayout


lib.mq_qspec_default.argtypes = [C.POINTER(QSpec)]
lib.mq_qlayout_init.argtypes = [C.c_void_p, C.POINTER(QSpec), C.c_int, C.POINTER(C.c_int64),
                                C.POINTER(QLayout)]
lib.mq_quantize_rows.argtypes = [C.c_void_p, C.POINTER(QSpec), C.POINTER(QLayout), C.c_void_p,
                                 C.c_int, C.c_void_p, C.c_int64, C.c_int64, C.c_void_p, C.c_void_p,
                                 C.c_void_p]
lib.mq_dequantize_rows.argtypes = [C.c_void_p, C.POINTER(QSpec), C.POINTER(QLayout),
                                   C.c_void_p, C.c_void_p, C.c_void_p, C.c_int64, C.c_int64,
                                   C.c_void_p]
ctx = lib.mq_ctx_create()
lib.mq_ctx_set_threads(ctx, 2)


def ptr(a):
    return a.ctypes.data_as(C.c_void_p) if a is not None else None


def mq_quantize(x, qtype, scheme, gran, src_dtype=MQ_F32, chunks=1, group=128):
    """Returns (scales, zero points or None, data, dequantized) from the C library."""
    spec = QSpec()
    lib.mq_qspec_default(C.byref(spec))
    spec.type, spec.scheme, spec.granularity, spec.group_size = qtype, scheme, gran, group
    shape = (C.c_int64 * x.ndim)(*x.shape)
    lay = QLayout()
    st = lib.mq_qlayout_init(ctx, C.byref(spec), x.ndim, shape, C.byref(lay))
    assert st == 0, lib.mq_ctx_message(ctx)
    src = {MQ_F32: x.astype(np.float32), MQ_F64: x.astype(np.float64)}[src_dtype]
    src = np.ascontiguousarray(src)
    qdt = np.int8 if lay.data_dtype == MQ_I8 else np.uint8
    data = np.zeros(lay.data_bytes, dtype=qdt)
    packed = lay.data_dtype == MQ_I32
    scale = np.zeros(lay.nscales, dtype=np.float32)
    zp = np.zeros(lay.nscales, dtype=np.int8 if lay.zero_point_dtype == MQ_I8 else np.uint8) \
        if lay.has_zero_point else None
    bounds = np.linspace(0, lay.rows, chunks + 1).astype(int)
    for b, e in zip(bounds[:-1], bounds[1:]):
        if b == e:
            continue
        out = data[b * lay.row_bytes:]
        st = lib.mq_quantize_rows(ctx, C.byref(spec), C.byref(lay), None, src_dtype, ptr(src),
                                  int(b), int(e), ptr(out), ptr(scale), ptr(zp))
        assert st == 0, lib.mq_ctx_message(ctx)
    deq = np.zeros(x.size, dtype=np.float32)
    st = lib.mq_dequantize_rows(ctx, C.byref(spec), C.byref(lay), ptr(data), ptr(scale), ptr(zp),
                                0, lay.rows, ptr(deq))
    assert st == 0, lib.mq_ctx_message(ctx)
    if packed:
        return scale, zp, data.view("<u4").reshape(lay.rows, -1), deq.reshape(x.shape)
    return scale, zp, data.reshape(x.shape), deq.reshape(x.shape)


def torch_quantize(x, dtype, qscheme):
    t = torch.from_numpy(np.array(x, dtype=np.float32))
    if qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        obs = MinMaxObserver(dtype=dtype, qscheme=qscheme)
        obs(t)
        s, z = obs.calculate_qparams()
        q = torch.quantize_per_tensor(t, float(s), int(z), dtype)
    else:
        if t.ndim == 1:  # torch's observer needs 2 dims; ours views [n] as [n, 1]
            t = t.reshape(-1, 1)
        obs = PerChannelMinMaxObserver(ch_axis=0, dtype=dtype, qscheme=qscheme)
        obs(t)
        s, z = obs.calculate_qparams()
        q = torch.quantize_per_channel(t, s.to(torch.double), z.to(torch.long), 0, dtype)
    return (s.numpy().astype(np.float32).reshape(-1), z.numpy().reshape(-1),
            q.int_repr().numpy().reshape(x.shape), q.dequantize().numpy().reshape(x.shape))


CONFIGS = [(torch.qint8, Q_INT8), (torch.quint8, Q_UINT8)]
SCHEMES = [(torch.per_tensor_affine, ASYM, PER_TENSOR),
           (torch.per_tensor_symmetric, SYM, PER_TENSOR),
           (torch.per_channel_affine, ASYM, PER_CHANNEL),
           (torch.per_channel_symmetric, SYM, PER_CHANNEL)]


def compare(x, what, src_dtype=MQ_F32, chunks=1):
    for tdt, qtype in CONFIGS:
        for qs, scheme, gran in SCHEMES:
            ts, tz, tq, tdq = torch_quantize(x, tdt, qs)
            ms, mz, mq_, mdq = mq_quantize(x, qtype, scheme, gran, src_dtype, chunks)
            tag = f"{what} {tdt} {qs}"
            assert ms.view(np.uint32).tolist() == ts.view(np.uint32).tolist(), \
                f"{tag}: scales {ms[:4]} vs torch {ts[:4]}"
            if mz is not None:
                assert mz.astype(np.int64).tolist() == tz.astype(np.int64).tolist(), \
                    f"{tag}: zero points {mz[:4]} vs torch {tz[:4]}"
            else:
                assert (tz == 0).all(), f"{tag}: torch zero points nonzero"
            bad = np.flatnonzero(mq_.astype(np.int64).reshape(-1) != tq.astype(np.int64).reshape(-1))
            assert bad.size == 0, f"{tag}: {bad.size} values differ, first at {bad[0]}"
            assert (mdq.view(np.uint32) == tdq.view(np.uint32)).all(), f"{tag}: dequantized differ"


def distributions(rng, shape):
    n = int(np.prod(shape))
    yield "normal", rng.standard_normal(n).reshape(shape) * rng.uniform(0.01, 3)
    yield "positive", rng.uniform(0.1, 2.0, n).reshape(shape)
    yield "negative", -rng.exponential(0.5, n).reshape(shape)
    w = rng.standard_normal(n) * 0.02
    w[rng.integers(0, n, max(1, n // 500))] *= 200  # outliers
    yield "outliers", w.reshape(shape)
    yield "tiny", rng.standard_normal(n).reshape(shape) * 1e-9  # scale clamped to eps
    # values landing exactly on rounding ties: multiples of scale/2
    yield "ties", (rng.integers(-255, 256, n) / 2.0 * (1.0 / 64)).reshape(shape)


@case
def int8_random_tensors_match_torch():
    for seed in range(3):
        rng = np.random.default_rng(seed)
        for shape in [(64, 33), (7, 128), (1, 1000), (300, 17), (5, 3, 3, 3), (9,)]:
            for name, x in distributions(rng, shape):
                compare(x.astype(np.float32), f"seed {seed} {shape} {name}")


@case
def int8_constant_and_zero_tensors_match_torch():
    for x in (np.zeros((4, 8)), np.full((4, 8), 0.75), np.full((3, 5), -2.5)):
        compare(x.astype(np.float32), f"constant {x.flat[0]}")
    rows = np.stack([np.zeros(16), np.full(16, 3.0), np.linspace(-1, 1, 16)])
    compare(rows.astype(np.float32), "mixed rows")


@case
def int8_per_tensor_in_row_chunks_and_f64_source_match_torch():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((50, 70)) * 0.1).astype(np.float32)
    compare(x, "3 chunks", chunks=3)
    compare(x, "f64 source", src_dtype=MQ_F64)  # f64 holding f32 values: identical


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    h = json.loads(raw[8:8 + n])
    h.pop("__metadata__", None)
    out = {}
    for k, i in h.items():
        if i["dtype"] != "F32":
            continue
        b, e = i["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype="<f4").reshape(i["shape"])
    return out


@case
def int8_fixture_lm_tensors_match_torch():
    sd = read_safetensors(os.path.join(FIXTURES, "lm", "lm_fortunes.safetensors"))
    names = [k for k, v in sd.items() if v.ndim >= 1]
    assert len(names) >= 10, names
    for k in names:
        compare(np.ascontiguousarray(sd[k]), k)


def numpy_4bit(x, group, signed, symmetric):
    """The documented formulas in numpy float32 (IEEE, like the C code), group by group."""
    qmin, qmax = (-8, 7) if signed else (0, 15)
    eps = np.finfo(np.float32).eps
    rows, cols = x.shape
    scales, zps, q = [], [], np.zeros(x.shape, np.int64)
    for r in range(rows):
        for c0 in range(0, cols, group):
            g = x[r, c0:c0 + group]
            lo, hi = min(g.min(), np.float32(0)), max(g.max(), np.float32(0))
            if symmetric:
                s = np.float32(max(-lo, hi)) / np.float32(7.5)
                s = max(s, eps)
                zp = 0 if signed else 8
            else:
                s = np.float32(hi - lo) / np.float32(15)
                s = max(s, eps)
                zp = int(np.clip(qmin - np.rint(lo / s), qmin, qmax))
            inv = np.float32(1) / np.float32(s)
            q[r, c0:c0 + group] = np.clip(np.rint(g * inv) + zp, qmin, qmax)
            scales.append(np.float32(s))
            zps.append(zp)
    return np.array(scales, np.float32), np.array(zps), q


@case
def int4_matches_numpy_reference_and_uint4b8_packing():
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((5, 70)) * 0.2).astype(np.float32)
    x[1] = np.abs(x[1])  # one-sided row
    for qtype, scheme, group in ((Q_INT4, SYM, 32), (Q_UINT4, ASYM, 16), (Q_INT4, ASYM, 70),
                                 (Q_UINT4, SYM, 8)):
        signed = qtype == Q_INT4
        ms, mz, words, deq = mq_quantize(x, qtype, scheme, PER_GROUP, group=group)
        ns, nz, nq = numpy_4bit(x, group, signed, scheme == SYM)
        tag = f"type {qtype} scheme {scheme} group {group}"
        assert ms.view(np.uint32).tolist() == ns.view(np.uint32).tolist(), f"{tag}: scales"
        if mz is not None:
            assert mz.astype(np.int64).tolist() == nz.tolist(), f"{tag}: zero points"
        # unpack the I32 words: eight codes per word, lowest bits first; INT4 stored + 8
        codes = np.stack([(words >> np.uint32(4 * k)) & np.uint32(15) for k in range(8)], axis=2)
        codes = codes.reshape(x.shape[0], -1)[:, :x.shape[1]].astype(np.int64)
        values = codes - 8 if signed else codes
        assert (values == nq).all(), f"{tag}: values differ"
        full = np.stack([(words >> np.uint32(4 * k)) & np.uint32(15) for k in range(8)], axis=2)
        assert (full.reshape(x.shape[0], -1)[:, x.shape[1]:] == 0).all(), f"{tag}: padding"
        # dequantization: (q - zp) * scale with the group's parameters
        gi = np.arange(x.shape[1]) // group
        gpr = -(-x.shape[1] // group)
        sc = ns.reshape(x.shape[0], gpr)[:, gi]
        zp = nz.reshape(x.shape[0], gpr)[:, gi]
        want = ((nq - zp).astype(np.float32) * sc).astype(np.float32)
        assert (deq.view(np.uint32) == want.view(np.uint32)).all(), f"{tag}: dequantized"


finish()
