"""Every .pt file monoquant writes loads with torch.load(weights_only=True) to identical
tensors, feeds model.load_state_dict, keeps its metadata, and reads back through monoquant."""
import collections
import inspect
import os
import zipfile

import torch

from harness import FIXTURES, TMP, case, finish
import mqlib as mq

torch.manual_seed(11)
HAS_MMAP = "mmap" in inspect.signature(torch.load).parameters


def path(name):
    return os.path.join(TMP, name)


def torch_load(p):
    d = torch.load(p, weights_only=True)
    if HAS_MMAP:
        dm = torch.load(p, weights_only=True, mmap=True)
        assert list(dm) == list(d) and all(mq.same(dm[k], d[k]) for k in d), "mmap load differs"
    return d


def expect_same(got, want):
    assert list(got) == list(want), f"names {list(got)} != {list(want)}"
    for k in want:
        assert mq.same(got[k], want[k]), f"tensor {k} differs"


DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
          torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64]


def sample(dt, shape):
    if dt == torch.bool:
        return torch.rand(shape) > 0.5
    if dt.is_floating_point or dt.is_complex:
        return torch.randn(shape, dtype=torch.float32 if not dt.is_complex else dt).to(dt)
    info = torch.iinfo(dt)
    return torch.randint(max(info.min, -1000), min(info.max, 1000) + 1, shape, dtype=dt)


@case
def every_dtype_loads_weights_only():
    sd = collections.OrderedDict((f"t.{str(dt)[6:]}", sample(dt, (4, 3, 2))) for dt in DTYPES)
    p = path("dtypes.pt")
    mq.write(p, sd, chunk=7)  # odd chunk sizes: the CRC must still come out right
    expect_same(torch_load(p), sd)
    expect_same(mq.Model(p).dict(), sd)


@case
def scalars_and_empty_tensors():
    sd = collections.OrderedDict([("s", torch.tensor(3.5)), ("i", torch.tensor(-4)),
                                  ("e", torch.empty(0)), ("e2", torch.empty(2, 0, 3, dtype=torch.int8)),
                                  ("big_int", torch.tensor([2**40, -2**40]))])
    p = path("small.pt")
    mq.write(p, sd)
    expect_same(torch_load(p), sd)
    expect_same(mq.Model(p).dict(), sd)


@case
def zip_is_valid_and_records_aligned():
    sd = collections.OrderedDict((f"w{i}", torch.randn(i + 1, 3)) for i in range(20))
    p = path("aligned.pt")
    mq.write(p, sd)
    with zipfile.ZipFile(p) as z:
        assert z.testzip() is None  # every CRC-32 checks
        names = z.namelist()
        assert names[0] == "archive/data.pkl" and "archive/version" in names, names
        assert z.read("archive/byteorder") == b"little"
        raw = open(p, "rb").read()
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            if info.filename.startswith("archive/data/"):
                n, x = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
                    int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
                assert (info.header_offset + 30 + n + x) % 64 == 0, info.filename
    expect_same(torch_load(p), sd)


@case
def mmap_load_or_alignment_when_torch_lacks_it():
    # torch 1.13 has no torch.load(mmap=True); zip_is_valid_and_records_aligned checks the
    # 64-byte alignment that mmap loading needs. With a newer torch, torch_load also mmaps.
    p = path("mm.pt")
    sd = {"w": torch.randn(33, 7)}
    mq.write(p, sd)
    expect_same(torch_load(p), sd)
    print(f"# torch {torch.__version__}: torch.load(mmap=True) {'tested' if HAS_MMAP else 'not available'}")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@case
def module_load_state_dict_after_round_trip():
    net = Net().eval()
    net.bn.running_var.uniform_(0.5, 2)
    src = path("net_torch.pt")
    torch.save(net.state_dict(), src)
    sd = mq.Model(src).dict()              # read with monoquant ...
    dst = path("net_mq.pt")
    mq.write(dst, sd, meta={"quantization": '{"bits": 8, "scheme": "symmetric"}'})  # ... write
    fresh = Net().eval()
    fresh.load_state_dict(torch_load(dst), strict=True)
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(fresh(x), net(x))


@case
def metadata_round_trip_and_invisible_to_torch():
    meta = {"quantization": '{"bits": 4, "group_size": 128, "layers": ["a", "b"]}',
            "tool": "monoquant 0.1.0", "unicode": "ünïcødé ✓"}
    sd = {"w": torch.randn(3)}
    p = path("meta.pt")
    mq.write(p, sd, meta=meta)
    m = mq.Model(p)
    for k, v in meta.items():
        assert m.meta(k) == v, (k, m.meta(k))
    assert list(m.dict()) == ["w"]
    m.close()
    assert list(torch_load(p)) == ["w"]


@case
def unsupported_dtype_refused():
    try:
        import ctypes
        descs = (mq.TensorDesc * 1)()
        descs[0].name, descs[0].dtype, descs[0].ndim, descs[0].shape[0] = b"u", mq.U16, 1, 2
        ctx = ctypes.c_void_p(mq.LIB.mq_ctx_create())
        w = ctypes.c_void_p()
        st = mq.LIB.mq_writer_open(ctx, path("u16.pt").encode(), 0, descs, 1, None, 0, ctypes.byref(w))
        msg = mq.LIB.mq_ctx_message(ctx).decode()
        mq.LIB.mq_ctx_free(ctx)
        assert st == 4 and "U16" in msg, (st, msg)
        assert not os.path.exists(path("u16.pt"))
    finally:
        pass


@case
def zip64_sizes_and_offsets_load_in_torch():
    # the unit test binary writes a file whose records all use ZIP64 sizes and offsets (as
    # files over 4 GiB do), with byte j of tensor i = (7 i + j) mod 251
    import subprocess
    p = path("z64.pt")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}  # (set under make asan)
    r = subprocess.run([os.path.join(os.environ.get("BUILD", "build"), "tests", "test_pytorch"),
                        "write-zip64", p], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-500:]
    specs = [("a.weight", torch.float32, (3, 5)), ("b", torch.int64, (2,)),
             ("c", torch.bfloat16, (4,)), ("scalar", torch.float32, ()), ("empty", torch.int8, (0,))]
    want = collections.OrderedDict()
    for i, (name, dt, shape) in enumerate(specs):
        n = int(torch.tensor(shape).prod()) * torch.tensor([], dtype=dt).element_size()
        raw = bytearray((7 * i + j) % 251 for j in range(n))
        want[name] = (torch.frombuffer(raw, dtype=dt) if n else torch.empty(0, dtype=dt)).reshape(shape)
    with zipfile.ZipFile(p) as z:
        assert z.testzip() is None
        assert all(info.header_offset >= 0 for info in z.infolist())
    expect_same(torch_load(p), want)
    m = mq.Model(p)
    assert m.meta("quantization") == '{"bits": 4}'
    expect_same(m.dict(), want)
    m.close()


@case
def fixture_round_trip_identical():
    src = os.path.join(FIXTURES, "lm", "lm_fortunes.pt")
    sd = mq.Model(src).dict()
    p = path("lm_copy.pt")
    mq.write(p, sd)
    expect_same(torch_load(p), torch.load(src, weights_only=True))


finish()
