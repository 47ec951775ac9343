"""An independent decoder of the compressed-tensors layout, written from its specification
(docs/FORMAT.md, "compressed-tensors layout"), with nothing but torch:

- a model is a safetensors file or a folder (model.safetensors, or shards listed by
  model.safetensors.index.json) plus the quantization_config (config.json, or the
  file's __metadata__);
- each Linear layer is matched to a config group: a group whose targets name the layer, else
  the group targeting "Linear"; a layer listed in `ignore` must hold a plain weight;
- pack-quantized: weight_packed I32 [out, ceil(in*bits/32)], bits-wide fields from the lowest
  bits up, value = field - 2^(bits-1); weight_zero_point (asymmetric) packed the same way along
  the output dimension; group size = in / scale columns;
- int-quantized: weight I8 as it is;
- activation order (weights' "actorder", group strategy only): null or "weight" (static
  groups: only the quantization order changed) keep column c in group c // group_size, and
  no weight_g_idx is stored; "group" stores weight_g_idx I32 [in], column c in group
  g_idx[c];
- value = (q - zero_point) * scale, exact, rounded once to the model's dtype.
"""
import json
import math
import os
import struct

import torch

DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
      "I8": torch.int8, "U8": torch.uint8, "I32": torch.int32, "I64": torch.int64}


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        buf = bytearray(raw[8 + n + b:8 + n + e]) or bytearray(1)
        t = torch.frombuffer(buf, dtype=DT[v["dtype"]])[:math.prod(v["shape"])]
        out[k] = t.reshape(v["shape"])
    return out, hdr.get("__metadata__", {})


def read_model(path):
    """(tensors, metadata, quantization_config or None) of a file or a model folder."""
    if os.path.isdir(path):
        index = os.path.join(path, "model.safetensors.index.json")
        files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) \
            else ["model.safetensors"]
        tensors, meta = {}, {}
        for f in files:
            t, m = read_safetensors(os.path.join(path, f))
            assert not set(t) & set(tensors), f"{f}: a tensor is in two shards"
            tensors.update(t)
            meta.update(m)
        cfg_path = os.path.join(path, "config.json")
        qcfg = json.load(open(cfg_path)).get("quantization_config") if os.path.exists(cfg_path) else None
        return tensors, meta, qcfg
    tensors, meta = read_safetensors(path)
    qcfg = json.loads(meta["quantization_config"]) if "quantization_config" in meta else None
    return tensors, meta, qcfg


def unpack(words, bits, n):
    """int32 [R, W] -> signed values [R, n]: bits-wide fields from the lowest bits up."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    per = 32 // bits
    fields = torch.stack([(w >> (bits * k)) & ((1 << bits) - 1) for k in range(per)], -1)
    return fields.reshape(w.shape[0], -1)[:, :n] - (1 << (bits - 1))


def scheme_of(layer, qcfg):
    named = [g for g in qcfg["config_groups"].values() if layer in g["targets"]]
    if named:
        assert len(named) == 1, f"{layer}: in {len(named)} groups"
        return named[0]
    generic = [g for g in qcfg["config_groups"].values() if "Linear" in g["targets"]]
    assert len(generic) == 1, f"{layer}: no group targets it"
    return generic[0]


def decode(tensors, qcfg, dtype):
    """The plain state dict: quantized layers dequantized to `dtype`; returns
    (state dict, {layer: (group scheme, format)})."""
    t = dict(tensors)
    layers = {}
    ignore = set(qcfg["ignore"])
    for name in [k for k in tensors if k.endswith(".weight_scale")]:
        layer = name[:-len(".weight_scale")]
        assert layer not in ignore, f"{layer}: quantized but listed in ignore"
        g = scheme_of(layer, qcfg)
        w = g["weights"]
        fmt = g.get("format") or qcfg["format"]
        s = t.pop(layer + ".weight_scale").to(torch.float64)
        if fmt == "pack-quantized":
            shape = t.pop(layer + ".weight_shape").tolist()
            rows, cols = shape
            q = unpack(t.pop(layer + ".weight_packed"), w["num_bits"], cols)
            z = t.pop(layer + ".weight_zero_point", None)
            assert (z is None) == w["symmetric"], f"{layer}: zero point vs symmetric"
            if z is not None:
                z = unpack(z.t().contiguous(), w["num_bits"], rows).t()
        else:
            assert fmt == "int-quantized", fmt
            q = t.pop(layer + ".weight").to(torch.int64)
            rows, cols = q.shape
            z = t.pop(layer + ".weight_zero_point", None)
            assert (z is None) == w["symmetric"]
        if z is None:
            z = torch.zeros_like(s, dtype=torch.int64)
        if s.dim() == 1:  # per tensor
            s, z = s.reshape(1, 1), z.reshape(1, 1)
        s = s.expand(rows, -1)
        z = z.to(torch.int64).expand(rows, -1)
        assert cols % s.shape[1] == 0, f"{layer}: {s.shape[1]} groups do not divide {cols}"
        gs = cols // s.shape[1]
        if w["strategy"] == "group":
            assert gs == w["group_size"], f"{layer}: group size {gs} vs {w['group_size']}"
        order = w.get("actorder")
        assert order in (None, "weight", "group"), f"{layer}: actorder {order!r}"
        assert order is None or w["strategy"] == "group", f"{layer}: actorder without groups"
        g_idx = t.pop(layer + ".weight_g_idx", None)
        assert (g_idx is not None) == (order == "group"), f"{layer}: g_idx vs actorder {order}"
        if g_idx is None:
            g_idx = torch.arange(cols) // gs
        g_idx = g_idx.to(torch.int64)
        assert g_idx.shape == (cols,) and 0 <= g_idx.min() and g_idx.max() < s.shape[1]
        v = (q - z[:, g_idx]).to(torch.float64) * s[:, g_idx]
        t[layer + ".weight"] = v.to(dtype)
        layers[layer] = (g, fmt)
    for name in [k for k in tensors if k.endswith(".weight") and k not in t]:
        raise AssertionError(f"{name}: left undecoded")
    return t, layers


NAME = {v: k for k, v in DT.items()}


def write_safetensors(path, tensors, meta=None):
    """A plain safetensors file (as Hugging Face writes one), independent of monoquant."""
    hdr, blobs, off = {}, [], 0
    if meta:
        hdr["__metadata__"] = meta
    for k, t in tensors.items():
        b = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        hdr[k] = {"dtype": NAME[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
