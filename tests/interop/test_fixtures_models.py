"""Model-level: quantize -> dequantize -> the fixture's own evaluation script.
Bounds: INT8 costs at most +0.05 % LM perplexity; INT4 group 128 at most 70 % of the loss of
plain absmax INT4 on the linears (fixtures README: 5.942495 vs 5.903492 F32); the CNN loses at
most one of its 450 test images at INT8 and at INT4."""
import json
import os
import subprocess
import sys

from harness import FIXTURES, TMP, case, finish, mq

LM_F32 = 5.903492
LM_ABSMAX_INT4 = 5.942495
CNN_F32 = 0.995556


def evaluate(kind, weights):
    script = os.path.join(FIXTURES, kind, "eval_lm.py" if kind == "lm" else "eval_cnn.py")
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    p = subprocess.run([sys.executable, script, "--weights", weights], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0, p.stderr[-500:]
    return json.loads(p.stdout.strip().splitlines()[-1])["value"]


def roundtrip(kind, src, tag, *opts):
    q = os.path.join(TMP, f"{tag}.safetensors")
    d = os.path.join(TMP, f"{tag}.dq.safetensors")
    mq("quantize", os.path.join(FIXTURES, kind, src), "--format", "native", "-o", q, "-q", *opts)
    mq("dequantize", q, "-o", d, "-q")
    value = evaluate(kind, d)
    print(f"# {tag}: {value}", flush=True)
    return value


@case
def lm_int8_perplexity():
    v = roundtrip("lm", "lm_fortunes.safetensors", "lm8", "--bits", "8")
    assert v <= LM_F32 * 1.0005, f"ppl {v} > {LM_F32 * 1.0005:.6f}"


@case
def lm_int4_g128_perplexity():
    v = roundtrip("lm", "lm_fortunes.safetensors", "lm4", "--bits", "4")
    bound = LM_F32 + 0.7 * (LM_ABSMAX_INT4 - LM_F32)
    assert v <= bound, f"ppl {v} > {bound:.6f}"


@case
def cnn_int8_accuracy():
    v = roundtrip("cnn", "cnn_digits.safetensors", "cnn8", "--bits", "8")
    assert v >= CNN_F32 - 1.5 / 450, f"accuracy {v}"


@case
def cnn_int4_accuracy():
    v = roundtrip("cnn", "cnn_digits.safetensors", "cnn4", "--bits", "4")
    assert v >= CNN_F32 - 1.5 / 450, f"accuracy {v}"


finish()
