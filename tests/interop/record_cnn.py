"""Records the layer inputs of the shared digits CNN on sklearn digits minus the saved test
split (the training split of train_cnn.py), for `monoquant calibrate`.

    /usr/bin/python3 tests/interop/record_cnn.py OUT_DIR [--batches N] [--batch-size B]

Writes OUT_DIR/batch_00000.safetensors ... (one file per forward pass)."""
import argparse
import importlib.util
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
from record_activations import ActivationRecorder  # noqa: E402


def load_eval_module(fixtures):
    spec = importlib.util.spec_from_file_location("eval_cnn", os.path.join(fixtures, "cnn", "eval_cnn.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def record(out, fixtures, batches, batch_size):
    """Records `batches` forward passes of `batch_size` training images; returns the file count."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    ev = load_eval_module(fixtures)
    model = ev.Net()
    model.load_state_dict(ev.load_weights(os.path.join(fixtures, "cnn", "cnn_digits.safetensors")))
    model.eval()
    d = load_digits()
    x_train, _, _, _ = train_test_split(d.images.astype(np.uint8), d.target, test_size=0.25,
                                        random_state=0, stratify=d.target)
    x = ev.preprocess(x_train)
    rec = ActivationRecorder(model, max_rows=batches * batch_size)
    with rec, torch.no_grad():
        for i in range(batches):
            model(x[i * batch_size:(i + 1) * batch_size])
    return rec.save_batches(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--fixtures", default=os.environ.get("FIXTURES", "../shared/fixtures"))
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args()
    n = record(a.out, a.fixtures, a.batches, a.batch_size)
    print(f"{n} batches -> {a.out}")


if __name__ == "__main__":
    main()
