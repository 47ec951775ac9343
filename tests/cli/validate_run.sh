#!/bin/sh
# monoquant validate --run: each quantized layer runs through the kernels; output error
# against the reference (or the dequantized) weights; floors, options, exit codes, JSON.
. tests/cli/lib.sh
PY=${PYTHON:-/usr/bin/python3}
LM="$FIXTURES/lm/lm_fortunes.safetensors"
CNN="$FIXTURES/cnn/cnn_digits.safetensors"

expect_exit 0 quantize_int8 -- "$MQ" quantize "$LM" -o "$T/lm8.safetensors" -q
expect_exit 0 quantize_int4 -- "$MQ" quantize "$LM" -o "$T/lm4.safetensors" --bits 4 -q

# min_sqnr FILE FLOOR COUNT: the JSON in FILE lists COUNT layers that ran, all above FLOOR dB
min_sqnr() {
    "$PY" - "$1" "$2" "$3" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ran = [l for l in d["layers"] if l["ran"]]
assert len(ran) == int(sys.argv[3]), len(ran)
worst = min(l["sqnr_db"] for l in ran)
assert worst > float(sys.argv[2]), worst
assert d["failures"] == 0 and d["run"] == len(ran)
PY
}

expect_exit 0 int8_run -- "$MQ" validate "$T/lm8.safetensors" --reference "$LM" --run
expect_out int8_table "blocks\.0\.mlp\.fc +int8 +weight +random +16 +[0-9.]+ "
expect_out int8_summary "17 layer\(s\) run, worst output SQNR"
"$MQ" validate "$T/lm8.safetensors" --reference "$LM" --run --json > "$T/r8.json" 2> "$T/err"
if min_sqnr "$T/r8.json" 30 17 2> "$T/py"; then ok int8_above_30dB; else notok int8_above_30dB "$(cat "$T/py" "$T/err")"; fi
# INT4 (lm_head stays f32 under the 4-bit default skip): 16 layers, dynamic activations too
"$MQ" validate "$T/lm4.safetensors" --reference "$LM" --run --mode dynamic --json > "$T/r4.json"
if min_sqnr "$T/r4.json" 15 16 2> "$T/py"; then ok int4_above_15dB; else notok int4_above_15dB "$(cat "$T/py")"; fi
if grep -q '"mode": "dynamic"' "$T/r4.json"; then ok int4_dynamic_mode; else notok int4_dynamic_mode "no dynamic rows"; fi
# without a reference: against the dequantized weights, i.e. the kernels' own error
"$MQ" validate "$T/lm4.safetensors" --run --json > "$T/k4.json"
if min_sqnr "$T/k4.json" 90 16 2> "$T/py"; then ok kernel_only_weight_mode; else notok kernel_only_weight_mode "$(cat "$T/py")"; fi
# deterministic: the same seed gives the same figures, another seed others
"$MQ" validate "$T/lm4.safetensors" --reference "$LM" --run --mode dynamic --seed 0 --json > "$T/r4b.json"
"$MQ" validate "$T/lm4.safetensors" --reference "$LM" --run --mode dynamic --seed 7 --rows 4 --json > "$T/r4c.json"
if cmp -s "$T/r4.json" "$T/r4b.json"; then ok same_seed_same_output; else notok same_seed_same_output "outputs differ"; fi
if ! cmp -s "$T/r4.json" "$T/r4c.json" && grep -q '"rows": 4' "$T/r4c.json"; then ok seed_and_rows; else notok seed_and_rows "no change"; fi

# floors
expect_exit 4 below_floor -- "$MQ" validate "$T/lm8.safetensors" --reference "$LM" --run --min-sqnr 99
expect_out below_floor_flagged "BELOW --min-sqnr 99"
expect_out below_floor_summary "FAILED"
"$MQ" validate "$T/lm8.safetensors" --reference "$LM" --run --min-sqnr 99 --json > "$T/f.json" 2> /dev/null
if "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); assert d["failures"] == 17 and not d["layers"][0]["ok"]' "$T/f.json" 2> "$T/py"
then ok below_floor_json; else notok below_floor_json "$(cat "$T/py")"; fi
expect_exit 0 above_floor -- "$MQ" validate "$T/lm8.safetensors" --reference "$LM" --run --min-sqnr 30

# Conv layers run as their flattened matrix
expect_exit 0 quantize_cnn -- "$MQ" quantize "$CNN" -o "$T/cnn8.safetensors" -q
expect_exit 0 cnn_run -- "$MQ" validate "$T/cnn8.safetensors" --reference "$CNN" --run --mode dynamic
expect_out cnn_conv_row "conv1 +int8 +dynamic"

# recorded activations: layers in the file use its rows, the others random inputs
"$PY" - "$T/acts.safetensors" <<'PY'
import json, struct, sys, random
random.seed(1)
tensors = {"blocks.0.mlp.fc": [6, 256], "blocks.1.mlp.proj": [2, 3, 1024], "blocks.2.attn.qkv": [3, 100]}
header, data = {}, b""
for name, shape in tensors.items():
    n = 1
    for s in shape: n *= s
    blob = struct.pack("<%df" % n, *[random.gauss(0, 1) for _ in range(n)])
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
    data += blob
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
expect_exit 0 activations -- "$MQ" validate "$T/lm8.safetensors" --reference "$LM" --run --activations "$T/acts.safetensors" --json
"$MQ" validate "$T/lm8.safetensors" --reference "$LM" --run --activations "$T/acts.safetensors" --json > "$T/ra.json" 2> "$T/ra.err"
if "$PY" - "$T/ra.json" <<'PY'
import json, sys
d = {l["layer"]: l for l in json.load(open(sys.argv[1]))["layers"]}
assert d["blocks.0.mlp.fc"]["input"] == "activations" and d["blocks.0.mlp.fc"]["rows"] == 6
assert d["blocks.1.mlp.proj"]["input"] == "activations" and d["blocks.1.mlp.proj"]["rows"] == 6
assert d["blocks.2.attn.qkv"]["input"].startswith("random (bad")
assert d["blocks.3.mlp.fc"]["input"] == "random (no activations)" and d["blocks.3.mlp.fc"]["rows"] == 16
PY
then ok activations_used; else notok activations_used "$(head -c 300 "$T/ra.json")"; fi
if grep -q "blocks.2.attn.qkv.*random inputs used" "$T/ra.err"; then ok activations_bad_shape_warned; else notok activations_bad_shape_warned "$(cat "$T/ra.err")"; fi
expect_exit 3 activations_strict -- "$MQ" validate "$T/lm8.safetensors" --run --activations "$T/acts.safetensors" --strict

# static mode: the stored input scale where calibration gave one, dynamic elsewhere
expect_exit 0 calibrate -- "$MQ" calibrate --model "$LM" --activations "$T/acts.safetensors" -o "$T/stats.safetensors"
expect_exit 0 quantize_static -- "$MQ" quantize "$LM" -o "$T/lm8s.safetensors" --calibration "$T/stats.safetensors" -q
expect_exit 0 static_run -- "$MQ" validate "$T/lm8s.safetensors" --reference "$LM" --run --mode static --activations "$T/acts.safetensors"
expect_out static_used "blocks\.0\.mlp\.fc +int8 +static +recorded +6 "
expect_out static_fallback "blocks\.3\.mlp\.fc +int8 +dynamic +random +16 "
expect_out static_matching_inputs_ok "; ok$"
# static mode on inputs unlike the calibration data (N(0, 1) rows against a range calibrated
# on values 100 times smaller): flagged, not ok; a warning (exit 3 under --strict)
"$PY" - "$T/acts.safetensors" "$T/small.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
data = bytearray(raw[8 + n:])
vals = struct.unpack("<%df" % (len(data) // 4), data)
open(sys.argv[2], "wb").write(raw[:8 + n] + struct.pack("<%df" % len(vals), *[v / 100 for v in vals]))
PY
expect_exit 0 calibrate_small -- "$MQ" calibrate --model "$LM" --activations "$T/small.safetensors" -o "$T/small_stats.safetensors"
expect_exit 0 quantize_small -- "$MQ" quantize "$LM" -o "$T/lm8small.safetensors" --calibration "$T/small_stats.safetensors" -q
expect_exit 0 static_unlike -- "$MQ" validate "$T/lm8small.safetensors" --reference "$LM" --run --mode static
expect_out static_unlike_flagged "blocks\.0\.mlp\.fc .*inputs unlike the calibration data: [0-9]+% fall outside"
expect_out static_unlike_summary "on inputs unlike the calibration data; not conclusive"
expect_exit 3 static_unlike_strict -- "$MQ" validate "$T/lm8small.safetensors" --reference "$LM" --run --mode static --strict
"$MQ" validate "$T/lm8small.safetensors" --run --mode static --json > "$T/u.json" 2> /dev/null
if "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); l = [x for x in d["layers"] if x["layer"] == "blocks.0.mlp.fc"][0]; assert not l["ok"] and "unlike" in l["problem"] and d["unlike_calibration"] >= 1' "$T/u.json" 2> "$T/py"
then ok static_unlike_json; else notok static_unlike_json "$(cat "$T/py")"; fi

# usage, I/O errors
expect_exit 0 help -- "$MQ" validate --help
expect_out help_run "--activations F"
expect_exit 2 bad_mode -- "$MQ" validate "$T/lm8.safetensors" --run --mode fast
expect_exit 2 bad_rows -- "$MQ" validate "$T/lm8.safetensors" --run --rows 0
expect_exit 2 bad_seed -- "$MQ" validate "$T/lm8.safetensors" --run --seed -1
expect_exit 2 rows_without_run -- "$MQ" validate "$T/lm8.safetensors" --rows 4
expect_out rows_without_run_msg "--rows needs --run"
expect_exit 2 mode_missing_value -- "$MQ" validate "$T/lm8.safetensors" --run --mode
expect_exit 5 missing_checkpoint -- "$MQ" validate "$T/nope.safetensors" --run
expect_exit 5 missing_reference -- "$MQ" validate "$T/lm8.safetensors" --reference "$T/nope.safetensors" --run
expect_exit 5 missing_activations -- "$MQ" validate "$T/lm8.safetensors" --run --activations "$T/nope.safetensors"
# a plain checkpoint has nothing to run: a warning, exit 0 (3 under --strict)
expect_exit 0 nothing_to_run -- "$MQ" validate "$LM" --run
expect_out nothing_to_run_warned "no quantized layer to run"
expect_exit 3 nothing_to_run_strict -- "$MQ" validate "$LM" --run --strict
finish
