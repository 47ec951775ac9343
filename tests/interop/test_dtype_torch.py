"""Our f32 -> bf16 / f16 rounding equals PyTorch's .to(torch.bfloat16 / torch.float16), on
every instruction-set path, calling libmonoquant through ctypes."""
import ctypes

import numpy as np
import torch

import mqlib
from harness import case, finish

LIB = mqlib.LIB
LIB.mq_convert.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                           ctypes.c_void_p, ctypes.c_size_t]
F16, BF16, F32 = mqlib.F16, mqlib.BF16, mqlib.F32


def values():
    rng = np.random.default_rng(7)
    parts = [rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32)]
    # f16 ties and neighbours: midpoints between consecutive finite halves
    h = np.arange(0, 0x7bff, dtype=np.uint16)
    a = h.view(np.float16).astype(np.float32)
    b = (h + 1).view(np.float16).astype(np.float32)
    mid = ((a + b) / 2).view(np.uint32)
    parts += [mid, mid + 1, mid - 1, mid | 0x80000000]
    # bf16 ties of both parities, and their neighbours
    hi = np.arange(0, 65536, dtype=np.uint32) << 16
    parts += [hi | 0x8000, hi | 0x7FFF, hi | 0x8001]
    # f32 subnormals, f16 subnormal range, near the overflow thresholds
    parts.append(rng.integers(0, 0x800000, 20000, dtype=np.uint32) | 0x80000000 * (rng.integers(0, 2, 20000, dtype=np.uint32)))
    parts.append(rng.integers(0x30000000, 0x38800000, 50000, dtype=np.uint32))
    parts.append(np.array([0x477FEFFF, 0x477FF000, 0x477FFFFF, 0x47800000, 0x7F7F7FFF, 0x7F7F8000,
                           0x7F7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF,
                           0, 0x80000000, 1, 0x33000000, 0x33000001], dtype=np.uint32))
    return np.ascontiguousarray(np.concatenate(parts).view(np.float32))


def convert(isa, dst_dtype, x):
    ctx = LIB.mq_ctx_create()
    try:
        assert LIB.mq_ctx_set_isa(ctx, isa) == 0
        out = np.empty(x.size, dtype=np.uint16)
        st = LIB.mq_convert(ctx, dst_dtype, out.ctypes.data, F32, x.ctypes.data, x.size)
        assert st == 0, f"mq_convert failed: {st}"
        return out
    finally:
        LIB.mq_ctx_free(ctx)


def compare(dst_dtype, torch_dtype):
    x = values()
    want = torch.from_numpy(x).to(torch_dtype).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x)
    for isa in mqlib.isa_levels():
        got = convert(isa, dst_dtype, x)
        gf = torch.from_numpy(got.view(np.int16)).view(torch_dtype).float().numpy()
        assert np.all(np.isnan(gf[nan])), f"isa {isa}: NaN not kept"
        bad = np.nonzero((got != want) & ~nan)[0]
        assert bad.size == 0, (f"isa {isa}: {bad.size} differ, first f32 {x.view(np.uint32)[bad[0]]:08x}"
                               f" -> {got[bad[0]]:04x}, torch {want[bad[0]]:04x}")


@case
def f32_to_bf16_matches_torch():
    compare(BF16, torch.bfloat16)


@case
def f32_to_f16_matches_torch():
    compare(F16, torch.float16)


finish()
