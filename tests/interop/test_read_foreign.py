"""Reading other tools' checkpoints: folders built the way llm-compressor (compressed-tensors)
and AutoGPTQ/GPTQModel write them, by the independent encoder of foreign_formats.py, open in
monoquant: `dequantize` gives exactly what the reference decoder gives, `validate`, `info` and
`compare` work, and broken layouts are refused with a message naming the tensor."""
import json
import os
import shutil

import torch

import foreign_formats as ff
from harness import TMP, case, finish, mq

torch.manual_seed(0)
G = torch.Generator().manual_seed(1)


def rnd(*shape):
    return torch.randn(*shape, generator=G) * 0.05


ORIG = {
    "model.embed_tokens.weight": rnd(64, 48),
    "model.layers.0.self_attn.q_proj.weight": rnd(48, 48),
    "model.layers.0.self_attn.k_proj.weight": rnd(20, 48),
    "model.layers.0.self_attn.v_proj.weight": rnd(20, 48),
    "model.layers.0.self_attn.o_proj.weight": rnd(48, 48),
    "model.layers.0.mlp.gate_proj.weight": rnd(40, 48),
    "model.layers.0.mlp.up_proj.weight": rnd(40, 48),
    "model.layers.0.mlp.down_proj.weight": rnd(48, 40),
    "model.layers.0.input_layernorm.weight": torch.ones(48) + rnd(48),
    "model.layers.1.mlp.gate_proj.weight": rnd(36, 36),
    "model.layers.1.mlp.up_proj.weight": rnd(24, 36),
    "model.layers.1.mlp.down_proj.weight": rnd(36, 24),
    "model.norm.weight": torch.ones(48),
    "lm_head.weight": rnd(64, 48),
}
ORIG = {k: v.to(torch.bfloat16) for k, v in ORIG.items()}
PLAIN = ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
         "model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"]
BF16 = torch.bfloat16

# (module, bits, group, sym, scale dtype, format, extra)
CT_LAYERS = [
    ("model.layers.0.self_attn.q_proj", 4, 16, True, BF16, "pack-quantized", {}),
    ("model.layers.0.self_attn.k_proj", 4, 16, False, BF16, "pack-quantized", {}),
    ("model.layers.0.self_attn.v_proj", 4, None, False, BF16, "pack-quantized", {}),
    ("model.layers.0.self_attn.o_proj", 4, 16, True, BF16, "pack-quantized", {"actorder": True}),
    ("model.layers.0.mlp.gate_proj", 8, None, True, torch.float16, "pack-quantized", {}),
    ("model.layers.0.mlp.up_proj", 8, None, True, BF16, "int-quantized", {"static": "sym"}),
    ("model.layers.0.mlp.down_proj", 8, None, False, torch.float32, "int-quantized",
     {"static": "asym"}),
    ("model.layers.1.mlp.gate_proj", 4, 12, False, BF16, "pack-quantized", {}),
    ("model.layers.1.mlp.up_proj", 4, None, False, BF16, "pack-quantized", {"tensor": True}),
]


def ct_checkpoint():
    tensors, groups = {}, {}
    for i, (mod, bits, group, sym, sdt, fmt, extra) in enumerate(CT_LAYERS):
        w = ORIG[mod + ".weight"].float()
        tensors.update(ff.ct_layer(mod, w, bits, group, sym, sdt, fmt,
                                   actorder=extra.get("actorder", False),
                                   tensor=extra.get("tensor", False)))
        strategy = "tensor" if extra.get("tensor") else "group" if group else "channel"
        g = {"targets": [mod if i == 3 else "re:.*" + mod.split("model.")[1].replace(".", r"\.") + "$"],
             "weights": ff.ct_args(bits, group, sym, strategy, extra.get("actorder", False)),
             "input_activations": None, "output_activations": None, "format": fmt}
        if "static" in extra:
            a_sym = extra["static"] == "sym"
            g["input_activations"] = ff.ct_args(8, None, a_sym, "tensor")
            tensors[mod + ".input_scale"] = torch.tensor([0.02], dtype=sdt)
            if not a_sym:
                tensors[mod + ".input_zero_point"] = torch.tensor([-3], dtype=torch.int8)
        groups[f"group_{i}"] = g
    groups["group_0"]["targets"].append("Linear")  # a class name: the least specific target
    for name in PLAIN:
        tensors[name] = ORIG[name]
    order = sorted(tensors)  # llm-compressor's shards follow the module order; any order works
    qcfg = {"quant_method": "compressed-tensors", "format": "mixed-precision",
            "quantization_status": "compressed", "config_groups": groups,
            "ignore": ["lm_head", r"re:.*layers\.1\.mlp\.down_proj$"],
            "kv_cache_scheme": None, "global_compression_ratio": None, "sparsity_config": {},
            "version": "0.11.0"}
    return {k: tensors[k] for k in order}, qcfg


CT_TENSORS, CT_QCFG = ct_checkpoint()
HF_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 48,
             "torch_dtype": "bfloat16", "quantization_config": CT_QCFG}
CT_DIR = os.path.join(TMP, "ct_model")
ff.save_folder(CT_DIR, CT_TENSORS, HF_CONFIG, shards=2,
               extra_files={"tokenizer.json": "{}", "generation_config.json": "{}"})
ORIG_FILE = os.path.join(TMP, "orig.safetensors")
ff.save_safetensors(ORIG_FILE, ORIG)




@case
def ct_folder_dequantizes_like_the_reference_decoder():
    ff.assert_same(ff.dequantized(CT_DIR, "ct_dq"), ff.ct_decode(CT_DIR, BF16))


@case
def ct_decoded_values_approximate_the_original():
    ours = ff.dequantized(CT_DIR, "ct_dq2")
    for mod, bits, *_ in CT_LAYERS:
        a, b = ours[mod + ".weight"].float(), ORIG[mod + ".weight"].float()
        rel = ((a - b).norm() / b.norm()).item()
        assert rel < (0.2 if bits == 4 else 0.02), f"{mod}: relative error {rel}"


@case
def ct_folder_validates():
    rc, out, err = mq("validate", CT_DIR, "--reference", ORIG_FILE, "--json")
    doc = json.loads(out)
    assert "model.layers.0.self_attn.k_proj.weight" in out, out[:500]
    return doc is not None


@case
def ct_folder_compares():
    rc, out, err = mq("compare", ORIG_FILE, CT_DIR)
    assert "model.layers.0.mlp.gate_proj.weight" in out, out[:800]


@case
def ct_info_shows_the_logical_view():
    rc, out, err = mq("info", CT_DIR, "--json")
    doc = json.loads(out)
    layers = {t["name"]: t for t in doc["logical"]["tensors"]}
    assert doc["logical"]["quantized_tensor_count"] == len(CT_LAYERS), doc["logical"]
    assert doc["logical"]["parameter_count"] == sum(v.numel() for v in ORIG.values())
    k = layers["model.layers.0.self_attn.k_proj.weight"]
    assert k["scheme"] == "int4 asymmetric group 16", k
    assert k["storage"] == "compressed-tensors pack-quantized", k
    assert k["shape"] == [20, 48], k
    assert layers["model.layers.0.mlp.up_proj.weight"]["storage"] == "compressed-tensors int-quantized"
    assert layers["model.layers.0.mlp.gate_proj.weight"]["scheme"] == "int8 symmetric channel"
    assert layers["model.layers.1.mlp.up_proj.weight"]["scheme"] == "int4 asymmetric tensor"
    assert layers["lm_head.weight"]["scheme"] == "none", layers["lm_head.weight"]
    assert not any(n.endswith(("_packed", "_scale", "_shape", "_zero_point", "_g_idx"))
                   for n in layers), sorted(layers)
    rc, text, err = mq("info", CT_DIR)
    assert "int4 asymmetric group 16" in text and "weight_packed" not in text.split("logical")[-1]


@case
def ct_single_file_with_config_in_metadata():
    path = os.path.join(TMP, "ct_single.safetensors")
    ff.save_safetensors(path, CT_TENSORS, {"format": "pt",
                                           "quantization_config": json.dumps(CT_QCFG)})
    ours = ff.dequantized(path, "ct_single_dq")
    ref = ff.ct_decode(CT_DIR, BF16)
    # without config.json the output dtype of a quantized tensor is its scale's dtype
    for mod, bits, group, sym, sdt, *_ in CT_LAYERS:
        ref[mod + ".weight"] = ff.ct_decode(CT_DIR, sdt)[mod + ".weight"]
    ff.assert_same(ours, ref)


def broken_copy(tag, edit):
    d = os.path.join(TMP, tag)
    t = dict(CT_TENSORS)
    edit(t)
    ff.save_folder(d, t, HF_CONFIG)
    return d


@case
def ct_packed_zero_point_of_the_wrong_shape_is_refused():
    def edit(t):
        t["model.layers.0.self_attn.k_proj.weight_zero_point"] = torch.zeros(2, 3, dtype=torch.int32)
    d = broken_copy("ct_bad_zp", edit)
    rc, out, err = mq("validate", d, check_rc=None)
    assert rc == 4 and "k_proj.weight_zero_point" in err and "output dim" in err, (rc, err)


@case
def ct_g_idx_out_of_range_fails_validation():
    def edit(t):
        g = t["model.layers.0.self_attn.o_proj.weight_g_idx"].clone()
        g[5] = 99
        t["model.layers.0.self_attn.o_proj.weight_g_idx"] = g
    d = broken_copy("ct_bad_gidx", edit)
    rc, out, err = mq("validate", d, check_rc=None)
    assert rc == 4 and "g_idx[5] is 99" in (out + err), (rc, out[-400:], err)


@case
def ct_asymmetric_config_without_zero_point_is_refused():
    def edit(t):
        del t["model.layers.0.self_attn.k_proj.weight_zero_point"]
    d = broken_copy("ct_no_zp", edit)
    rc, out, err = mq("info", d, check_rc=None)
    rc2, out2, err2 = mq("dequantize", d, "-o", os.path.join(TMP, "x.safetensors"), check_rc=None)
    assert rc2 == 4 and "k_proj.weight" in err2 and "asymmetric" in err2, (rc2, err2)


# ---- GPTQ -------------------------------------------------------------------------------

GPTQ_LAYERS = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
               "model.layers.0.mlp.up_proj"]


def gptq_folder(tag, sym, v2=False, act_order=(), edit=None, bits=4, group=16):
    d = os.path.join(TMP, tag)
    t = {}
    for mod in GPTQ_LAYERS:
        w = ORIG[mod + ".weight"].float()
        t.update(ff.gptq_layer(mod, w, bits, group, sym, v2=v2, act_order=mod in act_order,
                               bias=torch.randn(w.shape[0], generator=G) * 0.01))
    for name in PLAIN:
        t[name] = ORIG[name].to(torch.float16)
    if edit:
        edit(t)
    qc = ff.gptq_quantize_config(bits, group, sym, v2=v2, desc_act=bool(act_order))
    cfg = {"architectures": ["LlamaForCausalLM"], "torch_dtype": "float16",
           "quantization_config": qc}
    ff.save_folder(d, t, cfg, extra_files={"quantize_config.json": json.dumps(qc)})
    return d


@case
def gptq_v1_symmetric_dequantizes_like_the_reference_decoder():
    d = gptq_folder("gptq_sym", True)
    ff.assert_same(ff.dequantized(d, "gptq_sym_dq"), ff.gptq_decode(d, torch.float16))
    mq("validate", d)
    rc, out, err = mq("compare", ORIG_FILE, d)
    assert "model.layers.0.mlp.up_proj.weight" in out


@case
def gptq_v1_act_order_g_idx():
    d = gptq_folder("gptq_act", True, act_order=GPTQ_LAYERS[:2])
    ours = ff.dequantized(d, "gptq_act_dq")
    ff.assert_same(ours, ff.gptq_decode(d, torch.float16))
    a = ours["model.layers.0.mlp.down_proj.weight"].float()
    b = ORIG["model.layers.0.mlp.down_proj.weight"].float()
    assert ((a - b).norm() / b.norm()).item() < 0.2
    mq("validate", d)


@case
def gptq_8bit():
    d = gptq_folder("gptq_8", True, bits=8, group=8)
    ff.assert_same(ff.dequantized(d, "gptq_8_dq"), ff.gptq_decode(d, torch.float16))


@case
def gptq_v2_asymmetric():
    d = gptq_folder("gptq_v2", False, v2=True)
    ff.assert_same(ff.dequantized(d, "gptq_v2_dq"), ff.gptq_decode(d, torch.float16))
    rc, out, err = mq("info", d, "--json")
    layers = {t["name"]: t for t in json.loads(out)["logical"]["tensors"]}
    q = layers["model.layers.0.self_attn.q_proj.weight"]
    assert q["storage"] == "gptq_v2" and q["scheme"] == "uint4 asymmetric group 16", q


@case
def gptq_v1_zero_point_underflow_fails_validation():
    def edit(t):  # a stored 15 (all bits set) in v1 means zero point 16: 0 - 1 wrapped around
        qz = t["model.layers.0.mlp.up_proj.qzeros"].clone()
        qz[0, 0] = qz[0, 0] | 0xF
        t["model.layers.0.mlp.up_proj.qzeros"] = qz
    d = gptq_folder("gptq_under", False, edit=edit)
    rc, out, err = mq("validate", d, check_rc=None)
    assert rc == 4 and "gptq_v2" in (out + err), (rc, out[-300:], err)


@case
def gptq_without_config_is_refused():
    d = gptq_folder("gptq_nocfg", True)
    os.remove(os.path.join(d, "quantize_config.json"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"torch_dtype": "float16"}, f)
    # g_idx gives the input width, so the bit width follows; remove it to make it ambiguous
    t, _ = ff.load_safetensors(os.path.join(d, "model.safetensors"))
    t = {k: v for k, v in t.items() if not k.endswith(".g_idx")}
    ff.save_safetensors(os.path.join(d, "model.safetensors"), t)
    rc, out, err = mq("dequantize", d, "-o", os.path.join(TMP, "y.safetensors"), check_rc=None)
    assert rc == 4 and "bit width" in err, (rc, err)


@case
def foreign_layers_run_through_the_kernels():
    rc, out, err = mq("validate", CT_DIR, "--run")
    lines = {l.split()[0]: l for l in out.splitlines() if l.startswith("  model.")}
    assert lines["model.layers.0.self_attn.k_proj"].rstrip().endswith("ok"), out
    assert lines["model.layers.0.mlp.gate_proj"].rstrip().endswith("ok"), out
    assert "activation order" in lines["model.layers.0.self_attn.o_proj"], out
    d = gptq_folder("gptq_run", True, act_order=GPTQ_LAYERS[:1])
    rc, out, err = mq("validate", d, "--run", "--reference", ORIG_FILE)
    lines = {l.split()[0]: l for l in out.splitlines() if l.startswith("  model.")}
    assert lines["model.layers.0.mlp.up_proj"].rstrip().endswith("ok"), out
    assert "activation order" in lines["model.layers.0.self_attn.q_proj"], out


@case
def hostile_layouts_are_refused_cleanly():
    """Broken shapes, dtypes and values: every command ends with a validation or format error
    (exit 4 or 5) naming a tensor, never a crash."""
    K = "model.layers.0.self_attn.k_proj."
    O = "model.layers.0.self_attn.o_proj."
    edits = {
        "shape_huge": lambda t: t.__setitem__(K + "weight_shape", torch.tensor([20, 2 ** 62])),
        "shape_negative": lambda t: t.__setitem__(K + "weight_shape", torch.tensor([-20, 48])),
        "shape_zero": lambda t: t.__setitem__(K + "weight_shape", torch.tensor([0, 48])),
        "shape_float": lambda t: t.__setitem__(K + "weight_shape", torch.tensor([20.0, 48.0])),
        "scale_rows": lambda t: t.__setitem__(K + "weight_scale", torch.ones(21, 3, dtype=BF16)),
        "scale_empty": lambda t: t.__setitem__(K + "weight_scale", torch.ones(0, dtype=BF16)),
        "scale_int": lambda t: t.__setitem__(K + "weight_scale", torch.ones(20, 3, dtype=torch.int32)),
        "zp_short": lambda t: t.__setitem__(K + "weight_zero_point", torch.zeros(1, 3, dtype=torch.int32)),
        "packed_short": lambda t: t.__setitem__(K + "weight_packed", torch.zeros(20, 5, dtype=torch.int32)),
        "gidx_negative": lambda t: t.__setitem__(O + "weight_g_idx", -torch.ones(48, dtype=torch.int32)),
        "gidx_short": lambda t: t.__setitem__(O + "weight_g_idx", torch.zeros(47, dtype=torch.int32)),
        "gidx_i64_big": lambda t: t.__setitem__(O + "weight_g_idx", torch.full((48,), 2 ** 40)),
        "scale_nan": lambda t: t.__setitem__(K + "weight_scale", torch.full((20, 3), float("nan"), dtype=BF16)),
    }
    for tag, edit in edits.items():
        d = broken_copy("hostile_" + tag, edit)
        for cmd in (["validate", d], ["info", d], ["dequantize", d, "-o", os.path.join(d, "o.safetensors")]):
            rc, out, err = mq(*cmd, check_rc=None)
            assert rc in (0, 4, 5) and (rc == 0) == (cmd[0] == "info"), (tag, cmd[0], rc, err[-300:])
            if rc:
                assert "tensor '" in err + out or "g_idx" in err + out, (tag, err)
    g_edits = {
        "qweight_rows": lambda t: t.__setitem__("model.layers.0.mlp.up_proj.qweight", torch.zeros(5, 40, dtype=torch.int32)),
        "qzeros_shape": lambda t: t.__setitem__("model.layers.0.mlp.up_proj.qzeros", torch.zeros(3, 4, dtype=torch.int32)),
        "scales_1d": lambda t: t.__setitem__("model.layers.0.mlp.up_proj.scales", torch.ones(40, dtype=torch.float16)),
        "gidx_long": lambda t: t.__setitem__("model.layers.0.mlp.up_proj.g_idx", torch.zeros(4096, dtype=torch.int32)),
        "gidx_range": lambda t: t.__setitem__("model.layers.0.mlp.up_proj.g_idx", torch.full((48,), 7, dtype=torch.int32)),
    }
    for tag, edit in g_edits.items():
        d = gptq_folder("ghostile_" + tag, True, edit=edit)
        for cmd in (["validate", d], ["dequantize", d, "-o", os.path.join(d, "o.safetensors")]):
            rc, out, err = mq(*cmd, check_rc=None)
            assert rc in (4, 5) and ("tensor '" in err or "tensor '" in out), (tag, cmd[0], rc, err[-300:])


@case
def malformed_config_json_matters_only_to_layouts_that_need_it():
    plain = os.path.join(TMP, "plain_bad_cfg")
    ff.save_folder(plain, {k: v for k, v in ORIG.items()}, {})
    with open(os.path.join(plain, "config.json"), "w") as f:
        f.write("{not json")
    mq("dequantize", plain, "-o", os.path.join(TMP, "plain_dq.safetensors"), "-q")
    d = os.path.join(TMP, "ct_bad_cfg")
    shutil.copytree(CT_DIR, d)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write("{not json")
    rc, out, err = mq("validate", d, check_rc=None)
    assert rc == 5 and "config.json" in err and "JSON" in err, (rc, err)


finish()
