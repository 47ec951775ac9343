"""The PyTorch snippet of docs/FORMAT.md (run from the document itself) dequantizes our output
to exactly what `monoquant dequantize` writes, for every scheme."""
import os
import re

import torch

from harness import FIXTURES, TMP, case, finish, mq

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "FORMAT.md")
snippet = re.search(r"```python\n(.*?)```", open(DOC).read(), re.S).group(1)
ns = {}
exec(snippet, ns)
dequantize, load = ns["dequantize"], ns["load_safetensors"]
LM = os.path.join(FIXTURES, "lm", "lm_fortunes.safetensors")
LM_BF16 = os.path.join(FIXTURES, "lm", "lm_fortunes.bf16.safetensors")
CNN = os.path.join(FIXTURES, "cnn", "cnn_digits.safetensors")


def same_as_cli(src, tag, *opts):
    q = os.path.join(TMP, f"{tag}.safetensors")
    d = os.path.join(TMP, f"{tag}.dq.safetensors")
    mq("quantize", src, "--format", "native", "-o", q, "-q", *opts)
    mq("dequantize", q, "-o", d, "-q")
    ours, _ = load(d)
    theirs = dequantize(q)
    orig, _ = load(src)
    assert sorted(ours) == sorted(theirs) == sorted(orig), "tensor names differ"
    for k in ours:
        a, b = ours[k], theirs[k]
        assert a.dtype == b.dtype == orig[k].dtype, f"{k}: dtypes {a.dtype} {b.dtype} {orig[k].dtype}"
        assert a.shape == b.shape == orig[k].shape, f"{k}: shapes differ"
        assert torch.equal(a, b), f"{k}: snippet and CLI differ, max {(a.float() - b.float()).abs().max()}"
    return q


@case
def snippet_int8_lm():
    same_as_cli(LM, "int8", "--bits", "8")


@case
def snippet_int4_g128_lm():
    same_as_cli(LM, "int4", "--bits", "4")


@case
def snippet_uint4_asym_mse_everything():
    same_as_cli(LM, "uint4", "--type", "uint4", "--search", "mse", "--no-default-skip",
                "--types", "linear,embedding")


@case
def snippet_uint8_per_tensor_and_casts():
    same_as_cli(LM, "uint8pt", "--type", "uint8", "--granularity", "tensor",
                "--layer", "*.mlp.*=fp16", "--layer", "lm_head.weight=bf16")


@case
def snippet_int8_group_and_bf16_input():
    same_as_cli(LM_BF16, "bf16g", "--bits", "8", "--granularity", "group", "--group-size", "96")


@case
def snippet_cnn_conv_partial_groups():
    q = same_as_cli(CNN, "cnn4", "--bits", "4", "--no-default-skip")
    t, _ = load(q)
    # conv2 [64, 32, 3, 3]: 288 columns -> 36 words per row, groups 128+128+32
    assert list(t["conv2.weight_packed"].shape) == [64, 36]
    assert list(t["conv2.weight_scale"].shape) == [64, 3]
    assert t["conv2.weight_shape"].tolist() == [64, 32, 3, 3]


@case
def compressed_tensors_names_and_dtypes():
    t, meta = load(os.path.join(TMP, "int4.safetensors"))
    assert t["blocks.0.mlp.fc.weight_packed"].dtype == torch.int32
    assert list(t["blocks.0.mlp.fc.weight_packed"].shape) == [1024, 32]
    assert list(t["blocks.0.mlp.fc.weight_scale"].shape) == [1024, 2]
    assert t["blocks.0.mlp.fc.weight_scale"].dtype == torch.float32
    assert "blocks.0.mlp.fc.weight" not in t
    t8, _ = load(os.path.join(TMP, "int8.safetensors"))
    assert t8["blocks.0.mlp.fc.weight"].dtype == torch.int8
    assert list(t8["blocks.0.mlp.fc.weight_scale"].shape) == [1024, 1]
    import json
    cfg = json.loads(meta["quantization_config"])
    assert cfg["quant_method"] == "monoquant" and cfg["group_size"] == 128
    assert cfg["skipped"]["lm_head.weight"].startswith("output head")
    assert cfg["quantized"]["blocks.0.mlp.fc.weight"]["sqnr_db"] > 15


finish()
