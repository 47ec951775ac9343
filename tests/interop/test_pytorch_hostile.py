"""Hostile checkpoints are rejected with a message, and nothing in them ever runs: payloads
that would create a file (and do, under Python's own pickle) leave no file behind."""
import os
import pickle
import struct
import subprocess
import sys
import zlib

import torch

from harness import TMP, case, finish
import mqlib as mq

FORMAT, UNSUPPORTED, INVALID = 3, 4, 1


def path(name):
    return os.path.join(TMP, name)


def build_zip(entries, count=None, cd_extra=b""):
    """entries: list of dicts name, data and optional flags, method, crc, size (central
    directory), lho (central directory offset override), local (False: no local header)."""
    out, cd = bytearray(), bytearray()
    for e in entries:
        name = e["name"].encode() if isinstance(e["name"], str) else e["name"]
        data = e.get("data", b"")
        crc = e.get("crc", zlib.crc32(data))
        flags, method = e.get("flags", 0), e.get("method", 0)
        off = len(out)
        if e.get("local", True):
            out += struct.pack("<IHHHHHIIIHH", 0x04034b50, 20, flags, method, 0, 0x21, crc,
                               len(data), len(data), len(name), 0) + name + data
        size = e.get("size", len(data))
        extra = e.get("extra", b"")
        cd += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014b50, 20, 20, flags, method, 0, 0x21, crc,
                          size, size, len(name), len(extra), 0, 0, 0, 0, e.get("lho", off)) + name + extra
    n = len(entries) if count is None else count
    cd += cd_extra
    return bytes(out + cd + struct.pack("<IHHHHIIH", 0x06054b50, 0, 0, n, n, len(cd), len(out), 0))


def write(name, blob):
    p = path(name)
    with open(p, "wb") as f:
        f.write(blob)
    return p


def archive(pkl, records=(), root="archive"):
    ents = [{"name": f"{root}/data.pkl", "data": pkl}]
    ents += [{"name": f"{root}/{n}", "data": d} for n, d in records]
    ents.append({"name": f"{root}/version", "data": b"3\n"})
    return build_zip(ents)


def expect_reject(name, blob, status, *needles):
    st, msg = mq.open_error(write(name, blob))
    assert st == status, f"status {st} (want {status}): {msg}"
    for n in needles:
        assert n in msg, f"message lacks {n!r}: {msg}"
    return msg


def s(text):  # BINUNICODE
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


# ---- code execution attempts -------------------------------------------------------------

def call_payload(module, name, arg):
    return b"\x80\x02c" + module + b"\n" + name + b"\n" + arg + b"\x85R."


def touch_payload(module, name, marker):
    if module == b"subprocess":
        arg = b"]" + s("touch") + b"a" + s(marker) + b"a"
        return b"\x80\x02c" + module + b"\n" + name + b"\n" + arg + b"\x85R."
    if name in (b"eval", b"exec"):
        return call_payload(module, name, s(f"open({marker!r}, 'w').close()"))
    return call_payload(module, name, s(f"touch {marker}"))


PAYLOADS = [(b"os", b"system"), (b"posix", b"system"), (b"builtins", b"eval"),
            (b"builtins", b"exec"), (b"subprocess", b"check_call")]


for module, fn in PAYLOADS:
    def code_execution_refused(module=module, fn=fn):
        live = path(f"live_{fn.decode()}")
        # the payload is real: Python's own pickle runs it and creates the file
        subprocess.run([sys.executable, "-c", "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"],
                       input=touch_payload(module, fn, live), check=True, capture_output=True)
        assert os.path.exists(live), "payload did not work under pickle.loads"
        marker = path(f"pwned_{fn.decode()}")
        for root in ("archive", "x"):
            msg = expect_reject(f"evil_{fn.decode()}.pt", archive(touch_payload(module, fn, marker), root=root),
                                FORMAT, f"global '{module.decode()}.{fn.decode()}' is not allowed", "byte 2")
        assert not os.path.exists(marker), "side effect happened"
    code_execution_refused.__name__ = f"refuses_{module.decode()}_{fn.decode()}"
    case(code_execution_refused)


@case
def newobj_on_disallowed_class():
    pkl = b"\x80\x02ccollections\nOrderedDict\n)\x81."
    expect_reject("newobj.pt", archive(pkl), FORMAT, "only torch.nn.Parameter", "0x81")


@case
def disallowed_opcodes():
    for op, body in [(b"i", b"i" + b"os\nsystem\n"), (b"o", b"(o"), (b"\x93", s("os") + s("system") + b"\x93"),
                     (b"\x82", b"\x82\x01"), (b"P", b"P1\n"), (b"\x8c", b"\x8c\x02os"), (b"I", b"I1\n")]:
        pkl = b"\x80\x02" + body + b"."
        msg = expect_reject("op.pt", archive(pkl), FORMAT, "not allowed")
        off = pkl.index(op, 2)
        assert f"byte {off}" in msg, (op, msg)


@case
def calling_allowed_non_functions():
    pkl = b"\x80\x02ctorch\nFloatStorage\n)R."
    expect_reject("call_storage.pt", archive(pkl), FORMAT, "calling 'FloatStorage' is not allowed")


@case
def build_on_plain_object():
    pkl = b"\x80\x02]}b."
    expect_reject("build.pt", archive(pkl), FORMAT, "BUILD")


# ---- resource bombs ----------------------------------------------------------------------

@case
def memo_bomb():
    expect_reject("memo.pt", archive(b"\x80\x02Nr\xf0\xff\xff\xff."), FORMAT, "memo index")
    expect_reject("memo2.pt", archive(b"\x80\x02h\x05."), FORMAT, "memo entry not set")


@case
def stack_and_mark_bombs():
    expect_reject("marks.pt", archive(b"\x80\x02" + b"(" * 100000 + b"."), FORMAT, "MARKs nested")
    expect_reject("stack.pt", archive(b"\x80\x02" + b"N" * (1 << 21) + b"."), FORMAT, "stack too deep")


@case
def deeply_nested_tuples():
    pkl = b"\x80\x02}" + s("x") + b")" + b"\x85" * 200000 + b"s."
    expect_reject("nested.pt", archive(pkl), FORMAT, "nested more than")


@case
def self_referencing_list():
    pkl = b"\x80\x02}" + s("x") + b"]q\x00h\x00as."
    expect_reject("cycle.pt", archive(pkl), FORMAT, "nested more than")


@case
def exponential_shared_references():
    body = b"]q\x00"
    for i in range(40):  # each list holds the previous one twice: 2^40 paths
        body += b"](h\x00h\x00eq\x00"
    pkl = b"\x80\x02}" + s("x") + b"(" + body + b"ts."
    expect_reject("dag.pt", archive(pkl), FORMAT, "too large")


@case
def huge_length_fields():
    expect_reject("str.pt", archive(b"\x80\x02X\xf0\xff\xff\xff.."), FORMAT, "truncated")
    expect_reject("long.pt", archive(b"\x80\x02\x8a\xff" + b"\x01" * 255 + b"."), FORMAT, "64 bits")


def tensor_pickle(key, numel, offset, shape, stride, storage=b"FloatStorage"):
    tup = lambda v: b"(" + b"".join(b"J" + struct.pack("<i", x) for x in v) + b"t"
    return (b"\x80\x02}" + s("w") + b"ctorch._utils\n_rebuild_tensor_v2\n(" +
            b"(" + s("storage") + b"ctorch\n" + storage + b"\n" + s(key) + s("cpu") +
            b"J" + struct.pack("<i", numel) + b"tQ" + b"J" + struct.pack("<i", offset) + tup(shape) + tup(stride) +
            b"\x89ccollections\nOrderedDict\n)Rt" + b"Rs.")


@case
def tensor_bounds_checked():
    data = [("data/0", b"\0" * 64)]
    ok = tensor_pickle("0", 16, 0, (4, 4), (4, 1))
    assert mq.open_error(write("good.pt", archive(ok, data))) == (0, "")
    expect_reject("oob.pt", archive(tensor_pickle("0", 16, 1, (4, 4), (4, 1)), data), FORMAT, "reach element 16")
    expect_reject("oob2.pt", archive(tensor_pickle("0", 16, 0, (4, 4), (5, 1)), data), FORMAT, "reach element")
    expect_reject("neg.pt", archive(tensor_pickle("0", 16, 0, (-4, 4), (4, 1)), data), FORMAT, "negative")
    expect_reject("size.pt", archive(tensor_pickle("0", 17, 0, (4, 4), (4, 1)), data), FORMAT, "holds 64 bytes")
    expect_reject("missing.pt", archive(tensor_pickle("9", 16, 0, (4, 4), (4, 1)), data), FORMAT, "archive/data/9", "missing")
    expect_reject("qint.pt", archive(tensor_pickle("0", 16, 0, (4, 4), (4, 1), b"QInt8Storage"), data),
                  UNSUPPORTED, "QInt8Storage")
    expect_reject("pid.pt", archive(b"\x80\x02(" + s("module") + b"tQ."), FORMAT, "persistent id")


# ---- hostile zip containers --------------------------------------------------------------

GOOD_PKL = tensor_pickle("0", 16, 0, (4, 4), (4, 1))


@case
def path_traversal_names():
    for bad in ["../evil", "archive/../../etc/passwd", "/abs/data.pkl", "a\\..\\b", "C:/x"]:
        blob = build_zip([{"name": "archive/data.pkl", "data": GOOD_PKL}, {"name": bad, "data": b"x"}])
        expect_reject("trav.pt", blob, FORMAT, "unsafe name")


@case
def entries_outside_the_file():
    blob = build_zip([{"name": "archive/data.pkl", "data": GOOD_PKL, "lho": 10**9}])
    expect_reject("outside.pt", blob, FORMAT, "archive/data.pkl", "outside the file")


@case
def zip_bomb_declared_sizes():
    blob = build_zip([{"name": "archive/data.pkl", "data": GOOD_PKL, "flags": 8, "size": 0xFFFFFFF0}])
    expect_reject("bomb.pt", blob, FORMAT, "archive/data.pkl", "reach past")
    z64 = struct.pack("<HHQQ", 1, 16, 1 << 50, 1 << 50)
    blob = build_zip([{"name": "archive/data.pkl", "data": GOOD_PKL, "flags": 8, "size": 0xFFFFFFFF, "extra": z64}])
    expect_reject("bomb64.pt", blob, FORMAT, "reach past")


@case
def overlapping_entries():
    inner_name = b"archive/data/0"
    inner = struct.pack("<IHHHHHIIIHH", 0x04034b50, 20, 0, 0, 0, 0x21, zlib.crc32(b"\0" * 64), 64, 64,
                        len(inner_name), 0) + inner_name + b"\0" * 64
    outer = {"name": "archive/data.pkl", "data": GOOD_PKL + inner}
    hdr = 30 + len("archive/data.pkl")
    blob = build_zip([outer, {"name": inner_name, "data": b"\0" * 64, "local": False,
                              "lho": hdr + len(GOOD_PKL)}])
    expect_reject("overlap.pt", blob, FORMAT, "overlap")


@case
def encrypted_and_compressed_entries():
    blob = build_zip([{"name": "archive/data.pkl", "data": GOOD_PKL, "flags": 1}])
    expect_reject("enc.pt", blob, FORMAT, "encrypted")
    blob = build_zip([{"name": "archive/data.pkl", "data": GOOD_PKL, "method": 8}])
    expect_reject("deflate.pt", blob, FORMAT, "archive/data.pkl", "compressed")


@case
def absurd_counts_and_truncation():
    blob = build_zip([{"name": "archive/data.pkl", "data": GOOD_PKL}], count=60000)
    expect_reject("count.pt", blob, FORMAT, "60000 entries")
    good = archive(GOOD_PKL, [("data/0", b"\0" * 64)])
    for cut in (len(good) - 5, len(good) // 2, 30):
        st, msg = mq.open_error(write("cut.pt", good[:cut]))
        assert st == FORMAT and msg, (cut, st, msg)


@case
def duplicate_and_missing_records():
    blob = build_zip([{"name": "archive/data.pkl", "data": GOOD_PKL}, {"name": "archive/data.pkl", "data": GOOD_PKL}])
    expect_reject("dup.pt", blob, FORMAT, "appears twice")
    blob = build_zip([{"name": "archive/other", "data": b"x"}])
    expect_reject("nopkl.pt", blob, FORMAT, "data.pkl")
    blob = build_zip([{"name": "archive/data.pkl", "data": GOOD_PKL, "crc": 1234}])
    expect_reject("crc.pt", blob, FORMAT, "CRC-32")


@case
def big_endian_refused():
    blob = archive(GOOD_PKL, [("data/0", b"\0" * 64), ("byteorder", b"big")])
    expect_reject("be.pt", blob, UNSUPPORTED, "big-endian")


finish()
