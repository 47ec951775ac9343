"""The shared fixtures' .pt files quantize to the same tensors as their .safetensors twins,
byte for byte (INT8 and INT4, LM and CNN), and a .pt input written as .pt and as
.safetensors output holds identical tensors."""
import json
import os
import struct

import torch

from harness import FIXTURES, TMP, case, finish, mq

TWINS = {
    "lm": os.path.join(FIXTURES, "lm", "lm_fortunes"),
    "cnn": os.path.join(FIXTURES, "cnn", "cnn_digits"),
}
SCHEMES = {"int8": ["--bits", "8"], "int4": ["--bits", "4"]}
# safetensors dtype name -> (element size, torch dtype)
DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
      "I8": torch.int8, "U8": torch.uint8, "I32": torch.int32, "I64": torch.int64}


def read_safetensors(path):
    """name -> (dtype name, shape, raw bytes), in file order."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return {k: (v["dtype"], list(v["shape"]), data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in items}


def read_pt(path):
    """name -> (dtype name, shape, raw bytes), in file order, through torch.load."""
    sd = torch.load(path, weights_only=True)
    names = {v: k for k, v in DT.items()}
    out = {}
    for k, t in sd.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        out[k] = (names[t.dtype], list(t.shape), raw)
    return out


def quantize(src, tag, fmt, *opts):
    out = os.path.join(TMP, f"{tag}.{fmt}")
    mq("quantize", src, "-o", out, "-q", "-f", *opts)
    return out


def same_tensors(a, b, what):
    assert list(a) == list(b), f"{what}: tensor names or order differ: {list(a)[:5]} vs {list(b)[:5]}"
    for k in a:
        assert a[k][0] == b[k][0], f"{what}: {k}: dtype {a[k][0]} vs {b[k][0]}"
        assert a[k][1] == b[k][1], f"{what}: {k}: shape {a[k][1]} vs {b[k][1]}"
        assert a[k][2] == b[k][2], f"{what}: {k}: bytes differ"
    return len(a)


def twins(model, scheme):
    base = TWINS[model]
    a = read_safetensors(quantize(base + ".safetensors", f"{model}_{scheme}_st", "safetensors",
                                  *SCHEMES[scheme]))
    b = read_safetensors(quantize(base + ".pt", f"{model}_{scheme}_pt", "safetensors",
                                  *SCHEMES[scheme]))
    n = same_tensors(a, b, f"{model} {scheme}")
    assert any(k.endswith("_scale") for k in a), "nothing was quantized"
    return n


@case
def lm_int8_twins():
    twins("lm", "int8")


@case
def lm_int4_twins():
    twins("lm", "int4")


@case
def cnn_int8_twins():
    twins("cnn", "int8")


@case
def cnn_int4_twins():
    twins("cnn", "int4")


@case
def inputs_are_twins():
    # the premise: the fixtures' tensors themselves agree
    for model, base in TWINS.items():
        same_tensors(read_safetensors(base + ".safetensors"), read_pt(base + ".pt"), model)


def pt_to_both(model, scheme):
    base = TWINS[model] + ".pt"
    st = read_safetensors(quantize(base, f"{model}_{scheme}_pt", "safetensors", *SCHEMES[scheme]))
    pt = read_pt(quantize(base, f"{model}_{scheme}_ptpt", "pt", *SCHEMES[scheme]))
    same_tensors(st, pt, f"{model} {scheme} .pt vs .safetensors output")


@case
def lm_pt_input_to_pt_and_safetensors():
    for scheme in SCHEMES:
        pt_to_both("lm", scheme)


@case
def cnn_pt_input_to_pt_and_safetensors():
    for scheme in SCHEMES:
        pt_to_both("cnn", scheme)


finish()
