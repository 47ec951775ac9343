#!/bin/sh
# Results that used to come out wrong with exit 0, now loud through the CLI: values that do
# not fit (casts, scales), NaN/Inf scales in a quantized file, gates that could not run,
# already-quantized inputs, and options or rules that have no effect.
. tests/cli/lib.sh
PY=${PYTHON:-/usr/bin/python3}

# st.py OUT NAME:ROWSxCOLS[:BIG] ...: F32 tensors of small values; BIG goes to element 5
cat > "$T/st.py" <<'PY'
import json, struct, sys
header, data = {}, b""
for spec in sys.argv[2:]:
    parts = spec.split(":")
    shape = [int(d) for d in parts[1].split("x")]
    n = 1
    for d in shape: n *= d
    vals = [((i * 7) % 23) * 0.05 - 0.5 for i in range(n)]
    if len(parts) > 2: vals[5] = float(parts[2])
    blob = struct.pack("<%df" % n, *vals)
    header[parts[0]] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
    data += blob
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + data)
PY
# poison.py FILE TENSOR VALUE: the first F32 value of TENSOR becomes VALUE, in place
cat > "$T/poison.py" <<'PY'
import json, struct, sys
raw = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
off = 8 + n + json.loads(raw[8:8 + n])[sys.argv[2]]["data_offsets"][0]
raw[off:off + 4] = struct.pack("<f", float(sys.argv[3]))
open(sys.argv[1], "wb").write(raw)
PY
M="$T/m.safetensors"
"$PY" "$T/st.py" "$M" blocks.0.fc.weight:16x64 blocks.0.fc.bias:16 blocks.0.norm.weight:64 \
    blocks.1.fc.weight:16x64

# casts that overflow: exit 3 naming the tensor, nothing written
"$PY" "$T/st.py" "$T/big.safetensors" blocks.0.fc.weight:16x64:70000 blocks.1.fc.weight:16x64
expect_exit 3 fp16_overflow -- "$MQ" quantize --format native "$T/big.safetensors" --type fp16 -o "$T/big16.safetensors"
expect_out fp16_overflow_msg "tensor 'blocks.0.fc.weight': element 5 \(70000\) is beyond the FP16 range"
[ ! -e "$T/big16.safetensors" ] && ok fp16_overflow_nothing_written || notok fp16_overflow_nothing_written "written"
"$PY" "$T/st.py" "$T/max.safetensors" blocks.0.fc.weight:16x64:3.4028234663852886e38 blocks.1.fc.weight:16x64
expect_exit 3 bf16_overflow -- "$MQ" quantize --format native "$T/max.safetensors" --type bf16 -o "$T/maxbf.safetensors"
expect_out bf16_overflow_msg "blocks.0.fc.weight.*beyond the BF16 range"
# --clamp saturates instead, and the report says how many values per tensor
expect_exit 0 fp16_clamp -- "$MQ" quantize --format native "$T/big.safetensors" --type fp16 --clamp -o "$T/big16.safetensors"
expect_out fp16_clamp_report "blocks.0.fc.weight: 1 value\(s\) beyond the fp16 range saturated \(--clamp\)"
"$MQ" quantize --format native "$T/big.safetensors" --type fp16 --clamp -o "$T/big16b.safetensors" --json > "$T/c.json"
if "$PY" -c 'import json, sys; t = json.load(open(sys.argv[1]))["tensors"]; assert t[0]["clamped"] == 1 and t[1]["clamped"] == 0' "$T/c.json" 2> "$T/py"
then ok fp16_clamp_json; else notok fp16_clamp_json "$(cat "$T/py")"; fi
if "$PY" - "$T/big16.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])["blocks.0.fc.weight"]
assert h["dtype"] == "F16"
off = 8 + n + h["data_offsets"][0] + 10
assert raw[off:off + 2] == b"\xff\x7b", raw[off:off + 2]  # 65504
PY
then ok fp16_clamp_value; else notok fp16_clamp_value "not 65504"; fi
expect_exit 0 clamp_ignored -- "$MQ" quantize --format native "$M" --clamp -o "$T/ci.safetensors"
expect_out clamp_ignored_msg "warning: --clamp has no effect"
expect_exit 3 clamp_ignored_strict -- "$MQ" quantize --format native "$M" --clamp --strict -o "$T/ci2.safetensors"
[ ! -e "$T/ci2.safetensors" ] && ok clamp_ignored_nothing_written || notok clamp_ignored_nothing_written "written"
# --group-size with a per-channel 8-bit target
expect_exit 0 group_size_ignored -- "$MQ" quantize --format native "$M" --bits 8 --group-size 32 -o "$T/gs.safetensors"
expect_out group_size_ignored_msg "warning: --group-size 32 has no effect: int8 is per channel"
expect_exit 3 group_size_ignored_strict -- "$MQ" quantize --format native "$M" --bits 8 --group-size 32 --strict -o "$T/gs2.safetensors"
expect_exit 0 group_size_used_by_rule -- "$MQ" quantize --format native "$M" --bits 8 --group-size 32 --layer 'blocks.1.*=4' --strict -o "$T/gs3.safetensors"
# --act-order without GPTQ (also as a config-file key)
expect_exit 0 act_order_ignored -- "$MQ" quantize --format native "$M" --bits 8 --act-order -o "$T/ao.safetensors"
expect_out act_order_ignored_msg "warning: --act-order has no effect"
expect_exit 3 act_order_ignored_strict -- "$MQ" quantize --format native "$M" --bits 8 --act-order --strict -o "$T/ao2.safetensors"
[ ! -e "$T/ao2.safetensors" ] && ok act_order_ignored_nothing_written || notok act_order_ignored_nothing_written "written"
printf 'act-order\n' > "$T/ao.conf"
expect_exit 0 act_order_config -- "$MQ" quantize --format native "$M" --bits 8 --config "$T/ao.conf" -o "$T/ao3.safetensors"
expect_out act_order_config_msg "warning: --act-order has no effect"

# scales whose grid overflows float32 (-FLT_MAX: -128 * FLT_MAX / 127.5 is -Inf)
"$PY" "$T/st.py" "$T/wide.safetensors" blocks.0.fc.weight:16x64:-3.4028234663852886e38 blocks.1.fc.weight:16x64
expect_exit 3 int8_scale_overflow -- "$MQ" quantize --format native "$T/wide.safetensors" --type int8 -o "$T/wide8.safetensors"
expect_out int8_scale_overflow_msg "blocks.0.fc.weight.*overflows float32"
[ ! -e "$T/wide8.safetensors" ] && ok scale_overflow_nothing_written || notok scale_overflow_nothing_written "written"

# a gate that could not run is a usage error
expect_exit 2 min_sqnr_without_figures -- "$MQ" quantize --format native "$M" -o "$T/g.safetensors" --strict --min-sqnr 30 --no-error-stats
expect_out min_sqnr_without_figures_msg "needs the error figures"

# NaN/Inf scales in a quantized file: dequantize and validate refuse, naming the tensor
expect_exit 0 quantize -- "$MQ" quantize --format native "$M" -o "$T/q.safetensors" -q
cp "$T/q.safetensors" "$T/nan.safetensors"
"$PY" "$T/poison.py" "$T/nan.safetensors" blocks.1.fc.weight_scale nan
expect_exit 4 dequantize_nan_scale -- "$MQ" dequantize "$T/nan.safetensors" -o "$T/nan.deq.safetensors"
expect_out dequantize_nan_scale_msg "tensor 'blocks.1.fc.weight': scale 0 is nan"
[ ! -e "$T/nan.deq.safetensors" ] && ok dequantize_nan_nothing_written || notok dequantize_nan_nothing_written "written"
"$PY" "$T/poison.py" "$T/nan.safetensors" blocks.1.fc.weight_scale inf
expect_exit 4 validate_inf_scale -- "$MQ" validate "$T/nan.safetensors"
expect_out validate_inf_scale_msg "blocks.1.fc.weight': scale 0 is inf"

# an already-quantized input is refused, whatever would be selected
expect_exit 2 requantize -- "$MQ" quantize --format native "$T/q.safetensors" --types linear,other -o "$T/qq.safetensors"
expect_out requantize_msg "already quantized by monoquant.*dequantize it first"
[ ! -e "$T/qq.safetensors" ] && ok requantize_nothing_written || notok requantize_nothing_written "written"

# options and rules without effect: warnings, exit 3 under --strict
expect_exit 0 rule_matches_nothing -- "$MQ" quantize --format native "$M" -o "$T/w.safetensors" --layer 'decoder.*=4'
expect_out rule_matches_nothing_msg "warning: layer rule 'decoder\.\*=int4' matches no tensor"
expect_exit 3 rule_matches_nothing_strict -- "$MQ" quantize --format native "$M" -o "$T/w2.safetensors" --layer 'decoder.*=4' --strict
[ ! -e "$T/w2.safetensors" ] && ok strict_nothing_written || notok strict_nothing_written "written"
expect_exit 0 types_norm -- "$MQ" quantize --format native "$M" -o "$T/w3.safetensors" --types linear,norm,bias
expect_out types_norm_msg "warning: layer kind 'norm' selected but no such tensor is converted"
expect_out types_bias_msg "warning: layer kind 'bias' selected"

# calibration statistics of other layers; GPTQ without Hessians
cat > "$T/acts.py" <<'PY'
import json, struct, sys
n = 8 * 64
blob = struct.pack("<%df" % n, *[((i * 5) % 17) * 0.1 - 0.8 for i in range(n)])
h = json.dumps({sys.argv[2]: {"dtype": "F32", "shape": [8, 64], "data_offsets": [0, len(blob)]}}).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + blob)
PY
"$PY" "$T/acts.py" "$T/acts.safetensors" blocks.0.fc
expect_exit 0 calibrate -- "$MQ" calibrate --model "$M" --activations "$T/acts.safetensors" -o "$T/stats.safetensors"
"$PY" "$T/st.py" "$T/other.safetensors" decoder.0.fc.weight:16x64
expect_exit 0 stats_match_nothing -- "$MQ" quantize --format native "$T/other.safetensors" --calibration "$T/stats.safetensors" -o "$T/o.safetensors"
expect_out stats_match_nothing_msg "warning: calibration statistics: none of their 1 layers matches"
expect_exit 3 stats_match_nothing_strict -- "$MQ" quantize --format native "$T/other.safetensors" --calibration "$T/stats.safetensors" -o "$T/o2.safetensors" --strict
expect_exit 0 gptq_without_hessian -- "$MQ" quantize --format native "$M" --bits 4 --no-default-skip --search gptq --calibration "$T/stats.safetensors" -o "$T/gq.safetensors"
expect_out gptq_without_hessian_msg "warning: GPTQ: 2 quantized tensors .* have no Hessian"
# (4-bit layers are weight-only by default: the statistics steer the search, no input parameters)
expect_out gptq_without_hessian_column "blocks\.0\.fc\.weight .* mse( |$)"
"$MQ" quantize --format native "$M" --bits 4 --no-default-skip --search gptq --calibration "$T/stats.safetensors" -o "$T/gq2.safetensors" --json > "$T/g.json" 2> /dev/null
if "$PY" -c 'import json, sys; t = {x["name"]: x for x in json.load(open(sys.argv[1]))["tensors"]}; a = t["blocks.0.fc.weight"]; b = t["blocks.1.fc.weight"]; assert a["search"] == "mse" and not a["input_params"] and b["search"] == "mse" and not b["input_params"]' "$T/g.json" 2> "$T/py"
then ok search_per_tensor_json; else notok search_per_tensor_json "$(cat "$T/py")"; fi
# activations near FLT_MAX: the histogram observer's range overflows float32 parameters;
# the layer is named, nothing is written (and the output file is not blamed)
"$PY" - "$T/hugeacts.safetensors" <<'PY'
import json, struct, sys
n = 8 * 64
vals = [((i * 5) % 17) * 0.1 - 0.8 for i in range(n)]
vals[3], vals[9] = 3.4e38, -3.4e38
blob = struct.pack("<%df" % n, *vals)
h = json.dumps({"blocks.0.fc": {"dtype": "F32", "shape": [8, 64], "data_offsets": [0, len(blob)]}}).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + blob)
PY
expect_exit 3 calibrate_range_overflow -- "$MQ" calibrate --model "$M" --activations "$T/hugeacts.safetensors" -o "$T/huge_stats.safetensors" --observer histogram
expect_out calibrate_range_overflow_msg "layer 'blocks.0.fc': observer: channel 0: the range .* overflows float32"
grep -q "huge_stats" "$T/out" && notok calibrate_range_overflow_not_output "$(cat "$T/out")" || ok calibrate_range_overflow_not_output
[ ! -e "$T/huge_stats.safetensors" ] && ok calibrate_range_overflow_nothing_written || notok calibrate_range_overflow_nothing_written "written"

# observer settings the chosen observer does not use
expect_exit 0 bins_without_histogram -- "$MQ" calibrate --model "$M" --activations "$T/acts.safetensors" -o "$T/s2.safetensors" --bins 512
expect_out bins_without_histogram_msg "warning: --bins has no effect with the minmax observer"
expect_exit 0 percentile_without_observer -- "$MQ" calibrate --model "$M" --activations "$T/acts.safetensors" -o "$T/s3.safetensors" --observer histogram --percentile 99.9
expect_out percentile_without_observer_msg "warning: --percentile has no effect with the histogram observer"
expect_exit 3 observer_setting_strict -- "$MQ" calibrate --model "$M" --activations "$T/acts.safetensors" -o "$T/s4.safetensors" --bins 512 --strict
[ ! -e "$T/s4.safetensors" ] && ok observer_setting_nothing_written || notok observer_setting_nothing_written "written"
expect_exit 0 percentile_used -- "$MQ" calibrate --model "$M" --activations "$T/acts.safetensors" -o "$T/s5.safetensors" --observer percentile --percentile 99.9 --bins 512
grep -q "has no effect" "$T/out" && notok percentile_used_no_warning "$(cat "$T/out")" || ok percentile_used_no_warning

# storages shared in a .pt input are written separately: said
expect_exit 0 tied_storage -- "$MQ" quantize --format native tests/corpus/zip/torch_tied.pt --types other -o "$T/tied.safetensors"
expect_out tied_storage_msg "warning: 1 tensor shares storage with another in the input \(first: 'a' and 'b'"
finish
