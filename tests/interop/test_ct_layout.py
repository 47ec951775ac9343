"""The compressed-tensors layout, checked with an independent decoder (ct_decode.py, written
from the specification in docs/FORMAT.md): for every scheme monoquant writes, the decoded
weights equal `monoquant dequantize` of the same file (and of its native twin, which holds
the same codes), the stored quantization_config names every quantized Linear in a group
and every unquantized one in `ignore`, and the tensors are exactly those the scheme defines
(no zero point for symmetric schemes, input parameters only for static activations)."""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import FIXTURES, TMP, case, finish, mq  # noqa: E402
import ct_decode  # noqa: E402

torch.set_num_threads(2)
LM = os.path.join(FIXTURES, "lm", "lm_fortunes.safetensors")
LM_BF16 = os.path.join(FIXTURES, "lm", "lm_fortunes.bf16.safetensors")



def quantize(tag, model, *opts):
    """Quantizes into TMP/<tag>.safetensors; returns (path, --json report)."""
    out = os.path.join(TMP, tag + ".safetensors")
    _, rep, _ = mq("quantize", model, "--json", "-o", out, *opts)
    return out, json.loads(rep)


def dequantized(path):
    d = path + ".deq.safetensors"
    mq("-q", "dequantize", path, "-o", d)
    return ct_decode.read_safetensors(d)[0]


def linear_layers(rep):
    """(quantized layers, unquantized Linear layers) from a --json report."""
    q, kept = set(), set()
    for t in rep["tensors"]:
        if t["kind"] != "linear" or not t["name"].endswith(".weight"):
            continue
        (q if t["action"] == "quantized" else kept).add(t["name"][:-len(".weight")])
    return q, kept


def check(tag, model, dtype, expect, *opts):
    """quantize -> decode -> compare; `expect` = (format, bits, symmetric, strategy, group_size,
    activations) of the single config group."""
    path, rep = quantize(tag, model, *opts)
    tensors, meta, qcfg = ct_decode.read_model(path)
    assert qcfg["quant_method"] == "compressed-tensors" and qcfg["quantization_status"] == "compressed"
    assert qcfg["kv_cache_scheme"] is None
    decoded, layers = ct_decode.decode(tensors, qcfg, dtype)
    q, kept = linear_layers(rep)
    assert set(layers) == q and q, (sorted(layers), sorted(q))
    assert set(qcfg["ignore"]) == kept, (qcfg["ignore"], kept)
    fmt, bits, sym, strategy, gs, act = expect
    (g,) = qcfg["config_groups"].values()
    w = g["weights"]
    assert g["targets"] == ["Linear"] and g["format"] == fmt == qcfg["format"], g
    assert (w["num_bits"], w["symmetric"], w["strategy"], w["group_size"], w["type"]) == \
        (bits, sym, strategy, gs, "int"), w
    ia = g["input_activations"]
    if act is None:
        assert ia is None, ia
    else:
        assert ia["num_bits"] == 8 and ia["type"] == "int" and ia["dynamic"] == (act == "dynamic"), ia
        assert ia["strategy"] == ("token" if act == "dynamic" else "tensor"), ia
    for layer in q:
        has_zp = any(k.startswith(layer + ".weight_zero_point") for k in tensors)
        assert has_zp == (not sym), f"{layer}: zero point present: {has_zp}"
        if act != "static":
            assert layer + ".input_scale" not in tensors and layer + ".input_zero_point" not in tensors
    # the error figures are those of the values the stored scales give
    exact, _ = ct_decode.decode(tensors, qcfg, torch.float64)
    src = ct_decode.read_safetensors(model)[0]
    for r in rep["tensors"]:
        if r["action"] == "quantized":
            a = src[r["name"]].double()
            sqnr = 10 * torch.log10((a * a).sum() / ((a - exact[r["name"]]) ** 2).sum()).item()
            assert abs(sqnr - r["sqnr_db"]) < 1e-3, (tag, r["name"], sqnr, r["sqnr_db"])
    # the same values as monoquant's own reader ...
    ref = dequantized(path)
    for k, v in ref.items():
        assert torch.equal(decoded[k], v), f"{tag}: {k} differs from monoquant dequantize"
    assert set(ref) == {k for k in decoded if not k.endswith((".input_scale", ".input_zero_point"))}
    # ... and as the native file with the same codes (F32 scales only: native stores F32)
    if "--scale-dtype" not in opts and dtype == torch.float32:
        nat, _ = quantize(tag + ".native", model, "--format", "native", *opts)
        ref = dequantized(nat)
        for k in q:
            assert torch.equal(decoded[k + ".weight"], ref[k + ".weight"]), f"{tag}: {k} vs native"
    return path, tensors, rep


W4 = ("pack-quantized", 4)


@case
def w4a16_sym_g128():
    check("w4s128", LM, torch.float32, (*W4, True, "group", 128, None), "--bits", "4")


@case
def w4a16_sym_g64():
    check("w4s64", LM, torch.float32, (*W4, True, "group", 64, None), "--bits", "4", "--group-size", "64")


@case
def w4a16_sym_g32():
    check("w4s32", LM, torch.float32, (*W4, True, "group", 32, None), "--bits", "4", "--group-size", "32")


@case
def w4a16_sym_channel():
    check("w4sch", LM, torch.float32, (*W4, True, "channel", None, None), "--bits", "4",
          "--granularity", "channel")


@case
def w4a16_asym_g128():
    check("w4a128", LM, torch.float32, (*W4, False, "group", 128, None), "--bits", "4", "--scheme", "asym")


@case
def w4a16_asym_g64():
    check("w4a64", LM, torch.float32, (*W4, False, "group", 64, None), "--bits", "4", "--scheme", "asym",
          "--group-size", "64")


@case
def w4a16_asym_g32():
    check("w4a32", LM, torch.float32, (*W4, False, "group", 32, None), "--bits", "4", "--scheme", "asym",
          "--group-size", "32")


@case
def w4a16_asym_channel():
    check("w4ach", LM, torch.float32, (*W4, False, "channel", None, None), "--bits", "4", "--scheme",
          "asym", "--granularity", "channel")


@case
def uint4_maps_onto_int4_asym():
    """uint4 (asymmetric, [0, 15]) is written as int4 with the zero point shifted: same values."""
    check("w4u", LM, torch.float32, (*W4, False, "group", 128, None), "--type", "uint4")


@case
def w8a16_pack_quantized():
    path, t, _ = check("w8a16", LM, torch.float32, ("pack-quantized", 8, True, "channel", None, None),
                       "--bits", "8", "--weights-only")
    p = t["blocks.0.mlp.fc.weight_packed"]
    assert p.dtype == torch.int32 and list(p.shape) == [1024, 64], p.shape


@case
def w8a16_asym_pack_quantized():
    path, t, _ = check("w8a16a", LM, torch.float32, ("pack-quantized", 8, False, "channel", None, None),
                       "--bits", "8", "--scheme", "asym", "--weights-only")
    z = t["blocks.0.mlp.fc.weight_zero_point"]
    assert z.dtype == torch.int32 and list(z.shape) == [256, 1], z.shape


@case
def uint8_maps_onto_int8_asym_weight_only():
    """uint8 is asymmetric: engines run such weights weight-only, so auto picks W8A16."""
    check("w8u", LM, torch.float32, ("pack-quantized", 8, False, "channel", None, None), "--type", "uint8")


@case
def w8a8_dynamic():
    path, t, _ = check("w8dyn", LM, torch.float32, ("int-quantized", 8, True, "channel", None, "dynamic"),
                       "--bits", "8")
    w = t["blocks.0.mlp.fc.weight"]
    s = t["blocks.0.mlp.fc.weight_scale"]
    assert w.dtype == torch.int8 and list(s.shape) == [1024, 1], (w.dtype, s.shape)


@case
def w8a8_dynamic_per_tensor():
    _, t, _ = check("w8dynt", LM, torch.float32, ("int-quantized", 8, True, "tensor", None, "dynamic"),
                    "--bits", "8", "--granularity", "tensor")
    assert list(t["blocks.0.mlp.fc.weight_scale"].shape) == [1]


def lm_stats(tag, *opts):
    """Calibration statistics of the LM's Linear layers from random inputs."""
    g = torch.Generator().manual_seed(0)
    acts = {}
    for b in range(4):
        for layer, k in (("attn.qkv", 256), ("attn.proj", 256), ("mlp.fc", 256), ("mlp.proj", 1024)):
            acts[f"blocks.{b}.{layer}"] = torch.randn(64, k, generator=g) + 0.5
    a = os.path.join(TMP, tag + ".acts.safetensors")
    ct_decode.write_safetensors(a, acts)
    s = os.path.join(TMP, tag + ".stats.safetensors")
    mq("-q", "calibrate", "--model", LM, "--activations", a, "-o", s, *opts)
    return ct_decode.read_safetensors(s)[0], s


@case
def w8a8_static_asymmetric_inputs():
    """uint8 activations (the calibration default) are stored as int8: zero point - 128."""
    stats, s = lm_stats("asym")
    _, t, _ = check("w8st", LM, torch.float32, ("int-quantized", 8, True, "channel", None, "static"),
                    "--bits", "8", "--calibration", s, "--search", "minmax")
    for layer in ("blocks.0.attn.qkv", "blocks.3.mlp.proj"):
        zp = t[layer + ".input_zero_point"]
        assert zp.dtype == torch.int8 and list(zp.shape) == [1], zp
        assert int(zp[0]) == int(stats[layer + ".input_zero_point"][0]) - 128, (zp, stats[layer + ".input_zero_point"])
        assert torch.equal(t[layer + ".input_scale"], stats[layer + ".input_scale"].float())


@case
def w8a8_static_symmetric_inputs():
    """Symmetric activations: input_scale only, no input_zero_point."""
    stats, s = lm_stats("sym", "--scheme", "sym", "--dtype", "int8")
    _, t, _ = check("w8sts", LM, torch.float32, ("int-quantized", 8, True, "channel", None, "static"),
                    "--bits", "8", "--calibration", s, "--search", "minmax")
    assert not any(k.endswith(".input_zero_point") for k in t)
    assert torch.equal(t["blocks.1.mlp.fc.input_scale"], stats["blocks.1.mlp.fc.input_scale"].float())


@case
def bf16_model_bf16_scales():
    _, t, _ = check("bf16w4", LM_BF16, torch.bfloat16, (*W4, True, "group", 128, None), "--bits", "4")
    assert t["blocks.0.mlp.fc.weight_scale"].dtype == torch.bfloat16


@case
def bf16_model_w8a16():
    check("bf16w8a16", LM_BF16, torch.bfloat16, ("pack-quantized", 8, True, "channel", None, None),
          "--bits", "8", "--weights-only")


@case
def bf16_model_w8a8():
    _, t, _ = check("bf16w8a8", LM_BF16, torch.bfloat16, ("int-quantized", 8, True, "channel", None, "dynamic"),
                    "--bits", "8")
    assert t["blocks.0.mlp.fc.weight_scale"].dtype == torch.bfloat16


@case
def f16_scales():
    """--scale-dtype f16: F16 scales; check() compares the reported SQNR with the decoded one."""
    _, t, _ = check("f16scales", LM, torch.float32, (*W4, True, "group", 128, None), "--bits", "4",
                    "--scale-dtype", "f16")
    assert t["blocks.0.mlp.fc.weight_scale"].dtype == torch.float16


@case
def refusals_name_the_layer():
    out = os.path.join(TMP, "refused.safetensors")
    rc, _, err = mq("quantize", LM, "--bits", "4", "--group-size", "96", "-o", out, check_rc=None)
    assert rc == 2 and "layer 'blocks.0.attn.qkv'" in err and "does not divide its 256" in err, err
    assert "--format native" in err and not os.path.exists(out), err
    rc, _, err = mq("quantize", LM, "--bits", "4", "--granularity", "tensor", "-o", out, check_rc=None)
    assert rc == 2 and "per-tensor weight-only" in err, err
    rc, _, err = mq("quantize", LM, "--bits", "4", "--activations", "dynamic", "-o", out, check_rc=None)
    assert rc == 2 and "4-bit weights with 8-bit activations" in err, err
    rc, _, err = mq("quantize", LM, "--bits", "8", "--scheme", "asym", "--activations", "dynamic", "-o",
                    out, check_rc=None)
    assert rc == 2 and "asymmetric 8-bit weights" in err, err
    rc, _, err = mq("quantize", LM, "--bits", "8", "--activations", "static", "-o", out, check_rc=None)
    assert rc == 2 and "static activations need" in err, err
    # the native file takes what engines cannot load
    mq("-q", "quantize", LM, "--bits", "4", "--group-size", "96", "--format", "native", "-o", out)


finish()
