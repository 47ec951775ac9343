"""An encoder and a reference decoder of the compressed-tensors and GPTQ checkpoint layouts,
written from their specifications (docs/FORMAT.md, "Reading other tools' checkpoints"), for the
interop tests: folders built here the way llm-compressor / AutoGPTQ write them, and decoded
here independently of monoquant.

Conventions: a Linear weight W is [N, K] (out, in); groups run along K. Packing puts 32/b
fields of b bits in a little-endian int32, the first value in the lowest bits."""
import json
import math
import os
import struct

import torch

from harness import TMP, mq

ST_DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.int8: "I8", torch.uint8: "U8", torch.int32: "I32", torch.int64: "I64"}
DT_ST = {v: k for k, v in ST_DT.items()}


# ---- safetensors -----------------------------------------------------------------------

def _raw(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: go through its bits
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def save_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = _raw(t)
        header[name] = {"dtype": ST_DT[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dt = DT_ST[v["dtype"]]
        buf = bytearray(raw[8 + n + a:8 + n + b]) or bytearray(1)
        if dt == torch.bfloat16:
            t = torch.frombuffer(buf, dtype=torch.int16)[:math.prod(v["shape"])].view(torch.bfloat16)
        else:
            t = torch.frombuffer(buf, dtype=dt)[:math.prod(v["shape"])]
        out[k] = t.reshape(v["shape"]).clone()
    return out, hdr.get("__metadata__", {})


def save_folder(folder, tensors, config, shards=1, extra_files=None):
    """config.json + model.safetensors, or `shards` files and model.safetensors.index.json."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    for name, text in (extra_files or {}).items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    names = list(tensors)
    if shards == 1:
        save_safetensors(os.path.join(folder, "model.safetensors"), tensors, {"format": "pt"})
        return
    per = math.ceil(len(names) / shards)
    weight_map = {}
    for s in range(shards):
        fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k] for k in names[s * per:(s + 1) * per]}
        save_safetensors(os.path.join(folder, fn), part, {"format": "pt"})
        weight_map.update({k: fn for k in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2)


# ---- packing ---------------------------------------------------------------------------

def pack_rows(u, bits):
    """u: [R, C] unsigned fields -> int32 [R, ceil(C / (32/bits))], lowest bits first."""
    pf = 32 // bits
    r, c = u.shape
    pad = (-c) % pf
    u = torch.cat([u.to(torch.int64), torch.zeros(r, pad, dtype=torch.int64)], 1)
    u = u.reshape(r, -1, pf)
    words = sum(u[:, :, i] << (bits * i) for i in range(pf))
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words)
    return words.to(torch.int32)


def unpack_rows(words, bits, cols):
    pf = 32 // bits
    w = words.to(torch.int64) & 0xFFFFFFFF
    fields = torch.stack([(w >> (bits * i)) & ((1 << bits) - 1) for i in range(pf)], -1)
    return fields.reshape(words.shape[0], -1)[:, :cols]


# ---- quantization (a plain min/max rule; any rule will do for layout tests) ------------

def qparams(w_groups, bits, sym):
    """w_groups: [..., n] -> (scale, zero) with signed codes in [-2^(b-1), 2^(b-1) - 1]."""
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    lo = w_groups.min(-1).values.clamp(max=0)
    hi = w_groups.max(-1).values.clamp(min=0)
    if sym:
        scale = torch.maximum(lo.abs(), hi) / ((qmax - qmin) / 2)
        zero = torch.zeros_like(scale, dtype=torch.int64)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero = (qmin - torch.round(lo / scale.clamp(min=1e-8))).clamp(qmin, qmax).to(torch.int64)
    return scale.clamp(min=1e-8), zero


def quantize_groups(w, bits, group, sym, scale_dtype, g_idx=None):
    """Signed codes q [N, K], scales [N, G] (scale_dtype) and signed zero points [N, G].
    group: a size, or None for one group per row; g_idx: group of each column."""
    n, k = w.shape
    if group is None:
        g_idx_ = torch.zeros(k, dtype=torch.int64)
    elif g_idx is None:
        g_idx_ = torch.arange(k) // group
    else:
        g_idx_ = g_idx.to(torch.int64)
    ngroups = int(g_idx_.max()) + 1
    scale = torch.empty(n, ngroups)
    zero = torch.empty(n, ngroups, dtype=torch.int64)
    for g in range(ngroups):
        cols = (g_idx_ == g).nonzero().flatten()
        s, z = qparams(w[:, cols], bits, sym)
        scale[:, g], zero[:, g] = s, z
    scale = scale.to(scale_dtype)
    s_full = scale.float()[:, g_idx_]
    z_full = zero[:, g_idx_]
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = (torch.round(w / s_full) + z_full).clamp(qmin, qmax).to(torch.int64)
    return q, scale, zero


# ---- compressed-tensors encoder --------------------------------------------------------

def ct_layer(prefix, w, bits, group, sym, scale_dtype, fmt, actorder=False, tensor=False):
    """Stored tensors of one Linear weight in compressed-tensors format `fmt`
    ("pack-quantized" or "int-quantized")."""
    n, k = w.shape
    g_idx = None
    if actorder:
        perm = torch.randperm(k, generator=torch.Generator().manual_seed(n * 7 + k))
        g_idx = torch.empty(k, dtype=torch.int32)
        g_idx[perm] = (torch.arange(k) // group).to(torch.int32)
    if tensor:  # one scale for the whole tensor
        s, z = qparams(w.reshape(1, -1), bits, sym)
        scale = s.to(scale_dtype).reshape(1)
        zero = z.reshape(1)
        qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        q = (torch.round(w / scale.float()) + zero).clamp(qmin, qmax).to(torch.int64)
    else:
        q, scale, zero = quantize_groups(w, bits, group, sym, scale_dtype, g_idx)
    out = {}
    off = 1 << (bits - 1)
    if fmt == "pack-quantized":
        out[prefix + ".weight_packed"] = pack_rows(q + off, bits)
        out[prefix + ".weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
    else:
        out[prefix + ".weight"] = q.to(torch.int8)
    out[prefix + ".weight_scale"] = scale
    if not sym:
        if fmt == "pack-quantized" and not tensor:  # packed along the output dim
            out[prefix + ".weight_zero_point"] = pack_rows((zero + off).t().contiguous(), bits).t().contiguous()
        else:
            out[prefix + ".weight_zero_point"] = zero.to(torch.int8)
    if g_idx is not None:
        out[prefix + ".weight_g_idx"] = g_idx
    return out


def ct_args(bits, group, sym, strategy, actorder=False):
    return {"num_bits": bits, "type": "int", "symmetric": sym, "group_size": group,
            "strategy": strategy, "block_structure": None, "dynamic": False,
            "actorder": "group" if actorder else None, "observer": "minmax",
            "observer_kwargs": {}}


# ---- GPTQ encoder ----------------------------------------------------------------------

def gptq_layer(prefix, w, bits, group, sym, v2=False, act_order=False, bias=None):
    n, k = w.shape
    if act_order:
        perm = torch.randperm(k, generator=torch.Generator().manual_seed(k + 3))
        g_idx = torch.empty(k, dtype=torch.int32)
        g_idx[perm] = (torch.arange(k) // group).to(torch.int32)
    else:
        g_idx = (torch.arange(k) // group).to(torch.int32)
    q, scale, zero = quantize_groups(w, bits, group, sym, torch.float16, g_idx)
    off = 1 << (bits - 1)
    u = (q + off)                      # unsigned codes [N, K]
    zu = zero + off                    # unsigned zero points [N, G]
    zs = zu - (0 if v2 else 1)         # v1 stores zero - 1
    out = {
        prefix + ".qweight": _pack_dim0(u.t().contiguous(), bits),
        prefix + ".qzeros": pack_rows(zs.t().contiguous() & ((1 << bits) - 1), bits),
        prefix + ".scales": scale.t().contiguous(),
        prefix + ".g_idx": g_idx,
    }
    if bias is not None:
        out[prefix + ".bias"] = bias.to(torch.float16)
    return out


def _pack_dim0(m, bits):
    """m [R, C] -> int32 [ceil(R / (32/bits)), C], fields packed down the rows."""
    return pack_rows(m.t().contiguous(), bits).t().contiguous()


def gptq_quantize_config(bits, group, sym, v2=False, desc_act=False):
    return {"bits": bits, "group_size": group, "damp_percent": 0.01, "desc_act": desc_act,
            "static_groups": False, "sym": sym, "true_sequential": True,
            "model_name_or_path": None, "model_file_base_name": "model",
            "quant_method": "gptq", "checkpoint_format": "gptq_v2" if v2 else "gptq"}


# ---- reference decoders ----------------------------------------------------------------

def _match(target, name):
    import re
    return re.match(target[3:], name) is not None if target.startswith("re:") else target == name


def ct_decode(folder, out_dtype):
    """Every tensor of a compressed-tensors folder, quantized ones decoded:
    (q - zero) * scale in F32, then out_dtype."""
    cfg = json.load(open(os.path.join(folder, "config.json")))["quantization_config"]
    t = {}
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".safetensors"):
            t.update(load_safetensors(os.path.join(folder, fn))[0])
    out = {}
    for name in list(t):
        if name.endswith(".weight_packed") or (name.endswith(".weight") and name + "_scale" in t):
            prefix = name[:name.rindex(".weight")]
            ranked = [(3 if x == prefix else 2 if x.startswith("re:") else 1, i)
                      for i, g in enumerate(cfg["config_groups"].values())
                      for x in g["targets"] if _match(x, prefix) or x == "Linear"]
            args = list(cfg["config_groups"].values())[max(ranked)[1]]["weights"]
            bits = args["num_bits"]
            off = 1 << (bits - 1)
            scale = t[prefix + ".weight_scale"].float()
            if name.endswith("_packed"):
                n, k = t[prefix + ".weight_shape"].tolist()
                q = unpack_rows(t[name], bits, k) - off
            else:
                q = t[name].to(torch.int64)
                n, k = q.shape
            zp = t.get(prefix + ".weight_zero_point")
            if zp is None:
                z = torch.zeros(scale.shape, dtype=torch.int64)
            elif zp.dtype == torch.int32:
                z = unpack_rows(zp.t().contiguous(), bits, n).t() - off
            else:
                z = zp.to(torch.int64)
            if scale.numel() == 1:
                s_full, z_full = scale.reshape(1, 1), z.reshape(1, 1)
            else:
                scale, z = scale.reshape(n, -1), z.reshape(n, -1)
                gi = t.get(prefix + ".weight_g_idx")
                if gi is None:
                    gs = args["group_size"] if args["strategy"] == "group" else k
                    gi = torch.arange(k) // gs
                gi = gi.to(torch.int64)
                s_full, z_full = scale[:, gi], z[:, gi]
            out[prefix + ".weight"] = ((q - z_full).float() * s_full).to(out_dtype)
    for name, v in t.items():
        base = name.rsplit(".", 1)[-1]
        if base.startswith("weight_") or base in ("input_scale", "input_zero_point"):
            continue
        if name in out or (name.endswith(".weight") and name + "_scale" in t):
            continue
        out[name] = v
    return out


def gptq_decode(folder, out_dtype):
    qc = json.load(open(os.path.join(folder, "quantize_config.json")))
    bits, v2 = qc["bits"], qc.get("checkpoint_format") == "gptq_v2"
    t = {}
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".safetensors"):
            t.update(load_safetensors(os.path.join(folder, fn))[0])
    out = {}
    pf = 32 // bits
    for name in list(t):
        if not name.endswith(".qweight"):
            continue
        p = name[:-len(".qweight")]
        qw, qz, sc, gi = t[name], t[p + ".qzeros"], t[p + ".scales"], t[p + ".g_idx"].to(torch.int64)
        k, n = gi.numel(), qw.shape[1]
        u = unpack_rows(qw.t().contiguous(), bits, k)           # [N, K]
        z = unpack_rows(qz, bits, n).t() + (0 if v2 else 1)     # [N, G]
        s = sc.float().t()                                      # [N, G]
        out[p + ".weight"] = ((u - z[:, gi]).float() * s[:, gi]).to(out_dtype)
    for name, v in t.items():
        if name.rsplit(".", 1)[-1] in ("qweight", "qzeros", "scales", "g_idx"):
            continue
        out[name] = v
    return out


# ---- comparing against monoquant -------------------------------------------------------

def dequantized(src, tag):
    """`monoquant dequantize` of src, loaded back as {name: tensor}."""
    out = os.path.join(TMP, tag + ".safetensors")
    mq("dequantize", src, "-o", out, "-q")
    return load_safetensors(out)[0]


def assert_same(ours, ref):
    """Same names, dtypes, shapes and values, bit for bit."""
    assert sorted(ours) == sorted(ref), f"names differ: {sorted(set(ours) ^ set(ref))}"
    for k in ref:
        a, b = ours[k], ref[k]
        assert a.dtype == b.dtype and a.shape == b.shape, f"{k}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
        assert torch.equal(a, b), f"{k}: max diff {(a.float() - b.float()).abs().max()}"
