"""monoquant.save to Hugging Face model folders (the CLI's folder output, byte for byte) and
monoquant.load reading the stored activation mode (weight-only, dynamic, static) from
monoquant's configuration or compressed-tensors' quantization_config."""
import filecmp
import gc
import json
import os

import torch
from torch import nn

import mqlib
from harness import TMP, case, finish, mq
from pkg import monoquant

torch.manual_seed(0)
torch.set_num_threads(1)


def mlp():
    return nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64)).eval()


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 16, 3, padding=1, stride=2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


MLP = mlp()
X = torch.randn(6, 256)
HF = os.path.join(TMP, "hf")
os.makedirs(HF)
mqlib.write(os.path.join(HF, "model.safetensors"), MLP.state_dict())
with open(os.path.join(HF, "config.json"), "w") as f:
    f.write('{\n  "model_type": "toy",\n  "hidden_size": 256\n}\n')
with open(os.path.join(HF, "tokenizer.json"), "w") as f:
    f.write('{"version": "1.0"}\n')
DATA = [torch.randn(8, 256) for _ in range(4)]
STATS = os.path.join(TMP, "mlp.stats.safetensors")
monoquant.calibrate(MLP, DATA).save(STATS)


def raises(exc, fn, *words):
    try:
        fn()
    except exc as e:
        for w in words:
            assert w in str(e), f"{w!r} not in {str(e)!r}"
        return
    raise AssertionError(f"no {exc.__name__} raised")


def same_folders(a, b):
    na, nb = sorted(os.listdir(a)), sorted(os.listdir(b))
    assert na == nb, (na, nb)
    for n in na:
        assert filecmp.cmp(os.path.join(a, n), os.path.join(b, n), shallow=False), f"{n} differs"
    return na


@case
def folder_same_bytes_as_cli():
    """save(q, 'dir/') writes the folder `monoquant quantize hf/ -o dir/` writes: weights,
    config.json with the quantization_config, the other files; for several settings."""
    for tag, kw, cli in [
            ("w8a8", {}, []),
            ("w4a16", {"bits": 4, "group_size": 64}, ["--bits", "4", "--group-size", "64"]),
            ("w8a16", {"activations": "none"}, ["--weights-only"]),
            ("static", {"calibration_stats": STATS}, ["--calibration", STATS]),
            ("shards", {"bits": 4, "default_skip": False, "save": {"max_shard_size": 20000}},
             ["--bits", "4", "--no-default-skip", "--max-shard-size", "20000"]),
            ("native", {"save": {"format": "native"}}, ["--format", "native"]),
            ("gptq", {"bits": 4, "group_size": 64, "default_skip": False,
                      "save": {"format": "gptq"}},
             ["--bits", "4", "--group-size", "64", "--no-default-skip", "--format", "gptq"])]:
        save_kw = kw.pop("save", {})
        q, _ = monoquant.quantize(MLP, **kw)
        a, b = os.path.join(TMP, f"py_{tag}"), os.path.join(TMP, f"cli_{tag}")
        assert monoquant.save(q, a + "/", config=HF, **save_kw) == a
        mq("quantize", HF, "-o", b + "/", "-q", *cli)
        names = same_folders(a, b)
        assert "tokenizer.json" in names and "config.json" in names, names
        if tag == "shards":
            assert "model.safetensors.index.json" in names and len(names) > 4, names
        cfg = json.load(open(os.path.join(a, "config.json")))
        if tag != "native":
            assert cfg["model_type"] == "toy" and "quantization_config" in cfg, cfg
    # a model without a folder: weights only, as the CLI for a file without a config.json
    plain = os.path.join(TMP, "plain")
    os.makedirs(plain)
    mqlib.write(os.path.join(plain, "m.safetensors"), MLP.state_dict())
    q, _ = monoquant.quantize(MLP, bits=4)
    monoquant.save(q, os.path.join(TMP, "py_plain") + "/")
    mq("quantize", os.path.join(plain, "m.safetensors"), "--output-dir",
       os.path.join(TMP, "cli_plain"), "-q", "--bits", "4")
    assert same_folders(os.path.join(TMP, "py_plain"), os.path.join(TMP, "cli_plain")) == \
        ["model.safetensors"]
    # a config given as a dict is written as config.json (then the quantization_config)
    d = {"model_type": "toy", "hidden_size": 256}
    monoquant.save(q, os.path.join(TMP, "py_dict") + "/", config=d)
    cfg = json.load(open(os.path.join(TMP, "py_dict", "config.json")))
    assert cfg["hidden_size"] == 256 and cfg["quantization_config"]["format"] == \
        "pack-quantized", cfg
    # a single file in the serving layout: the CLI's default output
    monoquant.save(q, os.path.join(TMP, "py_ct.safetensors"), format="compressed-tensors")
    mq("quantize", os.path.join(plain, "m.safetensors"), "-o",
       os.path.join(TMP, "cli_ct.safetensors"), "-q", "--bits", "4")
    assert filecmp.cmp(os.path.join(TMP, "py_ct.safetensors"),
                       os.path.join(TMP, "cli_ct.safetensors"), shallow=False)


@case
def folder_save_refusals():
    m = mlp()
    q, _ = monoquant.quantize(m, bits=8)
    out = os.path.join(TMP, "refused")
    raises(ValueError, lambda: monoquant.save(q, out + "/", format="gguf"), "format")
    raises(TypeError, lambda: monoquant.save(q, out + "/", config=42), "config")
    raises(ValueError, lambda: monoquant.save(q, out + "/", config=TMP + "/none"), "config.json")
    raises(ValueError, lambda: monoquant.save(q, out + "/", max_shard_size=0), "max_shard_size")
    raises(ValueError, lambda: monoquant.save(q, out + ".safetensors", config=HF), "folder")
    raises(TypeError, lambda: monoquant.save(q, out + "/", model=[1]), "nn.Module")
    assert not os.path.exists(out)
    monoquant.save(q, out + "/")
    raises(FileExistsError, lambda: monoquant.save(q, out + "/"), "overwrite=True")
    monoquant.save(q, out + "/", overwrite=True)
    # never the model's own folder, even with overwrite
    before = sorted(os.listdir(HF))
    raises(monoquant.MonoquantError, lambda: monoquant.save(q, HF + "/", config=HF,
                                                            overwrite=True), "own folder")
    assert sorted(os.listdir(HF)) == before
    # what the layout cannot describe is refused with the library's message, nothing left
    q4, _ = monoquant.quantize(m, bits=4, activations="dynamic")
    raises(monoquant.MonoquantError, lambda: monoquant.save(q4, out + "4/"), "activations")
    assert not os.path.exists(out + "4")
    # the float weights changed since quantize(): refused, unless given as model=
    with torch.no_grad():
        m[0].weight.mul_(2)
    raises(ValueError, lambda: monoquant.save(q, out + "2/"), "model=")
    with torch.no_grad():
        m[0].weight.div_(2)
    monoquant.save(q, out + "2/", model=m)
    same_folders(out, out + "2")
    # model= must be the float model that was quantized (names, shapes, sampled values)
    raises(ValueError, lambda: monoquant.save(q, out + "6/", model=mlp()),
           "'0.weight' differs")
    raises(ValueError, lambda: monoquant.save(q, out + "6/", model=nn.Linear(3, 3)),
           "other tensors")
    half = {k: v.to(torch.bfloat16) for k, v in m.state_dict().items()}
    raises(ValueError, lambda: monoquant.save(q, out + "6/", model=half), "differs")
    assert not os.path.exists(out + "6")
    # ... or freed (weakly held: the quantized model keeps no float copy alive)
    m2 = mlp()
    q2, _ = monoquant.quantize(m2, bits=8)
    del m2
    gc.collect()
    raises(ValueError, lambda: monoquant.save(q2, out + "3/"), "freed")
    # a model read back from a file has no settings to quantize with again
    path = os.path.join(TMP, "r8.safetensors")
    monoquant.save(q, path)
    loaded = monoquant.load(path, mlp())
    raises(TypeError, lambda: monoquant.save(loaded, out + "5/"), "monoquant.load")
    monoquant.save(loaded, os.path.join(TMP, "r8again.safetensors"))


def acts(model):
    return {n: m.act for n, m in model.named_modules()
            if isinstance(m, (monoquant.nn.QuantizedLinear, monoquant.nn.QuantizedConv2d))}


@case
def load_reads_the_activation_mode():
    """Each mode is stored in the file and rebuilt by load(), whatever the default for the
    type would be; the logits are those of the module that was saved."""
    cnn = Cnn().eval()
    xc = torch.randn(5, 4, 8, 8)
    data = [torch.randn(4, 4, 8, 8) for _ in range(3)]
    for mode, kw, want in [("none", {"activations": "none"}, 0),
                           ("dynamic", {"activations": "dynamic"}, 1),
                           ("static", {"calibration_data": data, "activations": "static"}, 2),
                           ("int4 dynamic", {"bits": 4, "activations": "dynamic",
                                             "default_skip": False}, 1)]:
        q, rep = monoquant.quantize(cnn, **kw)
        assert set(acts(q).values()) == {want}, (mode, acts(q))
        path = os.path.join(TMP, f"mode_{mode.replace(' ', '_')}.safetensors")
        monoquant.save(q, path)
        loaded = monoquant.load(path, Cnn())
        assert acts(loaded) == acts(q), (mode, acts(loaded), acts(q))
        with torch.no_grad():
            assert torch.equal(loaded(xc), q(xc)), mode
        # the caller may still ask for another mode
        if want:
            assert set(acts(monoquant.load(path, Cnn(), activations="none")).values()) == {0}
    # the compressed-tensors folder: the mode from its quantization_config
    for mode, kw, want in [("none", {"activations": "none"}, 0), ("dynamic", {}, 1),
                           ("static", {"calibration_stats": STATS}, 2)]:
        q, _ = monoquant.quantize(MLP, **kw)
        folder = os.path.join(TMP, f"ct_{mode}")
        monoquant.save(q, folder + "/", config=HF)
        loaded = monoquant.load(folder, mlp())
        assert acts(loaded) == acts(q) and set(acts(q).values()) == {want}, (mode, acts(loaded))
        with torch.no_grad():
            assert torch.equal(loaded(X), q(X)), mode
        # another tool's file: compressed-tensors' config alone (no monoquant configuration)
        tensors, m = mqlib.read(os.path.join(folder, "model.safetensors"))
        meta = {"quantization_config": m.meta("quantization_config")}
        m.close()
        foreign = os.path.join(TMP, f"foreign_{mode}.safetensors")
        mqlib.write(foreign, tensors, meta)
        loaded = monoquant.load(foreign, mlp())
        assert acts(loaded) == acts(q), (mode, acts(loaded))
        with torch.no_grad():
            assert torch.equal(loaded(X), q(X)), mode
    # a configuration of the wrong shapes is read as saying nothing (the tensors decide)
    for n, bogus in enumerate(('{"quant_method": "compressed-tensors", "config_groups": {"g": {"targets": '
                  '["re:(", 7], "input_activations": "x"}}, "ignore": 5}',
                  '{"quant_method": "compressed-tensors", "config_groups": [1], "ignore": [1]}',
                  '{"quant_method": "monoquant", "quantized": {"0.weight": "static"}}', "[1, 2")):
        odd = os.path.join(TMP, f"bogus{n}.safetensors")
        mqlib.write(odd, tensors, {"quantization_config": bogus})
        try:
            loaded = monoquant.load(odd, mlp())
        except monoquant.MonoquantError:
            continue  # refused by the reader: also fine, never a crash
        assert set(acts(loaded).values()) <= {0, 1, 2}, (bogus, acts(loaded))
    # static without statistics for a layer is refused (the CLI's rule), naming the tensor
    raises(monoquant.MonoquantError, lambda: monoquant.quantize(MLP, activations="static"),
           "0.weight")


finish()
