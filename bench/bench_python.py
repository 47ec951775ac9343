"""Python layer benchmark, one thread: a 4096x4096 Linear as monoquant's QuantizedLinear
(INT8 dynamic, INT8 weight-only, INT4 g128 dynamic and weight-only) against torch's
nn.Linear f32 and torch.ao.quantization.quantize_dynamic (qint8), at batch 1 and 32, and the
Python call overhead of one forward (a 1x8 layer, where the kernel itself costs little).
Times are the calling thread's CPU time (time.thread_time: with one thread every kernel runs
on the calling thread, and time the shared machine spends on other processes is not
counted), best of several repeats of a timed loop, all measured in the same run; ratios are
against nn.Linear f32 and torch's dynamic int8 of that run. The call overhead is
QuantizedLinear.forward minus the bare ctypes call of mq_linear_forward on the same 1x8
layer.

    OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/bench_python.py [--reps 7] [--n 4096]"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import torch  # noqa: E402
from torch import nn  # noqa: E402

import monoquant  # noqa: E402


clock = time.thread_time


def best(fn, x, reps, min_time=0.2):
    with torch.no_grad():
        fn(x)
        n, t0 = 0, clock()
        while clock() - t0 < min_time / 4:
            fn(x)
            n += 1
        n = max(n * 4, 3)
        out = float("inf")
        for _ in range(reps):
            t = clock()
            for _ in range(n):
                fn(x)
            out = min(out, (clock() - t) / n)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--n", type=int, default=4096)
    a = p.parse_args()
    torch.set_num_threads(1)
    monoquant.set_num_threads(1)
    torch.manual_seed(0)
    n = a.n
    lin = nn.Linear(n, n).eval()
    model = nn.Sequential(lin)
    tq = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    ours = {
        "int8 dynamic": monoquant.quantize(model, bits=8, activations="dynamic")[0],
        "int8 weight-only": monoquant.quantize(model, bits=8, activations="none")[0],
        "int4 g128 dynamic": monoquant.quantize(model, bits=4, activations="dynamic",
                                                default_skip=False)[0],
        "int4 g128 weight-only": monoquant.quantize(model, bits=4, default_skip=False)[0],
    }
    print(f"# {n}x{n} Linear, 1 thread, best of {a.reps}; library {monoquant.library_path}")
    print(f"{'batch':>5} {'layer':34s} {'us/forward':>11} {'x f32':>7} {'x torch int8':>12}")
    for batch in (1, 32):
        x = torch.randn(batch, n)
        base = best(model, x, a.reps)
        tdyn = best(tq, x, a.reps)
        rows = [("torch nn.Linear f32", base), ("torch quantize_dynamic", tdyn)]
        rows += [(f"monoquant {k}", best(m, x, a.reps)) for k, m in ours.items()]
        for name, t in rows:
            print(f"{batch:5d} {name:34s} {t * 1e6:11.1f} {base / t:7.2f} {tdyn / t:12.2f}")
    small = monoquant.quantize(nn.Sequential(nn.Linear(8, 8)), bits=8, default_skip=False,
                               min_params=0)[0][0]
    x = torch.randn(1, 8)
    t_small = best(small, x, a.reps)
    y = torch.empty(1, 8)
    lib, ctx, k = monoquant._lib.LIB, monoquant._lib.thread_context(), small._k.ptr
    xp, yp = x.data_ptr(), y.data_ptr()
    t_bare = best(lambda _: lib.mq_linear_forward(ctx.ptr, k, xp, 1, yp), x, a.reps)
    t_torch = best(nn.Linear(8, 8), x, a.reps)
    print(f"# call overhead: QuantizedLinear 1x8 forward {t_small * 1e6:.2f} us, bare "
          f"mq_linear_forward through ctypes {t_bare * 1e6:.2f} us: Python overhead "
          f"{(t_small - t_bare) * 1e6:.2f} us (torch nn.Linear 1x8 forward: "
          f"{t_torch * 1e6:.2f} us)")


if __name__ == "__main__":
    main()
