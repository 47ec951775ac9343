#!/bin/sh
# monoquant quantize / dequantize / validate / compare: options, config file, outputs,
# reports, exit codes.
. tests/cli/lib.sh

LM=$FIXTURES/lm/lm_fortunes.safetensors
CNN=$FIXTURES/cnn/cnn_digits.safetensors
cp "$CNN" "$T/cnn.safetensors"
sum_before=$(cksum < "$T/cnn.safetensors")

# default output name beside the input; the input is left as it was
expect_exit 0 q_default_name -- "$MQ" quantize "$T/cnn.safetensors" --bits 4
[ -f "$T/cnn.int4-g128.safetensors" ] && ok q_default_name_file || notok q_default_name_file "missing"
[ "$(cksum < "$T/cnn.safetensors")" = "$sum_before" ] && ok q_input_untouched || notok q_input_untouched "changed"
expect_out q_report_sizes 'tensor data 605\.2 KB -> [0-9.]+ KB'
expect_out q_report_skip_reason 'conv1\.weight +288 elements, under 512 \(4-bit default skip\)'
expect_out q_report_head 'fc2\.weight +output head \(4-bit default skip\)'
expect_out q_report_sqnr 'fc1\.weight +linear +int4-g128 +[0-9]+\.[0-9]+'

# never the input itself, also through another path
expect_exit 2 q_refuse_input -- "$MQ" quantize "$T/cnn.safetensors" -o "$T/./cnn.safetensors"
expect_out q_refuse_input_msg 'the output is the input'
[ "$(cksum < "$T/cnn.safetensors")" = "$sum_before" ] && ok q_refuse_untouched || notok q_refuse_untouched "changed"

# usage and I/O errors
expect_exit 2 q_bad_bits -- "$MQ" quantize "$CNN" --bits 3
expect_exit 2 q_bad_layer -- "$MQ" quantize "$CNN" --layer 'fc1.weight'
expect_exit 2 q_bad_types -- "$MQ" quantize "$CNN" --types linear,dense
expect_exit 5 q_missing_input -- "$MQ" quantize "$T/nope.safetensors" -o "$T/x.safetensors"
expect_exit 0 q_help -- "$MQ" quantize --help
expect_out q_help_text '--no-default-skip'

# dry run: the plan, nothing written
expect_exit 0 q_dry_run -- "$MQ" quantize "$LM" --bits 4 --dry-run -o "$T/dry.safetensors"
[ ! -e "$T/dry.safetensors" ] && ok q_dry_run_nothing || notok q_dry_run_nothing "file written"
expect_out q_dry_run_plan 'blocks\.0\.mlp\.fc\.weight +linear +int4-g128'

# selection: types, include/exclude, min-params, per-layer bits, no-default-skip
expect_exit 0 q_json_select -- "$MQ" quantize "$LM" --dry-run --json --types linear,embedding \
    --exclude 'blocks.3.*' --layer 'blocks.0.*=4' --layer 'blocks.1.mlp.*=fp16' \
    --layer 'blocks.2.attn.qkv.weight=none' --min-params 70000
cp "$T/out" "$T/select.json"
if "$PYTHON" - "$T/select.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = {x["name"]: x for x in d["tensors"]}
assert t["tok_emb.weight"]["action"] == "kept" and "min-params" in t["tok_emb.weight"]["reason"], t["tok_emb.weight"]
assert t["pos_emb.weight"]["reason"].startswith("32768 elements"), t["pos_emb.weight"]
assert t["blocks.0.mlp.fc.weight"]["scheme"] == "int4-g128", t["blocks.0.mlp.fc.weight"]
assert t["blocks.0.attn.proj.weight"]["action"] == "kept"  # 65536 < --min-params
assert t["blocks.1.mlp.fc.weight"]["action"] == "cast" and t["blocks.1.mlp.fc.weight"]["scheme"] == "fp16"
assert t["blocks.2.attn.qkv.weight"]["reason"] == "kept by --layer 'blocks.2.attn.qkv.weight=none'"
assert t["blocks.3.mlp.fc.weight"]["reason"] == "excluded by --exclude 'blocks.3.*'"
assert t["blocks.2.mlp.fc.weight"]["scheme"] == "int8"
assert "min-params" in t["lm_head.weight"]["reason"]
assert t["ln_f.weight"]["reason"] == "norm (1-D)", t["ln_f.weight"]
assert d["dry_run"] and d["output"] is None
PY
then ok q_json_selection; else notok q_json_selection "unexpected plan"; fi

expect_exit 0 q_include -- "$MQ" quantize "$LM" --dry-run --include '*.qkv.weight' --bits 4
expect_out q_include_count '^4 quantized'
expect_exit 0 q_no_default_skip -- "$MQ" quantize "$LM" --dry-run --bits 4 --no-default-skip --types linear,embedding
expect_out q_no_default_skip_count '^19 quantized'
expect_out q_risky_warning 'warning: tok_emb\.weight: 4-bit on an embedding'
expect_exit 3 q_strict -- "$MQ" quantize "$LM" --dry-run --bits 4 --no-default-skip --types linear,embedding --strict
expect_exit 3 q_nothing_strict -- "$MQ" quantize "$LM" --dry-run --types other --strict
expect_out q_nothing_warning 'nothing is quantized'
# --strict on a real run fails before the commit: no output, no temporary file, an existing
# destination untouched (SQNR warnings come after the data; the head warning before it)
mkdir -p "$T/strict"
expect_exit 3 q_strict_sqnr -- "$MQ" quantize "$CNN" -o "$T/strict/new.safetensors" --min-sqnr 99 --strict
expect_out q_strict_sqnr_msg 'new\.safetensors: 4 warnings under strict mode, nothing written: conv1\.weight: SQNR'
expect_out q_strict_sqnr_warning_printed 'fc2\.weight: SQNR [0-9.]+ dB is below the floor of 99\.0 dB'
[ -z "$(ls -A "$T/strict")" ] && ok q_strict_leaves_nothing || notok q_strict_leaves_nothing "$(ls "$T/strict")"
echo "old contents" > "$T/strict/old.pt"
expect_exit 3 q_strict_existing -- "$MQ" quantize "$CNN" -o "$T/strict/old.pt" --bits 4 --no-default-skip --strict -f
expect_out q_strict_existing_msg '1 warning under strict mode, nothing written: fc2\.weight: 4-bit on an output head'
[ "$(cat "$T/strict/old.pt")" = "old contents" ] && ok q_strict_destination_untouched || notok q_strict_destination_untouched "overwritten"
[ "$(ls -A "$T/strict")" = "old.pt" ] && ok q_strict_no_temp_file || notok q_strict_no_temp_file "$(ls "$T/strict")"
expect_exit 0 q_not_strict_writes -- "$MQ" quantize "$CNN" -o "$T/strict/old.pt" --bits 4 --no-default-skip -q --force
[ "$(head -c 2 "$T/strict/old.pt")" = "PK" ] && ok q_not_strict_replaced || notok q_not_strict_replaced "not replaced"

# config file: command line > file > defaults
cat > "$T/mq.conf" <<'CONF'
# monoquant options
bits = 4
group-size = 64
exclude = blocks.0.*
no-default-skip
CONF
expect_exit 0 q_config -- "$MQ" quantize "$LM" --config "$T/mq.conf" --dry-run --json
if grep -q '"name": "blocks.1.mlp.fc.weight", "kind": "linear", "dtype": "F32", "action": "quantized", "scheme": "int4-g64"' "$T/out" &&
   grep -q '"name": "blocks.0.mlp.fc.weight".*"reason": "excluded by --exclude' "$T/out" &&
   grep -q '"name": "lm_head.weight".*"scheme": "int4-g64"' "$T/out"; then ok q_config_applied
else notok q_config_applied "config not applied: $(head -c 300 "$T/out")"; fi
expect_exit 0 q_config_override -- "$MQ" quantize "$LM" --config "$T/mq.conf" --dry-run --json --group-size 32 --exclude 'blocks.2.*'
if grep -q '"name": "blocks.0.mlp.fc.weight".*"scheme": "int4-g32"' "$T/out" &&
   grep -q '"name": "blocks.2.mlp.fc.weight".*"reason": "excluded' "$T/out"; then ok q_config_cmdline_wins
else notok q_config_cmdline_wins "command line did not win"; fi
echo "bogus-key = 1" > "$T/bad.conf"
expect_exit 2 q_config_bad -- "$MQ" quantize "$LM" --config "$T/bad.conf" --dry-run
expect_out q_config_bad_msg "bad.conf:1: unknown key 'bogus-key'"

# NaN: an error naming the tensor, or kept with --skip-nonfinite
"$PYTHON" - "$T/nan.safetensors" <<'PY'
import json, struct, sys
vals = [0.5] * 64; vals[37] = float("nan")
tensors = [("a.weight", [8, 8], [0.25] * 64), ("b.weight", [8, 8], vals)]
hdr, blobs, off = {}, [], 0
for name, shape, v in tensors:
    data = struct.pack("<64f", *v); hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
    off += len(data); blobs.append(data)
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
expect_exit 3 q_nan -- "$MQ" quantize "$T/nan.safetensors" -o "$T/nan.q.safetensors"
expect_out q_nan_names_tensor "b\.weight"
[ ! -e "$T/nan.q.safetensors" ] && ok q_nan_no_output || notok q_nan_no_output "output left behind"
expect_exit 0 q_skip_nonfinite -- "$MQ" quantize "$T/nan.safetensors" -o "$T/nan.q.safetensors" --skip-nonfinite
expect_out q_skip_nonfinite_reason 'b\.weight +contains NaN or Inf'

# thread count does not change a byte
"$MQ" -q quantize "$LM" --bits 4 --threads 1 -o "$T/t1.safetensors" &&
"$MQ" -q quantize "$LM" --bits 4 --threads 3 -o "$T/t3.safetensors" &&
cmp -s "$T/t1.safetensors" "$T/t3.safetensors" && ok q_threads_identical || notok q_threads_identical "outputs differ"

# PyTorch in and out: the same tensors as through safetensors
expect_exit 0 q_pt -- "$MQ" quantize "$FIXTURES/lm/lm_fortunes.pt" --bits 4 --threads 1 -o "$T/t1.pt"
expect_exit 0 q_pt_compare -- "$MQ" compare "$T/t1.pt" "$T/t1.safetensors"
expect_out q_pt_same '0 tensors differ, 0 only in A, 0 only in B'

# dequantize: original names, shapes and dtypes
expect_exit 0 dq_run -- "$MQ" dequantize "$T/t1.safetensors" -o "$T/t1.dq.safetensors"
expect_exit 0 dq_info -- "$MQ" info "$T/t1.dq.safetensors"
expect_out dq_names '^  blocks\.0\.attn\.qkv\.weight +F32 +\[768, 256\]'
expect_out dq_count '^tensors: +53$'
expect_exit 0 dq_bf16 -- "$MQ" dequantize "$T/t1.safetensors" -o "$T/t1.bf16.safetensors" --dtype bf16
expect_exit 0 dq_bf16_info -- "$MQ" info "$T/t1.bf16.safetensors"
expect_out dq_bf16_dtype '^  blocks\.0\.attn\.qkv\.weight +BF16'
expect_exit 2 dq_bad_dtype -- "$MQ" dequantize "$T/t1.safetensors" -o "$T/x.safetensors" --dtype i8

# validate: figures, --min-sqnr, corrupted files
expect_exit 0 v_ok -- "$MQ" validate "$T/t1.safetensors" --reference "$LM"
expect_out v_sqnr 'blocks\.0\.mlp\.fc\.weight +int4-g128 +[12][0-9]\.[0-9]+ '
expect_out v_sizes '16 of 53 tensors quantized; 2\.4 MB vs reference 13\.3 MB'
expect_exit 4 v_min_sqnr -- "$MQ" validate "$T/t1.safetensors" --reference "$LM" --min-sqnr 30
expect_out v_min_sqnr_msg 'below --min-sqnr 30'
expect_exit 0 v_json -- "$MQ" validate "$T/t1.safetensors" --json
"$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["quantized"]==16 and d["failures"]==0' "$T/out" &&
    ok v_json_doc || notok v_json_doc "bad JSON"
"$MQ" -q quantize "$LM" --bits 4 --no-default-skip -o "$T/head4.safetensors" 2>/dev/null
expect_exit 0 v_head_warning -- "$MQ" validate "$T/head4.safetensors"
expect_out v_head_warning_msg 'warning: lm_head\.weight: 4-bit on an output head'
expect_exit 3 v_head_strict -- "$MQ" validate "$T/head4.safetensors" --strict
# a zero scale: value check fails
"$PYTHON" - "$T/t1.safetensors" "$T/zero.safetensors" <<'PY'
import json, struct, sys
raw = bytearray(open(sys.argv[1], "rb").read()); n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n]); b = h["blocks.1.mlp.fc.weight_scale"]["data_offsets"][0]
raw[8 + n + b:8 + n + b + 4] = struct.pack("<f", 0.0)
open(sys.argv[2], "wb").write(raw)
PY
expect_exit 4 v_zero_scale -- "$MQ" validate "$T/zero.safetensors"
expect_out v_zero_scale_msg "blocks\.1\.mlp\.fc\.weight.*scale 0 is 0"
# a missing companion: structure check fails
"$PYTHON" - "$T/t1.safetensors" "$T/noshape.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n]); meta = h.pop("__metadata__")
data = raw[8 + n:]; out = {"__metadata__": meta}; blobs = []; off = 0
for k, v in h.items():
    if k == "blocks.0.attn.qkv.weight_shape": continue
    b, e = v["data_offsets"]; blobs.append(data[b:e]); out[k] = dict(v, data_offsets=[off, off + e - b]); off += e - b
j = json.dumps(out).encode(); j += b" " * (-len(j) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(j)) + j + b"".join(blobs))
PY
expect_exit 4 v_missing_shape -- "$MQ" validate "$T/noshape.safetensors"
expect_out v_missing_shape_msg "blocks\.0\.attn\.qkv\.weight.*_shape"

# static quantization: calibration statistics give input scales on every calibrated layer
"$PYTHON" - "$T/act.safetensors" <<'PY'
import json, random, struct, sys
random.seed(1)
layers = [("conv1", [4, 1, 8, 8]), ("conv2", [4, 32, 8, 8]), ("fc1", [16, 1024]), ("fc2", [16, 128])]
hdr, blobs, off = {}, [], 0
for name, shape in layers:
    n = 1
    for d in shape: n *= d
    data = struct.pack(f"<{n}f", *[abs(random.gauss(0, 1)) for _ in range(n)])
    hdr[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
    off += len(data); blobs.append(data)
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
expect_exit 0 s_calibrate -- "$MQ" calibrate --model "$CNN" --activations "$T/act.safetensors" -o "$T/stats.safetensors"
expect_exit 0 s_quantize -- "$MQ" quantize "$CNN" --calibration "$T/stats.safetensors" -o "$T/static.safetensors" --json
grep -q '"name": "fc1.weight".*"action": "quantized"' "$T/out" && ok s_quantized || notok s_quantized "fc1 not quantized"
expect_exit 0 s_info -- "$MQ" -v info "$T/static.safetensors"
expect_out s_input_scale '^  fc1\.input_scale +F32 +\[1\]'
expect_out s_input_zero_point '^  conv2\.input_zero_point +U8 +\[1\]'
expect_exit 0 s_validate -- "$MQ" validate "$T/static.safetensors" --reference "$CNN"
# activation-weighted search (conv importance expanded over kh*kw columns)
expect_exit 0 s_weighted -- "$MQ" quantize "$CNN" --bits 4 --no-default-skip --search mse --calibration "$T/stats.safetensors" -o "$T/awq.safetensors"
expect_exit 0 s_weighted_validate -- "$MQ" validate "$T/awq.safetensors" --reference "$CNN" --min-sqnr 10
expect_exit 5 s_missing_stats -- "$MQ" quantize "$CNN" --calibration "$T/none.safetensors" -o "$T/x.safetensors"

# compare: plain vs quantized, matched by name
expect_exit 0 c_run -- "$MQ" compare "$LM" "$T/t1.safetensors"
expect_out c_summary 'B is 5\.[0-9]+x smaller; 16 tensors differ, 0 only in A, 0 only in B'
expect_exit 0 c_same -- "$MQ" compare "$LM" "$LM"
expect_out c_same_summary '0 tensors differ'
expect_exit 0 c_json -- "$MQ" compare "$T/t1.dq.safetensors" "$T/t1.safetensors" --json
"$PYTHON" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["differ"]==0, d["differ"]' "$T/out" &&
    ok c_dequantized_matches || notok c_dequantized_matches "dequantized file differs from its source"

finish
