"""Measurement (not a test): per-observer activation qparams on the shared fixtures, and the
effect of static activation quantization (every Linear/Conv input fake-quantized with the
calibrated scale and zero point, weights left in float) on the fixture metrics.

    /usr/bin/python3 tests/interop/measure_calib.py --lm-acts DIR --cnn-acts DIR [--schemes ...]

Record the activations first with tests/interop/record_lm.py and record_cnn.py."""
import argparse
import importlib.util
import json
import os
import struct
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

OBSERVERS = ["minmax", "moving_average", "histogram", "entropy", "percentile", "mse"]
_NP = {"F32": "<f4", "I32": "<i4", "I64": "<i8", "F64": "<f8"}


def read_st(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8:8 + n])
    head.pop("__metadata__", None)
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             _NP[v["dtype"]]) for k, v in head.items()}


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_quant_hooks(model, stats, qmin, qmax):
    handles = []
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Linear, nn.Conv2d)) or f"{name}.input_scale" not in stats:
            continue
        s = float(stats[f"{name}.input_scale"][0])
        z = int(stats[f"{name}.input_zero_point"][0])

        def hook(mod, inputs, s=s, z=z):
            x = inputs[0]
            q = torch.clamp(torch.round(x / s) + z, qmin, qmax)
            return ((q - z) * s,)
        handles.append(m.register_forward_pre_hook(hook))
    return handles


def calibrate(mq, model, acts, observer, scheme, dtype, out):
    subprocess.run([mq, "-q", "-f", "calibrate", "--model", model, "--activations", acts, "-o", out,
                    "--observer", observer, "--scheme", scheme, "--dtype", dtype], check=True)
    return read_st(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--fixtures", default=os.environ.get("FIXTURES", "../shared/fixtures"))
    p.add_argument("--mq", default="build/monoquant")
    p.add_argument("--lm-acts")
    p.add_argument("--cnn-acts")
    p.add_argument("--schemes", default="asym:uint8,sym:int8")
    p.add_argument("--tmp", default="/tmp")
    p.add_argument("--lm-eval-bytes", type=int, default=100_000)
    a = p.parse_args()
    torch.set_num_threads(2)
    fx = a.fixtures
    rows = []
    for spec in a.schemes.split(","):
        scheme, dtype = spec.split(":")
        qmin, qmax = (0, 255) if dtype == "uint8" else (-128, 127)
        for kind in OBSERVERS:
            res = {"observer": kind, "scheme": scheme, "dtype": dtype}
            if a.lm_acts:
                ev = load_module(os.path.join(fx, "lm", "eval_lm.py"), "eval_lm")
                path = os.path.join(fx, "lm", "lm_fortunes.safetensors")
                st = calibrate(a.mq, path, a.lm_acts, kind, scheme, dtype,
                               os.path.join(a.tmp, f"lm_{kind}_{scheme}.safetensors"))
                model = ev.GPT()
                ev.load_into(model, ev.load_weights(path), path)
                fake_quant_hooks(model, st, qmin, qmax)
                val = open(os.path.join(fx, "lm", "val.txt"), "rb").read()
                res["lm_val_ppl"] = round(ev.eval_ppl(model, val, n=a.lm_eval_bytes)[0], 4)
                res["lm"] = {k[:-12]: (float(v[0]), int(st[k[:-12] + ".input_zero_point"][0]))
                             for k, v in st.items() if k.endswith(".input_scale")}
            if a.cnn_acts:
                ev = load_module(os.path.join(fx, "cnn", "eval_cnn.py"), "eval_cnn")
                path = os.path.join(fx, "cnn", "cnn_digits.safetensors")
                st = calibrate(a.mq, path, a.cnn_acts, kind, scheme, dtype,
                               os.path.join(a.tmp, f"cnn_{kind}_{scheme}.safetensors"))
                model = ev.Net()
                model.load_state_dict(ev.load_weights(path))
                model.eval()
                fake_quant_hooks(model, st, qmin, qmax)
                d = np.load(os.path.join(fx, "cnn", "digits_test.npz"))
                with torch.no_grad():
                    pred = model(ev.preprocess(d["images"])).argmax(1).numpy()
                res["cnn_test_acc"] = round(float((pred == d["labels"]).mean()), 6)
                res["cnn"] = {k[:-12]: (float(v[0]), int(st[k[:-12] + ".input_zero_point"][0]))
                              for k, v in st.items() if k.endswith(".input_scale")}
            rows.append(res)
            print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
