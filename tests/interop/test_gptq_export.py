"""GPTQ output (`quantize --format gptq`): a Hugging Face folder in, a GPTQ folder out that
GPTQ loaders read: qweight / qzeros / scales / g_idx laid out as the independent decoder of
foreign_formats.py expects, quantize_config.json and config.json's quantization_config as
transformers / GPTQModel / vLLM parse them; decoded, it equals `monoquant dequantize` and the
native layout's values with the same F16 scales."""
import json
import os
import shutil

import torch

import foreign_formats as ff
from harness import FIXTURES, TMP, case, finish, mq

LM16 = os.path.join(FIXTURES, "lm", "lm_fortunes.bf16.safetensors")
SRC = os.path.join(TMP, "lm_folder")
os.makedirs(SRC)
shutil.copy(LM16, os.path.join(SRC, "model.safetensors"))
with open(os.path.join(SRC, "config.json"), "w") as f:
    json.dump({"architectures": ["TinyLM"], "model_type": "tinylm", "torch_dtype": "bfloat16"}, f)
with open(os.path.join(SRC, "tokenizer.json"), "w") as f:
    f.write("{}")
ORIG, _ = ff.load_safetensors(LM16)


def export(tag, *opts):
    out = os.path.join(TMP, tag)
    mq("quantize", SRC, "-o", out, "--format", "gptq", "-q", *opts)
    return out


def tensors(folder):
    t = {}
    for fn in sorted(os.listdir(folder)):
        if fn.endswith(".safetensors"):
            t.update(ff.load_safetensors(os.path.join(folder, fn))[0])
    return t




SYM = export("gptq4", "--bits", "4")


@case
def gptq_v1_config_files():
    qc = json.load(open(os.path.join(SYM, "quantize_config.json")))
    assert qc["quant_method"] == "gptq" and qc["bits"] == 4 and qc["group_size"] == 128, qc
    assert qc["desc_act"] is False and qc["sym"] is True and qc["checkpoint_format"] == "gptq", qc
    cfg = json.load(open(os.path.join(SYM, "config.json")))
    assert cfg["quantization_config"] == qc, cfg["quantization_config"]
    assert cfg["torch_dtype"] == "bfloat16" and cfg["architectures"] == ["TinyLM"]
    assert open(os.path.join(SYM, "tokenizer.json")).read() == "{}"


@case
def gptq_v1_tensor_layout():
    t = tensors(SYM)
    w = ORIG["blocks.0.attn.qkv.weight"]
    n, k = w.shape
    p = "blocks.0.attn.qkv"
    assert t[p + ".qweight"].dtype == torch.int32 and list(t[p + ".qweight"].shape) == [k // 8, n]
    assert t[p + ".qzeros"].dtype == torch.int32 and list(t[p + ".qzeros"].shape) == [k // 128, n // 8]
    assert t[p + ".scales"].dtype == torch.float16 and list(t[p + ".scales"].shape) == [k // 128, n]
    assert t[p + ".g_idx"].dtype == torch.int32 and torch.equal(
        t[p + ".g_idx"], (torch.arange(k) // 128).to(torch.int32))
    # symmetric v1: every zero point is 8, stored as 7
    assert torch.equal(t[p + ".qzeros"], torch.full_like(t[p + ".qzeros"], 0x77777777))
    assert p + ".weight" not in t and "tok_emb.weight" in t  # embeddings stay as they are


@case
def gptq_v1_decodes_like_monoquant_dequantize():
    ref = ff.gptq_decode(SYM, torch.bfloat16)
    ff.assert_same(ff.dequantized(SYM, "gptq4_dq"), ref)
    a = ref["blocks.0.attn.qkv.weight"].float()
    b = ORIG["blocks.0.attn.qkv.weight"].float()
    assert ((a - b).norm() / b.norm()).item() < 0.15


@case
def gptq_equals_compressed_tensors_with_f16_scales():
    nat = os.path.join(TMP, "ct_f16.safetensors")
    mq("quantize", LM16, "-o", nat, "--format", "compressed-tensors", "--bits", "4",
       "--scale-dtype", "f16", "-q")
    ours = ff.dequantized(SYM, "gptq4_dq2")
    theirs = ff.dequantized(nat, "ct_f16_dq")
    for k, v in ours.items():
        assert torch.equal(v, theirs[k]), k


@case
def gptq_asymmetric_is_v2():
    d = export("gptq4a", "--type", "uint4", "--group-size", "64")
    qc = json.load(open(os.path.join(d, "quantize_config.json")))
    assert qc["sym"] is False and qc["checkpoint_format"] == "gptq_v2" and qc["group_size"] == 64, qc
    ff.assert_same(ff.dequantized(d, "gptq4a_dq"), ff.gptq_decode(d, torch.bfloat16))
    mq("validate", d)


@case
def gptq_signed_and_unsigned_types_read_back_alike():
    # GPTQ stores unsigned values with zero points whatever type was asked for, and the
    # metadata keeps the type asked for: each opens, validates and decodes to the same values
    for bits, opts in (("4", ("--group-size", "64")),
                       ("8", ("--granularity", "channel", "--activations", "none"))):
        for scheme in ("sym", "asym"):
            decoded = []
            for t in ("int" + bits, "uint" + bits):
                tag = "gptq_%s_%s" % (t, scheme)
                d = export(tag, "--type", t, "--scheme", scheme, *opts)
                mq("validate", d)
                dq = ff.dequantized(d, tag + "_dq")
                ff.assert_same(dq, ff.gptq_decode(d, torch.bfloat16))
                decoded.append(dq)
            ff.assert_same(decoded[0], decoded[1])


@case
def gptq_8bit_per_channel():
    d = export("gptq8", "--bits", "8", "--granularity", "channel", "--activations", "none")
    qc = json.load(open(os.path.join(d, "quantize_config.json")))
    assert qc["bits"] == 8 and qc["group_size"] == -1, qc
    ff.assert_same(ff.dequantized(d, "gptq8_dq"), ff.gptq_decode(d, torch.bfloat16))


@case
def gptq_refuses_what_its_loaders_cannot_load():
    rc, out, err = mq("quantize", SRC, "-o", os.path.join(TMP, "bad"), "--format", "gptq",
                      "--bits", "4", "--group-size", "96", check_rc=None)
    assert rc != 0 and "group size" in err and "divide" in err, (rc, err)
    assert not os.path.exists(os.path.join(TMP, "bad"))


finish()
