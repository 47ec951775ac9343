"""Observers against PyTorch 1.13's (torch.ao.quantization.observer), through ctypes on
build/libmonoquant.so: MinMax, MovingAverageMinMax and the per-channel ones bit for bit,
HistogramObserver within 0.1 % of scale and 1 of zero point (docs/CALIBRATION.md), and merge
against observing the concatenated stream."""
import os
import sys

import numpy as np
import torch
from torch.ao.quantization import observer as O

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import case, check, finish  # noqa: E402
from mqlib import ASYM, SYM, Observer  # noqa: E402

torch.set_num_threads(1)
rng = np.random.default_rng(1234)

TYPES = [("uint8", torch.quint8), ("int8", torch.qint8)]
SCHEMES = [(ASYM, torch.per_tensor_affine, torch.per_channel_affine),
           (SYM, torch.per_tensor_symmetric, torch.per_channel_symmetric)]


def sequences():
    """Batch sequences [(array, ...)]: signed, one-sided, shifted, growing and shrinking."""
    g = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        "normal": [(g(64, 48) * s + m).astype(np.float32) for s, m in [(1, 0), (2, .5), (.5, -1), (3, 2), (1, 0)]],
        "relu": [np.maximum(g(32, 16) * s, 0).astype(np.float32) for s in (1, 4, 2, 0.5)],
        "negative": [(-np.abs(g(16, 8)) * s - 1).astype(np.float32) for s in (1, 3, 2)],
        "tiny": [(g(8, 4) * 1e-3).astype(np.float32), (g(8, 4) * 1e-4).astype(np.float32)],
        "outliers": [np.concatenate([g(200, 4), [[50, -30, 0, 1]]]).astype(np.float32)
                     for _ in range(3)],
    }


def same_bits(a, b):
    return np.array_equal(np.asarray(a, np.float32).view(np.int32),
                          np.asarray(b, np.float32).view(np.int32))


def per_tensor(kind, cls, **kw):
    bad = []
    for name, seq in sequences().items():
        for tname, tdt in TYPES:
            for scheme, tq, _ in SCHEMES:
                t = cls(dtype=tdt, qscheme=tq, **kw)
                c = Observer(kind, tname, scheme)
                for b in seq:
                    t(torch.from_numpy(b))
                    c.update(b)
                ts, tz = t.calculate_qparams()
                cs, cz, _, _ = c.qparams()
                if not same_bits(ts.numpy(), cs) or int(tz[0]) != int(cz[0]):
                    bad.append(f"{name}/{tname}/{scheme}: torch {ts.item()!r},{int(tz[0])} "
                               f"ours {cs[0]!r},{int(cz[0])}")
    check(f"{kind}_bit_exact", not bad, "; ".join(bad[:3]))


per_tensor("minmax", O.MinMaxObserver)
per_tensor("moving_average", O.MovingAverageMinMaxObserver)


@case
def moving_average_constant():
    t = O.MovingAverageMinMaxObserver(averaging_constant=0.25)
    c = Observer("moving_average", averaging_constant=0.25)
    for b in sequences()["normal"]:
        t(torch.from_numpy(b))
        c.update(b)
    return same_bits(t.calculate_qparams()[0].numpy(), c.qparams()[0])


@case
def uint4_minmax():
    t = O.MinMaxObserver(dtype=torch.quint4x2)
    c = Observer("minmax", "uint4", ASYM)
    for b in sequences()["normal"]:
        t(torch.from_numpy(b))
        c.update(b)
    ts, tz = t.calculate_qparams()
    cs, cz, _, _ = c.qparams()
    return same_bits(ts.numpy(), cs) and int(tz[0]) == int(cz[0])


def per_channel(kind, cls):
    bad = []
    seqs = [[(rng.standard_normal((40, 6)) * (1 + np.arange(6)) + s).astype(np.float32)
             for s in (0, 1, -2)],
            [(np.maximum(rng.standard_normal((3, 5, 4, 4)), 0) * s).astype(np.float32)
             for s in (1, 2)]]
    for si, seq in enumerate(seqs):
        axes = [0, 1] if seq[0].ndim == 2 else [1]
        for axis in axes:
            for tname, tdt in TYPES:
                for scheme, _, tq in SCHEMES:
                    nch = seq[0].shape[axis]
                    t = cls(ch_axis=axis, dtype=tdt, qscheme=tq)
                    c = Observer(kind, tname, scheme, channels=nch)
                    for b in seq:
                        t(torch.from_numpy(b))
                        c.update(b, axis=axis)
                    ts, tz = t.calculate_qparams()
                    cs, cz, _, _ = c.qparams()
                    if not same_bits(ts.numpy(), cs) or not np.array_equal(tz.numpy(), cz):
                        bad.append(f"seq {si} axis {axis} {tname} {scheme}")
    check(f"{kind}_per_channel_bit_exact", not bad, "; ".join(bad[:3]))


per_channel("minmax", O.PerChannelMinMaxObserver)
per_channel("moving_average", O.MovingAveragePerChannelMinMaxObserver)


@case
def strided_transposed_input():
    """A transposed (non-contiguous) view gives the same as its contiguous copy."""
    x = rng.standard_normal((30, 7)).astype(np.float32)
    a = Observer("minmax", "int8", SYM, channels=7)
    b = Observer("minmax", "int8", SYM, channels=7)
    a.update(np.ascontiguousarray(x))
    b.update(np.ascontiguousarray(x.T).T)  # strides (4, 120)
    return same_bits(a.qparams()[0], b.qparams()[0])


def histogram_batch(lo, hi, shape, scale, shift):
    """Values in [lo, hi] with both ends present. PyTorch 1.13 builds its histograms with
    torch.histc(min=int(min), max=int(max)), so integer end points (and ranges that grow to
    integer end points) keep its histogram the same as ours."""
    b = np.clip(rng.standard_normal(shape) * scale + shift, lo, hi).astype(np.float32)
    b.flat[0], b.flat[1] = lo, hi
    return b


def histogram_sequences():
    return {
        "fixed": [histogram_batch(-4, 4, (64, 32), 1, 0) for _ in range(3)],
        "growing": [histogram_batch(-4, 4, (64, 32), 1, 0), histogram_batch(-3, 3, (64, 32), 2, .5),
                    histogram_batch(-4, 12, (64, 32), 3, 2), histogram_batch(-20, 12, (64, 32), 4, -1),
                    histogram_batch(-5, 5, (64, 32), 1, 0), histogram_batch(-20, 44, (64, 32), 5, 3)],
        "relu": [np.maximum(histogram_batch(-8, 8, (128, 16), 2, 0), 0).astype(np.float32),
                 np.maximum(histogram_batch(-16, 16, (128, 16), 3, 0), 0).astype(np.float32)],
        "heavy": [histogram_batch(-64, 64, (400, 50), 1, 0) for _ in range(2)],
    }


@case
def histogram_within_tolerance():
    worst, bad = 0.0, []
    for name, seq in histogram_sequences().items():
        for tname, tdt in TYPES:
            for scheme, tq, _ in SCHEMES:
                t = O.HistogramObserver(dtype=tdt, qscheme=tq)
                c = Observer("histogram", tname, scheme)
                for b in seq:
                    t(torch.from_numpy(b))
                    c.update(b)
                ts, tz = t.calculate_qparams()
                cs, cz, _, _ = c.qparams()
                rel = abs(float(cs[0]) / ts.item() - 1)
                worst = max(worst, rel)
                if rel > 1e-3 or abs(int(cz[0]) - int(tz[0])) > 1:
                    bad.append(f"{name}/{tname}/{scheme}: torch {ts.item():.6g},{int(tz[0])} "
                               f"ours {cs[0]:.6g},{int(cz[0])}")
    print(f"# histogram: worst relative scale difference {worst:.2e}")
    if bad:
        raise AssertionError("; ".join(bad[:3]))


@case
def minmax_merge_equals_concatenation():
    seq = sequences()["normal"]
    t = O.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    t(torch.from_numpy(np.concatenate(seq)))
    shards = [Observer("minmax", "int8", ASYM) for _ in range(3)]
    for i, b in enumerate(seq):
        shards[i % 3].update(b)
    shards[0].merge(shards[1])
    shards[0].merge(shards[2])
    return same_bits(t.calculate_qparams()[0].numpy(), shards[0].qparams()[0])


@case
def histogram_merge_equals_concatenation():
    """Shards that share the range (here fixed end points) merge exactly."""
    seq = histogram_sequences()["fixed"]
    whole = Observer("histogram", "uint8", ASYM)
    for b in seq:
        whole.update(b)
    a, b2 = Observer("histogram", "uint8", ASYM), Observer("histogram", "uint8", ASYM)
    a.update(seq[0])
    b2.update(seq[1])
    b2.update(seq[2])
    a.merge(b2)
    t = O.HistogramObserver()
    t(torch.from_numpy(np.concatenate(seq)))
    ok_whole = same_bits(whole.qparams()[0], a.qparams()[0])
    close_torch = abs(float(a.qparams()[0][0]) / t.calculate_qparams()[0].item() - 1) < 1e-3
    return ok_whole and close_torch


finish()
