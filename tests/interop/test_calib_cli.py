"""monoquant calibrate on activations recorded from the shared digits CNN with
tools/record_activations.py: the statistics file against PyTorch's observers and numpy."""
import json
import os
import struct
import sys

import numpy as np
import torch
from torch.ao.quantization import observer as O

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from harness import FIXTURES, TMP, case, finish, mq  # noqa: E402
from record_cnn import record  # noqa: E402

torch.set_num_threads(1)
ACTS = os.path.join(TMP, "acts")
MODEL = os.path.join(FIXTURES, "cnn", "cnn_digits.safetensors")
record(ACTS, FIXTURES, 3, 24)
FILES = sorted(os.path.join(ACTS, f) for f in os.listdir(ACTS))
_NP = {"F32": "<f4", "I32": "<i4", "I64": "<i8", "F64": "<f8"}


def read_st(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    head = json.loads(raw[8:8 + n])
    meta = head.pop("__metadata__", {})
    out = {}
    for k, v in head.items():
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(raw[8 + n + b:8 + n + e], _NP[v["dtype"]]).reshape(v["shape"])
    return out, meta


BATCHES = [read_st(f)[0] for f in FILES]
LAYERS = {"conv1": 1, "conv2": 1, "fc1": -1, "fc2": -1}  # channel axis


def run(observer, *extra):
    out = os.path.join(TMP, f"stats_{observer}.safetensors")
    mq("calibrate", "--model", MODEL, "--activations", ACTS, "-o", out, "-f", "--observer", observer,
       *extra)
    return read_st(out)


@case
def recorder_files_hold_every_layer():
    return len(FILES) == 3 and all(set(b) == set(LAYERS) for b in BATCHES) and \
        BATCHES[0]["conv2"].shape == (24, 32, 8, 8) and BATCHES[0]["fc1"].shape == (24, 1024)


@case
def minmax_and_channel_statistics():
    st, meta = run("minmax")
    assert meta.get("monoquant.calibration") == "1"
    for layer, axis in LAYERS.items():
        xs = [b[layer] for b in BATCHES]
        t = O.MinMaxObserver()
        for x in xs:
            t(torch.from_numpy(x.copy()))
        ts, tz = t.calculate_qparams()
        assert st[f"{layer}.input_scale"][0] == np.float32(ts.item()), layer
        assert st[f"{layer}.input_zero_point"][0] == int(tz[0]), layer
        c = xs[0].shape[axis]
        flat = np.concatenate([np.moveaxis(x, axis, -1).reshape(-1, c) for x in xs]).astype(np.float64)
        assert st[f"{layer}.count"][0] == flat.shape[0], layer
        np.testing.assert_allclose(st[f"{layer}.mean_sq"], (flat ** 2).mean(0), rtol=1e-5, atol=1e-12)
        np.testing.assert_array_equal(st[f"{layer}.max_abs"], np.abs(flat).max(0).astype(np.float32))


@case
def moving_average_follows_file_order():
    st, _ = run("moving_average", "--scheme", "sym", "--dtype", "int8")
    for layer in LAYERS:
        t = O.MovingAverageMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        for b in BATCHES:
            t(torch.from_numpy(b[layer].copy()))
        assert st[f"{layer}.input_scale"][0] == np.float32(t.calculate_qparams()[0].item()), layer


def b_ndim(layer):
    return BATCHES[0][layer].ndim


@case
def per_channel_scales():
    st, _ = run("minmax", "--per-channel")
    for layer, axis in LAYERS.items():
        t = O.PerChannelMinMaxObserver(ch_axis=axis if axis >= 0 else b_ndim(layer) - 1)
        for b in BATCHES:
            t(torch.from_numpy(b[layer].copy()))
        np.testing.assert_array_equal(st[f"{layer}.channel_input_scale"],
                                      t.calculate_qparams()[0].numpy())


@case
def pytorch_files_give_the_same_statistics():
    """torch.save'd activations (the recorder's tensors) read through the .pt reader."""
    pt = os.path.join(TMP, "acts_pt")
    os.makedirs(pt, exist_ok=True)
    for i, b in enumerate(BATCHES):
        torch.save({k: torch.from_numpy(v.copy()) for k, v in b.items()},
                   os.path.join(pt, f"batch_{i:05d}.pt"))
    a, _ = run("histogram")
    out = os.path.join(TMP, "stats_pt.safetensors")
    mq("calibrate", "--model", MODEL, "--activations", pt, "-o", out, "--observer", "histogram")
    b, _ = read_st(out)
    return all(np.array_equal(a[k], b[k]) for k in a)


@case
def every_observer_writes_a_usable_file():
    for k in ("histogram", "entropy", "percentile", "mse"):
        st, meta = run(k)
        for layer in LAYERS:
            s = float(st[f"{layer}.input_scale"][0])
            lo, hi = st[f"{layer}.input_range"]
            z = int(st[f"{layer}.input_zero_point"][0])
            assert s > 0 and lo <= hi and 0 <= z <= 255, (k, layer, s, lo, hi, z)
            assert meta[f"{layer}.observer"].startswith(k), (k, layer)



@case
def hessian_for_linear_layers_only():
    st, _ = run("minmax", "--hessian", "--threads", "2")
    assert not any(k.endswith(".hessian") for k in st if k.startswith("conv")), sorted(st)
    for layer in ("fc1", "fc2"):
        x = np.concatenate([b[layer] for b in BATCHES]).astype(np.float64)
        ref = x.T @ x / x.shape[0]
        h = st[f"{layer}.hessian"]
        assert h.shape == ref.shape and np.array_equal(h, h.T), layer
        assert np.abs(h - ref).max() <= 1e-6 * np.abs(ref).max(), layer
    one, _ = run("minmax", "--hessian", "--threads", "1")
    assert all(np.array_equal(one[k], st[k]) for k in ("fc1.hessian", "fc2.hessian"))


finish()
