"""The fixture LM and CNN quantized in Python and run through QuantizedLinear /
QuantizedConv2d: the CLI's quality bounds, the CLI's bytes, load() of the CLI's file giving the
same logits, the quantized model's resident size against its stored size, and the original
model unchanged tensor by tensor.

LM perplexity is measured on the first LM_BYTES predicted bytes of val.txt (default 16,384;
the fixtures' own script uses 100,000) against the F32 model on the same bytes:
INT8 (dynamic activations) at most +0.05 %; INT4 g128 (weight-only) at most the perplexity
of the CLI's INT4 file dequantized into the float model (+0.01 % for summation order)."""
import filecmp
import importlib.util
import os

import numpy as np
import torch
from torch import nn

from harness import FIXTURES, TMP, case, finish, mq
from pkg import monoquant

torch.set_num_threads(2)
LM_BYTES = int(os.environ.get("LM_BYTES", "16384"))
CNN_F32 = 0.995556


def load_module(kind, script):
    spec = importlib.util.spec_from_file_location(f"fx_{kind}", os.path.join(FIXTURES, kind, script))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LM = load_module("lm", "eval_lm.py")
CNN = load_module("cnn", "eval_cnn.py")
LM_PATH = os.path.join(FIXTURES, "lm", "lm_fortunes.safetensors")
CNN_PATH = os.path.join(FIXTURES, "cnn", "cnn_digits.safetensors")
VAL = open(os.path.join(FIXTURES, "lm", "val.txt"), "rb").read()


def float_model(ev, path, cls):
    m = cls()
    ev.load_into(m, ev.load_weights(path), path)
    return m.eval()


def ppl(model):
    return LM.eval_ppl(model, VAL, n=LM_BYTES)[0]


def cnn_accuracy(model):
    z = np.load(os.path.join(FIXTURES, "cnn", "digits_test.npz"))
    x, y = CNN.preprocess(z["images"]), torch.from_numpy(z["labels"].astype(np.int64))
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def resident_bytes(model):
    """Bytes the quantized model holds: the C kernel objects plus every torch tensor."""
    total, seen = 0, set()
    for m in model.modules():
        if isinstance(m, (monoquant.nn.QuantizedLinear, monoquant.nn.QuantizedConv2d)):
            total += m.weight_bytes
        for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total


def stored_bytes(path):
    return monoquant.info(path)["bytes"]


LM_MODEL = float_model(LM, LM_PATH, LM.GPT)
LM_SNAP = {k: v.clone() for k, v in LM_MODEL.state_dict().items()}
LM_META = monoquant.info(LM_PATH)["metadata"]
P_F32 = ppl(LM_MODEL)
print(f"# LM f32 perplexity on {LM_BYTES} bytes: {P_F32:.6f}", flush=True)
Q = {}


@case
def lm_int8_perplexity():
    q, rep = monoquant.quantize(LM_MODEL, bits=8, metadata=LM_META)
    Q[8] = q
    n = sum(isinstance(m, monoquant.nn.QuantizedLinear) for m in q.modules())
    assert n == 17, f"{n} QuantizedLinear layers"  # 4 blocks x 4 + lm_head
    assert all(m.act == 1 for m in q.modules() if isinstance(m, monoquant.nn.QuantizedLinear))
    p = ppl(q)
    print(f"# LM int8 dynamic (QuantizedLinear): {p:.6f}", flush=True)
    assert p <= P_F32 * 1.0005, f"ppl {p} > {P_F32 * 1.0005:.6f}"


@case
def lm_int4_g128_perplexity():
    q, rep = monoquant.quantize(LM_MODEL, bits=4, metadata=LM_META)
    Q[4] = q
    cli = os.path.join(TMP, "lm4_cli.safetensors")
    mq("quantize", LM_PATH, "-o", cli, "-q", "--bits", "4")
    deq = os.path.join(TMP, "lm4_cli.dq.safetensors")
    mq("dequantize", cli, "-o", deq, "-q")
    p_cli = ppl(float_model(LM, deq, LM.GPT))
    p = ppl(q)
    print(f"# LM int4 g128 weight-only (QuantizedLinear): {p:.6f}; CLI file dequantized: "
          f"{p_cli:.6f}", flush=True)
    assert p <= p_cli * 1.0001, f"ppl {p} > {p_cli:.6f}"


@case
def lm_same_bytes_as_cli():
    for bits in (8, 4):
        a = os.path.join(TMP, f"lm{bits}_py.safetensors")
        b = os.path.join(TMP, f"lm{bits}_cli.safetensors")
        monoquant.save(Q[bits], a)
        mq("quantize", LM_PATH, "-o", b, "-q", "-f", "--bits", str(bits))
        assert filecmp.cmp(a, b, shallow=False), f"int{bits}: files differ"


@case
def lm_load_gives_same_logits():
    cli = os.path.join(TMP, "lm8_cli.safetensors")
    loaded = monoquant.load(cli, LM.GPT())
    x = torch.from_numpy(np.frombuffer(VAL[:512], dtype=np.uint8).astype(np.int64)).view(4, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x), Q[8](x)), "logits differ"


@case
def lm_resident_size_near_stored_size():
    for bits in (8, 4):
        stored = stored_bytes(os.path.join(TMP, f"lm{bits}_py.safetensors"))
        res = resident_bytes(Q[bits])
        print(f"# LM int{bits}: resident {res:,} bytes, stored {stored:,} ({res / stored:.3f})",
              flush=True)
        assert abs(res - stored) <= 0.10 * stored, f"resident {res} vs stored {stored}"
        for m in Q[bits].modules():
            if isinstance(m, monoquant.nn.QuantizedLinear):
                assert not list(m.parameters()), "a float weight was kept"


@case
def lm_original_unchanged():
    sd = LM_MODEL.state_dict()
    assert sd.keys() == LM_SNAP.keys()
    for k, v in LM_SNAP.items():
        assert torch.equal(sd[k], v) and sd[k].dtype == v.dtype, k
    assert all(type(m) is nn.Linear for n, m in LM_MODEL.named_modules() if n.endswith(("qkv", "fc")))


CNN_MODEL = float_model(CNN, CNN_PATH, CNN.Net)


@case
def cnn_accuracy_and_bytes():
    meta = monoquant.info(CNN_PATH)["metadata"]
    snap = {k: v.clone() for k, v in CNN_MODEL.state_dict().items()}
    for bits in (8, 4):
        q, rep = monoquant.quantize(CNN_MODEL, bits=bits, metadata=meta)
        assert isinstance(q.conv2, monoquant.nn.QuantizedConv2d)
        acc = cnn_accuracy(q)
        print(f"# CNN int{bits} (QuantizedConv2d/Linear): accuracy {acc:.6f}", flush=True)
        assert acc >= CNN_F32 - 1.5 / 450, f"int{bits}: accuracy {acc}"
        a = os.path.join(TMP, f"cnn{bits}_py.safetensors")
        b = os.path.join(TMP, f"cnn{bits}_cli.safetensors")
        monoquant.save(q, a)
        mq("quantize", CNN_PATH, "-o", b, "-q", "--bits", str(bits))
        assert filecmp.cmp(a, b, shallow=False), f"int{bits}: files differ"
        loaded = monoquant.load(b, CNN.Net())
        x = torch.randn(3, 1, 8, 8)
        with torch.no_grad():
            assert torch.equal(loaded(x), q(x))
    sd = CNN_MODEL.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in snap.items())


finish()
