"""Records the layer inputs of the shared fortunes LM on its TRAINING text (the corpus minus
the validation split), for `monoquant calibrate`.

    /usr/bin/python3 tests/interop/record_lm.py OUT_DIR --scratch DIR [--batches N] [--batch-size B]

The corpus is rebuilt in DIR with the fixture's make_corpus.py (needs Debian's `fortunes`
package); the rebuilt validation split is checked against the fixture's val.txt, and only
the bytes before it are used. Writes OUT_DIR/batch_00000.safetensors ..."""
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
from record_activations import ActivationRecorder  # noqa: E402


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def training_text(fixtures, scratch):
    corpus = os.path.join(scratch, "corpus.txt")
    if not os.path.exists(corpus):
        os.makedirs(scratch, exist_ok=True)
        script = os.path.join(scratch, "make_corpus.py")  # writes val.txt beside itself
        shutil.copy(os.path.join(fixtures, "lm", "make_corpus.py"), script)
        subprocess.run([sys.executable, script, "--work-dir", scratch], check=True)
    data = open(corpus, "rb").read()
    n_val = len(data) // 10
    val = open(os.path.join(fixtures, "lm", "val.txt"), "rb").read()
    if data[len(data) - n_val:] != val:
        raise SystemExit("the rebuilt corpus does not end with the fixture's val.txt")
    return data[:len(data) - n_val]


def record(out, fixtures, scratch, batches, batch_size, seed=7):
    ev = load_module(os.path.join(fixtures, "lm", "eval_lm.py"), "eval_lm")
    model = ev.GPT()
    path = os.path.join(fixtures, "lm", "lm_fortunes.safetensors")
    ev.load_into(model, ev.load_weights(path), path)
    model.eval()
    train = np.frombuffer(training_text(fixtures, scratch), dtype=np.uint8).astype(np.int64)
    rng = np.random.default_rng(seed)
    ctx = ev.CONFIG["ctx"]
    rec = ActivationRecorder(model, max_rows=batches * batch_size * ctx)
    with rec, torch.no_grad():
        for _ in range(batches):
            starts = rng.integers(0, len(train) - ctx, batch_size)
            model(torch.from_numpy(np.stack([train[s:s + ctx] for s in starts])))
    return rec.save_batches(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--scratch", required=True, help="folder for the rebuilt corpus")
    p.add_argument("--fixtures", default=os.environ.get("FIXTURES", "../shared/fixtures"))
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16)
    a = p.parse_args()
    torch.set_num_threads(2)
    n = record(a.out, a.fixtures, a.scratch, a.batches, a.batch_size)
    print(f"{n} batches -> {a.out}")


if __name__ == "__main__":
    main()
