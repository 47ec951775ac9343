"""safetensors interop: files laid out the way the reference writer does them open in monoquant
with the right names, dtypes, shapes and sizes; files monoquant writes (the demo model) parse
with an independent reader and hold what the generator promises."""
import json
import math
import os
import struct
import subprocess

import torch

from harness import FIXTURES, TMP, case, finish, mq

BUILD = os.environ.get("BUILD", "build")
DEMO = os.path.join(BUILD, "examples", "make_demo_model")

DTYPES = {  # safetensors name -> (torch dtype, element size)
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2), "I64": (torch.int64, 8), "I32": (torch.int32, 4),
    "I16": (torch.int16, 2), "I8": (torch.int8, 1), "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}


def raw_bytes(t):
    """Little-endian bytes of a contiguous tensor (bfloat16 via its int16 bits)."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_reference_layout(path, tensors, metadata=None):
    """Writes like the reference serializer: tensors sorted by dtype alignment (largest first)
    then by name, compact JSON, header padded with spaces to a multiple of 8."""
    order = sorted(tensors, key=lambda n: (-DTYPES[tensors[n][0]][1], n))
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name in order:
        dt, t = tensors[name]
        b = raw_bytes(t)
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    return order


def read_strict(path):
    """An independent reader: returns (metadata, [(name, dtype, shape, bytes)] in file order)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    pos, out = 0, []
    for name, e in entries:
        b, end = e["data_offsets"]
        assert b == pos, f"{name}: gap or overlap at {b}"
        assert end - b == math.prod(e["shape"]) * DTYPES[e["dtype"]][1], name
        out.append((name, e["dtype"], e["shape"], data[8 + n + b:8 + n + end]))
        pos = end
    assert 8 + n + pos == len(data), "trailing bytes"
    return n, meta, out


@case
def reference_layout_every_dtype():
    g = torch.Generator().manual_seed(3)
    tensors = {
        "f64": ("F64", torch.randn(3, 2, generator=g, dtype=torch.float64)),
        "f32": ("F32", torch.randn(5, generator=g)),
        "f16": ("F16", torch.randn(2, 3, 4, generator=g).half()),
        "bf16": ("BF16", torch.randn(7, generator=g).bfloat16()),
        "i64": ("I64", torch.arange(-3, 3, dtype=torch.int64)),
        "i32": ("I32", torch.arange(4, dtype=torch.int32).reshape(2, 2)),
        "i16": ("I16", torch.tensor([-1, 1], dtype=torch.int16)),
        "i8": ("I8", torch.tensor([-128, 127, 0], dtype=torch.int8)),
        "u8": ("U8", torch.tensor([255, 1], dtype=torch.uint8)),
        "mask": ("BOOL", torch.tensor([True, False, True])),
        "scalar": ("F32", torch.tensor(2.5)),
        "empty": ("F32", torch.zeros(0, 4)),
    }
    path = os.path.join(TMP, "reference_layout.safetensors")
    order = write_reference_layout(path, tensors, {"framework": "pt"})
    _, out, _ = mq("info", "--json", path)
    d = json.loads(out)
    assert d["tensor_count"] == len(tensors), d["tensor_count"]
    # the file order is the data-offset order; the zero-size tensor ties with its neighbour
    names = [t["name"] for t in d["tensors"]]
    assert sorted(names) == sorted(order), names
    assert d["metadata"] == {"framework": "pt"}, d["metadata"]
    for t in d["tensors"]:
        dt, ref = tensors[t["name"]]
        assert t["dtype"] == dt, t
        assert t["shape"] == list(ref.shape), t
        assert t["bytes"] == ref.numel() * DTYPES[dt][1], t
    assert d["parameter_count"] == sum(r.numel() for _, r in tensors.values())


@case
def fixture_headers_read_the_same():
    for rel in ("lm/lm_fortunes.safetensors", "cnn/cnn_digits.bf16.safetensors"):
        path = os.path.join(FIXTURES, rel)
        _, meta, ref = read_strict(path)
        _, out, _ = mq("info", "--json", path)
        d = json.loads(out)
        assert d["metadata"] == meta, rel
        got = [(t["name"], t["dtype"], t["shape"], t["bytes"]) for t in d["tensors"]]
        assert got == [(n, dt, s, len(b)) for n, dt, s, b in ref], rel


@case
def demo_model_is_what_it_claims():
    path = os.path.join(TMP, "demo.safetensors")
    subprocess.run([DEMO, path], check=True)
    n, meta, tensors = read_strict(path)
    assert n % 8 == 0
    with open(path, "rb") as f:
        f.seek(8)
        assert f.read(26) == b'{"__metadata__":{"format":'
    assert meta["format"] == "pt" and meta["model"] == "monoquant-demo", meta
    cfg = json.loads(meta["config"])
    assert cfg["d_model"] == 512 and cfg["layers"] == 4
    by = {name: (dt, shape, b) for name, dt, shape, b in tensors}
    assert len(by) == 1 + 14 * cfg["layers"] + 2 + 1, len(by)  # embed, 14 per layer, norm, head

    def values(name):
        dt, shape, b = by[name]
        assert dt == "BF16", name
        return torch.frombuffer(bytearray(b), dtype=torch.int16).view(torch.bfloat16).float().reshape(shape)

    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight",
                 "lm_head.weight"):
        w = values(name)
        fan_in = w.shape[1]
        assert fan_in % 128 == 0, name
        col = w.abs().amax(dim=0)
        outliers = (col > 6 * col.median()).sum().item()
        assert 1 <= outliers <= 8, (name, outliers)
        core = w[:, col <= 6 * col.median()]
        assert abs(core.std().item() * math.sqrt(fan_in) - 1) < 0.05, (name, core.std().item())
    norm = values("model.layers.1.input_layernorm.weight")
    assert abs(norm.mean().item() - 1) < 0.02 and norm.std().item() < 0.1
    emb = values("model.embed_tokens.weight")
    assert abs(emb.std().item() - 0.02) < 0.002
    # deterministic: a second run gives the same bytes
    again = os.path.join(TMP, "demo2.safetensors")
    subprocess.run([DEMO, again], check=True)
    with open(path, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read()


finish()
