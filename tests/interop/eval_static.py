"""Evaluates a monoquant W8A8 checkpoint of a shared fixture model with static quantization
semantics: the weights are the dequantized integer weights (`monoquant dequantize`), and the
input of every quantized Linear/Conv layer is fake-quantized with the checkpoint's own
`<layer>.input_scale` / `<layer>.input_zero_point` (uint8 or int8 range from the stored dtype).

    /usr/bin/python3 tests/interop/eval_static.py --model cnn|lm --weights Q.safetensors
                     [--fixtures DIR] [--mq build/monoquant] [--lm-bytes N] [--threads N]

The model definitions and metrics are the fixtures' own eval scripts (eval_cnn.py, eval_lm.py),
imported as modules. Prints one JSON line: model, metric, value, n_eval, and the number of
layers with INT8 weights and with fake-quantized inputs."""
import argparse
import importlib.util
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

_NP = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "i1", "U8": "u1", "I32": "<i4",
       "I64": "<i8"}
_QRANGE = {"U8": (0, 255), "I8": (-128, 127)}
SCRIPTS = {"cnn": ("cnn", "eval_cnn.py"), "lm": ("lm", "eval_lm.py")}


def read_safetensors(path):
    """{name: (dtype, numpy array)} of a safetensors file, and its metadata."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8:8 + n])
    meta = head.pop("__metadata__", {}) or {}
    out = {}
    for name, v in head.items():
        b, e = v["data_offsets"]
        if v["dtype"] == "BF16":
            arr = (np.frombuffer(raw[8 + n + b:8 + n + e], "<u2").astype(np.uint32) << 16).view("<f4")
        else:
            arr = np.frombuffer(raw[8 + n + b:8 + n + e], _NP[v["dtype"]])
        out[name] = (v["dtype"], arr.reshape(v["shape"]))
    return out, meta


def load_eval_module(fixtures, kind):
    folder, script = SCRIPTS[kind]
    spec = importlib.util.spec_from_file_location(f"fixture_{kind}", os.path.join(fixtures, folder, script))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def input_qparams(qtensors):
    """{layer: (scale, zero_point, qmin, qmax)} from the checkpoint's input parameters."""
    out = {}
    for name, (dtype, arr) in qtensors.items():
        if not name.endswith(".input_scale"):
            continue
        layer = name[:-len(".input_scale")]
        zdtype, z = qtensors[layer + ".input_zero_point"]
        if dtype != "F32" or arr.size != 1 or z.size != 1 or zdtype not in _QRANGE:
            raise ValueError(f"{layer}: input parameters {dtype}{list(arr.shape)} / "
                             f"{zdtype}{list(z.shape)} are not per-tensor F32 with an I8/U8 zero point")
        out[layer] = (float(arr.reshape(-1)[0]), int(z.reshape(-1)[0]), *_QRANGE[zdtype])
    return out


def fake_quantize(x, scale, zero_point, qmin, qmax):
    """Quantize-dequantize as the INT8 kernel sees it: round half to even, clamp."""
    q = torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def build_model(ev, kind, qpath, mq):
    """The fixture model with dequantized weights and fake-quant pre-hooks on every layer
    that has INT8 weights; returns (model, int8 weight count, hooked layer count)."""
    qtensors, _ = read_safetensors(qpath)
    qparams = input_qparams(qtensors)
    int8 = {k[:-len(".weight")] for k, (dt, _) in qtensors.items()
            if k.endswith(".weight") and dt in ("I8", "U8")}
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "dequantized.safetensors")
        subprocess.run([mq, "-q", "-f", "dequantize", qpath, "-o", plain, "--dtype", "f32"], check=True)
        tensors, _ = read_safetensors(plain)
    sd = {k: torch.from_numpy(a.astype(np.float32)) for k, (dt, a) in tensors.items()
          if not k.endswith((".input_scale", ".input_zero_point"))}
    model = ev.Net() if kind == "cnn" else ev.GPT()
    ev.load_into(model, sd, qpath)  # strict: every name and shape, finite values
    model.eval()
    layers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    unknown = sorted(set(qparams) - set(layers))
    without = sorted(int8 - set(qparams))
    if unknown or without:
        raise ValueError(f"input parameters for unknown layers {unknown}; INT8 layers without them {without}")
    for name, (s, z, qmin, qmax) in qparams.items():
        layers[name].register_forward_pre_hook(
            lambda mod, inputs, s=s, z=z, lo=qmin, hi=qmax: (fake_quantize(inputs[0], s, z, lo, hi),))
    return model, len(int8), len(qparams)


def evaluate(kind, qpath, fixtures, mq, lm_bytes=100_000):
    ev = load_eval_module(fixtures, kind)
    model, n_int8, n_hooked = build_model(ev, kind, qpath, mq)
    with torch.no_grad():
        if kind == "cnn":
            z = np.load(os.path.join(fixtures, "cnn", "digits_test.npz"))
            y = z["labels"].astype(np.int64)
            pred = model(ev.preprocess(z["images"])).argmax(1).numpy()
            res = {"model": ev.NAME, "metric": "test_acc", "value": round(float((pred == y).mean()), 6),
                   "n_eval": int(len(y)), "errors": int((pred != y).sum())}
        else:
            val = open(os.path.join(fixtures, "lm", "val.txt"), "rb").read()
            ppl, n = ev.eval_ppl(model, val, n=lm_bytes)
            res = {"model": ev.CONFIG["name"], "metric": "val_ppl", "value": round(ppl, 6), "n_eval": n}
    if not math.isfinite(res["value"]):
        raise ValueError(f"non-finite metric {res['value']}")
    res.update(int8_weights=n_int8, fake_quant_inputs=n_hooked)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SCRIPTS), required=True)
    p.add_argument("--weights", required=True, help="a monoquant checkpoint quantized with --calibration")
    p.add_argument("--fixtures", default=os.environ.get("FIXTURES", "../shared/fixtures"))
    p.add_argument("--mq", default=os.environ.get("MQ", "build/monoquant"))
    p.add_argument("--lm-bytes", type=int, default=100_000, help="predicted bytes of val.txt (LM)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(json.dumps(evaluate(a.model, a.weights, a.fixtures, a.mq, a.lm_bytes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
