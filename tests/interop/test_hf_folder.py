"""Model folders in, model folders out (docs/FORMAT.md, "Model folders"), on folders built like
Hugging Face ones from the LM fixture: config.json, tokenizer.json, generation_config.json, a
README, the weights in three shards with model.safetensors.index.json. The output folder has
every non-weight file byte for byte, config.json gains the quantization_config, the index
covers every tensor once, the weights decode (ct_decode.py) to what `monoquant dequantize`
gives, and a run that fails (a NaN in the last input shard, a write that fails for lack of
space) leaves no folder, temporary or final."""
import json
import os
import resource
import signal
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import FIXTURES, MQ, TMP, case, finish, mq  # noqa: E402
import ct_decode  # noqa: E402

LM = os.path.join(FIXTURES, "lm", "lm_fortunes.safetensors")
CONFIG = {"architectures": ["FortunesLM"], "model_type": "fortunes", "hidden_size": 256,
          "num_hidden_layers": 4, "torch_dtype": "float32", "vocab_size": 256}
OTHER = {"tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {}}}),
         "tokenizer_config.json": '{"model_max_length": 128}\n',
         "generation_config.json": '{"do_sample": true, "max_new_tokens": 64}',
         "README.md": "# fortunes\nA byte-level LM.\n"}


def hf_folder(name, poison=False):
    """The LM fixture as a Hugging Face folder with three shards; `poison` puts a NaN in a
    tensor of the last shard."""
    d = os.path.join(TMP, name)
    os.makedirs(d)
    tensors, _ = ct_decode.read_safetensors(LM)
    names = list(tensors)
    parts = [names[:18], names[18:36], names[36:]]
    if poison:
        bad = "blocks.3.mlp.proj.weight"
        assert bad in parts[2]
        tensors[bad] = tensors[bad].clone()
        tensors[bad].view(-1)[3] = float("nan")
    wm = {}
    for i, part in enumerate(parts):
        f = f"model-{i + 1:05d}-of-00003.safetensors"
        ct_decode.write_safetensors(os.path.join(d, f), {k: tensors[k] for k in part}, {"format": "pt"})
        wm.update({k: f for k in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f, indent=2)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    for k, v in OTHER.items():
        with open(os.path.join(d, k), "w") as f:
            f.write(v)
    return d


def leftovers(parent, stem):
    return [f for f in os.listdir(parent) if f.startswith(stem)] + temporaries()


def temporaries():
    """Temporary files and folders of monoquant runs in TMP."""
    return [f for f in os.listdir(TMP) if f.startswith(".monoquant-")]


SRC = hf_folder("fortunes")


@case
def folder_to_folder_sharded():
    out = os.path.join(TMP, "fortunes-w4")
    mq("-q", "quantize", SRC, "--bits", "4", "--output-dir", out, "--max-shard-size", "1MB")
    files = sorted(os.listdir(out))
    shards = [f for f in files if f.endswith(".safetensors")]
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors", files
    assert set(files) == set(shards) | set(OTHER) | {"config.json", "model.safetensors.index.json"}, files
    for k, v in OTHER.items():  # byte for byte
        assert open(os.path.join(out, k), "rb").read() == open(os.path.join(SRC, k), "rb").read(), k
    cfg = json.load(open(os.path.join(out, "config.json")))
    q = cfg.pop("quantization_config")
    assert cfg == CONFIG, cfg
    assert q["quant_method"] == "compressed-tensors" and q["ignore"] == ["lm_head"], q
    index = json.load(open(os.path.join(out, "model.safetensors.index.json")))
    tensors, _, _ = ct_decode.read_model(out)
    assert set(index["weight_map"]) == set(tensors), "index and shards differ"
    for f in shards:
        t, _ = ct_decode.read_safetensors(os.path.join(out, f))
        assert all(index["weight_map"][k] == f for k in t), f
        assert os.path.getsize(os.path.join(out, f)) <= 1_000_000 + 4096 or len(t) <= 5, f
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    assert index["metadata"]["total_size"] == total
    decoded, layers = ct_decode.decode(tensors, q, torch.float32)
    assert len(layers) == 16
    ref = os.path.join(TMP, "fortunes-w4.deq.safetensors")
    mq("-q", "dequantize", out, "-o", ref)
    for k, v in ct_decode.read_safetensors(ref)[0].items():
        assert torch.equal(decoded[k], v), k


@case
def default_output_is_a_folder_beside_the_input():
    mq("-q", "quantize", SRC, "--bits", "8")
    out = SRC + "-int8"
    assert os.path.isdir(out), os.listdir(TMP)
    assert os.path.exists(os.path.join(out, "model.safetensors"))  # one shard under 5 GB
    assert not os.path.exists(os.path.join(out, "model.safetensors.index.json"))
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["quantization_config"]["format"] == "int-quantized"
    # an index as input names the same folder
    mq("-q", "quantize", os.path.join(SRC, "model.safetensors.index.json"), "--bits", "8", "-o",
       os.path.join(TMP, "from-index/"))
    a = open(os.path.join(out, "model.safetensors"), "rb").read()
    b = open(os.path.join(TMP, "from-index", "model.safetensors"), "rb").read()
    assert a == b, "index and folder inputs differ"


@case
def existing_destination_is_refused():
    out = os.path.join(TMP, "exists")
    os.makedirs(out)
    rc, _, err = mq("quantize", SRC, "--bits", "4", "--output-dir", out, check_rc=None)
    assert rc == 2 and "already exists" in err, (rc, err)
    assert os.listdir(out) == [] and temporaries() == []
    open(os.path.join(out, "stale.txt"), "w").write("old")
    mq("-q", "quantize", SRC, "--bits", "4", "--output-dir", out, "-f")
    assert "stale.txt" not in os.listdir(out) and "config.json" in os.listdir(out)
    assert temporaries() == [], temporaries()
    # a file under the folder's name is never replaced
    f = os.path.join(TMP, "plainfile")
    open(f, "w").write("x")
    rc, _, err = mq("quantize", SRC, "--bits", "4", "--output-dir", f, "-f", check_rc=None)
    assert rc == 2 and open(f).read() == "x", (rc, err)


@case
def failure_after_the_first_shard_leaves_nothing():
    src = hf_folder("poisoned", poison=True)
    out = os.path.join(TMP, "poisoned-out")
    rc, _, err = mq("quantize", src, "--bits", "4", "--output-dir", out, "--max-shard-size", "1MB",
                    check_rc=None)
    assert rc == 3 and "NaN" in err, (rc, err)
    assert leftovers(TMP, "poisoned-out") == [], leftovers(TMP, "poisoned-out")


def limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))


@case
def disk_full_leaves_nothing():
    out = os.path.join(TMP, "full-out")
    p = subprocess.run([MQ, "quantize", SRC, "--bits", "8", "--output-dir", out], capture_output=True,
                       text=True, preexec_fn=limit_file_size)
    assert p.returncode == 5 and "write failed" in p.stderr, (p.returncode, p.stderr)
    assert leftovers(TMP, "full-out") == [], leftovers(TMP, "full-out")


@case
def single_file_keeps_single_file_output():
    out = os.path.join(TMP, "single.safetensors")
    mq("-q", "quantize", LM, "--bits", "4", "-o", out)
    t, meta = ct_decode.read_safetensors(out)
    q = json.loads(meta["quantization_config"])
    own = json.loads(meta["monoquant_config"])
    assert q["quant_method"] == "compressed-tensors" and own["quant_method"] == "monoquant"
    assert all("sqnr_db" in v for v in own["quantized"].values())
    assert meta["monoquant_layout"] == "compressed-tensors"


finish()
