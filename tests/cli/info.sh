#!/bin/sh
# monoquant info: text and JSON reports, folders, exit codes.
. tests/cli/lib.sh

LM=$FIXTURES/lm/lm_fortunes.safetensors
CNN16=$FIXTURES/cnn/cnn_digits.bf16.safetensors

expect_exit 0 info_text -- "$MQ" info "$LM"
expect_out info_text_format '^format: +safetensors$'
expect_out info_text_counts '^tensors: +53$'
expect_out info_text_params '^parameters: +3,323,392$'
expect_out info_text_dtype '^  F32 +53 tensors +3,323,392 parameters'
expect_out info_text_meta '^  model = lm_fortunes$'
expect_out info_text_row '^  blocks\.0\.attn\.qkv\.weight +F32 +\[768, 256\] +786,432 +linear$'
expect_out info_text_embedding '^  tok_emb\.weight +F32 +\[256, 256\] +262,144 +embedding$'

expect_exit 0 info_json -- "$MQ" info --json "$CNN16"
if "$PYTHON" - "$T/out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == "safetensors" and d["file_count"] == 1, d
assert d["tensor_count"] == 8 and d["parameter_count"] == 151306, d
assert d["dtypes"] == {"BF16": {"tensors": 8, "parameters": 151306, "bytes": 302612}}, d
assert d["metadata"]["model"] == "cnn_digits", d
t = d["tensors"][0]
assert t == {"name": "conv1.weight", "dtype": "BF16", "shape": [32, 1, 3, 3], "bytes": 576,
             "kind": "conv"}, t
assert [x["kind"] for x in d["tensors"]][4:6] == ["linear", "bias"]
PY
then ok info_json_document; else notok info_json_document "not the expected JSON"; fi

# stdout carries only the JSON document (messages go to stderr)
"$MQ" info "$CNN16" --json > "$T/stdout" 2> "$T/stderr"
if "$PYTHON" -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/stdout" && [ ! -s "$T/stderr" ]
then ok info_json_stdout_only; else notok info_json_stdout_only "stdout is not one JSON document"; fi

# a folder holding one checkpoint
mkdir "$T/folder"
cp "$CNN16" "$T/folder/model.safetensors"
echo '{}' > "$T/folder/config.json"
expect_exit 0 info_folder -- "$MQ" info "$T/folder"
expect_out info_folder_tensors '^tensors: +8$'

# a quantized checkpoint is shown as its original tensors (scheme, logical shape), the stored
# parts (_packed, _scale, _shape) only with -v
expect_exit 0 info_q_quantize -- "$MQ" quantize "$LM" --bits 4 -o "$T/q4.safetensors" -q
expect_exit 0 info_q_text -- "$MQ" info "$T/q4.safetensors"
expect_out info_q_logical '^logical: +53 tensors, 3,323,392 parameters, [0-9]+ quantized$'
expect_out info_q_storage '^storage: +monoquant$'
expect_out info_q_row '^  blocks\.0\.attn\.qkv\.weight +int4 symmetric group 128 +F32 +\[768, 256\] '
if grep -q '_packed\|_scale' "$T/out"; then notok info_q_no_parts "stored parts listed"; else ok info_q_no_parts; fi
expect_exit 0 info_q_verbose -- "$MQ" -v info "$T/q4.safetensors"
expect_out info_q_verbose_parts '^  blocks\.0\.attn\.qkv\.weight_packed +I32 +\[768, 32\]'
expect_exit 0 info_q_json -- "$MQ" info --json "$T/q4.safetensors"
if "$PYTHON" - "$T/out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
lg = d["logical"]
assert lg["tensor_count"] == 53 and lg["parameter_count"] == 3323392, lg
t = {x["name"]: x for x in lg["tensors"]}["blocks.0.attn.qkv.weight"]
assert t["scheme"] == "int4 symmetric group 128" and t["storage"] == "monoquant", t
assert t["shape"] == [768, 256] and t["kind"] == "linear", t
PY
then ok info_q_json_logical; else notok info_q_json_logical "no logical view in the JSON"; fi

# errors: missing file, malformed file, bad usage
expect_exit 5 info_missing -- "$MQ" info "$T/nope.safetensors"
expect_out info_missing_msg 'monoquant: error: .*nope\.safetensors: cannot open'
printf '\017\000\000\000\000\000\000\000{"a":1}        ' > "$T/bad.safetensors"
expect_exit 5 info_malformed -- "$MQ" info "$T/bad.safetensors"
expect_out info_malformed_msg "bad\.safetensors: at byte 13: tensor 'a': entry must be an object"
printf 'xy' > "$T/tiny.safetensors"
expect_exit 5 info_too_short -- "$MQ" info "$T/tiny.safetensors"
expect_exit 2 info_bad_option -- "$MQ" info --frobnicate "$LM"
expect_out info_bad_option_msg "unknown option '--frobnicate'"
expect_exit 2 info_no_file -- "$MQ" info
expect_exit 2 info_two_files -- "$MQ" info "$LM" "$CNN16"
expect_exit 0 info_help -- "$MQ" info --help
expect_out info_help_text '^usage: monoquant info'
finish
