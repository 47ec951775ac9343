"""Files written by torch.save read back through libmonoquant equal to what torch holds."""
import collections
import json
import os
import struct
import zipfile

import numpy as np
import torch

from harness import FIXTURES, TMP, case, check, finish
import mqlib as mq

torch.manual_seed(7)


def save(obj, name, **kw):
    p = os.path.join(TMP, name)
    torch.save(obj, p, **kw)
    return p


def read(path, key=None):
    m = mq.Model(path, key)
    d = m.dict()
    m.close()
    return d


def expect_same(got, want):
    """got: name -> tensor from monoquant; want: name -> torch tensor, same order."""
    assert list(got) == list(want), f"names {list(got)} != {list(want)}"
    for k in want:
        assert mq.same(got[k], want[k].detach()), f"tensor {k} differs: {got[k]} vs {want[k]}"


ALL_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]


def sample(dt, shape):
    if dt == torch.bool:
        return torch.rand(shape) > 0.5
    if dt.is_floating_point:
        return (torch.randn(shape) * 3).to(dt)
    info = torch.iinfo(dt)
    return torch.randint(max(info.min, -1000), min(info.max, 1000) + 1, shape, dtype=dt)


@case
def every_dtype():
    sd = collections.OrderedDict((f"t_{str(dt)[6:]}", sample(dt, (3, 5))) for dt in ALL_DTYPES)
    expect_same(read(save(sd, "dtypes.pt")), sd)


@case
def dtype_extremes():
    sd = {"f32": torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0, 1e-45]),
          "f16": torch.tensor([65504.0, -65504.0, 6e-8, float("nan")], dtype=torch.float16),
          "bf16": torch.tensor([3.0e38, -1e-38, float("inf")], dtype=torch.bfloat16),
          "i64": torch.tensor([2**63 - 1, -2**63, 0]),
          "u8": torch.tensor([0, 255], dtype=torch.uint8)}
    expect_same(read(save(sd, "extremes.pt")), sd)


@case
def views_offsets_and_strides():
    a = torch.arange(120, dtype=torch.float32).reshape(10, 12)
    sd = collections.OrderedDict([
        ("row", a[3]), ("col", a[:, 2]), ("transposed", a.t()), ("block", a[2:5, 1:7]),
        ("stepped", a[::3, ::2]), ("expanded", a[0:1].expand(4, 12)),
        ("permuted", torch.arange(24.).reshape(2, 3, 4).permute(2, 0, 1)),
        ("tail", a.reshape(-1)[100:])])
    # torch.save keeps the views (whole storage + offset + strides)
    assert sd["transposed"].stride() == (1, 12)
    expect_same(read(save(sd, "views.pt")), {k: v.contiguous() for k, v in sd.items()})


@case
def shared_storage_tied_weights():
    w = torch.randn(16, 8)
    sd = collections.OrderedDict([("emb.weight", w), ("head.weight", w), ("half", w[8:])])
    p = save(sd, "tied.pt")
    m = mq.Model(p)
    got = m.dict()
    addrs = {n: a for n, _, a in m.tensors}
    m.close()
    expect_same(got, sd)
    assert addrs["emb.weight"] == addrs["head.weight"], "tied tensors should share data"
    assert addrs["half"] == addrs["emb.weight"] + 8 * 8 * 4, "offset view should point into it"


@case
def parameters():
    sd = {"p": torch.nn.Parameter(torch.randn(4, 4)),
          "q": torch.nn.Parameter(torch.randn(3), requires_grad=False)}
    expect_same(read(save(sd, "params.pt")), sd)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(2)])
        self.ln = torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(8, 4, bias=False)
        self.head.weight = self.blocks[0].weight  # tied


@case
def module_state_dict():
    net = Net()
    net.bn.running_mean.uniform_()
    sd = net.state_dict()
    assert sd["bn.num_batches_tracked"].dim() == 0
    expect_same(read(save(sd, "module.pt")), sd)


@case
def nested_checkpoint_default():
    sd = Net().state_dict()
    ck = {"epoch": 3, "state_dict": sd, "note": "hello", "lr": 0.001, "flags": [1, 2]}
    expect_same(read(save(ck, "nested.pt")), sd)


@case
def nested_ambiguous_is_an_error_listing_candidates():
    sd = Net().state_dict()
    ck = {"model": sd, "ema": {k: v.clone() for k, v in sd.items()}, "step": 10}
    p = save(ck, "ambiguous.pt")
    st, msg = mq.open_error(p)
    assert st != 0 and "'model'" in msg and "'ema'" in msg, msg
    expect_same(read(p, key="model"), sd)
    expect_same(read(p, key="ema"), ck["ema"])
    st, msg = mq.open_error(p, key="nope")
    assert st != 0 and "nope" in msg and "'model'" in msg, msg
    st, msg = mq.open_error(p, key="step")
    assert st != 0 and "not a dict" in msg, msg


@case
def nested_modules_flatten_with_dots():
    t1, t2, t3 = torch.randn(2), torch.randn(3), torch.randn(4)
    ck = {"encoder": {"layer": {"weight": t1}}, "decoder": {"bias": t2}, "x": [t3]}
    got = read(save(ck, "dotted.pt"), key=".")
    expect_same(got, collections.OrderedDict(
        [("encoder.layer.weight", t1), ("decoder.bias", t2), ("x.0", t3)]))
    # a top-level tensor makes the top level the state dict; sub-dicts flatten
    ck2 = {"a": t1, "sub": {"b": t2}}
    expect_same(read(save(ck2, "dotted2.pt")), collections.OrderedDict([("a", t1), ("sub.b", t2)]))
    # tensors only inside one list: named by index under the list's key
    ck3 = {"step": 1, "layers": [t1, (t2, t3)]}
    expect_same(read(save(ck3, "dotted3.pt")),
                collections.OrderedDict([("layers.0", t1), ("layers.1.0", t2), ("layers.1.1", t3)]))


@case
def empty_and_scalar_tensors():
    sd = collections.OrderedDict([
        ("scalar_f", torch.tensor(2.5)), ("scalar_i", torch.tensor(7)),
        ("empty", torch.empty(0)), ("empty2d", torch.empty(3, 0, dtype=torch.float16)),
        ("empty_view", torch.arange(10.)[5:5])])
    expect_same(read(save(sd, "empty.pt")), sd)


@case
def non_tensor_entries_skipped():
    sd = collections.OrderedDict([("w", torch.ones(2)), ("step", 5), ("name", "x"),
                                  ("none", None), ("b", torch.zeros(1))])
    expect_same(read(save(sd, "mixed.pt")), collections.OrderedDict([("w", sd["w"]), ("b", sd["b"])]))


@case
def empty_state_dict():
    assert read(save({}, "nothing.pt")) == {}


@case
def legacy_format_rejected():
    p = save({"w": torch.ones(2)}, "legacy.pt", _use_new_zipfile_serialization=False)
    st, msg = mq.open_error(p)
    assert st == 4 and "legacy" in msg, (st, msg)  # MQ_ERR_UNSUPPORTED


@case
def torchscript_rejected():
    p = os.path.join(TMP, "script.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), p)
    st, msg = mq.open_error(p)
    assert st == 4 and "TorchScript" in msg, (st, msg)


def rezip(src, dst, compression=zipfile.ZIP_STORED, force_zip64=False):
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", compression) as zo:
        for info in zi.infolist():
            with zo.open(info.filename, "w", force_zip64=force_zip64) as f:
                f.write(zi.read(info))


@case
def rezipped_and_zip64_extra_fields_read():
    sd = {"w": torch.randn(5, 5), "b": torch.randn(5)}
    p = save(sd, "plain.pt")
    q = os.path.join(TMP, "zip64.pt")
    rezip(p, q, force_zip64=True)
    expect_same(read(q), sd)  # data no longer 64-byte aligned


@case
def compressed_entry_rejected():
    p = save({"w": torch.zeros(1000)}, "tocompress.pt")
    q = os.path.join(TMP, "deflated.pt")
    rezip(p, q, zipfile.ZIP_DEFLATED)
    st, msg = mq.open_error(q)
    assert st == 3 and "compressed" in msg and "tocompress/data.pkl" in msg, (st, msg)


@case
def sharded_bin_index():
    d = os.path.join(TMP, "sharded")
    os.makedirs(d, exist_ok=True)
    sd = Net().state_dict()
    names = list(sd)
    half = len(names) // 2
    shards = {"pytorch_model-00001-of-00002.bin": names[:half],
              "pytorch_model-00002-of-00002.bin": names[half:]}
    weight_map = {}
    for fname, keys in shards.items():
        torch.save(collections.OrderedDict((k, sd[k]) for k in keys), os.path.join(d, fname))
        weight_map.update({k: fname for k in keys})
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    got = read(os.path.join(d, "pytorch_model.bin.index.json"))
    assert sorted(got) == sorted(sd), (sorted(got), sorted(sd))
    for k in sd:
        assert mq.same(got[k], sd[k]), k
    # a folder holding one pytorch_model.bin
    d2 = os.path.join(TMP, "single")
    os.makedirs(d2, exist_ok=True)
    torch.save(sd, os.path.join(d2, "pytorch_model.bin"))
    expect_same(read(d2), sd)


def bu(text):  # BINUNICODE
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def ints(v):
    return b"(" + b"".join(b"J" + struct.pack("<i", x) for x in v) + b"t"


def pid(storage_class, key, numel):
    return b"(" + bu("storage") + storage_class + bu(key) + bu("cpu") + b"J" + struct.pack("<i", numel) + b"tQ"


HOOKS = b"ccollections\nOrderedDict\n)R"


@case
def newer_torch_rebuild_forms():
    """_rebuild_tensor_v3 on an untyped storage, _rebuild_from_type_v2, _rebuild_parameter
    _with_state and NEWOBJ Parameter, as newer PyTorch versions and other writers emit."""
    raw = torch.arange(16, dtype=torch.float16)
    v3 = (b"ctorch._utils\n_rebuild_tensor_v3\n(" + pid(b"ctorch\nUntypedStorage\n", "0", 32) +
          b"J\x02\0\0\0" + ints((2, 3)) + ints((3, 1)) + b"\x89" + HOOKS + b"ctorch\nfloat16\nt" + b"R")
    v2 = (b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid(b"ctorch\nHalfStorage\n", "1", 16) +
          b"J\0\0\0\0" + ints((4, 4)) + ints((1, 4)) + b"\x89" + HOOKS + b"t")
    from_type = (b"ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\n"
                 b"ctorch\nTensor\n(" + v2[len(b"ctorch._utils\n_rebuild_tensor_v2\n("):] + b"}tR")
    param_state = (b"ctorch._utils\n_rebuild_parameter_with_state\n(" + v2 + b"R\x88" + HOOKS + b"}tR")
    newobj = b"ctorch.nn.parameter\nParameter\n(" + v2 + b"R\x88t\x81"
    pkl = (b"\x80\x02ccollections\nOrderedDict\n)R(" + bu("v3") + v3 + bu("from_type") + from_type +
           bu("param_state") + param_state + bu("newobj") + newobj + b"u.")
    p = os.path.join(TMP, "newer.pt")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", raw.numpy().tobytes())
        z.writestr("archive/data/1", raw.numpy().tobytes())
        z.writestr("archive/byteorder", "little")
    got = read(p)
    t = raw.reshape(4, 4).t().contiguous()
    expect_same(got, collections.OrderedDict([("v3", raw[2:8].reshape(2, 3)), ("from_type", t),
                                              ("param_state", t), ("newobj", t)]))


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    names = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
             "F64": torch.float64, "I64": torch.int64}
    out = collections.OrderedDict()
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        raw = bytearray(data[b:e])
        t = torch.frombuffer(raw, dtype=names[v["dtype"]]) if raw else torch.empty(0, dtype=names[v["dtype"]])
        out[k] = t.reshape(v["shape"])
    return out


for fixture in ["lm/lm_fortunes", "cnn/cnn_digits"]:
    def fixture_matches_safetensors_twin(fixture=fixture):
        got = read(os.path.join(FIXTURES, fixture + ".pt"))
        twin = read_safetensors(os.path.join(FIXTURES, fixture + ".safetensors"))
        assert sorted(got) == sorted(twin), (sorted(got), sorted(twin))
        for k in twin:
            assert mq.same(got[k], twin[k]), k
        ref = torch.load(os.path.join(FIXTURES, fixture + ".pt"), weights_only=True)
        expect_same(got, ref)
        # and through monoquant's own safetensors reader
        twin_mq = read(os.path.join(FIXTURES, fixture + ".safetensors"))
        assert list(twin_mq) == list(got), (list(twin_mq), list(got))
        for k in twin_mq:
            assert mq.same(got[k], twin_mq[k]), k
    fixture_matches_safetensors_twin.__name__ = "fixture_" + fixture.split("/")[1]
    case(fixture_matches_safetensors_twin)

finish()
