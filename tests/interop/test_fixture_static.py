"""Static W8A8 on the shared fixtures: record activations on training data only, calibrate,
quantize with --bits 8 --calibration, and evaluate with eval_static.py (dequantized INT8
weights, every Linear/Conv input fake-quantized with the stored input_scale/input_zero_point).

CNN: the minmax, histogram and mse calibrations (asymmetric uint8 activations) and histogram
with symmetric int8 activations lose at most one test image against F32.
LM: with activations recorded on 4,096 rows per layer of the training text, the best of the
histogram, entropy and mse observers has a strictly lower perplexity than minmax (first
50,000 predicted bytes of val.txt). Both print their per-observer table as '# ' lines."""
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import FIXTURES, MQ, TMP, case, finish, mq  # noqa: E402
import eval_static  # noqa: E402
import record_cnn  # noqa: E402
import record_lm  # noqa: E402

torch.set_num_threads(2)
CNN_OBSERVERS = ["minmax", "moving_average", "histogram", "entropy", "percentile", "mse"]
CNN_BOUNDED = ["minmax", "histogram", "mse"]
LM_OBSERVERS = ["minmax", "histogram", "entropy", "mse"]
LM_BYTES = 50_000


def w8a8(kind, model, acts, observer, *calibrate_opts):
    """calibrate -> quantize --bits 8 --calibration -> eval_static; returns (checkpoint, result)."""
    tag = "_".join([kind, observer, *(o.lstrip("-") for o in calibrate_opts)])
    stats = os.path.join(TMP, f"{tag}.stats.safetensors")
    q = os.path.join(TMP, f"{tag}.w8a8.safetensors")
    mq("-q", "calibrate", "--model", model, "--activations", acts, "--observer", observer,
       "--strict", *calibrate_opts, "-o", stats)
    mq("-q", "quantize", model, "--format", "native", "--bits", "8", "--calibration", stats, "-o", q)
    st, _ = eval_static.read_safetensors(stats)
    qt, _ = eval_static.read_safetensors(q)
    for name in (k for k in st if k.endswith((".input_scale", ".input_zero_point"))):
        assert np.array_equal(st[name][1], qt[name][1]), f"{name}: {st[name]} in the statistics, {qt[name]} stored"
    return q, eval_static.evaluate(kind, q, FIXTURES, MQ, LM_BYTES)


def set_input_scale(src, dst, layer, factor):
    """Copies a checkpoint with <layer>.input_scale multiplied by factor (bytes patched)."""
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        head = json.loads(f.read(n))
        off = 8 + n + head[layer + ".input_scale"]["data_offsets"][0]
        f.seek(off)
        (s,) = struct.unpack("<f", f.read(4))
        f.seek(off)
        f.write(struct.pack("<f", s * factor))


# ------------------------------------------------------------------------------------ CNN
CNN_MODEL = os.path.join(FIXTURES, "cnn", "cnn_digits.safetensors")
CNN_ACTS = os.path.join(TMP, "cnn_acts")
CNN = {}
CNN_F32_ERRORS = []


@case
def cnn_calibration_images_exclude_the_test_split():
    """record_cnn.py's split (train_cnn.py's) reproduces the saved test split exactly."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    _, x_test, _, y_test = train_test_split(d.images.astype(np.uint8), d.target.astype(np.int64),
                                            test_size=0.25, random_state=0, stratify=d.target)
    z = np.load(os.path.join(FIXTURES, "cnn", "digits_test.npz"))
    assert np.array_equal(x_test, z["images"]) and np.array_equal(y_test, z["labels"])
    assert record_cnn.record(CNN_ACTS, FIXTURES, 8, 64) == 8  # 512 training images


@case
def cnn_w8a8_per_observer():
    ev = eval_static.load_eval_module(FIXTURES, "cnn")
    model = ev.Net()
    ev.load_into(model, ev.load_weights(CNN_MODEL), CNN_MODEL)
    model.eval()
    z = np.load(os.path.join(FIXTURES, "cnn", "digits_test.npz"))
    with torch.no_grad():
        f32_errors = int((model(ev.preprocess(z["images"])).argmax(1).numpy() != z["labels"]).sum())
    CNN_F32_ERRORS.append(f32_errors)
    print(f"# cnn F32: {f32_errors} errors of {len(z['labels'])}", flush=True)
    for obs in CNN_OBSERVERS:
        q, r = w8a8("cnn", CNN_MODEL, CNN_ACTS, obs)
        CNN[obs] = (q, r)
        print(f"# cnn W8A8 {obs:<14} test_acc {r['value']:.6f} ({r['errors']} errors)", flush=True)
        assert r["int8_weights"] == 4 and r["fake_quant_inputs"] == 4, r
    worse = {o: CNN[o][1]["errors"] for o in CNN_BOUNDED if CNN[o][1]["errors"] > f32_errors + 1}
    assert not worse, f"more than one test image lost: {worse} (F32: {f32_errors} errors)"


@case
def cnn_fake_quantization_is_applied():
    """A clipping input scale on fc1 must wreck the accuracy: the stored parameters are used."""
    bad = os.path.join(TMP, "cnn_bad_scale.safetensors")
    set_input_scale(CNN["minmax"][0], bad, "fc1", 1e-3)
    r = eval_static.evaluate("cnn", bad, FIXTURES, MQ)
    assert r["value"] < 0.5, r


@case
def cnn_w8a8_int8_activations():
    """Symmetric int8 activations: I8 zero points stored and applied with the int8 range."""
    q, r = w8a8("cnn", CNN_MODEL, CNN_ACTS, "histogram", "--scheme", "sym", "--dtype", "int8")
    zero_points = {d for k, (d, _) in eval_static.read_safetensors(q)[0].items()
                   if k.endswith(".input_zero_point")}
    print(f"# cnn W8A8 histogram sym int8 test_acc {r['value']:.6f} ({r['errors']} errors)", flush=True)
    assert zero_points == {"I8"}, zero_points
    assert r["errors"] <= CNN_F32_ERRORS[0] + 1, r


# ------------------------------------------------------------------------------------- LM
LM_MODEL = os.path.join(FIXTURES, "lm", "lm_fortunes.safetensors")
LM_ACTS = os.path.join(TMP, "lm_acts")
LM = {}


@case
def lm_record_training_text():
    """2 batches of 16 windows of 128 bytes: 4,096 rows per layer, validation split excluded."""
    assert record_lm.record(LM_ACTS, FIXTURES, os.path.join(TMP, "lm_corpus"), 2, 16) == 2


@case
def lm_w8a8_observer_beats_minmax():
    for obs in LM_OBSERVERS:
        _, r = w8a8("lm", LM_MODEL, LM_ACTS, obs)
        LM[obs] = r["value"]
        assert r["int8_weights"] == 17 and r["fake_quant_inputs"] == 17, r
        print(f"# lm W8A8 {obs:<14} val_ppl {r['value']:.6f} (first {r['n_eval']} bytes)", flush=True)
    best = min(LM[o] for o in ("histogram", "entropy", "mse"))
    assert best < LM["minmax"], f"best of histogram/entropy/mse {best} >= minmax {LM['minmax']}"


finish()
